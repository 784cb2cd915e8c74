"""Ensembles, tiles and video: the maths on synthetic fields whose right answer is known,
and the full functions on tiny random models."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_unet, tiny_vae

import lotus_core
from lotus_core.outputs.levels import normalize
from lotus_core.prediction.tile_grid import blend_weights, tile_layout
from lotus_core.quality.alignment import fit_scale_shift, into_unit_range
from lotus_core.quality.ensemble import predict_ensemble
from lotus_core.quality.highres import blend_tiles, predict_tiled
from lotus_core.quality.video import predict_video, stabilize

pytestmark = pytest.mark.core  # no ComfyUI (layers: tests/conftest.py)


def synthetic_depth(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A smooth scene [1, 1, H, W] in [0, 1]: a slanted floor plus a few round objects."""
    generator = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    depth = 0.3 + 0.5 * y + 0.1 * x
    for _ in range(4):
        cy, cx, r = torch.rand(3, generator=generator)
        depth = depth - 0.2 * torch.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (0.02 + 0.05 * r))
    return into_unit_range(depth)[None, None]


@pytest.fixture(scope="module")
def models():
    return {
        "G": lotus_core.LotusModel(tiny_unet(True, seed=31), tiny_vae(seed=32), "depth"),
        "D": lotus_core.LotusModel(tiny_unet(False, seed=33), tiny_vae(seed=34), "disparity"),
        "normal": lotus_core.LotusModel(tiny_unet(False, seed=35), tiny_vae(seed=36), "normal"),
    }


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(3))


# ---------------------------------------------------------------- alignment and normalisation

def test_fit_scale_shift_recovers_a_known_affine_map_under_a_mask():
    truth = synthetic_depth(30, 40)
    target = 2.5 * truth - 0.7
    target[..., :5, :] = 99  # outliers, excluded by the weight
    weight = torch.ones_like(truth)
    weight[..., :5, :] = 0
    scale, shift = fit_scale_shift(truth, target, weight)
    assert scale.item() == pytest.approx(2.5, abs=1e-4) and shift.item() == pytest.approx(-0.7, abs=1e-4)


def test_normalize_percentiles_gamma_and_batch_scope():
    values = torch.stack([torch.linspace(0, 1, 101), torch.linspace(0, 0.5, 101)]).reshape(2, 1, 1, 101)
    per_image = normalize(values, 10, 90)
    assert per_image[:, 0, 0, 10].tolist() == pytest.approx([0, 0])
    assert per_image[:, 0, 0, 90].tolist() == pytest.approx([1, 1])
    per_batch = normalize(values)  # defaults to min..max per image
    assert per_batch.amax(dim=(1, 2, 3)).tolist() == [1, 1]
    sequence = normalize(values, per_image=False)
    assert sequence[1].max().item() == pytest.approx(0.5)  # the second frame keeps its smaller range
    assert normalize(values, gamma=2)[0, 0, 0, 50].item() == pytest.approx(0.25)


@pytest.mark.parametrize("call, message", [
    (lambda v: normalize(v, 90, 10), "percentiles"),
    (lambda v: normalize(v, gamma=0), "gamma=0"),
    (lambda v: fit_scale_shift(v, v[:, :, :2]), "fit_scale_shift needs two"),
])
def test_normalisation_errors(call, message):
    with pytest.raises(lotus_core.LotusError, match=message):
        call(torch.rand(1, 1, 4, 4))


# ---------------------------------------------------------------- tiles

@pytest.mark.parametrize("height, width, tile, overlap", [(1000, 1500, 768, 128), (300, 97, 64, 16),
                                                          (50, 50, 64, 16), (129, 511, 128, 0)])
def test_tile_layout_covers_the_image_and_weights_sum_to_one(height, width, tile, overlap):
    tiles = tile_layout(height, width, tile, overlap)
    coverage = torch.zeros(height, width)
    for t, weight in zip(tiles, blend_weights(tiles, height, width, overlap)):
        assert t.height <= tile and t.width <= tile and t.top + t.height <= height and t.left + t.width <= width
        coverage[t.region] += weight
    torch.testing.assert_close(coverage, torch.ones(height, width), atol=1e-6, rtol=0)
    lefts = sorted({t.left for t in tiles})
    assert all(b - a <= tile - overlap for a, b in zip(lefts, lefts[1:]))  # neighbours overlap enough


def distorted_tiles(truth, tiles, noise: float, seed: int = 5) -> list[torch.Tensor]:
    """Each tile of ``truth`` with its own random scale and shift (as independent Lotus predictions
    have) plus optional pixel noise."""
    generator = torch.Generator().manual_seed(seed)
    return [(0.5 + torch.rand(1, generator=generator)) * truth[(..., *t.region)]
            + 0.3 * torch.rand(1, generator=generator)
            + noise * torch.randn(t.height, t.width, generator=generator) for t in tiles]


def test_tiles_with_random_scale_and_shift_are_reassembled_without_seams():
    """The global reference is a blurred low-resolution copy of the scene, as a 768 px pass is."""
    truth = synthetic_depth(300, 420, seed=1)
    low = torch.nn.functional.interpolate(truth, size=(75, 105), mode="bilinear", antialias=True)
    reference = torch.nn.functional.interpolate(low, size=(300, 420), mode="bilinear")
    tiles = tile_layout(300, 420, 128, 32)

    def seam(result):  # the largest jump of the error between neighbouring pixels
        error = result - truth
        return max((error[..., :, 1:] - error[..., :, :-1]).abs().max(),
                   (error[..., 1:, :] - error[..., :-1, :]).abs().max())

    clean = distorted_tiles(truth, tiles, noise=0)
    result = blend_tiles(reference, tiles, clean, overlap=32)
    assert (result - truth).abs().max() < 2e-3
    assert seam(result) < 1e-4
    assert seam(blend_tiles(reference, tiles, clean, overlap=0)) > 5 * seam(result)  # flat weights show seams

    noisy = distorted_tiles(truth, tiles, noise=0.002)
    error = (blend_tiles(reference, tiles, noisy, overlap=32) - truth).abs().mean()
    assert error < 0.003
    unaligned = blend_tiles(reference, tiles, noisy, overlap=32, align=False)
    assert (unaligned - truth).abs().mean() > 10 * error  # the alignment is what does it


def test_tiled_prediction_has_the_input_size_and_covers_it(models):
    image = torch.rand(1, 3, 70, 101, generator=torch.Generator().manual_seed(8))
    calls = []
    prediction = predict_tiled(models["G"], image, tile_size=48, overlap=8, processing_resolution=48, seed=0,
                               callback=lambda done, total: calls.append((done, total)))
    tiles = tile_layout(70, 101, 48, 8)
    assert prediction.values.shape == (1, 1, 70, 101)
    assert 0 <= prediction.values.min() and prediction.values.max() <= 1
    fractions = [done / total for done, total in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1  # moves forward, ends complete
    # every pass (the global one, then each tile) reports its encode, UNet and decode steps
    assert len(calls) == 3 * (len(tiles) + 1)


def test_a_single_tile_equals_the_native_prediction_aligned_to_the_global_one(models):
    image = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(9))
    model = models["D"]
    options = dict(seed=4, encode="mean")
    tiled = predict_tiled(model, image, tile_size=64, overlap=8, processing_resolution=32, **options)
    native = lotus_core.predict(model, image, processing_resolution=0, **options).values
    whole = lotus_core.predict(model, image, processing_resolution=32, restore="bilinear", **options).values
    scale, shift = fit_scale_shift(native, whole)
    torch.testing.assert_close(tiled.values, into_unit_range(scale * native + shift), atol=1e-5, rtol=0)


# ---------------------------------------------------------------- ensembles

def test_ensemble_of_identical_members_equals_the_single_prediction(models, images):
    model = models["D"]
    single = lotus_core.predict(model, images, processing_resolution=32, encode="mean")
    ensemble = predict_ensemble(model, images, ensemble_size=3, processing_resolution=32, encode="mean")
    torch.testing.assert_close(ensemble.values, single.values, atol=1e-5, rtol=0)
    assert ensemble.uncertainty.abs().max() < 1e-5


def test_ensemble_members_differ_for_lotus_g_and_their_spread_is_the_uncertainty(models, images):
    ensemble = predict_ensemble(models["G"], images, ensemble_size=4, processing_resolution=32, seed=1)
    assert ensemble.values.shape == ensemble.uncertainty.shape == (2, 1, 40, 56)
    assert ensemble.uncertainty.mean() > 1e-4


def test_affine_members_reduce_to_the_scene_up_to_one_affine_map():
    from lotus_core.quality.ensemble import _combine_affine

    truth = synthetic_depth(20, 30, seed=2)
    members = torch.stack([a * truth + b for a, b in [(1, 0), (0.5, 0.2), (1.7, -0.4), (0.9, 0.05)]])
    consensus, spread = _combine_affine(members, "median")
    scale, shift = fit_scale_shift(consensus, truth)
    torch.testing.assert_close(scale * consensus + shift, truth, atol=1e-5, rtol=0)
    assert spread.max() < 1e-5


def test_flip_members_are_mirrored_back_and_normals_get_their_x_negated(models, images):
    model = models["normal"]
    options = dict(processing_resolution=32, encode="mean", chunk_size=1)  # same batching: same float rounding
    ensemble = predict_ensemble(model, images, ensemble_size=2, flip=True, **options)
    straight = lotus_core.predict(model, images, **options).values
    mirrored = lotus_core.predict(model, images.flip(-1), **options).values.flip(-1)
    mirrored[:, 0] = -mirrored[:, 0]
    expected = torch.nn.functional.normalize(straight + mirrored, dim=1)
    torch.testing.assert_close(ensemble.values, expected, atol=1e-5, rtol=0)
    assert torch.allclose(ensemble.values.norm(dim=1), torch.ones(1), atol=1e-5)


# ---------------------------------------------------------------- video

def test_static_sequence_with_per_frame_affine_jitter_comes_out_constant():
    truth = synthetic_depth(24, 32, seed=3)
    generator = torch.Generator().manual_seed(6)
    frames = torch.cat([(0.7 + 0.6 * torch.rand(1, generator=generator)) * truth
                        + 0.2 * torch.rand(1, generator=generator) for _ in range(12)])
    for reference in ("previous", "first"):
        steady = stabilize(frames, reference)
        flicker_before = frames.std(0).mean().item()
        flicker_after = steady.std(0).mean().item()
        assert flicker_after < 1e-5 < flicker_before / 1000
        torch.testing.assert_close(steady, frames[:1].expand_as(steady), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name, blend", [("D", 0.1), ("G", 0.0)])
def test_identical_frames_give_identical_depth_without_latent_feedback(models, images, name, blend):
    frames = images[:1].repeat(4, 1, 1, 1)
    prediction = predict_video(models[name], frames, latent_blend=blend, seed=2, processing_resolution=32)
    assert prediction.values.shape == (4, 1, 40, 56)
    assert all(torch.equal(prediction.values[0], frame) for frame in prediction.values[1:])


def test_latent_blend_feeds_each_frame_the_previous_prediction(models, images):
    frames = images[:1].repeat(3, 1, 1, 1)
    calls = []
    blended = predict_video(models["G"], frames, latent_blend=0.5, align="none", seed=2, processing_resolution=32,
                            callback=lambda done, total: calls.append(done / total))
    assert calls == [step / 9 for step in range(1, 10)]  # 3 frames x (encode, UNet, decode)
    first = lotus_core.predict(models["G"], frames[:1], seed=2, processing_resolution=32, shared_noise=True)
    torch.testing.assert_close(blended.values[:1], first.values, atol=1e-6, rtol=0)
    assert not torch.equal(blended.values[1], blended.values[0])  # frame 2 saw frame 1's latent


@pytest.mark.parametrize("call, message", [
    (lambda m, x: predict_ensemble(m, x, ensemble_size=0), "ensemble_size=0"),
    (lambda m, x: predict_ensemble(m, x, ensemble_size=1, flip=True), "flip=True needs ensemble_size >= 2"),
    (lambda m, x: predict_ensemble(m, x, reduction="mode"), "reduction='mode'"),
    (lambda m, x: predict_ensemble(m, x, shared_noise=True), "identical"),
    (lambda m, x: predict_tiled(m, x, tile_size=64, overlap=32), "overlap=32"),
    (lambda m, x: predict_tiled(m, x, tile_size=4), "tile_size=4"),
    (lambda m, x: predict_video(m, x, latent_blend=1.0), "latent_blend=1.0"),
    (lambda m, x: predict_video(m, x, align="keyframe"), "align='keyframe'"),
])
def test_quality_options_are_checked(models, images, call, message):
    with pytest.raises(lotus_core.LotusError, match=message):
        call(models["G"], images)


def test_ensemble_uncertainty_is_in_the_units_of_the_combined_map():
    from lotus_core.quality.ensemble import _combine_affine

    ramp = torch.linspace(0, 1, 64).reshape(1, 1, 8, 8)
    noise = torch.randn(3, 1, 1, 8, 8, generator=torch.Generator().manual_seed(3)) * 0.02
    members = ramp + noise  # [E,B,1,H,W], consensus within [0, 1]: not rescaled
    _, spread = _combine_affine(members, "mean")
    doubled, doubled_spread = _combine_affine(2 * members, "mean")  # leaves [0, 1]: rescaled by about 1/2
    assert doubled.min() == 0 and doubled.max() == 1 and spread.mean() > 1e-3
    torch.testing.assert_close(doubled_spread, spread, atol=2e-3, rtol=0.05)  # not twice it
