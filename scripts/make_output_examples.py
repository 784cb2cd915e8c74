"""Draw docs/depth_outputs.png: what the depth-output functions make of an analytic scene.

    .venv/bin/python scripts/make_output_examples.py

The scene (a sphere and a box on a floor in front of a wall, pinhole camera, 60 degrees) is ray-cast
here, so the picture shows the functions' conventions without needing model weights.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import lotus_core  # noqa: E402

H, W, FOV = 192, 256, 60.0
OUT = Path(__file__).resolve().parents[1] / "docs" / "depth_outputs.png"


def scene_depth() -> torch.Tensor:
    """z-depth [1, 1, H, W]: wall at z = 9, floor 1.5 below the camera, a sphere and a box."""
    focal = W / 2 / math.tan(math.radians(FOV) / 2)
    x = ((torch.arange(W) + 0.5 - W / 2) / focal).expand(H, W).double()
    y = ((torch.arange(H) + 0.5 - H / 2) / focal)[:, None].expand(H, W).double()  # down
    t = torch.full((H, W), 9.0, dtype=torch.float64)  # the wall (z-depth = t since the ray's z is 1)
    floor = torch.where(y > 0, 1.5 / y.clamp_min(1e-9), torch.inf)
    t = torch.minimum(t, floor)
    centre, radius = torch.tensor([-0.9, 0.4, 5.0], dtype=torch.float64), 1.1  # x right, y down, z forward
    d = torch.stack([x, y, torch.ones_like(x)])
    b = (d * centre.view(3, 1, 1)).sum(0)
    a = (d * d).sum(0)
    disc = b * b - a * ((centre * centre).sum() - radius ** 2)
    sphere = torch.where(disc > 0, (b - disc.clamp_min(0).sqrt()) / a, torch.inf)
    t = torch.minimum(t, sphere)
    box_front = torch.where((x * 3.8 > 0.6) & (x * 3.8 < 2.0) & (y * 3.8 > -0.2) & (y * 3.8 < 1.5), 3.8, torch.inf)
    return torch.minimum(t, box_front)[None, None].float()


def main() -> None:
    metric = lotus_core.DepthMap(scene_depth(), "depth", "analytic scene", unit="m")
    near, far = metric.values.min().item(), metric.values.max().item()
    disparity = (1 / metric.values - 1 / far) / (1 / near - 1 / far)  # as a *-disparity checkpoint predicts
    lotus_like = lotus_core.DepthMap(disparity, "disparity", "analytic scene")
    normals = lotus_core.normals_from_depth(metric, fov_degrees=FOV)
    panels = [
        ("disparity (native)", disparity.expand(-1, 3, -1, -1)),
        ("spectral", lotus_core.colorize(lotus_like, "spectral")),
        ("inferno", lotus_core.colorize(lotus_like, "inferno")),
        ("turbo, 2-98 %", lotus_core.colorize(lotus_like, "turbo", low=2, high=98)),
        ("normals: lotus", lotus_core.encode_normals(normals, "lotus")),
        ("normals: opengl", lotus_core.encode_normals(normals, "opengl")),
    ]
    label = 14
    sheet = Image.new("RGB", (3 * W, 2 * (H + label)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for index, (title, image) in enumerate(panels):
        left, top = (index % 3) * W, (index // 3) * (H + label)
        pixels = (image[0].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
        sheet.paste(Image.fromarray(pixels), (left, top + label))
        draw.text((left + 4, top + 1), title, fill="black", font=font)
    OUT.parent.mkdir(exist_ok=True)
    sheet.save(OUT, optimize=True)
    print(OUT)


if __name__ == "__main__":
    main()
