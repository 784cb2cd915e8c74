"""The Lotus UNet and SD VAE architectures, derived from a state dict's own shapes.

Single-file checkpoints carry no config, so the config is read back from the tensors (as ComfyUI's
model detection does). For the published files this gives exactly the Lotus config
(``LOTUS_UNET_CONFIG``); for the tiny models the tests build it gives theirs.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..errors import LotusError

# SD2's attention heads are 64 wide; diffusers' legacy `attention_head_dim` holds the head *count*.
SD_HEAD_WIDTH = 64
TASK_SWITCH_DIM = 4  # [sin(a), sin(b), cos(a), cos(b)] of the one-hot task switch
LATENT_CHANNELS = 4
NO_TASK_SWITCH = (
    "not a Lotus checkpoint: it has no task-switch embedding ('class_embedding.linear_1.weight' /"
    " 'label_emb.0.0.weight'); a plain Stable Diffusion UNet cannot predict depth"
)

# The published lotus-depth-d-v1-1/unet/config.json (huggingface.co/jingheya); G differs only in in_channels=8.
LOTUS_UNET_CONFIG: dict = {
    "act_fn": "silu",
    "attention_head_dim": [5, 10, 20, 20],
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "class_embed_type": "projection",
    "class_embeddings_concat": False,
    "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "only_cross_attention": False,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": TASK_SWITCH_DIM,
    "sample_size": 64,
    "transformer_layers_per_block": 1,
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    "upcast_attention": False,
    "use_linear_projection": True,
}

# The SD1.x/SD2 AutoencoderKL (stabilityai/stable-diffusion-2-base vae/config.json).
SD_VAE_CONFIG: dict = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": LATENT_CHANNELS,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "scaling_factor": 0.18215,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}


def _count(sd: Mapping, pattern: str) -> int:
    n = 0
    while pattern.format(n) in sd:
        n += 1
    return n


def unet_config_from_state_dict(sd: Mapping[str, torch.Tensor]) -> dict:
    """The UNet2DConditionModel config of a diffusers-keyed Lotus UNet state dict."""
    if "conv_in.weight" not in sd or "down_blocks.0.resnets.0.conv1.weight" not in sd:
        raise LotusError("not a Lotus checkpoint: it has no UNet weights (no 'conv_in.weight')")
    if "class_embedding.linear_1.weight" not in sd:
        raise LotusError(NO_TASK_SWITCH)
    switch_dim = sd["class_embedding.linear_1.weight"].shape[1]
    in_channels = sd["conv_in.weight"].shape[1]
    if switch_dim != TASK_SWITCH_DIM or in_channels not in (LATENT_CHANNELS, 2 * LATENT_CHANNELS):
        raise LotusError(
            f"not a Lotus checkpoint: class embedding input {switch_dim} (Lotus: {TASK_SWITCH_DIM}) and"
            f" conv_in input channels {in_channels} (Lotus-D: 4, Lotus-G: 8)"
        )
    levels = _count(sd, "down_blocks.{}.resnets.0.conv1.weight")
    channels = [sd[f"down_blocks.{i}.resnets.0.conv2.weight"].shape[0] for i in range(levels)]
    attends = [f"down_blocks.{i}.attentions.0.proj_in.weight" in sd for i in range(levels)]
    first_attention = next(i for i, a in enumerate(attends) if a)
    attention = f"down_blocks.{first_attention}.attentions.0"
    return {
        **LOTUS_UNET_CONFIG,
        "in_channels": in_channels,
        "out_channels": sd["conv_out.weight"].shape[0],
        "block_out_channels": channels,
        "attention_head_dim": [c // SD_HEAD_WIDTH for c in channels],
        "layers_per_block": _count(sd, "down_blocks.0.resnets.{}.conv1.weight"),
        "transformer_layers_per_block": _count(sd, attention + ".transformer_blocks.{}.attn1.to_q.weight"),
        "cross_attention_dim": sd[attention + ".transformer_blocks.0.attn2.to_k.weight"].shape[1],
        "use_linear_projection": sd[attention + ".proj_in.weight"].ndim == 2,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attends],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attends)],
        "norm_num_groups": min(LOTUS_UNET_CONFIG["norm_num_groups"], channels[0]),
    }


def vae_config_from_state_dict(sd: Mapping[str, torch.Tensor]) -> dict:
    """The AutoencoderKL config of a diffusers-keyed SD VAE state dict."""
    needed = ("encoder.conv_in.weight", "decoder.conv_out.weight", "post_quant_conv.weight")
    if not all(k in sd for k in needed):
        raise LotusError(
            "not a Stable Diffusion 1.x/2.x VAE (AutoencoderKL): missing "
            + ", ".join(repr(k) for k in needed if k not in sd)
        )
    latent = sd["post_quant_conv.weight"].shape[0]
    if latent != LATENT_CHANNELS:
        raise LotusError(
            f"VAE with {latent} latent channels: Lotus needs a 4-channel SD1.x/SD2 VAE"
            " (e.g. vae-ft-mse-840000-ema-pruned), not an SD3/Flux-style VAE"
        )
    levels = _count(sd, "encoder.down_blocks.{}.resnets.0.conv1.weight")
    return {
        **SD_VAE_CONFIG,
        "block_out_channels": [sd[f"encoder.down_blocks.{i}.resnets.0.conv2.weight"].shape[0] for i in range(levels)],
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "layers_per_block": _count(sd, "encoder.down_blocks.0.resnets.{}.conv1.weight"),
        "in_channels": sd["encoder.conv_in.weight"].shape[1],
        "out_channels": sd["decoder.conv_out.weight"].shape[0],
        "norm_num_groups": min(SD_VAE_CONFIG["norm_num_groups"], sd["encoder.conv_in.weight"].shape[0]),
    }


def build_with_weights(cls: type, config: dict, sd: dict[str, torch.Tensor], device, dtype):
    """Instantiate ``cls(config)`` holding exactly ``sd``, moved to device/dtype tensor by tensor.

    The module is built on the meta device and the tensors are assigned, so no randomly initialised
    full-size copy ever exists. Mismatching keys or shapes are listed in the error.
    """
    with torch.device("meta"):
        module = cls.from_config(config)
    expected = {k: v.shape for k, v in module.state_dict().items()}
    problems = []
    for label, keys in (
        ("missing", sorted(expected.keys() - sd.keys())),
        ("unexpected", sorted(sd.keys() - expected.keys())),
        ("wrong shape", [f"{k} {tuple(sd[k].shape)} != {tuple(expected[k])}"
                         for k in sorted(expected.keys() & sd.keys()) if sd[k].shape != expected[k]]),
    ):
        if keys:
            shown = ", ".join(keys[:8]) + (f", … ({len(keys)} in all)" if len(keys) > 8 else "")
            problems.append(f"{label} keys: {shown}")
    if problems:
        raise LotusError(f"weights do not fit a {cls.__name__}: " + "; ".join(problems))
    for key in list(sd):  # replace one by one so only one converted tensor is alive at a time
        sd[key] = sd[key].to(device=device, dtype=dtype)
    module.load_state_dict(sd, strict=True, assign=True)
    return module.eval().requires_grad_(False)
