"""Tiny random-weight Lotus models of the real diffusers classes, and writers for every file format.

Same classes and key layout as the published checkpoints, small widths: a UNet of ~3 M parameters
(cross_attention_dim stays 1024 so the shipped empty-prompt embedding fits) and a 4-level SD VAE
(so latents are 1/8 of the image, as in the real one).

Core fixture: imports nothing of ComfyUI. The LDM (ComfyUI / original Stable Diffusion) key names
come from ``data/tiny_key_maps.json``, ComfyUI's own converters' output for these two networks,
stored; test_comfy_key_maps.py checks it against ComfyUI and ``comfy_keys.py`` rewrites it.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file

KEY_MAPS_FILE = Path(__file__).with_name("data") / "tiny_key_maps.json"

TINY_UNET_CONFIG = {
    "block_out_channels": (64, 128),
    "layers_per_block": 1,
    "attention_head_dim": (1, 2),  # SD2 style: head counts of 64-wide heads
    "cross_attention_dim": 1024,
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "class_embed_type": "projection",
    "projection_class_embeddings_input_dim": 4,
    "use_linear_projection": True,
    "norm_num_groups": 32,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "out_channels": 4,
    "sample_size": 8,
}
TINY_VAE_CONFIG = {
    "block_out_channels": (32, 32, 32, 32),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "scaling_factor": 0.18215,
    "sample_size": 32,
}


def tiny_unet(generative: bool, seed: int = 0) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(in_channels=8 if generative else 4, **TINY_UNET_CONFIG)
    with torch.no_grad():  # default init leaves some layers at zero; make every weight matter
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return unet.eval()


def tiny_vae(seed: int = 0, latent_channels: int = 4) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(**{**TINY_VAE_CONFIG, "latent_channels": latent_channels}).eval()


@lru_cache(maxsize=1)
def _key_maps() -> dict[str, dict[str, str]]:
    return json.loads(KEY_MAPS_FILE.read_text())


def ldm_unet_key_map() -> dict[str, str]:
    """diffusers key -> ComfyUI/LDM key for the tiny UNet (as ComfyUI's comfy.utils.unet_to_diffusers maps it)."""
    return dict(_key_maps()["unet_diffusers_to_ldm"])


def to_original_vae_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A tiny-VAE state dict under the original (LDM) names, as ComfyUI's convert_vae_state_dict writes it.

    The original VAE's mid-block attention is 1x1 convolutions where diffusers has linear layers, so
    those weights (q, k, v, proj_out) gain two trailing unit dimensions.
    """
    names = _key_maps()["vae_diffusers_to_original"]
    out = {}
    for key, value in sd.items():
        original = names[key]
        if any(original.endswith(f"mid.attn_1.{name}.weight") for name in ("q", "k", "v", "proj_out")):
            value = value.reshape(*value.shape, 1, 1)
        out[original] = value.contiguous()
    return out


def save_unet_file(unet: UNet2DConditionModel, path: Path, *, ldm_keys=False, dtype=torch.float32) -> Path:
    sd = {k: v.to(dtype).contiguous() for k, v in unet.state_dict().items()}
    if ldm_keys:
        key_map = ldm_unet_key_map()
        sd = {key_map[k]: v for k, v in sd.items()}
    save_file(sd, path)
    return path


def save_vae_file(vae: AutoencoderKL, path: Path, *, original_keys=False) -> Path:
    sd = {k: v.contiguous() for k, v in vae.state_dict().items()}
    if original_keys:
        sd = to_original_vae_keys(sd)
    save_file(sd, path)
    return path


def save_diffusers_folder(unet, vae, folder: Path, *, pipeline="LotusGPipeline", variant=None) -> Path:
    unet.save_pretrained(folder / "unet", variant=variant)
    vae.save_pretrained(folder / "vae", variant=variant)
    index = {"_class_name": pipeline, "unet": ["diffusers", "UNet2DConditionModel"]}
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


# --- appended for the core test suite: deterministic test pictures ---

def synthetic_rgb(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A deterministic uint8 [H, W, 3] picture: smooth gradients (structure) plus seeded texture."""
    import math

    y = torch.linspace(0, 1, height)[:, None]
    x = torch.linspace(0, 1, width)[None, :]
    smooth = torch.stack([
        0.5 + 0.4 * torch.sin(2 * math.pi * (x + 0.7 * y) + seed),
        0.5 + 0.4 * torch.cos(3 * math.pi * x * y + 0.5 * seed),
        0.2 + 0.6 * (1 - y) * x.expand(height, width),
    ], dim=-1)
    texture = torch.rand(height, width, 3, generator=torch.Generator().manual_seed(seed)) * 0.2 - 0.1
    return ((smooth + texture).clamp(0, 1) * 255).round().to(torch.uint8)


def as_batch(*rgbs: torch.Tensor) -> torch.Tensor:
    """uint8 [H, W, 3] pictures -> the core's input: float [B, 3, H, W] in [0, 1] (= uint8 / 255)."""
    return torch.stack([rgb.permute(2, 0, 1).float() / 255 for rgb in rgbs])
