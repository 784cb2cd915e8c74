"""Building a Lotus2Model: the release's LoRAs become two peft adapters on the user's FLUX transformer."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from diffusers import AutoencoderKL, FluxTransformer2DModel

from ..errors import LotusError, check_choice
from .conditioning import EmptyPromptConditioning, cached_empty_prompt
from .model import CORE_ADAPTER, SHARPENER_ADAPTER, Lotus2Model
from .releases import TASKS, Lotus2Files, fetch_lotus2, files_in
from .weights import Lotus2Lora, read_lcm, read_lora


def load_lotus2(flux_folder: str | Path, task: str = "depth", *, lotus2_dir: str | Path | None = None,
                conditioning: EmptyPromptConditioning | None = None, cache_dir: str | Path | None = None,
                dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> Lotus2Model:
    """Lotus-2 for ``task`` on a diffusers FLUX.1-dev folder (transformer/, vae/, the text encoders).

    Args:
        lotus2_dir: a folder holding the release's three files for ``task``; default: fetched from
            ``jingheya/Lotus-2`` into the Hugging Face cache (offline when already there).
        conditioning: the empty-prompt conditioning; default: computed once with the folder's text
            encoders and cached in ``cache_dir`` (default: ``<flux_folder>/lotus2_cache``).
    """
    check_choice("task", task, TASKS)
    flux_folder = Path(flux_folder)
    for sub in ("transformer", "vae"):
        if not (flux_folder / sub / "config.json").is_file():
            raise LotusError(f"{str(flux_folder)!r} is not a diffusers FLUX folder: {sub}/config.json is missing")
    files = files_in(lotus2_dir, task) if lotus2_dir is not None else fetch_lotus2(task)
    _require_files(files, task)  # before minutes of loading
    if conditioning is None:
        conditioning = cached_empty_prompt(flux_folder, cache_dir or flux_folder / "lotus2_cache")
    transformer = FluxTransformer2DModel.from_pretrained(flux_folder, subfolder="transformer", torch_dtype=dtype)
    vae = AutoencoderKL.from_pretrained(flux_folder, subfolder="vae", torch_dtype=dtype)
    return build_lotus2(transformer.to(device), vae.to(device), files, conditioning, task)


def build_lotus2(transformer: FluxTransformer2DModel, vae: AutoencoderKL, files: Lotus2Files,
                 conditioning: EmptyPromptConditioning, task: str, name: str | None = None) -> Lotus2Model:
    """A Lotus2Model from networks already in memory; ``transformer`` gains the two adapters in place."""
    check_choice("task", task, TASKS)
    _require_files(files, task)
    loras = read_lora(files.core_predictor), read_lora(files.detail_sharpener)
    for lora in loras:
        lora.require_task(task)
    for lora, adapter in zip(loras, (CORE_ADAPTER, SHARPENER_ADAPTER)):
        add_lora_adapter(transformer, lora, adapter)
    lcm = read_lcm(files.lcm, transformer.config.in_channels // 4).to(transformer.device, transformer.dtype)
    transformer.eval().requires_grad_(False)
    vae.eval().requires_grad_(False)
    return Lotus2Model(transformer, vae, lcm, conditioning, task, name or f"lotus-2-{task}")


def add_lora_adapter(transformer: FluxTransformer2DModel, lora: Lotus2Lora, adapter_name: str) -> None:
    """Add ``lora`` as peft adapter ``adapter_name`` (scale 1: ``lora_alpha`` = rank, as the release)."""
    from diffusers.utils import convert_unet_state_dict_to_peft

    try:
        from peft import LoraConfig, set_peft_model_state_dict
    except ImportError:
        raise LotusError("Lotus-2 in lotus_core runs its LoRAs as peft adapters: install peft"
                         " (pip install peft); ComfyUI's nodes do not need it") from None

    _check_fits(transformer, lora)
    config = LoraConfig(r=lora.rank, lora_alpha=lora.rank, target_modules=list(lora.modules))
    with warnings.catch_warnings():  # peft warns of a second adapter; two adapters are the design
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        transformer.add_adapter(config, adapter_name=adapter_name)
    state_dict = convert_unet_state_dict_to_peft(lora.transformer_state_dict())
    result = set_peft_model_state_dict(transformer, state_dict, adapter_name=adapter_name)
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise LotusError(f"{lora.source}: {len(unexpected)} LoRA tensors found no place, e.g. {unexpected[0]!r}")


def _require_files(files: Lotus2Files, task: str) -> None:
    missing = [str(path) for path in (files.core_predictor, files.detail_sharpener, files.lcm) if not path.is_file()]
    if missing:
        raise LotusError(f"Lotus-2 {task} needs these files, which do not exist: {', '.join(missing)}")


def _check_fits(transformer: torch.nn.Module, lora: Lotus2Lora) -> None:
    """Refuse a LoRA made for another network before peft half-applies it."""
    layers = dict(transformer.named_modules())
    for module in lora.modules:
        layer = getattr(layers.get(module), "base_layer", layers.get(module))  # the plain layer under an adapter
        down = lora.state_dict[f"transformer.{module}.lora_A.weight"]
        up = lora.state_dict[f"transformer.{module}.lora_B.weight"]
        if not isinstance(layer, torch.nn.Linear):
            raise LotusError(
                f"{lora.source} does not fit this transformer: it adapts {module!r}, which this"
                f" {type(transformer).__name__} lacks; Lotus-2 LoRAs are made for FLUX.1-dev"
            )
        if down.shape[1] != layer.in_features or up.shape[0] != layer.out_features:
            raise LotusError(
                f"{lora.source} does not fit this transformer: {module!r} is {layer.in_features} -> "
                f"{layer.out_features} here but {down.shape[1]} -> {up.shape[0]} in the LoRA; Lotus-2 LoRAs"
                " are made for FLUX.1-dev"
            )
