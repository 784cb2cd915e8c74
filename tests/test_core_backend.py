"""Choosing a runtime backend: what every install must do, with or without the optional OpenVINO extra."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel

from lotus_core import BACKENDS, LotusError, LotusModel, load_model, runtime_unavailable
from lotus_core.loading.precision import native_bf16


def test_backends_offered():
    assert BACKENDS == ("auto", "eager", "openvino")


def test_unknown_backend_is_refused_by_name(checkpoints):
    with pytest.raises(LotusError, match="backend='tensorrt' is not one of 'auto', 'eager', 'openvino'"):
        load_model(checkpoints["g"], checkpoints["vae"], backend="tensorrt")


def test_eager_is_the_default_and_keeps_the_torch_networks(checkpoints):
    model = load_model(checkpoints["g"], checkpoints["vae"])
    assert model.backend == "eager"
    assert isinstance(model.unet, UNet2DConditionModel)


def test_fp16_weights_stay_eager_under_auto_and_are_refused_by_openvino(unet_g, vae, caplog):
    """fp16 has no fast CPU kernels in either runtime: auto says why it stays eager; openvino refuses."""
    half = LotusModel(UNet2DConditionModel.from_config(unet_g.config).to(torch.float16), vae, "depth")
    reason = runtime_unavailable(half)
    assert reason is not None
    with caplog.at_level(logging.INFO, logger="lotus_core"):
        assert half.use_backend("auto").backend == "eager"
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("lotus_core")]
    assert logged == [f"Lotus: backend auto → eager: OpenVINO {reason}"]
    with pytest.raises(LotusError, match=r"backend='openvino' (runs in fp32 or bf16|needs the optional package)"):
        half.use_backend("openvino")
    assert isinstance(half.unet, UNet2DConditionModel)


def test_native_bf16_matches_the_cpu_flags():
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo to read the CPU's flags from (not Linux)")
    flags = cpuinfo.read_text()
    assert native_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)
