"""The full-size Lotus UNet and SD VAE, built on the meta device (no memory, no weights).

Checked against the published release (``jingheya/lotus-depth-d-v1-1``, ``unet/config.json``; the
other Lotus UNets differ only in ``in_channels``: 8 for Lotus-G, 4 for Lotus-D): parameter counts,
the config read back from the tensors' own shapes, and key names and shapes as the released files
have them. The LDM (ComfyUI) -> diffusers key conversion at full size needs ComfyUI's converter: it
is in test_comfy_key_maps.py.
"""

from __future__ import annotations

from functools import lru_cache

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from lotus_core.loading.architecture import (
    LOTUS_UNET_CONFIG,
    SD_VAE_CONFIG,
    unet_config_from_state_dict,
    vae_config_from_state_dict,
)

# https://huggingface.co/jingheya/lotus-depth-d-v1-1/blob/main/unet/config.json: the fields that shape the network
PUBLISHED_UNET_CONFIG = {
    "act_fn": "silu",
    "attention_head_dim": [5, 10, 20, 20],
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "class_embed_type": "projection",
    "class_embeddings_concat": False,
    "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "only_cross_attention": False,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": 4,
    "transformer_layers_per_block": 1,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "upcast_attention": False,
    "use_linear_projection": True,
}
PUBLISHED_PARAMETERS = {"G": 867_568_324, "D": 867_556_804}
IN_CHANNELS = {"G": 8, "D": 4}


@lru_cache(maxsize=2)
def meta_unet(kind: str) -> UNet2DConditionModel:
    """The full-size Lotus UNet on the meta device (built once per kind; treat as read-only)."""
    with torch.device("meta"):
        return UNet2DConditionModel.from_config({**LOTUS_UNET_CONFIG, "in_channels": IN_CHANNELS[kind]})


@pytest.fixture(scope="module")
def meta_vae() -> AutoencoderKL:
    with torch.device("meta"):
        return AutoencoderKL.from_config(SD_VAE_CONFIG)


def count(module: torch.nn.Module, prefixes: tuple[str, ...] = ("",)) -> int:
    return sum(p.numel() for name, p in module.named_parameters() if name.startswith(prefixes))


def test_shipped_unet_config_is_the_published_one():
    assert {k: LOTUS_UNET_CONFIG[k] for k in PUBLISHED_UNET_CONFIG} == PUBLISHED_UNET_CONFIG


@pytest.mark.parametrize("kind", ["G", "D"])
def test_unet_parameter_count_matches_the_published_files(kind):
    unet = meta_unet(kind)
    assert unet.device.type == "meta"
    assert count(unet) == PUBLISHED_PARAMETERS[kind]


@pytest.mark.parametrize("kind", ["G", "D"])
def test_unet_config_is_read_back_from_the_tensor_shapes(kind):
    config = unet_config_from_state_dict(meta_unet(kind).state_dict())
    assert config["in_channels"] == IN_CHANNELS[kind]
    assert {k: config[k] for k in PUBLISHED_UNET_CONFIG} == PUBLISHED_UNET_CONFIG
    with torch.device("meta"):
        rebuilt = UNet2DConditionModel.from_config(config)
    assert count(rebuilt) == PUBLISHED_PARAMETERS[kind]


@pytest.mark.parametrize("kind", ["G", "D"])
@pytest.mark.parametrize(
    ("key", "shape"),
    [
        ("conv_in.weight", (320, None, 3, 3)),
        ("conv_in.bias", (320,)),
        ("class_embedding.linear_1.weight", (1280, 4)),
        ("class_embedding.linear_1.bias", (1280,)),
        ("class_embedding.linear_2.weight", (1280, 1280)),
        ("time_embedding.linear_1.weight", (1280, 320)),
        ("down_blocks.0.attentions.0.proj_in.weight", (320, 320)),
        ("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight", (320, 1024)),
        ("down_blocks.2.attentions.1.transformer_blocks.0.attn2.to_v.weight", (1280, 1024)),
        ("mid_block.attentions.0.transformer_blocks.0.attn1.to_q.weight", (1280, 1280)),
        ("up_blocks.3.attentions.2.proj_out.weight", (320, 320)),
        ("conv_out.weight", (4, 320, 3, 3)),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_unet_keys_and_shapes_as_published(kind, key, shape):
    shape = tuple(IN_CHANNELS[kind] if s is None else s for s in shape)
    assert tuple(meta_unet(kind).state_dict()[key].shape) == shape


def test_vae_parameter_counts(meta_vae):
    assert count(meta_vae, ("encoder.", "quant_conv.")) == 34_163_664
    assert count(meta_vae, ("decoder.", "post_quant_conv.")) == 49_490_199
    assert count(meta_vae) == 83_653_863  # ≈ 83.65 M


def test_vae_config_is_read_back_from_the_tensor_shapes(meta_vae):
    config = vae_config_from_state_dict(meta_vae.state_dict())
    assert config["block_out_channels"] == [128, 256, 512, 512]
    assert config["latent_channels"] == 4
    assert config["layers_per_block"] == 2
    assert config["scaling_factor"] == 0.18215
    assert config == SD_VAE_CONFIG
    with torch.device("meta"):
        assert count(AutoencoderKL.from_config(config)) == count(meta_vae)
