"""Lotus-2 prediction: one core-predictor step, the LCM, then a noise-free flow of detail-sharpener steps.

The steps of the official pipeline (``shared/reference/lotus2_reference.md``), for images in [0, 1]:
resize (long edge capped, edges truncated to multiples of 16), encode with a posterior sample, pack
into FLUX's 2x2 patch sequence, run the core adapter once at timestep 1/1000, unpack, apply the LCM,
run ``sharpener_steps`` Euler steps of the sharpener adapter on ``linspace(1, 1/N, N)`` shifted by
``mu`` (scheduler of 10 train timesteps), decode, resize back. Depth is the channel mean and is
disparity-like (near = high).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..depthmap import DepthMap
from ..errors import LotusError
from ..loading.variants import Quantity
from ..prediction.images import check_images
from ..progress import InterruptCheck, ProgressCallback, Steps, interruptible, part
from .model import CORE_ADAPTER, SHARPENER_ADAPTER, Lotus2Model

DEFAULT_MAX_EDGE = 1024  # infer.py and app.py cap the long edge at 1024 px and never upscale
DEFAULT_SHARPENER_STEPS = 10  # infer.py, app.py and eval.py
GUIDANCE = 3.5  # FLUX.1-dev's guidance-distilled input, as the official pipeline passes it
CORE_TIMESTEP = 1 / 1000  # timestep_core_predictor = 1, divided by 1000 as FLUX pipelines do
SHARPENER_TRAIN_TIMESTEPS = 10  # the sharpener's scheduler: FLUX.1-dev's, with num_train_timesteps=10
PIXELS_PER_TOKEN = 16  # the VAE's 8x downsampling times FLUX's 2x2 patches
# FLUX.1-dev's scheduler config: the resolution-dependent shift of the sigmas (diffusers' calculate_shift).
BASE_SEQ_LEN, MAX_SEQ_LEN, BASE_SHIFT, MAX_SHIFT = 256, 4096, 0.5, 1.15


def lotus2_processing_size(height: int, width: int, max_edge: int = DEFAULT_MAX_EDGE) -> list[tuple[int, int]]:
    """The sizes the official script resizes an image to, in order (empty: processed as it is).

    First the long edge is capped at ``max_edge`` (0 = no cap, as eval.py), then the short edge
    goes down to a multiple of 16 and both edges are truncated to multiples of 16 (a slight aspect change).
    """
    if not isinstance(max_edge, int) or max_edge < 0:
        raise LotusError(f"processing_resolution={max_edge!r} must be an integer >= 0 (0 = no cap on the long edge)")
    sizes = []
    if max_edge and max(height, width) > max_edge:
        scale = max_edge / max(height, width)
        height, width = int(height * scale), int(width * scale)
        sizes.append((height, width))
    short = min(height, width)
    if short < PIXELS_PER_TOKEN:
        raise LotusError(f"an image processed at {width}x{height} px is too small: Lotus-2 needs both edges >= 16 px")
    scale = (short // PIXELS_PER_TOKEN * PIXELS_PER_TOKEN) / short
    size = (int(height * scale) // PIXELS_PER_TOKEN * PIXELS_PER_TOKEN,
            int(width * scale) // PIXELS_PER_TOKEN * PIXELS_PER_TOKEN)
    if size != (height, width):
        sizes.append(size)
    return sizes


def lotus2_resize(images: torch.Tensor, max_edge: int = DEFAULT_MAX_EDGE) -> torch.Tensor:
    """[B, C, H, W] resized as the official script does (``lotus2_processing_size``: bilinear, no antialias)."""
    for size in lotus2_processing_size(*images.shape[-2:], max_edge):
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    return images


def sharpener_sigmas(steps: int, tokens: int) -> torch.Tensor:
    """The sharpener's ``steps + 1`` sigmas, from the shifted ``linspace(1, 1/N, N)`` down to 0."""
    mu = BASE_SHIFT + (MAX_SHIFT - BASE_SHIFT) * (tokens - BASE_SEQ_LEN) / (MAX_SEQ_LEN - BASE_SEQ_LEN)
    sigmas = torch.linspace(1.0, 1.0 / steps, steps, dtype=torch.float64).float()
    shifted = math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1))
    return torch.cat([shifted.float(), torch.zeros(1)])


@torch.no_grad()
def predict_lotus2(model: Lotus2Model, images: torch.Tensor, *, sharpener_steps: int = DEFAULT_SHARPENER_STEPS,
                   seed: int | None = 0, processing_resolution: int = DEFAULT_MAX_EDGE, guidance: float = GUIDANCE,
                   callback: ProgressCallback | None = None,
                   check_interrupt: InterruptCheck | None = None) -> DepthMap:
    """Depth (as disparity: near = high) or normals of ``images`` [B, 3, H, W] in [0, 1] at their own size;
    the DepthMap's ``processing_resolution`` is the long edge the model saw.

    Args:
        sharpener_steps: detail-sharpener steps after the core step (0 = core predictor and LCM only).
        seed: seeds the VAE's posterior sample of each image (None: unseeded), so an image gives the same
            prediction whatever batch it comes in.
        processing_resolution: cap on the processed long edge (0 = none).
        callback: told ``(done, total)`` after each transformer pass; ``check_interrupt`` is called
            before every layer and may raise to stop.
    """
    images = check_images(images)
    _check_steps(sharpener_steps)
    batch, height, width = images.shape[0], *images.shape[-2:]
    values = []
    with interruptible((model.transformer, model.vae, model.lcm), check_interrupt):
        for index in range(batch):  # one image at a time, as the official script: FLUX passes are large
            pixels = lotus2_resize(images[index:index + 1].to(model.vae.device, model.vae.dtype) * 2 - 1,
                                   processing_resolution)
            posterior = model.vae.encode(pixels).latent_dist
            latent = posterior_sample(posterior.mean, posterior.std, seed)
            latent = (latent - model.vae.config.shift_factor) * model.vae.config.scaling_factor
            flow = _Flow(model, latent.shape, guidance)
            latent = lotus2_flow(flow.velocity, model.lcm, latent, sharpener_steps, part(callback, index, batch))
            values.append(lotus2_values(_decode(model, latent), (height, width), model.quantity))
    return DepthMap(torch.cat(values), model.quantity, model=model.name, processing_resolution=max(pixels.shape[-2:]))


Velocity = Callable[[torch.Tensor, str, float], torch.Tensor]
"""``velocity(latent, adapter, timestep)``: one transformer pass with adapter ``CORE_ADAPTER`` or
``SHARPENER_ADAPTER`` on the unpacked latent [B, C, h, w] at ``timestep`` in [0, 1]; returns [B, C, h, w]."""


def lotus2_flow(velocity: Velocity, lcm: torch.nn.Module, latent: torch.Tensor, sharpener_steps: int,
                callback: ProgressCallback | None = None) -> torch.Tensor:
    """The official steps 5-6 on the scaled, shifted latent of the image: the core pass and the LCM, then
    ``sharpener_steps`` Euler steps of the noise-free flow. Shared by this core and the ComfyUI nodes,
    which bring their own ``velocity`` (diffusers + peft here, ComfyUI's patched FLUX there)."""
    _check_steps(sharpener_steps)
    steps = Steps(callback, 1 + sharpener_steps)
    latent = lcm(velocity(latent, CORE_ADAPTER, CORE_TIMESTEP))
    steps.advance()
    if not sharpener_steps:
        return latent
    sigmas = sharpener_sigmas(sharpener_steps, (latent.shape[-2] // 2) * (latent.shape[-1] // 2))
    for sigma, next_sigma in zip(sigmas[:-1], sigmas[1:]):
        flow = velocity(latent, SHARPENER_ADAPTER, float(sigma) * SHARPENER_TRAIN_TIMESTEPS / 1000)
        # the Euler step in fp32, back in the transformer's dtype (as diffusers' scheduler steps)
        latent = (latent.float() + (next_sigma - sigma) * flow.float()).to(flow.dtype)
        steps.advance()
    return latent


def posterior_sample(mean: torch.Tensor, std: torch.Tensor, seed: int | None) -> torch.Tensor:
    """A sample of the VAE's posterior, as the official pipeline draws it. The noise is drawn on the CPU
    from ``seed``, so a seed gives the same latent on every device and in every host (None: unseeded)."""
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
    return mean + std * noise.to(mean.device)


def lotus2_values(decoded: torch.Tensor, size: tuple[int, int], quantity: Quantity) -> torch.Tensor:
    """The prediction from the decoded image [B, 3, h, w] in [0, 1] at the input ``size``: the channel
    mean (depth) or unit vectors (normals, as Lotus 1's)."""
    decoded = F.interpolate(decoded.float(), size=size, mode="bilinear", align_corners=False)
    if quantity is Quantity.NORMAL:
        return F.normalize(decoded * 2 - 1, dim=1)
    return decoded.mean(dim=1, keepdim=True)


def _check_steps(sharpener_steps) -> None:
    if not isinstance(sharpener_steps, int) or isinstance(sharpener_steps, bool) or sharpener_steps < 0:
        raise LotusError(f"sharpener_steps={sharpener_steps!r} must be an integer >= 0 (0 = core predictor only)")


class _Flow:
    """The transformer's inputs that stay fixed over one prediction: conditioning, positions, guidance."""

    def __init__(self, model: Lotus2Model, latent_shape: torch.Size, guidance: float) -> None:
        batch, _, height, width = latent_shape
        device, dtype = model.device, model.dtype
        self.transformer = model.transformer
        self.tokens = (height // 2) * (width // 2)
        self.embeds = model.conditioning.prompt_embeds.to(device, dtype).expand(batch, -1, -1)
        self.pooled = model.conditioning.pooled_prompt_embeds.to(device, dtype).expand(batch, -1)
        self.text_ids = torch.zeros(self.embeds.shape[1], 3, device=device, dtype=dtype)
        rows, cols = torch.meshgrid(torch.arange(height // 2), torch.arange(width // 2), indexing="ij")
        self.image_ids = torch.stack([torch.zeros_like(rows), rows, cols], -1).reshape(-1, 3).to(device, dtype)
        self.guidance = torch.full((batch,), guidance, device=device, dtype=torch.float32)
        self.batch, self.dtype = batch, dtype

    def velocity(self, latent: torch.Tensor, adapter: str, timestep: float) -> torch.Tensor:
        """One transformer pass with ``adapter`` on the unpacked latent [B, C, h, w]; its output unpacked."""
        self.transformer.set_adapter(adapter)
        out = self.transformer(
            hidden_states=_pack(latent.to(self.dtype)),
            timestep=torch.full((self.batch,), timestep, device=latent.device, dtype=self.dtype),
            guidance=self.guidance, pooled_projections=self.pooled, encoder_hidden_states=self.embeds,
            txt_ids=self.text_ids, img_ids=self.image_ids, return_dict=False,
        )[0]
        return _unpack(out, latent.shape)


def _decode(model: Lotus2Model, latent: torch.Tensor) -> torch.Tensor:
    config = model.vae.config
    latent = latent.to(model.vae.dtype) / config.scaling_factor + config.shift_factor
    return (model.vae.decode(latent).sample / 2 + 0.5).clamp(0, 1)


def _pack(latent: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> [B, h/2 * w/2, 4C]: FLUX's 2x2 patches as a token sequence."""
    batch, channels, height, width = latent.shape
    patches = latent.reshape(batch, channels, height // 2, 2, width // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(batch, (height // 2) * (width // 2), channels * 4)


def _unpack(tokens: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    batch, channels, height, width = shape
    patches = tokens.reshape(batch, height // 2, width // 2, channels, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return patches.reshape(batch, channels, height, width)
