"""Memory planning, VAE tiles and the out-of-memory retry, on tiny real-class networks.

A CUDA out-of-memory error cannot happen on this CPU-only machine: the retry tests make the VAE
decoder raise ``torch.OutOfMemoryError`` (the exception CUDA raises) above a chosen size instead.
"""

from __future__ import annotations

import copy
import logging
import re
from pathlib import Path

import pytest
import torch
from tiny import as_batch, synthetic_rgb

import lotus_core
from lotus_core import LotusError, predict
from lotus_core.prediction import vae_tiling
from lotus_core.prediction.memory import MIN_VAE_TILE, MemoryPlan, available_bytes, plan_memory, working_bytes
from lotus_core.prediction.tile_grid import blend_weights, tile_layout

CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # plan_memory only reads the device's type here
GB = 10**9


def test_whole_image_and_one_image_per_pass_when_memory_is_plentiful():
    assert plan_memory(4, (768, 768), 4, CPU, memory_limit=100 * GB) == MemoryPlan(1, None)


def test_accelerators_batch_as_many_images_as_fit():
    per_image = working_bytes((768, 768), 2)
    assert plan_memory(8, (768, 768), 2, CUDA, memory_limit=3 * per_image + 1) == MemoryPlan(3, None)
    assert plan_memory(2, (768, 768), 2, CUDA, memory_limit=100 * GB).chunk_size == 2  # never more than the batch
    assert plan_memory(99, (64, 64), 2, CUDA, memory_limit=100 * GB).chunk_size == 16  # capped
    assert plan_memory(8, (768, 768), 2, CUDA, chunk_size=5, memory_limit=1).chunk_size == 5  # told: obeyed


def test_vae_tiles_when_the_whole_image_does_not_fit():
    size = (1536, 2048)
    limit = 4 * GB
    assert working_bytes(size, 4) > limit
    plan = plan_memory(1, size, 4, CPU, memory_limit=limit)
    assert plan.vae_tile is not None and plan.vae_tile % 8 == 0 and plan.vae_tile >= MIN_VAE_TILE
    assert working_bytes(size, 4, plan.vae_tile) <= limit < working_bytes(size, 4, plan.vae_tile + 8)


def test_explicit_vae_tile_size():
    assert plan_memory(1, (1024, 1024), 4, CPU, vae_tile_size=512, memory_limit=100 * GB).vae_tile == 64
    assert plan_memory(1, (512, 512), 4, CPU, vae_tile_size=512).vae_tile is None  # one tile = no tiling
    assert plan_memory(1, (4096, 4096), 4, CPU, vae_tile_size=0, memory_limit=1).vae_tile is None


@pytest.mark.parametrize("argument, value, message", [
    ("vae_tile_size", 300, "multiple of 8 >= 256"),
    ("vae_tile_size", 128, "multiple of 8 >= 256"),
    ("vae_tile_size", -8, "multiple of 8 >= 256"),
    ("vae_tile_size", "512", "multiple of 8 >= 256"),
    ("chunk_size", 0, "integer >= 1"),
    ("chunk_size", 1.5, "integer >= 1"),
    ("memory_limit", 0, "bytes >= 1"),
])
def test_bad_memory_options_are_refused_by_name(argument, value, message):
    with pytest.raises(LotusError, match=rf"{argument}={value!r} must be .*{message}"):
        plan_memory(1, (512, 512), 4, CPU, **{argument: value})


def test_after_out_of_memory_halve_the_chunk_then_the_vae_tile_then_give_up():
    plans, plan = [], MemoryPlan(4, None)
    while plan is not None:
        plans.append(plan)
        plan = plan.smaller((100, 80))
    assert plans == [MemoryPlan(4, None), MemoryPlan(2, None), MemoryPlan(1, None), MemoryPlan(1, 48),
                     MemoryPlan(1, 32)]


def meminfo_available() -> int | None:
    """The Linux kernel's estimate of the memory available to a new program (MemAvailable), in bytes."""
    try:
        found = re.search(r"^MemAvailable:\s+(\d+) kB$", Path("/proc/meminfo").read_text(), re.M)
    except OSError:
        found = None
    return int(found.group(1)) * 1024 if found else None


def test_available_memory_on_a_cpu_is_the_kernels_estimate_in_bytes():
    before = meminfo_available()
    if before is None:
        pytest.skip("no MemAvailable in /proc/meminfo (not Linux)")
    got = available_bytes(CPU)
    after = meminfo_available()
    # read just before and after: other processes may move it a little in between, never by 64 MiB
    assert min(before, after) - 2**26 <= got <= max(before, after) + 2**26


def test_without_a_limit_a_prediction_plans_for_three_quarters_of_the_free_memory(monkeypatch):
    size = (1024, 1536)
    whole_image = working_bytes(size, 4)
    for free, tiles in ((whole_image / 0.72, False), (whole_image / 0.78, True)):
        monkeypatch.setattr(lotus_core.prediction.memory, "available_bytes", lambda device, free=int(free): free)
        plan = plan_memory(1, size, 4, CPU)
        assert (plan.vae_tile is not None) is tiles, free
        assert plan == plan_memory(1, size, 4, CPU, memory_limit=int(int(free) * 0.75))


def test_vae_tiles_covering_the_latent_change_nothing(vae):
    latents = torch.randn(2, 4, 12, 20, generator=torch.Generator().manual_seed(0))
    pixels = torch.rand(2, 3, 96, 160, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(vae_tiling.decode(vae, latents, 20), vae.decode(latents).sample)
        mean, std = vae_tiling.encode(vae, pixels, None)
        posterior = vae.encode(pixels).latent_dist
    assert torch.equal(mean, posterior.mean) and torch.equal(std, posterior.std)


def test_tiled_decode_places_each_tile_and_blends_only_the_overlaps(vae):
    latents = torch.randn(1, 4, 40, 72, generator=torch.Generator().manual_seed(0))
    tile = 32
    tiles = tile_layout(40, 72, tile, tile // 4)
    assert len(tiles) == 6
    with torch.inference_mode():
        result = vae_tiling.decode(vae, latents, tile)
        alone = [vae.decode(latents[(..., *t.region)]).sample for t in tiles]
    assert result.shape == (1, 3, 320, 576)
    scaled = [lotus_core.prediction.tile_grid.Tile(t.top * 8, t.left * 8, t.height * 8, t.width * 8) for t in tiles]
    weights = blend_weights(scaled, 320, 576, tile // 4 * 8)
    low, high = torch.full_like(result, torch.inf), torch.full_like(result, -torch.inf)
    for t, weight, decoded in zip(scaled, weights, alone, strict=True):
        area = (..., *t.region)
        only_this = weight == 1  # pixels no other tile reaches: exactly this tile's decoding
        assert only_this.sum() > 0
        assert torch.equal(result[area][..., only_this], decoded[..., only_this])
        low[area] = torch.minimum(low[area], decoded)
        high[area] = torch.maximum(high[area], decoded)
    assert bool(((result >= low - 1e-5) & (result <= high + 1e-5)).all())  # overlaps: a convex blend


def test_tiled_encode_places_each_tile(vae):
    pixels = torch.rand(1, 3, 320, 576, generator=torch.Generator().manual_seed(3)) * 2 - 1
    tiles = tile_layout(40, 72, 32, 8)
    with torch.inference_mode():
        mean, std = vae_tiling.encode(vae, pixels, 32)
        weights = blend_weights(tiles, 40, 72, 8)
        for t, weight in zip(tiles, weights, strict=True):
            posterior = vae.encode(pixels[..., t.top * 8:(t.top + t.height) * 8, t.left * 8:(t.left + t.width) * 8]
                                   ).latent_dist
            only_this = weight == 1
            assert torch.equal(mean[(..., *t.region)][..., only_this], posterior.mean[..., only_this])
            assert torch.equal(std[(..., *t.region)][..., only_this], posterior.std[..., only_this])


@pytest.fixture(scope="module")
def photo():
    return as_batch(synthetic_rgb(256, 384, 0))


def test_predict_with_vae_tiles_stays_close_to_the_whole_image(model_g, photo):
    whole = predict(model_g, photo, processing_resolution=0, seed=0)
    tiled = predict(model_g, photo, processing_resolution=0, seed=0, vae_tile_size=256)
    difference = (whole.values - tiled.values).abs()
    assert 0 < difference.mean() < 0.05  # random tiny weights: a loose bound; the README measures real sizes


def test_a_memory_limit_switches_vae_tiles_on(model_g, photo, caplog):
    explicit = predict(model_g, photo, processing_resolution=0, seed=0, vae_tile_size=256)
    with caplog.at_level(logging.INFO, logger="lotus_core.prediction.memory"):
        limited = predict(model_g, photo, processing_resolution=0, seed=0,
                          memory_limit=working_bytes((256, 384), 4, 32) + 1)
    assert torch.equal(limited.values, explicit.values)
    assert "256 px tiles" in caplog.text


class OutOfMemoryAbove(torch.nn.Module):
    """Wraps the VAE decoder: raises CUDA's out-of-memory error for inputs over ``max_elements``."""

    def __init__(self, decoder, max_elements: int) -> None:
        super().__init__()
        self.decoder, self.max_elements, self.refused = decoder, max_elements, 0

    def forward(self, z, *args, **kwargs):
        if z.numel() > self.max_elements:
            self.refused += 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.decoder(z, *args, **kwargs)


@pytest.fixture
def model_short_of_memory(unet_g, vae):
    """A model sharing the tiny networks, with its own VAE object whose decoder can be swapped."""
    return lotus_core.LotusModel(unet_g, copy.deepcopy(vae), "depth")


def test_out_of_memory_retries_with_fewer_images_per_pass(model_short_of_memory, caplog):
    images = as_batch(*(synthetic_rgb(64, 96, seed) for seed in range(4)))
    expected = predict(model_short_of_memory, images, processing_resolution=0, seed=0, chunk_size=1)
    decoder = model_short_of_memory.vae.decoder
    model_short_of_memory.vae.decoder = OutOfMemoryAbove(decoder, 4 * 8 * 12)  # one image's latent
    with caplog.at_level(logging.WARNING):
        result = predict(model_short_of_memory, images, processing_resolution=0, seed=0, chunk_size=4)
    assert model_short_of_memory.vae.decoder.refused == 2  # 4, then 2 images per pass
    assert torch.equal(result.values, expected.values)
    assert "retrying with 2 image(s) per pass" in caplog.text and "retrying with 1 image(s)" in caplog.text


def test_out_of_memory_with_one_image_retries_with_vae_tiles(model_short_of_memory, photo):
    expected = predict(model_short_of_memory, photo, processing_resolution=0, seed=0, vae_tile_size=256)
    decoder = model_short_of_memory.vae.decoder
    model_short_of_memory.vae.decoder = OutOfMemoryAbove(decoder, 4 * 32 * 32)  # a 256 px tile's latent
    result = predict(model_short_of_memory, photo, processing_resolution=0, seed=0)
    assert torch.equal(result.values, expected.values)


def test_out_of_memory_at_the_smallest_plan_is_an_actionable_error(model_short_of_memory, photo):
    model_short_of_memory.vae.decoder = OutOfMemoryAbove(model_short_of_memory.vae.decoder, 1)
    with pytest.raises(LotusError, match="out of memory on cpu even with 1 image.* lower processing_resolution"):
        predict(model_short_of_memory, photo, processing_resolution=0, seed=0)


def test_compile_is_opt_in_and_keeps_the_result(unet_d, vae, photo):
    """torch.compile wiring, traced with the "eager" backend: the default (inductor) would spend minutes
    compiling C++ on this 2-core machine; the benchmark is the place to time it."""
    model = lotus_core.LotusModel(copy.deepcopy(unet_d), copy.deepcopy(vae), "depth")
    image = photo[..., :64, :96]
    expected = predict(model, image, processing_resolution=0, seed=0)
    assert model.unet._compiled_call_impl is None
    assert model.compile(backend="eager") is model
    assert all(m._compiled_call_impl is not None for m in (model.unet, model.vae.encoder, model.vae.decoder))
    assert torch.equal(predict(model, image, processing_resolution=0, seed=0).values, expected.values)
