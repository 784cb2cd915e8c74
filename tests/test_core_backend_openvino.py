"""The OpenVINO backend on the tiny networks: same results as eager, a cache that later loads hit, the fallback.

Skipped without the optional extra (``pip install 'lotus-depth[cpu-fast]'``). Every conversion here
is real; the one stand-in is the converter that raises, in the fallback test.
"""

from __future__ import annotations

import gc
import logging
import weakref

import pytest
import torch
from diffusers import UNet2DConditionModel
from tiny import as_batch, synthetic_rgb

pytest.importorskip("openvino", reason="the OpenVINO backend needs the optional extra lotus-depth[cpu-fast]")

from lotus_core import CACHE_ENV, LotusError, load_model, predict  # noqa: E402
from lotus_core.loading.precision import native_bf16  # noqa: E402
from lotus_core.runtime import openvino_ir  # noqa: E402
from lotus_core.runtime.networks import ConvertedUNet  # noqa: E402

FP32_TOLERANCE = 1e-4  # the issue's bound for the fp32 path against fp32 eager
# A 76 x 100 picture: the exact geometry pads it to a 10 x 13 latent, sizes the traced 13 x 21 never had
IMAGES = as_batch(synthetic_rgb(76, 100, seed=3), synthetic_rgb(76, 100, seed=4))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "runtime-cache"))
    return tmp_path / "runtime-cache"


@pytest.fixture
def conversions(monkeypatch) -> list[str]:
    """The folders the real converter wrote, in order (it still runs: this only records the calls)."""
    calls, convert = [], openvino_ir.convert

    def recording(module, example_inputs, folder):
        calls.append(folder.name)
        return convert(module, example_inputs, folder)

    monkeypatch.setattr(openvino_ir, "convert", recording)
    return calls


def load(checkpoints, backend, dtype=torch.float32):
    return load_model(checkpoints["g"], checkpoints["vae"], backend=backend, dtype=dtype)


@pytest.mark.parametrize("processing_resolution", [0, 64], ids=["native-76x100", "64"])
def test_fp32_matches_eager(checkpoints, cache, processing_resolution):
    eager, converted = load(checkpoints, "eager"), load(checkpoints, "openvino")
    assert converted.backend == "openvino" and isinstance(converted.unet, ConvertedUNet)
    expected = predict(eager, IMAGES, seed=0, processing_resolution=processing_resolution)
    got = predict(converted, IMAGES, seed=0, processing_resolution=processing_resolution)
    assert (got.latent - expected.latent).abs().max() <= FP32_TOLERANCE
    assert (got.values - expected.values).abs().max() <= FP32_TOLERANCE


def test_fp32_matches_eager_on_vae_tiles(checkpoints, cache):
    """Tiles give the VAE other input shapes than the whole image: each is compiled on first use."""
    images = as_batch(synthetic_rgb(300, 340, seed=5))
    eager, converted = load(checkpoints, "eager"), load(checkpoints, "openvino")
    expected = predict(eager, images, seed=0, processing_resolution=0, vae_tile_size=256)
    got = predict(converted, images, seed=0, processing_resolution=0, vae_tile_size=256)
    assert (got.values - expected.values).abs().max() <= FP32_TOLERANCE


@pytest.mark.skipif(not native_bf16(), reason="bf16 is offered only on CPUs with AVX512_BF16 or AMX")
def test_bf16_is_as_near_fp32_eager_as_torch_bf16(checkpoints, cache, record_property):
    """bf16 keeps 8 bits of mantissa; random tiny weights exaggerate what that moves, so the yardstick
    is torch's own bf16 on the same weights."""
    expected = predict(load(checkpoints, "eager"), IMAGES, seed=0, processing_resolution=0).values
    torch_bf16 = predict(load(checkpoints, "eager", dtype="bf16"), IMAGES, seed=0, processing_resolution=0).values
    converted = load(checkpoints, "openvino", dtype="bf16")
    assert converted.unet.dtype == torch.bfloat16
    got = predict(converted, IMAGES, seed=0, processing_resolution=0).values
    difference, yardstick = (got - expected).abs().max(), (torch_bf16 - expected).abs().max()
    record_property("bf16_max_abs_diff", {"openvino": difference.item(), "torch": yardstick.item()})
    assert (got - expected).abs().mean() <= 2 * (torch_bf16 - expected).abs().mean()
    assert 0 < difference <= 2 * yardstick


def test_conversion_is_cached_and_a_second_load_hits_it(checkpoints, cache, conversions):
    first = load(checkpoints, "openvino")
    assert sorted(name.split("-")[0] + "-" + name.split("-")[1] for name in conversions) == \
        ["unet-" + conversions[2].split("-")[1], "vae-decoder", "vae-encoder"]
    assert {p.name for p in cache.iterdir()} >= set(conversions)
    result = predict(first, IMAGES, seed=0, processing_resolution=0)
    assert any((cache / "compiled" / "f32").iterdir())  # the compiled program, for later processes
    second = load(checkpoints, "openvino")
    assert len(conversions) == 3  # nothing converted again
    assert torch.equal(predict(second, IMAGES, seed=0, processing_resolution=0).values, result.values)


def test_other_weights_are_converted_anew(checkpoints, cache, conversions, unet_d, vae, tmp_path):
    load(checkpoints, "openvino")
    load_model(checkpoints["d"], checkpoints["vae"], backend="openvino")
    assert len(conversions) == 4  # the Lotus-D UNet; the shared VAE's two networks hit the cache
    assert [name for name in conversions if name.startswith("unet")][1] != conversions[2]


def test_torch_copies_are_dropped(checkpoints, cache):
    model = load(checkpoints, "eager")
    unet, encoder = weakref.ref(model.unet), weakref.ref(model.vae.encoder)
    model.use_backend("openvino")
    gc.collect()
    assert unet() is None and encoder() is None
    assert list(model.vae.encoder.parameters()) == [] and list(model.unet.parameters()) == []


def test_auto_picks_openvino_and_logs_it(checkpoints, cache, caplog):
    with caplog.at_level(logging.INFO, logger="lotus_core"):
        model = load(checkpoints, "auto")
    assert model.backend == "openvino"
    chosen = [r.getMessage() for r in caplog.records if "backend auto" in r.getMessage()]
    assert len(chosen) == 1 and chosen[0].startswith(f"Lotus: backend auto → openvino {openvino_ir.version()} (fp32)")


def test_failed_conversion_falls_back_to_eager_with_one_warning(checkpoints, cache, monkeypatch, caplog):
    """The converter is replaced by one that raises (as OpenVINO does on an operation it cannot trace)."""
    def failing(module, example_inputs, folder):
        raise RuntimeError("unsupported operation aten::example")

    monkeypatch.setattr(openvino_ir, "convert", failing)
    with caplog.at_level(logging.INFO, logger="lotus_core"):
        model = load(checkpoints, "auto")
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [w.getMessage() for w in warnings] == [
        "Lotus: converting lotus-depth-g-v1-0 for OpenVINO failed (RuntimeError: unsupported operation"
        " aten::example); running it with torch (eager) instead"]
    assert model.backend == "eager" and isinstance(model.unet, UNet2DConditionModel)
    expected = predict(load(checkpoints, "eager"), IMAGES, seed=0, processing_resolution=0)
    assert torch.equal(predict(model, IMAGES, seed=0, processing_resolution=0).values, expected.values)


def test_converted_model_refuses_compile_and_moves(checkpoints, cache):
    model = load(checkpoints, "openvino")
    with pytest.raises(LotusError, match=r"compile\(\): this model's networks run on the openvino backend"):
        model.compile()
    with pytest.raises(LotusError, match=r"to\(device='cuda'.*load it again with backend='eager'"):
        model.to("cuda")
    with pytest.raises(LotusError, match=r"backend='eager': this model's torch networks were dropped"):
        model.use_backend("eager")
    assert model.use_backend("auto").backend == "openvino"  # already converted: nothing to do
