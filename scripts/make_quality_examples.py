"""Draw docs/quality_tiles.png: tiled high resolution and video stabilisation on a synthetic scene.

    .venv/bin/python scripts/make_quality_examples.py

No model weights exist here, so the "predictions" are the scene itself with what makes real Lotus
predictions disagree: each tile and each frame gets its own random scale and shift (Lotus depth is
affine-invariant) plus a little noise, and the global pass is a blurred low-resolution copy.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_quality import distorted_tiles, synthetic_depth  # noqa: E402

import lotus_core  # noqa: E402
from lotus_core.prediction.tile_grid import tile_layout  # noqa: E402
from lotus_core.quality.highres import blend_tiles  # noqa: E402
from lotus_core.quality.video import stabilize  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "docs" / "quality_tiles.png"
H, W = 240, 336


def panel(values: torch.Tensor, title: str, colormap: str = "spectral") -> Image.Image:
    depth = lotus_core.DepthMap(values.clamp(0, 1), "depth")
    # spectral: near = red; for the flicker panels, inferno reversed: 0 (steady) = black
    rgb = lotus_core.colorize(depth, colormap, stretch=False, reverse=colormap != "spectral")[0].permute(1, 2, 0)
    image = Image.fromarray((rgb * 255).round().byte().numpy())
    framed = Image.new("RGB", (W, H + 22), "white")
    framed.paste(image, (0, 22))
    ImageDraw.Draw(framed).text((4, 5), title, fill="black")
    return framed


def main() -> None:
    truth = synthetic_depth(H, W, seed=1)
    low = torch.nn.functional.interpolate(truth, size=(H // 4, W // 4), mode="bilinear", antialias=True)
    reference = torch.nn.functional.interpolate(low, size=(H, W), mode="bilinear")
    tiles = tile_layout(H, W, 112, 24)
    pieces = distorted_tiles(truth, tiles, noise=0.002)
    naive = blend_tiles(reference, tiles, pieces, overlap=0, align=False)
    ours = blend_tiles(reference, tiles, pieces, overlap=24)

    generator = torch.Generator().manual_seed(6)
    frames = torch.cat([(0.7 + 0.6 * torch.rand(1, generator=generator)) * truth
                        + 0.2 * torch.rand(1, generator=generator) for _ in range(12)])
    flicker_before = frames.std(0, keepdim=True)
    flicker_after = stabilize(frames).std(0, keepdim=True)

    panels = [
        panel(truth[0:1], "scene (ground truth)"),
        panel(reference, "global pass (1/4 resolution)"),
        panel(naive, "tiles, no alignment: seams"),
        panel(ours, f"aligned + blended: max err {(ours - truth).abs().max():.4f}"),
        panel(flicker_before / flicker_before.max(),
              f"12 jittered frames: std over time, max {flicker_before.max():.3f}", "inferno"),
        panel(flicker_after / flicker_before.max(), f"after stabilize(): max {flicker_after.max():.1e}", "inferno"),
    ]
    sheet = Image.new("RGB", (3 * W + 8, 2 * (H + 22) + 4), "white")
    for index, image in enumerate(panels):
        sheet.paste(image, ((index % 3) * (W + 4), (index // 3) * (H + 26)))
    OUT.parent.mkdir(exist_ok=True)
    sheet.save(OUT)


if __name__ == "__main__":
    main()
