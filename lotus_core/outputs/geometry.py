"""Camera geometry: 3D points and surface normals from depth, and normal-map conventions.

Camera frame (as OpenGL/Blender): x right, y up, z towards the viewer; the camera looks along -z,
so a point at z-depth ``d`` has ``z = -d``. Pixel centres sit at ``(col + 0.5, row + 0.5)``.

- pinhole: horizontal field of view ``fov_degrees`` with the principal point at the image centre
  and square pixels, so ``f = (W / 2) / tan(fov / 2)`` pixels. Normals need only the depth's shape,
  not its scale: any metric map (or near/far pair with the same ratio) gives the same normals.
- orthographic: parallel rays; the image is 1 unit wide and ``relief`` units deep from the
  nearest (0) to the farthest (1) value: a height map's normals, for relighting and bump maps.

Normal maps encode unit vectors as ``RGB = (n' + 1) / 2`` where ``n'`` is ``n`` with per-axis signs:

| convention | R | G | B | used by |
|---|---|---|---|---|
| lotus | left | up | towards viewer | Lotus normal checkpoints, DSINE, StableNormal |
| opengl | right | up | towards viewer | Blender, Unity, OpenGL normal maps |
| directx | right | down | towards viewer | Unreal, DirectX normal maps |
| omnidata | right | down | away from viewer | Omnidata, Metric3D (all three of lotus inverted) |
"""

from __future__ import annotations

import math

import torch

from ..depthmap import DepthMap
from ..errors import LotusError, check_choice
from .metric import with_near_far

CAMERAS = ("pinhole", "orthographic")
AXES = ("opengl", "opencv")  # opencv: x right, y down, z forward (the camera looks along +z)
# convention -> sign of (x, y, z) of the camera-frame normal in (R, G, B)
NORMAL_CONVENTIONS = {
    "lotus": (-1.0, 1.0, 1.0),
    "opengl": (1.0, 1.0, 1.0),
    "directx": (1.0, -1.0, 1.0),
    "omnidata": (1.0, -1.0, -1.0),
}


def focal_length_px(width: int, fov_degrees: float) -> float:
    """Focal length in pixels of a pinhole camera with this horizontal field of view."""
    if not 0 < fov_degrees < 180:
        raise LotusError(f"fov_degrees={fov_degrees!r} must lie strictly between 0 and 180")
    return width / 2 / math.tan(math.radians(fov_degrees) / 2)


def points_from_depth(z_depth: torch.Tensor, fov_degrees: float, axes: str = "opengl") -> torch.Tensor:
    """Camera-frame 3D points [B, 3, H, W] of a metric z-depth map [B, 1, H, W] (pinhole camera)."""
    check_choice("axes", axes, AXES)
    _, _, height, width = z_depth.shape
    focal = focal_length_px(width, fov_degrees)
    z = z_depth.float()
    cols = (torch.arange(width, dtype=torch.float32, device=z.device) + 0.5 - width / 2) / focal
    rows = (torch.arange(height, dtype=torch.float32, device=z.device) + 0.5 - height / 2) / focal
    x = cols.view(1, 1, 1, width) * z
    y = rows.view(1, 1, height, 1) * z  # down
    if axes == "opengl":
        return torch.cat([x, -y, -z], dim=1)
    return torch.cat([x, y, z], dim=1)


def normals_from_points(points: torch.Tensor, viewer: torch.Tensor | None = None) -> torch.Tensor:
    """Unit normals [B, 3, H, W] of an organised point grid [B, 3, H, W] in the OpenGL camera frame.

    Central differences inside, one-sided at the border; each normal is turned to face the viewer
    (the camera at the origin, or the direction ``viewer`` [3] for parallel rays).
    """
    along_row = torch.gradient(points, dim=3)[0]  # d/dcol: to the right
    along_col = torch.gradient(points, dim=2)[0]  # d/drow: downwards
    normals = torch.nn.functional.normalize(torch.linalg.cross(along_col, along_row, dim=1), dim=1)
    to_viewer = -points if viewer is None else viewer.view(1, 3, 1, 1).to(points)
    facing = (normals * to_viewer).sum(dim=1, keepdim=True)
    return torch.where(facing < 0, -normals, normals)


def normals_from_depth(depth: DepthMap, *, camera: str = "pinhole", fov_degrees: float = 60.0,
                       near: float = 1.0, far: float = 10.0, relief: float = 0.25) -> torch.Tensor:
    """Unit surface normals [B, 3, H, W] (camera frame: x right, y up, z towards viewer) of a depth map.

    Args:
        camera: "pinhole" (``fov_degrees``; affine-invariant maps are made metric with ``near``/``far``,
            see ``with_near_far``: only their ratio matters here) or "orthographic" (the map, stretched
            to 0..1 with near = 0, is ``relief`` image widths deep).
    """
    depth.require_depth("normals_from_depth")
    check_choice("camera", camera, CAMERAS)
    if camera == "pinhole":
        z = with_near_far(depth, near, far).values
        return normals_from_points(points_from_depth(z, fov_degrees))
    if not relief > 0:
        raise LotusError(f"relief={relief!r} must be > 0")
    values = depth.values.float()
    nearness = depth.nearness()
    _, _, height, width = values.shape
    cols = (torch.arange(width, dtype=torch.float32, device=values.device) + 0.5) / width
    rows = (torch.arange(height, dtype=torch.float32, device=values.device) + 0.5) / width
    points = torch.cat([
        cols.view(1, 1, 1, width).expand_as(values),
        -rows.view(1, 1, height, 1).expand_as(values),
        -(1 - nearness) * relief,
    ], dim=1)
    return normals_from_points(points, viewer=torch.tensor([0.0, 0.0, 1.0]))


def encode_normals(normals: torch.Tensor, convention: str = "lotus") -> torch.Tensor:
    """Camera-frame unit normals [B, 3, H, W] -> a normal map in [0, 1] in ``convention``."""
    return (normals * _signs(convention, normals) + 1) / 2


def decode_normals(normal_map: torch.Tensor, convention: str = "lotus") -> torch.Tensor:
    """A normal map [B, 3, H, W] in [0, 1] in ``convention`` -> camera-frame unit normals."""
    return torch.nn.functional.normalize((normal_map.float() * 2 - 1) * _signs(convention, normal_map), dim=1)


def convert_normal_map(normal_map: torch.Tensor, source: str, target: str) -> torch.Tensor:
    """Re-encode a normal map [B, 3, H, W] from one convention to another (vectors renormalised)."""
    return encode_normals(decode_normals(normal_map, source), target)


def _signs(convention: str, like: torch.Tensor) -> torch.Tensor:
    check_choice("convention", convention, NORMAL_CONVENTIONS)
    return torch.tensor(NORMAL_CONVENTIONS[convention], dtype=torch.float32, device=like.device).view(1, 3, 1, 1)
