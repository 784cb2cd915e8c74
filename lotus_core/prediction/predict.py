"""Single-step Lotus prediction as the official pipeline (github.com/EnVision-Research/Lotus), any batch size."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..depthmap import DepthMap
from ..errors import LotusError, check_choice
from ..loading.architecture import LATENT_CHANNELS
from ..loading.model import LotusModel
from ..loading.variants import Quantity
from ..progress import InterruptCheck, ProgressCallback, Steps, interruptible
from . import vae_tiling
from .images import check_resize_mode, processing_size, resize, validating_images
from .memory import VAE_SCALE, MemoryPlan, check_fits, memory_budget, plan_memory

log = logging.getLogger(__name__)

TIMESTEP = 999  # the single step: the last of SD2's 1000 training timesteps
# The annotation task switch [sin(1), sin(0), cos(1), cos(0)]; [0, 1] would ask for reconstruction.
TASK_SWITCH = torch.cat([torch.sin(torch.tensor([1.0, 0.0])), torch.cos(torch.tensor([1.0, 0.0]))])[None]
DEFAULT_PROCESSING_RESOLUTION = 768
ENCODINGS = ("sample", "mean")
# exact: pixel (r, c) of the output is the prediction for input pixel (r, c). reference: as the official
# pipeline, whose latent covers only the largest multiple of 8 of each edge, stretched back (a drift).
GEOMETRIES = ("exact", "reference")


@torch.inference_mode()
def run_prediction(
    model: LotusModel,
    images: torch.Tensor,
    *,
    processing_resolution: int = DEFAULT_PROCESSING_RESOLUTION,
    seed: int | Sequence[int] | None = None,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    shared_noise: bool = False,
    latent_blend: float = 0.0,
    encode: str = "sample",
    resample: str = "bilinear",
    restore: str = "nearest-exact",
    geometry: str = "exact",
    chunk_size: int | None = None,
    vae_tile_size: int | None = None,
    memory_limit: int | None = None,
    prepared_size: tuple[int, int] | None = None,
    autocast: bool = False,
    callback: ProgressCallback | None = None,
    check_interrupt: InterruptCheck | None = None,
) -> DepthMap:
    """Predict depth, disparity or normals for a batch of images (``predict`` checks them first).

    Args:
        images: [B, 3, H, W] RGB in [0, 1], any device (resampling overshoot up to 0.5 outside is clamped).
        processing_resolution: long edge the networks see (the reference's 768); 0 = native size.
        seed / generator: where the randomness comes from (Lotus-G noise, VAE posterior sample).
            Neither: torch's global RNG, as the reference without ``--seed``. All random numbers are
            drawn up front for the whole batch, so results do not depend on ``chunk_size``. A list
            of seeds gives each image its own (``[s]`` for one image draws as ``s``), so an image's
            numbers do not depend on the batch it is in.
        noise: explicit Lotus-G noise, [1 or B, 4, ceil(h/8), ceil(w/8)] for the processing size (h, w)
            (geometry="reference": floor).
        shared_noise: one draw of the random numbers (Lotus-G noise, VAE sample) for the whole batch,
            so identical frames give identical results (steadier video).
        latent_blend: Lotus-G: each image's noise becomes ``(1 - blend) * noise + blend * x0`` of
            the image before it (the official video demo's carry-over: 0.1). The batch is then a
            sequence, predicted one image per pass.
        encode: "sample" draws from the VAE posterior as the reference does; "mean" is deterministic.
        resample: resize to the processing size ("bilinear" as the reference, "bicubic", "nearest-exact").
        restore: resize back to the input size ("nearest-exact" as the reference, or "bilinear").
        geometry: "exact" (default) pads the processed image on the bottom and right to a multiple of 8
            (replicating the edge), as the VAE needs, and crops the decoded map back, so that output
            pixel (r, c) belongs to input pixel (r, c). "reference" reproduces the official pipeline
            bit for bit, which drops the last (size mod 8) rows and columns and stretches the map back
            over them: content drifts by up to 7 processed pixels toward the bottom right.
        chunk_size: images per network pass; None = as many as fit in memory (1 on a CPU). With
            ``latent_blend`` only 1 (or None) is possible.
        vae_tile_size: run the VAE on overlapping tiles of this many px (a multiple of 8, >= 256), so
            its memory follows the tile, not the image; 0 = never; None = only when the whole image
            would not fit in ``memory_limit``. Tiles change the result slightly (README: VAE tiles).
        prepared_size: set when ``images`` are already what the networks see (``network_pixels``:
            [-1, 1] at the processing size, e.g. made by the dataset job on CPU workers while
            decoding): the (height, width) of the original images, which the result is restored to.
            The numbers are then the same as for the original images.
        memory_limit: bytes the activations may use; None = 3/4 of the device's available memory.
            A processing size that cannot fit even with the smallest VAE tiles is refused before any
            work. On a CUDA out-of-memory error the chunk is retried with half the images, then with
            half the VAE tile, before giving up.
        autocast: run under ``torch.autocast`` like the official scripts (fp16 on CUDA, bf16 on CPU).
        callback: called as ``callback(steps_done, steps_total)`` after each step (a VAE tile, a
            UNet pass); it may raise to stop early (e.g. on a user interrupt).
        check_interrupt: called before every layer of the networks; it raises to stop (e.g.
            ComfyUI's Cancel), so even one large image stops within a layer.

    Returns:
        A ``DepthMap`` at exactly the input size, on the images' device: the values, what they mean,
        the model's name, the processing resolution and the predicted latent.
    """
    check_choice("encode", encode, ENCODINGS)
    check_choice("geometry", geometry, GEOMETRIES)
    check_resize_mode("resample", resample)
    check_resize_mode("restore", restore)
    if seed is not None and generator is not None:
        raise LotusError("pass either seed or generator, not both")
    batch, _, height, width = images.shape
    seeds = _per_image_seeds(seed, batch)
    if seed is not None and seeds is None:
        generator = torch.Generator("cpu").manual_seed(seed)
    if prepared_size is None:
        size, output_size = processing_size(height, width, processing_resolution), (height, width)
    else:
        size, output_size = (height, width), _checked_size(prepared_size)
    latent_size = tuple(-(-edge // VAE_SCALE) if geometry == "exact" else edge // VAE_SCALE for edge in size)
    latent_shape = (batch, LATENT_CHANNELS, *latent_size)
    if seeds is not None:  # per image: its noise, then its posterior sample, as one image with seed=s
        if noise is not None or shared_noise:
            raise LotusError("a list of seeds gives each image its own random numbers: leave out noise and"
                             " shared_noise, or pass one seed")
        noise, posterior_noise = _draw_per_image(seeds, latent_shape, model.generative, encode == "sample")
    if model.generative:
        noise = _generative_noise(noise, latent_shape, shared_noise, generator)
    elif noise is not None or latent_blend:
        given = "noise was given" if noise is not None else f"latent_blend={latent_blend} blends noise"
        raise LotusError(f"{given}, but Lotus-D checkpoints take no noise (only Lotus-G does)")
    if not (isinstance(latent_blend, int | float) and 0 <= latent_blend < 1):
        raise LotusError(f"latent_blend={latent_blend!r} must be a number in [0, 1)")
    if latent_blend and chunk_size not in (None, 1):
        raise LotusError(f"chunk_size={chunk_size!r} with latent_blend={latent_blend}: blended frames depend on"
                         " the frame before, so they run one per pass; use chunk_size 1 or automatic (0 in ComfyUI,"
                         " None in Python)")
    if seeds is None:
        posterior_noise = _draw(latent_shape, shared_noise, generator) if encode == "sample" else None

    device = model.device
    element_size = model.vae.dtype.itemsize
    budget = memory_budget(device, memory_limit)
    check_fits(output_size, processing_resolution, element_size, budget, vae_tiles=vae_tile_size != 0)
    plan = plan_memory(batch, size, element_size, device, chunk_size=1 if latent_blend else chunk_size,
                       vae_tile_size=vae_tile_size, memory_limit=budget)
    # As the official scripts: no autocast on MPS, the device's default low precision elsewhere.
    precision = torch.autocast(device.type) if autocast and device.type != "mps" else contextlib.nullcontext()
    steps = Steps(callback, _steps(batch, plan, latent_shape[2:]))

    outputs, latents, start = [], [], 0
    while start < batch:
        chunk = slice(start, min(start + plan.chunk_size, batch))
        pixels = images[chunk].to(device, torch.float32)
        if prepared_size is None:
            pixels = network_pixels(pixels, size, resample)  # [b,3,h,w]
        if geometry == "exact":  # to the latent's size: the VAE sees every row and column
            pixels = F.pad(pixels, (0, VAE_SCALE * latent_size[1] - size[1], 0, VAE_SCALE * latent_size[0] - size[0]),
                           mode="replicate")
        chunk_noise = noise[chunk] if model.generative else None
        if latent_blend and latents:
            chunk_noise = (1 - latent_blend) * chunk_noise + latent_blend * latents[-1].to(chunk_noise.device)
        try:
            with precision, interruptible((model.unet, model.vae), check_interrupt):
                decoded, x0 = _networks(model, pixels, chunk_noise,
                                        posterior_noise[chunk] if posterior_noise is not None else None, plan,
                                        steps)
        except torch.OutOfMemoryError as error:
            plan = _after_out_of_memory(plan, error, device, latent_shape[2:])
            steps.replan(_steps(batch - start, plan, latent_shape[2:]))
            continue
        if geometry == "exact":
            decoded = decoded[..., :size[0], :size[1]]  # the padding's rows and columns go
        decoded = (decoded.float() / 2 + 0.5).clamp(0, 1).contiguous()  # a channels-last VAE gives NHWC
        outputs.append(resize(decoded, output_size, restore).to(images.device))
        latents.append(x0.float().to(images.device))
        start = chunk.stop
    return DepthMap(_values(torch.cat(outputs), model.quantity), model.quantity, model.name, processing_resolution,
                    latent=torch.cat(latents))


predict = validating_images(run_prediction)


def network_pixels(images: torch.Tensor, size: tuple[int, int], resample: str = "bilinear") -> torch.Tensor:
    """What the networks see of ``images`` ([B, 3, H, W] in [0, 1]): [-1, 1] at the processing
    ``size``, scaled before resizing as the reference does (the order decides the last bits)."""
    return resize(images.to(dtype=torch.float32) * 2 - 1, size, resample)


def _values(decoded: torch.Tensor, quantity: Quantity) -> torch.Tensor:
    """What the decoded [B, 3, H, W] image in [0, 1] encodes: the channel mean for depth (as the
    reference), unit vectors for normals."""
    if quantity is Quantity.NORMAL:
        return torch.nn.functional.normalize(decoded * 2 - 1, dim=1)
    return decoded.mean(dim=1, keepdim=True)


def _steps(images: int, plan: MemoryPlan, latent_size: tuple[int, int]) -> int:
    """Progress steps for ``images`` under ``plan``: per chunk, the VAE tiles twice and one UNet pass."""
    chunks = -(-images // plan.chunk_size)
    return chunks * (2 * vae_tiling.count(latent_size, plan.vae_tile) + 1)


def _networks(model: LotusModel, pixels: torch.Tensor, noise: torch.Tensor | None,
              posterior_noise: torch.Tensor | None, plan: MemoryPlan,
              steps: Steps) -> tuple[torch.Tensor, torch.Tensor]:
    """VAE encode, one UNet step, VAE decode: (decoded [b,3,8*(h/8),8*(w/8)] in [-1, 1], x0 latent)."""
    unet, vae, device = model.unet, model.vae, model.device
    scaling = vae.config.scaling_factor
    count = pixels.shape[0]
    latent, std = vae_tiling.encode(vae, pixels.to(vae.dtype), plan.vae_tile, steps.advance)
    if posterior_noise is not None:
        latent = latent + std * posterior_noise.to(device, latent.dtype)
    latent = latent * scaling  # [b,4,h/8,w/8]
    if noise is not None:
        latent = torch.cat([latent, noise.to(device, latent.dtype)], dim=1)  # image first
    x0 = unet(
        latent.to(unet.dtype),
        torch.tensor(TIMESTEP, dtype=torch.long, device=device),
        encoder_hidden_states=model.prompt_embeds.to(device, unet.dtype).expand(count, -1, -1),
        class_labels=TASK_SWITCH.to(device, unet.dtype).expand(count, -1),
        return_dict=False,
    )[0]  # [b,4,h/8,w/8]: Lotus predicts the clean latent directly
    steps.advance()
    return vae_tiling.decode(vae, x0.to(vae.dtype) / scaling, plan.vae_tile, steps.advance), x0


def _after_out_of_memory(plan: MemoryPlan, error: Exception, device: torch.device,
                         latent_size: tuple[int, int]) -> MemoryPlan:
    """The smaller plan to retry with, or a LotusError when even the smallest did not fit."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    smaller = plan.smaller(latent_size)
    if smaller is None:
        raise LotusError(
            f"out of memory on {device} even with {plan.describe()}: lower processing_resolution, use"
            " a smaller precision (fp16/bf16), or free memory used by other models"
        ) from error
    log.warning("Lotus: out of memory with %s; retrying with %s", plan.describe(), smaller.describe())
    return smaller


def _per_image_seeds(seed, batch: int) -> list[int] | None:
    """``seed`` as one seed per image when it is a list (checked against the batch), else None."""
    if seed is None or isinstance(seed, int):
        return None
    seeds = list(seed) if isinstance(seed, Sequence) and not isinstance(seed, str) else None
    if seeds is None or len(seeds) != batch or not all(isinstance(s, int) for s in seeds):
        raise LotusError(f"seed must be an integer or a list of {batch} integers (one per image), got {seed!r}")
    return seeds


def _draw_per_image(seeds: list[int], shape: tuple[int, ...], generative: bool,
                    sample: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(Lotus-G noise, posterior noise) for a batch, each image's from its own seed in that order."""
    noises, posteriors = [], []
    for seed in seeds:
        generator = torch.Generator("cpu").manual_seed(seed)
        if generative:
            noises.append(_draw((1, *shape[1:]), False, generator))
        if sample:
            posteriors.append(_draw((1, *shape[1:]), False, generator))
    return (torch.cat(noises) if noises else None), (torch.cat(posteriors) if posteriors else None)


def _checked_size(size) -> tuple[int, int]:
    if not (isinstance(size, tuple | list) and len(size) == 2 and all(isinstance(e, int) and e > 0 for e in size)):
        raise LotusError(f"prepared_size must be (height, width) in positive integers, got {size!r}")
    return tuple(size)


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

