"""Single-step Lotus prediction (lotus_reference.md §1), for batches of any size."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from .architecture import LATENT_CHANNELS
from .errors import LotusError
from .imaging import check_images, check_resize_mode, processing_size, resize
from .model import LotusModel
from .outputs import LotusPrediction

TIMESTEP = 999  # the single step: the last of SD2's 1000 training timesteps
# The annotation task switch [sin(1), sin(0), cos(1), cos(0)]; [0, 1] would ask for reconstruction.
TASK_SWITCH = torch.cat([torch.sin(torch.tensor([1.0, 0.0])), torch.cos(torch.tensor([1.0, 0.0]))])[None]
DEFAULT_PROCESSING_RESOLUTION = 768
ENCODINGS = ("sample", "mean")


@torch.inference_mode()
def predict(
    model: LotusModel,
    images: torch.Tensor,
    *,
    processing_resolution: int = DEFAULT_PROCESSING_RESOLUTION,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    shared_noise: bool = False,
    encode: str = "sample",
    resample: str = "bilinear",
    restore: str = "nearest-exact",
    chunk_size: int = 1,
    autocast: bool = False,
    callback: Callable[[int, int], None] | None = None,
) -> LotusPrediction:
    """Predict depth, disparity or normals for a batch of images.

    Args:
        images: [B, 3, H, W] RGB in [0, 1], any device.
        processing_resolution: long edge the networks see (the reference's 768); 0 = native size.
        seed / generator: where the randomness comes from (Lotus-G noise, VAE posterior sample).
            Neither: torch's global RNG, as the reference without ``--seed``. All random numbers are
            drawn up front for the whole batch, so results do not depend on ``chunk_size``.
        noise: explicit Lotus-G noise, [1 or B, 4, h/8, w/8] at the processing size.
        shared_noise: one draw of the random numbers (Lotus-G noise, VAE sample) for the whole batch,
            so identical frames give identical results (steadier video).
        encode: "sample" draws from the VAE posterior as the reference does; "mean" is deterministic.
        resample: resize to the processing size ("bilinear" as the reference, "bicubic", "nearest-exact").
        restore: resize back to the input size ("nearest-exact" as the reference, or "bilinear").
        chunk_size: images per network pass.
        autocast: run under ``torch.autocast`` like the official scripts (fp16 on CUDA, bf16 on CPU).
        callback: called as ``callback(images_done, images_total)`` after each chunk; it may raise
            to stop early (e.g. on a user interrupt).

    Returns:
        A ``LotusPrediction`` at exactly the input size, on the images' device.
    """
    check_images(images)
    if encode not in ENCODINGS:
        raise LotusError(f"encode={encode!r} is not one of {', '.join(map(repr, ENCODINGS))}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise LotusError(f"chunk_size={chunk_size!r} must be an integer >= 1")
    check_resize_mode("resample", resample)
    check_resize_mode("restore", restore)
    if seed is not None and generator is not None:
        raise LotusError("pass either seed or generator, not both")
    if seed is not None:
        generator = torch.Generator("cpu").manual_seed(seed)

    batch, _, height, width = images.shape
    size = processing_size(height, width, processing_resolution)
    latent_shape = (batch, LATENT_CHANNELS, size[0] // 8, size[1] // 8)
    if model.generative:
        noise = _generative_noise(noise, latent_shape, shared_noise, generator)
    elif noise is not None:
        raise LotusError("noise was given, but Lotus-D checkpoints take no noise (only Lotus-G does)")
    posterior_noise = _draw(latent_shape, shared_noise, generator) if encode == "sample" else None

    unet, vae, device = model.unet, model.vae, model.device
    prompt_embeds = model.prompt_embeds.to(device, unet.dtype)
    task_switch = TASK_SWITCH.to(device, unet.dtype)
    timestep = torch.tensor(TIMESTEP, dtype=torch.long, device=device)
    scaling = vae.config.scaling_factor
    # As the official scripts: no autocast on MPS, the device's default low precision elsewhere.
    precision = torch.autocast(device.type) if autocast and device.type != "mps" else contextlib.nullcontext()

    outputs, latents = [], []
    for start in range(0, batch, chunk_size):
        chunk = slice(start, min(start + chunk_size, batch))
        count = chunk.stop - chunk.start
        pixels = resize(images[chunk].to(device, torch.float32) * 2 - 1, size, resample)  # [b,3,h,w]
        with precision:
            posterior = vae.encode(pixels.to(vae.dtype)).latent_dist
            latent = posterior.mean
            if posterior_noise is not None:
                latent = latent + posterior.std * posterior_noise[chunk].to(device, latent.dtype)
            latent = latent * scaling  # [b,4,h/8,w/8]
            if model.generative:
                latent = torch.cat([latent, noise[chunk].to(device, latent.dtype)], dim=1)  # image first
            x0 = unet(
                latent.to(unet.dtype),
                timestep,
                encoder_hidden_states=prompt_embeds.expand(count, -1, -1),
                class_labels=task_switch.expand(count, -1),
                return_dict=False,
            )[0]  # [b,4,h/8,w/8]: Lotus predicts the clean latent directly
            decoded = vae.decode(x0.to(vae.dtype) / scaling, return_dict=False)[0]  # [b,3,8*(h/8),8*(w/8)]
        decoded = (decoded.float() / 2 + 0.5).clamp(0, 1)
        outputs.append(resize(decoded, (height, width), restore).to(images.device))
        latents.append(x0.float().to(images.device))
        if callback is not None:
            callback(chunk.stop, batch)
    return LotusPrediction(torch.cat(outputs), torch.cat(latents), model.quantity)


def _draw(shape: tuple[int, ...], shared: bool, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal numbers of ``shape``; with ``shared``, one draw repeated over the batch."""
    device = generator.device if generator is not None else "cpu"
    draw_shape = (1, *shape[1:]) if shared else shape
    return torch.randn(draw_shape, generator=generator, device=device, dtype=torch.float32).expand(shape)


def _generative_noise(noise, shape, shared, generator) -> torch.Tensor:
    if noise is None:
        return _draw(shape, shared, generator)
    expected = f"[1 or {shape[0]}, {shape[1]}, {shape[2]}, {shape[3]}]"
    if not isinstance(noise, torch.Tensor) or noise.ndim != 4 or noise.shape[0] not in (1, shape[0]) \
            or tuple(noise.shape[1:]) != shape[1:]:
        got = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
        raise LotusError(f"noise must have shape {expected} for this batch and processing size, got {got}")
    if not torch.isfinite(noise).all():
        raise LotusError("noise contains NaN or Inf values")
    return noise.expand(shape)

