"""``load_model``: every published Lotus checkpoint format into a ``LotusModel``."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from ..errors import LotusError, check_choice
from ..runtime import BACKENDS
from .architecture import build_with_weights, unet_config_from_state_dict, vae_config_from_state_dict
from .checkpoint import read_state_dict, unet_to_diffusers_keys, vae_to_diffusers_keys
from .hub import ProgressCallback, fetch
from .model import LotusModel
from .precision import resolve_dtype, vae_dtype_for
from .variants import (
    KNOWN_CHECKPOINTS,
    Quantity,
    coerce_quantity,
    identify_by_hash,
    identify_by_name,
    known_checkpoint,
)

WEIGHT_NAMES = ("diffusion_pytorch_model{}.safetensors", "diffusion_pytorch_model{}.bin")
# model_index.json class names that only the v2 disparity releases use
DISPARITY_PIPELINES = {"DirectDiffusionY0Pipeline", "DirectRegressionPipeline"}


def load_model(
    checkpoint: str | Path,
    vae: str | Path | None = None,
    *,
    quantity: Quantity | str | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | str = torch.float32,
    vae_dtype: torch.dtype | str | None = None,
    channels_last: bool | None = None,
    allow_pickle: bool = False,
    download_progress: ProgressCallback | None = None,
    backend: str = "eager",
) -> LotusModel:
    """Load a Lotus checkpoint straight to ``device`` and ``dtype``.

    Args:
        checkpoint: a single-file UNet (``.safetensors``, diffusers or ComfyUI/LDM key names), a
            diffusers folder (``model_index.json``, ``unet/``, ``vae/``), or the name of a published
            release (``KNOWN_CHECKPOINTS``, e.g. "lotus-depth-g-v2-1-disparity") that is not an
            existing path: it is taken from the Hugging Face cache, downloaded first if needed
            (``lotus_core.fetch``).
        vae: an SD1.x/SD2 VAE file or ``vae/`` folder; defaults to the checkpoint folder's ``vae/``.
        quantity: "depth", "disparity" or "normal"; needed only for files not in the table of
            known releases (``lotus_core.KNOWN_CHECKPOINTS``).
        dtype, vae_dtype: weights precision: a torch dtype, "fp32", "fp16", "bf16" or "auto" (for
            ``device``: ``precision.resolve_dtype``). ``vae_dtype`` defaults to ``dtype``, but never
            fp16 unless asked (the SD VAE overflows in it: ``precision.vae_dtype_for``).
        channels_last: keep the VAE in channels-last memory format; None = on a CPU only, where its
            full-resolution convolutions run 13-16% faster (on an H100 it was 45% slower: GroupNorm).
            The result moves by under 1e-4 (another summation order); False reproduces the reference
            bit for bit. The UNet stays as it is: measured slower in channels-last on a CPU.
        allow_pickle: accept ``.ckpt``/``.pt``/``.bin`` pickles (loaded with ``weights_only``).
        download_progress: called with (bytes done, bytes total) while a release is downloaded.
        backend: what runs the networks: "eager" (torch, the reference bit for bit), "openvino"
            (CPU, the optional extra ``lotus-depth[cpu-fast]``: converted once and cached on disk,
            ``LotusModel.use_backend``) or "auto" (OpenVINO where it can run, else eager; logged).
    """
    check_choice("backend", backend, BACKENDS)
    path = Path(checkpoint).expanduser()
    device = torch.device(device)
    dtype = resolve_dtype("dtype", dtype, device)
    vae_dtype = vae_dtype_for(dtype, device) if vae_dtype is None else resolve_dtype("vae_dtype", vae_dtype, device)
    release = None
    if not path.exists():
        release = known_checkpoint(str(checkpoint))
        if release is None:
            raise LotusError(f"checkpoint {str(path)!r} does not exist{_known_names_hint(path)}")
        path = fetch(release, progress=download_progress)
    if path.is_dir():
        unet_file = _component_weights(path / "unet", dtype, allow_pickle)
        vae = path / "vae" if vae is None else vae
    else:
        unet_file = path
    if vae is None:
        raise LotusError(
            f"checkpoint {path.name!r} holds only the UNet: pass vae= an SD1.x/SD2 VAE file"
            " (e.g. vae-ft-mse-840000-ema-pruned.safetensors) or a diffusers vae/ folder"
        )

    unet_sd = unet_to_diffusers_keys(read_state_dict(unet_file, device, allow_pickle))
    unet = build_with_weights(UNet2DConditionModel, unet_config_from_state_dict(unet_sd), unet_sd, device, dtype)
    generative = unet.config.in_channels == 8
    resolved = coerce_quantity(quantity) if quantity is not None else _known_quantity(path, generative)
    name = release.name if release is not None else path.name.removesuffix(".safetensors")
    vae = _load_vae(Path(vae).expanduser(), device, vae_dtype, allow_pickle)
    if channels_last or (channels_last is None and device.type == "cpu"):
        vae.to(memory_format=torch.channels_last)
    return LotusModel(unet, vae, resolved, name=name).use_backend(backend)


def _known_names_hint(path: Path) -> str:
    """For a missing checkpoint: where a known single file comes from, or the names that download."""
    known = identify_by_name(path)
    single = next((f for f in known.single_files if f.filename.lower() == path.name.lower()), None) if known else None
    if single is not None:
        return (f". It is a ComfyUI single file (UNet only, needs vae=) from {single.url}; or pass the name"
                f" {known.name!r} to download the complete diffusers folder")
    return "; known releases, downloaded on first use: " + ", ".join(k.name for k in KNOWN_CHECKPOINTS)


def _load_vae(path: Path, device, dtype, allow_pickle) -> AutoencoderKL:
    config_overrides = {}
    if path.is_dir():
        config_file = path / "config.json"
        if config_file.is_file():
            config_overrides["scaling_factor"] = json.loads(config_file.read_text())["scaling_factor"]
        path = _component_weights(path, dtype, allow_pickle)
    sd = vae_to_diffusers_keys(read_state_dict(path, device, allow_pickle))
    try:
        config = {**vae_config_from_state_dict(sd), **config_overrides}
    except LotusError as error:
        raise LotusError(f"vae {path.name!r}: {error}") from None
    return build_with_weights(AutoencoderKL, config, sd, device, dtype)


def _component_weights(folder: Path, dtype: torch.dtype, allow_pickle: bool) -> Path:
    """The weights file of a diffusers component folder, the fp16 variant first for half dtypes."""
    variants = (".fp16", "") if dtype in (torch.float16, torch.bfloat16) else ("", ".fp16")
    candidates = [folder / name.format(v) for name in WEIGHT_NAMES for v in variants]
    found = next((c for c in candidates if c.is_file() and (allow_pickle or c.suffix == ".safetensors")), None)
    if found is None:
        raise LotusError(
            f"no weights in {str(folder)!r}: expected diffusion_pytorch_model[.fp16].safetensors"
            " (a diffusers folder needs unet/ and vae/)"
        )
    return found


def _known_quantity(path: Path, generative: bool) -> Quantity:
    known = identify_by_name(path) or (identify_by_hash(path) if path.is_file() else None)
    if known is not None:
        if known.generative != generative:
            raise LotusError(
                f"{path.name!r} is named like {known.name} (Lotus-{'G' if known.generative else 'D'}) but its"
                f" UNet is Lotus-{'G' if generative else 'D'}; if the file was renamed, pass quantity= explicitly"
            )
        return known.quantity
    index = path / "model_index.json"
    if index.is_file() and json.loads(index.read_text()).get("_class_name") in DISPARITY_PIPELINES:
        return Quantity.DISPARITY
    raise LotusError(
        f"cannot tell whether {path.name!r} predicts depth, disparity or normals: it is not one of the"
        " known Lotus releases. Pass quantity='depth', 'disparity' or 'normal'"
        " (CLI: --quantity, ComfyUI loader: the 'quantity' widget)"
    )
