"""16-bit PNG, float EXR and .npy depth files: written, read back, equal within the format's precision.

Each round trip records its worst error as the ``roundtrip_error`` property (in --junitxml reports).
"""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import OpenEXR
import pytest
import torch
from PIL import Image

import lotus_core
from lotus_core.outputs.files import depth_metadata, sidecar

FORMATS = {"png16": ".png", "exr": ".exr", "npy": ".npy"}
# The format's own precision: half a 16-bit step of the encoded range; float32 is stored exactly.
PNG16_HALF_STEP = 0.5 / 65535


def lotus_like(batch=2, height=33, width=47, seed=0) -> torch.Tensor:
    """Values as Lotus predicts them: float32 in [0, 1], including both ends."""
    values = torch.rand(batch, 1, height, width, generator=torch.Generator().manual_seed(seed))
    values[:, 0, 0, 0], values[:, 0, 0, 1] = 0.0, 1.0
    return values


def png_chunks(path) -> list[tuple[bytes, bytes]]:
    """(type, data) of every PNG chunk, CRCs checked: an independent look at what PIL wrote."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, offset = [], 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        body = data[offset + 8:offset + 8 + length]
        assert struct.unpack(">I", data[offset + 8 + length:offset + 12 + length])[0] == zlib.crc32(kind + body)
        chunks.append((kind, body))
        offset += 12 + length
    return chunks


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("quantity", ["depth", "disparity"])
def test_roundtrip_lotus_values_with_metadata(tmp_path, fmt, quantity, record_property):
    depth = lotus_core.DepthMap(lotus_like(), quantity, "lotus-depth-g-v1-0", 768)
    for frame in range(2):
        path = lotus_core.save_depth_frame(tmp_path / f"f{frame}{FORMATS[fmt]}", depth, frame, fmt)
        values, meta = lotus_core.read_depth_file(path)
        expected = depth.values[frame, 0].numpy()
        error = float(np.abs(values.astype(np.float64) - expected).max())
        record_property("roundtrip_error", (fmt, "[0, 1]", error))
        assert values.shape == expected.shape and values.dtype == np.float32
        assert error <= (PNG16_HALF_STEP * 1.0001 if fmt == "png16" else 0.0)
        assert meta["lotus_model"] == "lotus-depth-g-v1-0"
        assert meta["lotus_quantity"] == quantity
        assert meta["lotus_polarity"] == ("near = low" if quantity == "depth" else "near = high")
        assert meta["lotus_processing_resolution"] == 768
        assert meta["lotus_frame"] == frame
        assert meta["lotus_value_min"] == pytest.approx(float(expected.min()), abs=1e-7)
        assert meta["lotus_value_max"] == pytest.approx(float(expected.max()), abs=1e-7)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_roundtrip_metric_depth_beyond_one(tmp_path, fmt, record_property):
    metric = lotus_core.with_near_far(lotus_core.DepthMap(lotus_like(1), "disparity"), 0.5, 80.0, unit="m")
    path = lotus_core.save_depth_frame(tmp_path / f"m{FORMATS[fmt]}", metric, 0, fmt)
    values, meta = lotus_core.read_depth_file(path)
    expected = metric.values[0, 0].numpy().astype(np.float64)
    error = float(np.abs(values - expected).max())
    record_property("roundtrip_error", (fmt, "0.5..80 m", error))
    assert meta["lotus_quantity"] == "metric depth" and meta["lotus_unit"] == "m"
    if fmt == "png16":
        assert (meta["lotus_encoding_low"], meta["lotus_encoding_high"]) == (0.0, pytest.approx(80.0, rel=1e-6))
        assert error <= 80 * PNG16_HALF_STEP * 1.0001  # float32 rounding of the decoded value on top
    else:
        assert error == 0.0


def test_png16_is_a_16_bit_greyscale_png_with_text_chunks(tmp_path):
    depth = lotus_core.DepthMap(lotus_like(1), "depth", "lotus-depth-d-v1-1", 0)
    path = lotus_core.save_depth_frame(tmp_path / "d.png", depth, 0, "png16")
    chunks = png_chunks(path)
    width, height, bit_depth, colour_type = struct.unpack(">IIBB", chunks[0][1][:10])
    assert (chunks[0][0], width, height, bit_depth, colour_type) == (b"IHDR", 47, 33, 16, 0)  # 0 = greyscale
    text = dict(body.split(b"\0", 1) for kind, body in chunks if kind == b"tEXt")
    assert text[b"lotus_model"] == b"lotus-depth-d-v1-1" and text[b"lotus_processing_resolution"] == b"0"
    assert text[b"lotus_encoding"] == b"value = low + pixel / 65535 * (high - low)"
    pixels = np.asarray(Image.open(path)).astype(np.int64)
    np.testing.assert_array_equal(pixels, np.round(depth.values[0, 0].numpy().astype(np.float64) * 65535))
    assert pixels.min() == 0 and pixels.max() == 65535


def test_exr_is_float32_zip_with_header_attributes(tmp_path):
    depth = lotus_core.DepthMap(lotus_like(1), "disparity", "lotus-depth-g-v2-1-disparity", 768)
    path = lotus_core.save_depth_frame(tmp_path / "d.exr", depth, 0, "exr")
    with OpenEXR.File(str(path)) as file:
        header = file.header()
        channels = file.channels()
        assert list(channels) == ["Y"] and channels["Y"].pixels.dtype == np.float32
        assert header["compression"] == OpenEXR.ZIP_COMPRESSION
        assert header["lotus_model"] == "lotus-depth-g-v2-1-disparity"
        assert header["lotus_polarity"] == "near = high"
        np.testing.assert_array_equal(channels["Y"].pixels, depth.values[0, 0].numpy())


def test_exr_and_npy_hold_normals_as_rgb(tmp_path):
    normals = torch.nn.functional.normalize(torch.randn(20, 30, 3), dim=-1)
    values, _ = lotus_core.read_depth_file(lotus_core.write_exr(tmp_path / "n.exr", normals))
    np.testing.assert_array_equal(values, normals.numpy())
    with OpenEXR.File(str(tmp_path / "n.exr")) as file:
        assert {"R", "G", "B"} <= set(file.header()["channels"][i].name for i in range(3))
    values, meta = lotus_core.read_depth_file(lotus_core.write_npy(tmp_path / "n.npy", normals))
    np.testing.assert_array_equal(values, normals.numpy())
    assert meta == {} and not sidecar(tmp_path / "n.npy").exists()


def test_npy_sidecar_is_json_next_to_it(tmp_path):
    depth = lotus_core.DepthMap(lotus_like(1), "depth", "m", 512)
    path = lotus_core.save_depth_frame(tmp_path / "d.npy", depth, 0, "npy")
    assert sidecar(path).name == "d.npy.json"
    assert json.loads(sidecar(path).read_text()) == depth_metadata(depth, 0)
    assert np.load(path).dtype == np.float32


@pytest.mark.parametrize("call, message", [
    (lambda p: lotus_core.write_png16(p / "a.png", np.full((4, 4), np.nan)), "NaN or Inf"),
    (lambda p: lotus_core.write_png16(p / "a.png", np.full((4, 4), 2.0), low=0, high=1), "outside the png16 range"),
    (lambda p: lotus_core.write_exr(p / "a.exr", np.zeros((2, 4, 4))), r"\[H, W\] or \[H, W, 3\]"),
    (lambda p: lotus_core.save_depth_frame(p / "a.tif", lotus_core.DepthMap(torch.zeros(1, 1, 4, 4), "depth"), 0,
                                           "tiff"), "format='tiff' is not one of 'png16', 'exr', 'npy'"),
], ids=["nan", "out-of-range", "bad-shape", "bad-format"])
def test_bad_input_is_refused(tmp_path, call, message):
    with pytest.raises(lotus_core.LotusError, match=message):
        call(tmp_path)


def test_depth_map_checks_its_shape_and_meaning():
    with pytest.raises(lotus_core.LotusError, match=r"\[B, 1, H, W\]"):
        lotus_core.DepthMap(torch.zeros(1, 3, 4, 4), "depth")
    with pytest.raises(lotus_core.LotusError, match=r"normal values must be a \[B, 3, H, W\] tensor"):
        lotus_core.DepthMap(torch.zeros(1, 1, 4, 4), "normal")
    with pytest.raises(lotus_core.LotusError, match="quantity must be depth"):
        lotus_core.DepthMap(torch.zeros(1, 1, 4, 4), "disparity", unit="m")


def test_control_and_colour_pictures_come_from_the_one_writer(tmp_path):
    values = torch.linspace(0, 1, 48).reshape(1, 1, 6, 8)
    depth = lotus_core.DepthMap(values, "depth", "m1", 64)
    control = lotus_core.save_depth_frame(tmp_path / "c.png", depth, 0, "control")
    pixels = np.asarray(Image.open(control))
    assert pixels.dtype == np.uint8 and pixels[0, 0] == 255 and pixels[-1, -1] == 0  # depth: near (0) = white
    assert Image.open(control).text["lotus_model"] == "m1"
    colour = np.asarray(Image.open(lotus_core.save_depth_frame(tmp_path / "s.png", depth, 0, "color")))
    assert colour.shape == (6, 8, 3)
    normals = lotus_core.DepthMap(torch.nn.functional.normalize(torch.rand(1, 3, 6, 8), dim=1), "normal")
    with pytest.raises(lotus_core.LotusError, match="format='control' pictures depth or disparity"):
        lotus_core.save_depth_frame(tmp_path / "n.png", normals, 0, "control")
    normal_map = lotus_core.save_depth_frame(tmp_path / "n.png", normals, 0, "png16")
    assert np.asarray(Image.open(normal_map)).shape == (6, 8, 3)
