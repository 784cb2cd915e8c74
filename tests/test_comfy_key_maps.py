"""ComfyUI's own key converters (the vendored ComfyUI tree) against the core and the core tests' stored maps.

The core tests write LDM-named files (ComfyUI's and the original Stable Diffusion's key names) from
``tests/data/tiny_key_maps.json`` so that they run without ComfyUI; here that file must equal what
ComfyUI computes. The full-size conversions check the core's key converter on the real architecture.
"""

from __future__ import annotations

import pytest
import tiny
import torch
from comfy_keys import import_comfy, key_maps
from diffusers import AutoencoderKL, UNet2DConditionModel

from lotus_core.loading.architecture import LOTUS_UNET_CONFIG, SD_VAE_CONFIG, unet_config_from_state_dict
from lotus_core.loading.checkpoint import unet_to_diffusers_keys, vae_to_diffusers_keys

IN_CHANNELS = {"G": 8, "D": 4}
# ComfyUI's description of the SD2 UNet (comfy/supported_models.py SD20 / model_detection output)
COMFY_SD2_UNET = {
    "num_res_blocks": [2, 2, 2, 2],
    "channel_mult": [1, 2, 4, 4],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "transformer_depth_middle": 1,
}


@pytest.fixture(scope="module")
def comfy():
    return import_comfy()


def test_stored_tiny_key_maps_are_comfyuis(comfy):
    stored = tiny._key_maps()
    computed = key_maps()
    assert sorted(stored) == sorted(computed)
    for name in computed:
        assert stored[name] == computed[name], f"run `python tests/comfy_keys.py`: {name} changed"
    unet = tiny.tiny_unet(True).state_dict()
    assert set(unet) <= set(stored["unet_diffusers_to_ldm"])  # every tiny UNet key has an LDM name
    assert len({stored["unet_diffusers_to_ldm"][k] for k in unet}) == len(unet)  # and no two share one


def test_tiny_vae_with_original_keys_is_comfyuis_conversion(comfy):
    sd = tiny.tiny_vae(seed=2).state_dict()
    expected = comfy.diffusers_convert.convert_vae_state_dict(dict(sd))
    written = tiny.to_original_vae_keys(sd)
    assert list(written) == list(expected)
    assert [k for k in expected if written[k].shape != expected[k].shape] == []
    assert [k for k in expected if not torch.equal(written[k], expected[k])] == []
    assert any(v.ndim == 4 and v.shape[-2:] == (1, 1) and "attn_1" in k for k, v in written.items())


def meta_unet(kind: str) -> UNet2DConditionModel:
    with torch.device("meta"):
        return UNet2DConditionModel.from_config({**LOTUS_UNET_CONFIG, "in_channels": IN_CHANNELS[kind]})


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


def test_full_size_original_vae_keys_convert_back_to_diffusers(comfy):
    with torch.device("meta"):
        diffusers_sd = AutoencoderKL.from_config(SD_VAE_CONFIG).state_dict()
    original = comfy.diffusers_convert.convert_vae_state_dict(dict(diffusers_sd))
    assert "encoder.down.0.block.0.conv1.weight" in original
    for prefix in ("", "first_stage_model."):
        converted = vae_to_diffusers_keys({prefix + k: v for k, v in original.items()})
        assert sorted(converted) == sorted(diffusers_sd)
        assert [k for k, v in diffusers_sd.items() if converted[k].shape != v.shape] == []
