"""Reading weight files and bringing their keys to diffusers names."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..errors import LotusError
from .architecture import NO_TASK_SWITCH

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
LDM_UNET_PREFIX = "model.diffusion_model."  # what diffusers' converter expects in front of LDM keys
# The keys that make a UNet a Lotus UNet, under diffusers and LDM (ComfyUI, original SD) names.
TASK_SWITCH_KEYS = ("class_embedding.linear_1.weight", "label_emb.0.0.weight")
CONV_IN_KEYS = ("conv_in.weight", "input_blocks.0.0.weight")


def read_state_dict(path: Path, device="cpu", allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """All tensors of a ``.safetensors`` file (or, if allowed, a pickle) on ``device``."""
    if not path.is_file():
        raise LotusError(f"checkpoint file {str(path)!r} does not exist")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise LotusError(
                f"{path.name!r} is a pickle file ({path.suffix}), which can run code when loaded;"
                " use a .safetensors file, or pass allow_pickle=True (CLI: --allow-pickle) if you trust it"
            )
        try:  # weights_only: even an allowed pickle may hold tensors only, never code to run
            loaded = torch.load(path, map_location=device, weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
            raise LotusError(
                f"{str(path)!r} is not a plain weights pickle (it holds more than tensors, or is corrupt);"
                f" it was not loaded: {str(error).splitlines()[0]}"
            ) from None
        return dict(loaded.get("state_dict", loaded))
    if path.suffix.lower() != ".safetensors":
        raise LotusError(f"{path.name!r}: unsupported checkpoint type {path.suffix!r}; expected .safetensors")
    try:
        return load_file(path, device=str(device))
    except (SafetensorError, OSError, json.JSONDecodeError) as error:
        raise LotusError(
            f"{str(path)!r} is not a readable safetensors file (corrupt or truncated download?): {error}"
        ) from None


def read_safetensors_keys(path: Path) -> list[str] | None:
    """The tensor names in a safetensors header without reading the tensors; None if unreadable."""
    try:
        with path.open("rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 0 < size < 100_000_000:
                return None
            header = json.loads(f.read(size))
    except (OSError, ValueError):
        return None
    return [k for k in header if k != "__metadata__"] if isinstance(header, dict) else None


def holds_lotus_unet(path: Path) -> bool:
    """Whether a safetensors file holds a Lotus UNet (a task-switch embedding and a conv_in, under
    diffusers or LDM names), read from its header alone."""
    keys = read_safetensors_keys(Path(path)) or []
    return any(k.endswith(TASK_SWITCH_KEYS) for k in keys) and any(k.endswith(CONV_IN_KEYS) for k in keys)


def unet_to_diffusers_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Lotus UNet state dict with diffusers key names, whether it came with them or LDM ones."""
    if any(k.startswith(LDM_UNET_PREFIX) for k in sd):
        sd = {k: v for k, v in sd.items() if k.startswith(LDM_UNET_PREFIX)}
    elif any(k.startswith("input_blocks.") for k in sd):  # ComfyUI/original-SD names, no prefix
        sd = {LDM_UNET_PREFIX + k: v for k, v in sd.items()}
    else:
        return sd
    keys = [k.removeprefix(LDM_UNET_PREFIX) for k in sd]
    if TASK_SWITCH_KEYS[1] not in keys:
        raise LotusError(NO_TASK_SWITCH)
    levels = 1 + sum(k.startswith("input_blocks.") and k.endswith(".0.op.weight") for k in keys)
    input_blocks = len({k.split(".")[1] for k in keys if k.startswith("input_blocks.")})
    layers_per_block = (input_blocks - 1 - (levels - 1)) // levels
    config = {"layers_per_block": layers_per_block, "class_embed_type": "projection"}
    return convert_ldm_unet_checkpoint(sd, config)


def vae_to_diffusers_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An SD VAE state dict with diffusers key names, whether it came with them or original ones."""
    for prefix in ("first_stage_model.", "vae."):
        if any(k.startswith(prefix) for k in sd):
            sd = {k.removeprefix(prefix): v for k, v in sd.items() if k.startswith(prefix)}
    if not any(k.startswith("encoder.down.") for k in sd):
        return sd
    levels = len({k.split(".")[2] for k in sd if k.startswith("encoder.down.")})
    return convert_ldm_vae_checkpoint(sd, {"down_block_types": [None] * levels, "up_block_types": [None] * levels})
