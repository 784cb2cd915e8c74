"""predict() and the output conventions, on seeded tiny Lotus-G / Lotus-D networks."""

from __future__ import annotations

import logging

import pytest
import torch
from tiny import as_batch, synthetic_rgb

import lotus_core
from lotus_core import DepthMap, LotusError, Quantity, normals_to_image, predict, to_controlnet
from lotus_core.prediction import vae_tiling
from lotus_core.prediction.memory import MIN_VAE_TILE, working_bytes

# Golden 3x3 top-left corners of `values` (depth = channel mean) for the fixtures' seeded networks and
# synthetic_rgb(40, 56, seed=3), generated once by running the code (torch 2.13, diffusers 0.42.1).
GOLDEN = {
    "G": [[0.509997, 0.509767, 0.517084], [0.501468, 0.484669, 0.497618], [0.507193, 0.448767, 0.456079]],
    "D": [[0.527299, 0.494726, 0.532199], [0.518228, 0.469902, 0.514193], [0.518867, 0.472309, 0.502715]],
}
# G: resized to 34x48 and restored; D: native size, posterior sampled with the seed
GOLDEN_SETTINGS = {"G": {"processing_resolution": 48, "seed": 0, "geometry": "reference"},
                   "D": {"processing_resolution": 0, "seed": 0, "geometry": "reference"}}


@pytest.fixture(scope="module")
def models(model_g, model_d):
    return {"G": model_g, "D": model_d}


def pictures(count: int, height: int, width: int, first_seed: int = 0) -> torch.Tensor:
    return as_batch(*(synthetic_rgb(height, width, seed=first_seed + i) for i in range(count)))


def minmax(x: torch.Tensor) -> torch.Tensor:
    """Per-image stretch to [0, 1], written out independently of the core."""
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = (x[i] - x[i].min()) / (x[i].max() - x[i].min())
    return out


@pytest.mark.parametrize("kind", ["G", "D"])
def test_golden_slice(kind, models):
    prediction = predict(models[kind], pictures(1, 40, 56, first_seed=3), **GOLDEN_SETTINGS[kind])
    torch.testing.assert_close(prediction.values[0, 0, :3, :3], torch.tensor(GOLDEN[kind]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", ["G", "D"])
@pytest.mark.parametrize(
    ("height", "width", "res"),
    [
        pytest.param(37, 53, 0, id="37x53-native"),
        pytest.param(61, 29, 0, id="61x29-native"),
        pytest.param(37, 53, 64, id="37x53-up-to-64"),
        pytest.param(61, 29, 64, id="61x29-up-to-64"),
        pytest.param(64, 64, 24, id="64x64-down-to-24"),
        pytest.param(61, 29, 20, id="61x29-down-to-20"),
        pytest.param(8, 24, 0, id="8x24-smallest-edge"),
    ],
)
def test_output_has_the_input_size(kind, height, width, res, models):
    prediction = predict(models[kind], pictures(2, height, width), processing_resolution=res, seed=1)
    assert prediction.values.shape == (2, 1, height, width)
    assert prediction.values.dtype == torch.float32
    assert 0 <= prediction.values.min() and prediction.values.max() <= 1
    # the latent stays at the processing size (long edge = res, both edges truncated), padded to whole latent px
    if res:
        f = min(res / width, res / height)
        height, width = int(height * f), int(width * f)
    assert prediction.latent.shape == (2, 4, -(-height // 8), -(-width // 8))
    assert prediction.quantity is Quantity.DEPTH


def test_a_prediction_says_what_it_is_and_where_it_came_from(model_g):
    prediction = predict(model_g, pictures(2, 24, 40), processing_resolution=32, seed=0)
    assert (prediction.quantity, prediction.model, prediction.processing_resolution) == (Quantity.DEPTH, "lotus", 32)
    assert prediction.uncertainty is None and prediction.unit is None


def test_lotus_g_is_deterministic_per_seed(model_g):
    images = pictures(2, 32, 40)
    first = predict(model_g, images, processing_resolution=0, seed=4)
    again = predict(model_g, images, processing_resolution=0, seed=4)
    other = predict(model_g, images, processing_resolution=0, seed=5)
    from_generator = predict(model_g, images, processing_resolution=0, generator=torch.Generator().manual_seed(4))
    assert torch.equal(first.values, again.values)
    assert torch.equal(first.values, from_generator.values)
    assert (first.values - other.values).abs().max() > 1e-2


def test_lotus_g_mean_encoding_still_depends_on_the_noise_seed(model_g):
    images = pictures(1, 32, 40)
    first = predict(model_g, images, processing_resolution=0, seed=4, encode="mean")
    other = predict(model_g, images, processing_resolution=0, seed=5, encode="mean")
    assert (first.values - other.values).abs().max() > 1e-2


def test_global_rng_is_used_without_seed(model_g):
    images = pictures(1, 32, 40)
    torch.manual_seed(123)
    first = predict(model_g, images, processing_resolution=0)
    torch.manual_seed(123)
    again = predict(model_g, images, processing_resolution=0)
    different = predict(model_g, images, processing_resolution=0)
    assert torch.equal(first.values, again.values)
    assert (first.values - different.values).abs().max() > 1e-2


def test_lotus_d_mean_encoding_ignores_the_seed(model_d):
    images = pictures(2, 32, 40)
    first = predict(model_d, images, processing_resolution=0, encode="mean", seed=0)
    other = predict(model_d, images, processing_resolution=0, encode="mean", seed=99)
    unseeded = predict(model_d, images, processing_resolution=0, encode="mean")
    assert torch.equal(first.values, other.values)
    assert torch.equal(first.values, unseeded.values)


def test_lotus_d_sample_encoding_depends_on_the_seed(model_d):
    images = pictures(1, 32, 40)
    first = predict(model_d, images, processing_resolution=0, seed=0)
    again = predict(model_d, images, processing_resolution=0, seed=0)
    other = predict(model_d, images, processing_resolution=0, seed=1)
    mean = predict(model_d, images, processing_resolution=0, encode="mean")
    assert torch.equal(first.values, again.values)
    assert (first.values - other.values).abs().max() > 1e-4
    assert (first.values - mean.values).abs().max() > 1e-4


@pytest.mark.parametrize("kind", ["G", "D"])
def test_batch_equals_single_images(kind, models):
    model = models[kind]
    images = pictures(3, 29, 43)
    noise = torch.randn(3, 4, 48 * 29 // 43 // 8, 48 // 8, generator=torch.Generator().manual_seed(0)) \
        if kind == "G" else None
    batch = predict(model, images, processing_resolution=48, encode="mean", noise=noise)
    for i in range(3):
        single = predict(model, images[i:i + 1], processing_resolution=48, encode="mean",
                         noise=None if noise is None else noise[i:i + 1])
        torch.testing.assert_close(batch.values[i:i + 1], single.values, atol=1e-5, rtol=0)
        torch.testing.assert_close(batch.latent[i:i + 1], single.latent, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["G", "D"])
def test_results_do_not_depend_on_chunk_size(kind, models):
    images = pictures(4, 24, 32)
    one = predict(models[kind], images, processing_resolution=0, seed=7, chunk_size=1)
    three = predict(models[kind], images, processing_resolution=0, seed=7, chunk_size=3)
    whole = predict(models[kind], images, processing_resolution=0, seed=7, chunk_size=8)
    # same random numbers for every image; only float rounding of batched kernels may differ
    torch.testing.assert_close(three.values, one.values, atol=5e-5, rtol=0)
    torch.testing.assert_close(whole.values, one.values, atol=5e-5, rtol=0)


def test_noise_of_batch_one_is_shared_by_the_batch(model_g):
    same = pictures(1, 24, 32).expand(3, -1, -1, -1)
    noise = torch.randn(1, 4, 3, 4, generator=torch.Generator().manual_seed(2))
    prediction = predict(model_g, same, processing_resolution=0, encode="mean", noise=noise)
    torch.testing.assert_close(prediction.values[1:], prediction.values[:1].expand(2, -1, -1, -1), atol=1e-5, rtol=0)


def test_explicit_noise_is_what_the_unet_sees(model_g):
    images = pictures(1, 24, 32)
    noise = torch.randn(1, 4, 3, 4, generator=torch.Generator().manual_seed(2))
    first = predict(model_g, images, processing_resolution=0, encode="mean", noise=noise, seed=0)
    other_seed = predict(model_g, images, processing_resolution=0, encode="mean", noise=noise, seed=1)
    other_noise = predict(model_g, images, processing_resolution=0, encode="mean", noise=-noise, seed=0)
    assert torch.equal(first.values, other_seed.values)  # the seed feeds nothing when noise and mean are given
    assert (first.values - other_noise.values).abs().max() > 1e-2


@pytest.mark.parametrize(("kind", "encode"), [("G", "mean"), ("G", "sample"), ("D", "sample")])
def test_shared_noise(kind, encode, models):
    same = pictures(1, 24, 32).expand(3, -1, -1, -1)
    shared = predict(models[kind], same, processing_resolution=0, seed=3, shared_noise=True, encode=encode)
    own = predict(models[kind], same, processing_resolution=0, seed=3, shared_noise=False, encode=encode)
    # one draw of every random number (G noise and, with "sample", the VAE posterior's) for the batch
    torch.testing.assert_close(shared.values[1:], shared.values[:1].expand(2, -1, -1, -1), atol=1e-5, rtol=0)
    assert (own.values[0] - own.values[1]).abs().max() > 1e-4
    assert (own.values[1] - own.values[2]).abs().max() > 1e-4


def test_callback_counts_encode_unet_and_decode_of_every_chunk(model_d):
    calls = []
    predict(model_d, pictures(5, 16, 16), processing_resolution=0, seed=0, chunk_size=2,
            callback=lambda done, total: calls.append((done, total)))
    assert calls == [(step, 9) for step in range(1, 10)]  # 3 chunks x (encode, UNet, decode)


def test_callback_counts_every_vae_tile_of_one_image(model_d):
    calls = []
    predict(model_d, pictures(1, 512, 768), processing_resolution=0, seed=0, vae_tile_size=256,
            callback=lambda done, total: calls.append((done, total)))
    tiles = vae_tiling.count((64, 96), 32)
    assert tiles > 1
    assert calls == [(step, 2 * tiles + 1) for step in range(1, 2 * tiles + 2)]


def test_check_interrupt_stops_inside_the_networks_of_one_image(model_d):
    class Interrupted(Exception):
        pass

    checks = []

    def stop_at_the_tenth_layer():
        checks.append(1)
        if len(checks) == 10:
            raise Interrupted

    steps = []
    with pytest.raises(Interrupted):
        predict(model_d, pictures(1, 16, 16), processing_resolution=0, seed=0,
                callback=lambda done, total: steps.append(done), check_interrupt=stop_at_the_tenth_layer)
    assert len(checks) == 10 and steps == []  # stopped inside the VAE encoder, before its first step ended
    hooks = [m for m in (*model_d.unet.modules(), *model_d.vae.modules()) if m._forward_pre_hooks]
    assert hooks == []  # and left no hook behind


def test_callback_can_stop_the_run(model_d):
    class Interrupted(Exception):
        pass

    calls = []

    def stop(done, total):
        calls.append(done)
        raise Interrupted

    with pytest.raises(Interrupted):
        predict(model_d, pictures(4, 16, 16), processing_resolution=0, seed=0, chunk_size=1, callback=stop)
    assert calls == [1]


def test_resampling_overshoot_is_clamped_and_other_scales_are_refused(model_d, caplog):
    image = pictures(1, 16, 16)
    overshoot = image * 1.4 - 0.2  # as a bicubic upscale: -0.22..1.21 measured in ComfyUI
    clamped = predict(model_d, overshoot.clamp(0, 1), processing_resolution=0, seed=0).values
    with caplog.at_level(logging.INFO, logger="lotus_core"):
        assert torch.equal(predict(model_d, overshoot, processing_resolution=0, seed=0).values, clamped)
    assert [r.message for r in caplog.records if "clamped" in r.message] != []
    with pytest.raises(LotusError, match="0..255 values: divide by 255"):
        predict(model_d, image * 255, processing_resolution=0)
    with pytest.raises(LotusError, match=r"-1..1 values: map them with \(x \+ 1\) / 2"):
        predict(model_d, image * 2 - 1, processing_resolution=0)


def test_a_processing_size_that_cannot_fit_is_refused_with_the_largest_that_does(model_d):
    budget = working_bytes((512, 768), 4, MIN_VAE_TILE)
    with pytest.raises(LotusError, match="largest processing_resolution that fits is 768") as error:
        predict(model_d, pictures(1, 16, 24), processing_resolution=1024, memory_limit=budget)
    assert "processing_resolution=1024 means 1024x682 px" in str(error.value)
    predict(model_d, pictures(1, 16, 24), processing_resolution=768, memory_limit=budget, vae_tile_size=256)


@pytest.mark.parametrize(("restore", "resample"), [("bilinear", "bilinear"), ("nearest-exact", "bicubic"),
                                                   ("nearest-exact", "nearest-exact")])
def test_resize_modes_change_the_result_but_not_the_size(restore, resample, model_d):
    images = pictures(1, 37, 53)
    reference = predict(model_d, images, processing_resolution=40, encode="mean")
    other = predict(model_d, images, processing_resolution=40, encode="mean", restore=restore, resample=resample)
    assert other.values.shape == reference.values.shape == (1, 1, 37, 53)
    assert (other.values - reference.values).abs().max() > 1e-3
    assert 0 <= other.values.min() and other.values.max() <= 1


def test_input_precision_does_not_matter(model_d):
    images = pictures(1, 24, 32)
    fp32 = predict(model_d, images, processing_resolution=0, encode="mean")
    fp64 = predict(model_d, images.double(), processing_resolution=0, encode="mean")
    assert fp64.values.dtype == torch.float32
    torch.testing.assert_close(fp64.values, fp32.values, atol=1e-6, rtol=0)


def test_autocast_runs_close_to_fp32(model_d):
    images = pictures(1, 24, 32)
    fp32 = predict(model_d, images, processing_resolution=0, encode="mean")
    low = predict(model_d, images, processing_resolution=0, encode="mean", autocast=True)
    assert low.values.dtype == torch.float32
    difference = (low.values - fp32.values).abs()
    assert difference.max() > 0  # bf16 on CPU really ran in lower precision
    assert difference.mean() < 0.05  # and still gives the same picture


# --- to_controlnet / normals ---------------------------------------------------------------------


def test_controlnet_polarity_depth_vs_disparity(unet_g, vae):
    images = pictures(2, 32, 40)
    as_depth = predict(lotus_core.LotusModel(unet_g, vae, "depth"), images, processing_resolution=0, seed=6)
    as_disparity = predict(lotus_core.LotusModel(unet_g, vae, "disparity"), images, processing_resolution=0,
                           seed=6)
    assert torch.equal(as_depth.values, as_disparity.values)  # same weights, same numbers
    assert as_disparity.quantity is Quantity.DISPARITY

    depth_control = to_controlnet(as_depth)
    disparity_control = to_controlnet(as_disparity)
    assert depth_control.shape == (2, 1, 32, 40)
    # depth: 0 = near, so near = white needs 1 - depth; disparity is already near = high
    torch.testing.assert_close(depth_control, minmax(1 - as_depth.values), atol=1e-6, rtol=0)
    torch.testing.assert_close(disparity_control, minmax(as_disparity.values), atol=1e-6, rtol=0)
    for control in (depth_control, disparity_control):
        assert control.amin(dim=(1, 2, 3)).tolist() == [0.0, 0.0]
        assert control.amax(dim=(1, 2, 3)).tolist() == [1.0, 1.0]
    torch.testing.assert_close(depth_control, 1 - disparity_control, atol=1e-6, rtol=0)


def test_controlnet_batch_scale(model_g):
    prediction = predict(model_g, pictures(2, 24, 32), processing_resolution=0, seed=1)
    inverted = 1 - prediction.values  # depth model: near = white
    one_scale = to_controlnet(prediction, per_image=False)
    torch.testing.assert_close(one_scale, (inverted - inverted.min()) / (inverted.max() - inverted.min()),
                               atol=1e-6, rtol=0)
    assert not torch.allclose(one_scale, to_controlnet(prediction))  # differs from the per-image stretch


def test_controlnet_of_a_flat_prediction_is_mid_grey():
    flat = torch.full((2, 1, 8, 8), 0.3)
    flat[1] = torch.linspace(0, 1, 64).reshape(8, 8)  # the second image is not flat
    control = to_controlnet(DepthMap(flat, Quantity.DISPARITY))
    assert torch.isfinite(control).all()
    assert torch.equal(control[0], torch.full((1, 8, 8), 0.5))
    torch.testing.assert_close(control[1, 0], torch.linspace(0, 1, 64).reshape(8, 8), atol=1e-6, rtol=0)


@pytest.fixture(scope="module")
def normals(unet_d, vae):
    return predict(lotus_core.LotusModel(unet_d, vae, Quantity.NORMAL), pictures(2, 24, 40),
                   processing_resolution=0, seed=0)


def test_normal_values_are_unit_vectors(normals):  # the reference's RGB: test_core_reference.py
    assert normals.quantity is Quantity.NORMAL
    vectors = normals.values
    assert vectors.shape == (2, 3, 24, 40)
    torch.testing.assert_close(vectors.norm(dim=1), torch.ones(2, 24, 40), atol=1e-5, rtol=0)


def test_normals_to_image(normals):
    picture = normals_to_image(normals)
    assert picture.shape == (2, 3, 24, 40)
    assert 0 <= picture.min() and picture.max() <= 1
    torch.testing.assert_close(picture, (normals.values + 1) / 2, atol=1e-6, rtol=0)


def test_normals_have_no_controlnet_polarity(normals):
    with pytest.raises(LotusError, match="to_controlnet needs depth or disparity, got normals"):
        to_controlnet(normals)
    with pytest.raises(LotusError, match="normal maps have no near/far polarity"):
        Quantity.NORMAL.near_is_high


def test_normals_to_image_refuses_depth(model_d):
    depth = predict(model_d, pictures(1, 16, 16), processing_resolution=0, encode="mean")
    with pytest.raises(LotusError, match="normals_to_image needs a normal prediction, got depth"):
        normals_to_image(depth)


def test_names_kept_for_older_code_still_work(model_g):
    prediction = predict(model_g, pictures(1, 16, 24), processing_resolution=0, seed=0)
    assert isinstance(prediction, lotus_core.LotusPrediction)
    assert torch.equal(prediction.image, prediction.values.expand(-1, 3, -1, -1))
    again = lotus_core.LotusPrediction.from_values(prediction.values, prediction.latent, Quantity.DEPTH)
    assert torch.equal(again.values, prediction.values) and again.quantity is Quantity.DEPTH
    relabelled = DepthMap.from_prediction(prediction, "renamed", 512)
    assert (relabelled.model, relabelled.processing_resolution) == ("renamed", 512)
