"""A loaded Lotus-2 model: the FLUX transformer with its two adapters, the LCM, the FLUX VAE, the conditioning."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL, FluxTransformer2DModel

from ..errors import LotusError, check_choice
from ..loading.variants import Quantity
from .conditioning import EmptyPromptConditioning
from .releases import TASK_QUANTITY, TASKS
from .weights import LocalContinuityModule

CORE_ADAPTER = "core_predictor"
SHARPENER_ADAPTER = "detail_sharpener"


@dataclass
class Lotus2Model:
    """Everything ``predict_lotus2`` runs.

    ``transformer`` is a diffusers ``FluxTransformer2DModel`` holding the peft adapters
    ``"core_predictor"`` and ``"detail_sharpener"`` (see ``load.add_lora_adapter``); ``vae`` is the
    FLUX VAE (16 latent channels, with a ``shift_factor``).
    """

    transformer: FluxTransformer2DModel
    vae: AutoencoderKL
    lcm: LocalContinuityModule
    conditioning: EmptyPromptConditioning
    task: str
    name: str = "lotus-2"

    def __post_init__(self) -> None:
        check_choice("task", self.task, TASKS)
        if not isinstance(self.transformer, FluxTransformer2DModel):
            raise LotusError("transformer must be a diffusers FluxTransformer2DModel,"
                             f" got {type(self.transformer).__name__}")
        if not isinstance(self.vae, AutoencoderKL):
            raise LotusError(f"vae must be a diffusers AutoencoderKL, got {type(self.vae).__name__}")
        config = self.transformer.config
        if self.vae.config.latent_channels * 4 != config.in_channels or self.vae.config.shift_factor is None:
            raise LotusError(
                f"vae is not the FLUX VAE: it has {self.vae.config.latent_channels} latent channels and shift_factor"
                f" {self.vae.config.shift_factor}; the transformer needs {config.in_channels // 4} and a shift factor"
            )
        if not config.guidance_embeds:
            raise LotusError("transformer has no guidance embedding: Lotus-2 is made for FLUX.1-dev"
                             " (guidance-distilled)")
        embeds, pooled = self.conditioning.prompt_embeds, self.conditioning.pooled_prompt_embeds
        if embeds.shape[-1] != config.joint_attention_dim or pooled.shape[-1] != config.pooled_projection_dim:
            raise LotusError(
                f"the conditioning ([1, L, {embeds.shape[-1]}] and [1, {pooled.shape[-1]}]) does not fit this"
                f" transformer ([1, L, {config.joint_attention_dim}] and [1, {config.pooled_projection_dim}]):"
                " encode the empty prompt with this FLUX model's own text encoders"
            )
        adapters = set(getattr(self.transformer, "peft_config", {}) or {})
        if not {CORE_ADAPTER, SHARPENER_ADAPTER} <= adapters:
            raise LotusError(
                f"transformer must hold the adapters {CORE_ADAPTER!r} and {SHARPENER_ADAPTER!r}, has"
                f" {sorted(adapters)}: load it with lotus_core.load_lotus2 or build_lotus2"
            )

    @property
    def quantity(self) -> Quantity:
        return TASK_QUANTITY[self.task]

    @property
    def device(self) -> torch.device:
        return self.transformer.device

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype
