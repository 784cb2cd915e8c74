"""Colour maps for looking at depth: matplotlib's 256-entry tables, shipped as an asset (no matplotlib).

Every map is oriented so that near is its warm or bright end: Spectral (the Lotus reference's
visualisation) and turbo show near = red and far = blue, inferno/magma/viridis near = bright, gray
near = white. ``reverse`` flips that. Values are looked up exactly as matplotlib does for a float in
[0, 1]: entry ``floor(x * 256)``, 1.0 included in the last entry.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import torch
from safetensors.torch import load_file

from ..depthmap import DepthMap
from ..errors import check_choice

# lotus_core, wherever it is imported from (inside ComfyUI it is <pack folder>.lotus_core).
CORE_PACKAGE = __name__.rsplit(".", 2)[0]

# name -> whether near sits at the table's low end (Spectral starts red; the others end bright/red)
COLORMAPS = {"spectral": True, "inferno": False, "magma": False, "turbo": False, "viridis": False, "gray": False}
TABLE_SIZE = 256


@lru_cache(maxsize=1)
def _tables() -> dict[str, torch.Tensor]:
    path = resources.files(CORE_PACKAGE) / "assets" / "colormaps.safetensors"
    with resources.as_file(path) as file:
        return load_file(file)


def colormap_table(name: str) -> torch.Tensor:
    """The [256, 3] RGB table of a map (float32 in [0, 1], matplotlib's order: index 0 first)."""
    check_choice("colormap", name, COLORMAPS)
    return _tables()[name]


def apply_colormap(positions: torch.Tensor, name: str) -> torch.Tensor:
    """Look up [B, 1, H, W] positions in [0, 1] (clipped) in a map's table -> [B, 3, H, W] RGB.

    No orientation is applied here: 0 is the table's first entry, as ``matplotlib.colormaps[name](x)``.
    """
    table = colormap_table(name).to(positions.device)
    index = (positions.float().clamp(0, 1) * TABLE_SIZE).long().clamp_max(TABLE_SIZE - 1)  # [B,1,H,W]
    return table[index[:, 0]].permute(0, 3, 1, 2)  # [B,3,H,W]


def colorize(depth: DepthMap, colormap: str = "spectral", *, low: float = 0.0, high: float = 100.0,
             per_image: bool = True, stretch: bool = True, reverse: bool = False) -> torch.Tensor:
    """[B, 3, H, W] RGB in [0, 1] of a depth map, near at the map's warm/bright end.

    Args:
        low, high: percentiles that become the map's two ends (values beyond are clipped).
            0 and 100 (each image's min..max) reproduce the Lotus reference's visualisation.
        per_image: stretch each image on its own (as the reference), or the whole batch with one
            range (steady colours over video frames).
        stretch: False looks the values up as they are (they should lie in [0, 1]).
        reverse: near at the other end.
    """
    check_choice("colormap", colormap, COLORMAPS)
    near_first = COLORMAPS[colormap] != reverse  # near at the table's first entry
    positions = depth.nearness(low, high, per_image=per_image, stretch=stretch, near=0 if near_first else 1)
    return apply_colormap(positions, colormap)
