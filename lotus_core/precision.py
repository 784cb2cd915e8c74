"""The one precision policy: which dtypes the UNet and the VAE get on a device."""

from __future__ import annotations

import torch

from .errors import LotusError, check_choice

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PRECISIONS = ("auto", *DTYPES)


def choose_dtypes(precision: str | torch.dtype, device: torch.device | str,
                  vae_precision: str | torch.dtype | None = None) -> tuple[torch.dtype, torch.dtype]:
    """(UNet dtype, VAE dtype) for networks that will run on ``device``.

    ``precision`` "auto": bf16 on GPUs that have it, else fp16 on a GPU, fp32 on a CPU. fp16 on a
    CPU is refused: CPUs have no fast fp16 kernels (hundreds of times slower than fp32). The SD VAE
    overflows in fp16 (NaN or black patches at high resolution), so unless ``vae_precision`` says
    otherwise it never gets fp16: bf16 where the device has it, else fp32 (fp32 stays fp32).
    """
    device = torch.device(device)
    unet = _dtype("precision", precision, device)
    if unet == torch.float16 and device.type == "cpu":
        raise LotusError("precision 'fp16' on a CPU runs hundreds of times slower than fp32 (CPUs have no fast"
                         " fp16 kernels); choose 'bf16' or 'fp32', or 'auto'")
    if vae_precision is not None:
        return unet, _dtype("vae_precision", vae_precision, device)
    if unet != torch.float16:
        return unet, unet
    return unet, torch.bfloat16 if _has_bf16(device) else torch.float32


def _dtype(argument: str, value, device: torch.device) -> torch.dtype:
    if isinstance(value, torch.dtype):
        check_choice(argument, value, DTYPES.values())
        return value
    check_choice(argument, value, PRECISIONS)
    if value != "auto":
        return DTYPES[value]
    if device.type == "cpu":
        return torch.float32
    return torch.bfloat16 if _has_bf16(device) else torch.float16


def _has_bf16(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_bf16_supported()
