"""A Lotus model under ComfyUI's memory management."""

from __future__ import annotations

from dataclasses import dataclass

import comfy.model_management as mm
import comfy.model_patcher
import torch

from ..lotus_core import LotusModel

# Activation bytes per pixel and per byte of dtype, as ComfyUI budgets its SD VAE (comfy/sd.py);
# the VAE dominates Lotus' activations, the UNet runs at 1/8 resolution.
VAE_ENCODE_BYTES_PER_PIXEL = 1767
VAE_DECODE_BYTES_PER_LATENT_PIXEL = 2178 * 64


class _Held(torch.nn.Module):
    """Holds a diffusers module for a ModelPatcher, which writes ``model.device``: a read-only
    property on diffusers models."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module
        self.device = module.device


@dataclass(frozen=True)
class ComfyLotusModel:
    """What the loader node hands to the prediction nodes (type ``LOTUSDEPTH_MODEL``)."""

    core: LotusModel
    patchers: tuple[comfy.model_patcher.ModelPatcher, ...]

    @classmethod
    def wrap(cls, core: LotusModel) -> ComfyLotusModel:
        load_device = mm.get_torch_device()
        patchers = (
            comfy.model_patcher.ModelPatcher(_Held(core.unet), load_device, mm.unet_offload_device()),
            comfy.model_patcher.ModelPatcher(_Held(core.vae), load_device, mm.vae_offload_device()),
        )
        return cls(core, patchers)

    def load(self, height: int, width: int, chunk_size: int) -> None:
        """Bring both networks to the compute device, making room for one chunk's activations."""
        dtype_size = mm.dtype_size(self.core.vae.dtype)
        per_image = max(VAE_ENCODE_BYTES_PER_PIXEL * height * width,
                        VAE_DECODE_BYTES_PER_LATENT_PIXEL * (height // 8) * (width // 8))
        # diffusers modules cannot run partially loaded (ComfyUI's lowvram mode needs its own ops)
        mm.load_models_gpu(list(self.patchers), memory_required=per_image * dtype_size * chunk_size,
                           force_full_load=True)
