"""Coloured point clouds and meshes of an image + metric depth, as PLY files.

Vertices are the pixels (every ``step``-th in both directions), row by row from the top left, at
their camera-frame position (``geometry.points_from_depth``), coloured by the image. A mesh joins
neighbouring pixels into two triangles per grid cell, counter-clockwise as seen from the camera,
and leaves out cells that span a depth edge (farthest / nearest corner > ``1 + edge_threshold``), so
foreground and background do not get joined by stretched skins.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..depthmap import DepthMap
from ..errors import LotusError
from .geometry import points_from_depth


def grid_faces(z_depth: np.ndarray, edge_threshold: float | None = 0.05) -> np.ndarray:
    """Triangles [M, 3] (vertex indices, row-major grid) over an [h, w] z-depth grid."""
    height, width = z_depth.shape
    index = np.arange(height * width, dtype=np.int64).reshape(height, width)
    corners = [index[:-1, :-1], index[1:, :-1], index[:-1, 1:], index[1:, 1:]]  # top-left, below, right, diagonal
    first = np.stack([corners[0], corners[1], corners[2]], axis=-1).reshape(-1, 3)
    second = np.stack([corners[2], corners[1], corners[3]], axis=-1).reshape(-1, 3)
    faces = np.concatenate([first, second])
    if edge_threshold is not None:
        flat = z_depth.reshape(-1)[faces]  # [M, 3]
        faces = faces[flat.max(axis=1) <= flat.min(axis=1) * (1 + edge_threshold)]
    return faces.astype(np.int32)


def write_ply(path: str | Path, points: np.ndarray, colors: np.ndarray | None = None,
              faces: np.ndarray | None = None, *, binary: bool = True, comments: tuple[str, ...] = ()) -> Path:
    """A PLY file: float32 x, y, z; optional uchar red, green, blue; optional triangles.

    Args:
        points: [N, 3] float. colors: [N, 3] uint8. faces: [M, 3] vertex indices.
        binary: little-endian binary (compact, what MeshLab/Blender/Open3D read fastest) or ASCII.
    """
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] != 3:
        raise LotusError(f"points must be [N, 3], got {points.shape}")
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        colors = np.asarray(colors)
        if colors.shape != points.shape or colors.dtype != np.uint8:
            raise LotusError(f"colors must be uint8 [N, 3] like points {points.shape},"
                             f" got {colors.dtype} {colors.shape}")
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertices = np.empty(len(points), dtype=fields)
    for axis, name in enumerate("xyz"):
        vertices[name] = points[:, axis]
    if colors is not None:
        for channel, name in enumerate(("red", "green", "blue")):
            vertices[name] = colors[:, channel]
    types = {"<f4": "float", "u1": "uchar"}
    header = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0",
              *(f"comment {c}" for c in comments), f"element vertex {len(points)}",
              *(f"property {types[kind]} {name}" for name, kind in fields)]
    if faces is not None:
        faces = np.asarray(faces, dtype=np.int32).reshape(-1, 3)
        header += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
    header.append("end_header")
    path = Path(path)
    with path.open("wb") as file:
        file.write(("\n".join(header) + "\n").encode("ascii"))
        if binary:
            file.write(vertices.tobytes())
            if faces is not None:
                packed = np.empty(len(faces), dtype=[("n", "u1"), ("v", "<i4", (3,))])
                packed["n"], packed["v"] = 3, faces
                file.write(packed.tobytes())
        else:
            float_format = "%.7g %.7g %.7g"
            row_format = float_format + (" %d %d %d" if colors is not None else "")
            columns = [vertices[name] for name, _ in fields]
            np.savetxt(file, np.column_stack(columns) if colors is None else
                       np.rec.fromarrays(columns), fmt=row_format)
            if faces is not None:
                np.savetxt(file, np.column_stack([np.full(len(faces), 3), faces]), fmt="%d")
    return path


def save_point_cloud(path: str | Path, depth: DepthMap, image: torch.Tensor | None = None, *, frame: int = 0,
                     fov_degrees: float = 60.0, step: int = 1, mesh: bool = False, edge_threshold: float = 0.05,
                     axes: str = "opengl", binary: bool = True) -> Path:
    """One frame of a metric DepthMap (and its [B, 3, H, W] image for colours) as a PLY point cloud or mesh.

    Make affine-invariant maps metric first (``with_near_far`` / ``with_known_distances``).
    """
    if not depth.is_metric:
        raise LotusError("save_point_cloud needs metric depth: use with_near_far or with_known_distances first")
    if not (isinstance(step, int) and step >= 1):
        raise LotusError(f"step={step!r} must be an integer >= 1")
    z = depth.values[frame:frame + 1].float()  # [1,1,H,W]
    points = points_from_depth(z, fov_degrees, axes)[0, :, ::step, ::step]  # [3,h,w]
    grid = points.shape[1:]
    vertices = points.permute(1, 2, 0).reshape(-1, 3).cpu().numpy()
    colors = None
    if image is not None:
        if image.shape[-2:] != depth.values.shape[-2:]:
            raise LotusError(f"image {tuple(image.shape[-2:])} and depth {tuple(depth.values.shape[-2:])}"
                             " differ in size (height, width)")
        rgb = image[min(frame, image.shape[0] - 1), :3, ::step, ::step]  # [3,h,w]
        colors = (rgb.permute(1, 2, 0).reshape(-1, 3).float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    faces = None
    if mesh:
        faces = grid_faces(z[0, 0, ::step, ::step].cpu().numpy(), edge_threshold)
    comments = (f"lotus-depth point cloud, {axes} camera axes, horizontal fov {fov_degrees:g} deg,"
                f" unit {depth.unit or 'unspecified'}, model {depth.model or 'unknown'}, grid {grid[1]}x{grid[0]}",)
    return write_ply(path, vertices, colors, faces, binary=binary, comments=comments)
