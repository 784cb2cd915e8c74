"""Colour maps and levels against matplotlib (the source of the shipped tables) and numpy."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch

import lotus_core
from lotus_core.outputs.colormaps import apply_colormap, colormap_table

MATPLOTLIB_NAMES = {"spectral": "Spectral", "inferno": "inferno", "magma": "magma", "turbo": "turbo",
                    "viridis": "viridis", "gray": "gray"}
# Published anchor colours, independent of matplotlib: ColorBrewer Spectral-11 ends, viridis ends.
ANCHORS = {
    ("spectral", 0.0): (0x9E, 0x01, 0x42), ("spectral", 1.0): (0x5E, 0x4F, 0xA2),
    ("viridis", 0.0): (0x44, 0x01, 0x54), ("viridis", 1.0): (0xFD, 0xE7, 0x25),
    ("gray", 0.0): (0, 0, 0), ("gray", 1.0): (255, 255, 255),
}


def test_the_shipped_maps_are_exactly_the_ones_asked_for():
    assert list(lotus_core.COLORMAPS) == list(MATPLOTLIB_NAMES)
    for name in MATPLOTLIB_NAMES:
        assert colormap_table(name).shape == (256, 3) and colormap_table(name).dtype == torch.float32


@pytest.mark.parametrize("name", list(MATPLOTLIB_NAMES))
def test_lookup_equals_matplotlib_at_known_and_random_values(name):
    known = np.array([0, 1 / 512, 1 / 256, 0.25, 0.5, 0.5 + 1e-6, 0.75, 255 / 256, 0.999999, 1.0], np.float32)
    rng = np.random.default_rng(0)
    positions = np.concatenate([known, rng.random(4000, dtype=np.float32)])
    expected = matplotlib.colormaps[MATPLOTLIB_NAMES[name]](positions)[:, :3]
    ours = apply_colormap(torch.from_numpy(positions).view(1, 1, 1, -1), name)[0, :, 0].T.numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-7, rtol=0)


@pytest.mark.parametrize("name, position", list(ANCHORS))
def test_published_anchor_colours(name, position):
    rgb = apply_colormap(torch.full((1, 1, 1, 1), position), name)[0, :, 0, 0].numpy()
    np.testing.assert_allclose(rgb * 255, ANCHORS[name, position], atol=0.6)


def reference_colorize(depth: np.ndarray, reverse_color: bool) -> np.ndarray:
    """The official Lotus ``infer.py``'s colorize_depth_map (github.com/EnVision-Research/Lotus) before its
    uint8 cast: per-image min-max stretch, ``1 - d`` for disparity models, matplotlib's Spectral."""
    d = (depth - depth.min()) / (depth.max() - depth.min())
    if reverse_color:
        d = 1 - d
    return matplotlib.colormaps["Spectral"](d, bytes=False)[..., :3]


@pytest.mark.parametrize("quantity, reverse_color", [("depth", False), ("disparity", True)])
def test_spectral_reproduces_the_reference_visualisation(quantity, reverse_color):
    values = torch.rand(2, 1, 37, 45, generator=torch.Generator().manual_seed(3)) * 0.8 + 0.1
    ours = lotus_core.colorize(lotus_core.DepthMap(values, quantity), "spectral").permute(0, 2, 3, 1).numpy()
    for frame in range(2):
        # Same table entry for every pixel (neighbouring entries differ by > 1e-3); float32 vs float64 table.
        np.testing.assert_allclose(ours[frame], reference_colorize(values[frame, 0].numpy(), reverse_color),
                                   atol=1e-6, rtol=0)


@pytest.mark.parametrize("quantity", ["depth", "disparity"])
@pytest.mark.parametrize("name, near_colour", [("spectral", "red"), ("turbo", "red"), ("inferno", "bright"),
                                                ("magma", "bright"), ("viridis", "bright"), ("gray", "bright")])
def test_near_is_the_warm_or_bright_end_and_reverse_flips_it(quantity, name, near_colour):
    ramp = torch.linspace(0, 1, 64).view(1, 1, 1, 64)  # pixel 0 holds value 0
    depth = lotus_core.DepthMap(ramp, quantity)
    near_pixel = 0 if quantity == "depth" else -1

    def near_and_far(rgb):
        return rgb[0, :, 0, near_pixel], rgb[0, :, 0, -1 - near_pixel]

    near, far = near_and_far(lotus_core.colorize(depth, name))
    if near_colour == "red":
        assert near[0] > 2 * max(near[1], near[2]) and far[2] > far[0]  # red near, blue far
    else:
        assert near.sum() > far.sum() + 1
    reversed_near, reversed_far = near_and_far(lotus_core.colorize(depth, name, reverse=True))
    torch.testing.assert_close(reversed_near, far)
    torch.testing.assert_close(reversed_far, near)


def test_percentile_clipping_matches_numpy_percentiles():
    rng = np.random.default_rng(1)
    values = rng.random((1, 1, 50, 60)).astype(np.float32)
    values[0, 0, :2, :3] = [[-5, 9, 30], [40, -8, 12]]  # outliers that min..max stretching would obey
    low, high = np.percentile(values, [2, 98])
    positions = np.clip((values - low) / (high - low), 0, 1)[0, 0]
    expected = matplotlib.colormaps["inferno"](positions)[..., :3]
    ours = lotus_core.colorize(lotus_core.DepthMap(torch.from_numpy(values), "disparity"), "inferno", low=2, high=98)
    close = np.isclose(ours[0].permute(1, 2, 0).numpy(), expected, atol=1e-6).all(axis=-1)
    assert close.mean() > 0.999  # a value within float error of a table-bin edge may land in the next bin


def test_batch_stretch_keeps_one_scale_per_batch():
    frame = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    depth = lotus_core.DepthMap(torch.cat([frame, frame * 0.5]), "disparity")
    per_image = lotus_core.colorize(depth, "viridis")
    torch.testing.assert_close(per_image[0], per_image[1], atol=1 / 255, rtol=0)  # each frame fills the map
    whole = lotus_core.colorize(depth, "viridis", per_image=False)
    assert (whole[0] - whole[1]).abs().max() > 0.2  # the dimmer frame stays dimmer


def test_flat_map_is_mid_colour_and_bad_names_are_refused():
    rgb = lotus_core.colorize(lotus_core.DepthMap(torch.full((1, 1, 4, 4), 0.3), "depth"), "gray")
    torch.testing.assert_close(rgb, torch.full_like(rgb, 128 / 255))
    with pytest.raises(lotus_core.LotusError, match="colormap='jet' is not one of"):
        lotus_core.colorize(lotus_core.DepthMap(torch.zeros(1, 1, 4, 4), "depth"), "jet")


def test_percentile_range_equals_numpy_linear_percentiles():
    values = torch.randn(3, 1, 21, 17, generator=torch.Generator().manual_seed(4))
    for low, high in [(0, 100), (2, 98), (0.03, 99.97), (25, 75)]:
        lo, hi = lotus_core.percentile_range(values, low, high)
        expected = np.percentile(values.numpy().reshape(3, -1), [low, high], axis=1)
        np.testing.assert_allclose(lo.flatten().numpy(), expected[0], atol=1e-6)
        np.testing.assert_allclose(hi.flatten().numpy(), expected[1], atol=1e-6)
        lo_all, hi_all = lotus_core.percentile_range(values, low, high, per_image=False)
        assert lo_all.shape == (3, 1, 1, 1)
        np.testing.assert_allclose(lo_all.flatten().numpy(), np.percentile(values.numpy(), low), atol=1e-6)
    with pytest.raises(lotus_core.LotusError, match="0 <= low < high <= 100"):
        lotus_core.percentile_range(values, 60, 40)


def test_remap_levels_gamma_invert_clip():
    x = torch.tensor([-0.5, 0.0, 0.25, 0.5, 1.0, 2.0]).view(1, 1, 1, 6)
    torch.testing.assert_close(lotus_core.remap(x, 0, 1).flatten(), torch.tensor([0, 0, 0.25, 0.5, 1, 1.0]))
    torch.testing.assert_close(lotus_core.remap(x, 0, 1, clip=False).flatten(), x.flatten())
    torch.testing.assert_close(lotus_core.remap(x, 0, 1, gamma=2).flatten(), torch.tensor([0, 0, 0.0625, 0.25, 1, 1]))
    inverted = torch.tensor([1, 1, 0.75, 0.5, 0, 0.0])
    torch.testing.assert_close(lotus_core.remap(x, 0, 1, invert=True).flatten(), inverted)
    torch.testing.assert_close(lotus_core.remap(x, 0.5, 1, out_low=10, out_high=20).flatten(),
                               torch.tensor([10, 10, 10, 10, 20, 20.0]))
    torch.testing.assert_close(lotus_core.remap(x, 1, 0).flatten(), inverted)
    with pytest.raises(lotus_core.LotusError, match="input range is empty"):
        lotus_core.remap(x, 0.5, 0.5)
    with pytest.raises(lotus_core.LotusError, match="gamma"):
        lotus_core.remap(x, gamma=0)


def test_depth_is_flipped_at_most_once_on_its_way_into_a_colour_map():
    """v1 depth (near = low) into Spectral (near at the first entry) is looked up as normalize(v)
    itself, with no 1 - (1 - v) round trip that moves values across table entries."""
    values = torch.rand(1, 1, 256, 256, generator=torch.Generator().manual_seed(5))
    depth = lotus_core.DepthMap(values, "depth")
    expected = apply_colormap(lotus_core.normalize(values), "spectral")
    assert torch.equal(lotus_core.colorize(depth, "spectral"), expected)
