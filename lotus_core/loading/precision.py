"""The one precision policy: which dtypes the UNet and the VAE get on the device they run on."""

from __future__ import annotations

import torch

from ..errors import LotusError, check_choice

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PRECISIONS = ("auto", *DTYPES)


def choose_dtypes(precision: str | torch.dtype, device: torch.device | str) -> tuple[torch.dtype, torch.dtype]:
    """(UNet dtype, VAE dtype) for networks that will run on ``device`` (``resolve_dtype`` and
    ``vae_dtype_for``), refusing fp16 on a CPU: CPUs have no fast fp16 kernels (hundreds of times
    slower than fp32)."""
    device = torch.device(device)
    unet = resolve_dtype("precision", precision, device)
    if unet == torch.float16 and device.type == "cpu":
        raise LotusError("precision='fp16' on a CPU runs hundreds of times slower than fp32 (CPUs have no fast"
                         " fp16 kernels); choose 'bf16' or 'fp32', or 'auto'")
    return unet, vae_dtype_for(unet, device)


def resolve_dtype(argument: str, value: str | torch.dtype, device: torch.device) -> torch.dtype:
    """A torch dtype or one of ``PRECISIONS``; "auto": bf16 on GPUs that have it, fp16 on other GPUs,
    fp32 on a CPU."""
    if isinstance(value, torch.dtype):
        check_choice(argument, value, DTYPES.values())
        return value
    check_choice(argument, value, PRECISIONS)
    if value != "auto":
        return DTYPES[value]
    if torch.device(device).type == "cpu":
        return torch.float32
    return torch.bfloat16 if _has_bf16(device) else torch.float16


def vae_dtype_for(unet_dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The SD VAE overflows in fp16 (NaN or black patches at high resolution): with an fp16 UNet it
    gets bf16 where the device has it, else fp32; otherwise the UNet's dtype."""
    if unet_dtype != torch.float16:
        return unet_dtype
    return torch.bfloat16 if _has_bf16(device) else torch.float32


def native_bf16() -> bool:
    """Whether this machine's CPU computes bf16 in hardware (AVX512_BF16 or AMX). Elsewhere bf16 is
    emulated, slower than fp32, so the CPU runtime backend offers bf16 only where this holds; fp32
    stays the CPU default (bf16 moved a depth map by 3.5e-2 on random full-size weights)."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def _has_bf16(device: torch.device | str) -> bool:
    return torch.device(device).type == "cuda" and torch.cuda.is_bf16_supported()
