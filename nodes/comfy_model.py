"""A Lotus model under ComfyUI's memory management."""

from __future__ import annotations

from dataclasses import dataclass

import comfy.model_management as mm
import comfy.model_patcher
import torch

from ..lotus_core import LotusModel, available_bytes, usable_bytes


class _Held(torch.nn.Module):
    """Holds a diffusers module for a ModelPatcher, which writes ``model.device``: a read-only
    property on diffusers models. ComfyUI's log names the class ("Requested to load LotusUNet")."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module
        self.device = module.device


class LotusUNet(_Held):
    pass


class LotusVAE(_Held):
    pass


@dataclass(frozen=True)
class ComfyLotusModel:
    """What the loader node hands to the prediction nodes (type ``LOTUSDEPTH_MODEL``)."""

    core: LotusModel
    patchers: tuple[comfy.model_patcher.ModelPatcher, ...]

    @classmethod
    def wrap(cls, core: LotusModel) -> ComfyLotusModel:
        load_device = mm.get_torch_device()
        patchers = (
            comfy.model_patcher.ModelPatcher(LotusUNet(core.unet), load_device, mm.unet_offload_device()),
            comfy.model_patcher.ModelPatcher(LotusVAE(core.vae), load_device, mm.vae_offload_device()),
        )
        return cls(core, patchers)

    def load(self, need: int) -> int:
        """Bring both networks to the compute device, making room for ``need`` bytes of activations
        (the core's ``activation_bytes``), and return the bytes the prediction may then use."""
        # diffusers modules cannot run partially loaded (ComfyUI's lowvram mode needs its own ops)
        mm.load_models_gpu(list(self.patchers), memory_required=need, force_full_load=True)
        return usable_bytes(free_memory(self.core.device))

    def _comfy_cache_tensors(self) -> list[torch.Tensor]:
        """The weights this output keeps alive, for newer ComfyUI's RAM-pressure cache."""
        return [*self.core.unet.parameters(), *self.core.vae.parameters()]


def free_memory(device: torch.device) -> int:
    """Free memory on ``device`` as ComfyUI's model management counts it, where it can tell (newer
    ComfyUI warns custom code off ``torch.cuda.mem_get_info``: with dynamic VRAM it knows best)."""
    if hasattr(mm, "get_free_memory"):
        return mm.get_free_memory(device)
    return available_bytes(device)
