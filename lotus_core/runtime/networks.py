"""Converted networks in the shape of the diffusers modules they replace, so ``predict`` runs them unchanged.

The VAE keeps its torch ``quant_conv`` / ``post_quant_conv`` (two 1x1 convolutions) and gets a
converted ``encoder`` and ``decoder``; the UNet is replaced whole by ``ConvertedUNet``, which takes
the call ``predict`` makes. Each holds no torch weights: the converted program is the only copy.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

Runner = Callable[..., torch.Tensor]


class UNetArguments(torch.nn.Module):
    """The UNet as a function of four tensors, for tracing. The timestep comes in as its sinusoidal
    features [B, 320], computed in fp32 outside (``time_features``): inside a bf16 program 999 rounds
    to 1000 and the sines of large arguments go wrong (measured: 3x torch bf16's error)."""

    def __init__(self, unet: UNet2DConditionModel) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample, time_features, encoder_hidden_states, class_labels) -> torch.Tensor:
        self.unet.get_time_embed = lambda sample, timestep: timestep.to(sample.dtype)  # the features, as given
        try:
            return self.unet(sample, time_features, encoder_hidden_states=encoder_hidden_states,
                             class_labels=class_labels, return_dict=False)[0]
        finally:
            del self.unet.get_time_embed


def time_features(time_proj: torch.nn.Module, timestep: torch.Tensor | int, batch: int) -> torch.Tensor:
    """The UNet's sinusoidal timestep features [batch, channels] in fp32, as its ``get_time_embed`` makes them."""
    return time_proj(torch.as_tensor(timestep).reshape(-1).expand(batch)).float()


class _Converted(torch.nn.Module):
    """A converted network: torch tensors in and out, in the dtype the torch module had (it runs on the CPU)."""

    def __init__(self, run: Runner, dtype: torch.dtype, backend: str) -> None:
        super().__init__()
        self.run = run
        self.dtype = dtype
        self.backend = backend

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def extra_repr(self) -> str:
        return f"backend={self.backend}, dtype={self.dtype}"


class ConvertedEncoder(_Converted):
    """Stands in for ``AutoencoderKL.encoder``."""

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        return self.run(sample).to(sample.dtype)


class ConvertedDecoder(_Converted):
    """Stands in for ``AutoencoderKL.decoder`` (the SD VAE has no ``latent_embeds``)."""

    def forward(self, sample: torch.Tensor, latent_embeds: torch.Tensor | None = None) -> torch.Tensor:
        if latent_embeds is not None:
            raise NotImplementedError("the converted VAE decoder takes no latent_embeds (a spatial-norm VAE)")
        return self.run(sample).to(sample.dtype)


class ConvertedUNet(_Converted):
    """Stands in for the Lotus ``UNet2DConditionModel``: same ``config``, same call."""

    def __init__(self, run: Runner, dtype: torch.dtype, backend: str, unet: UNet2DConditionModel) -> None:
        super().__init__(run, dtype, backend)
        self.config = unet.config
        self.time_proj = unet.time_proj  # no weights: the sinusoids, computed here in fp32

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | int, encoder_hidden_states: torch.Tensor,
                class_labels: torch.Tensor | None = None, return_dict: bool = True):
        features = time_features(self.time_proj, timestep, sample.shape[0])
        output = self.run(sample, features, encoder_hidden_states, class_labels).to(sample.dtype)
        return UNet2DConditionOutput(sample=output) if return_dict else (output,)
