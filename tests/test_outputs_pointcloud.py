"""PLY point clouds and meshes, parsed back with plyfile (an independent reader)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from plyfile import PlyData

import lotus_core
from lotus_core.outputs.geometry import focal_length_px

H, W, FOV = 24, 32, 70.0


def scene(seed=0):
    """A depth map with a near box in front of a wall, and a random image."""
    z = torch.full((1, 1, H, W), 6.0)
    z[..., 8:16, 10:20] = 2.0
    image = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(seed))
    return lotus_core.DepthMap(z, "depth", "lotus-depth-g-v1-0", unit="m"), image


def expected_point(row: int, col: int, z: float, axes="opengl") -> np.ndarray:
    focal = focal_length_px(W, FOV)
    x, y = (col + 0.5 - W / 2) / focal * z, (row + 0.5 - H / 2) / focal * z
    return np.array([x, -y, -z] if axes == "opengl" else [x, y, z])


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "ascii"])
@pytest.mark.parametrize("axes", ["opengl", "opencv"])
def test_point_cloud_parses_with_counts_colours_and_coordinates(tmp_path, binary, axes):
    depth, image = scene()
    path = lotus_core.save_point_cloud(tmp_path / "c.ply", depth, image, fov_degrees=FOV, axes=axes, binary=binary)
    ply = PlyData.read(str(path))
    assert ply.text is not binary
    vertex = ply["vertex"]
    assert vertex.count == H * W and [e.name for e in ply.elements] == ["vertex"]
    for row, col in [(0, 0), (12, 15), (H - 1, W - 1), (9, 11)]:
        index = row * W + col
        z = depth.values[0, 0, row, col].item()
        point = np.array([vertex["x"][index], vertex["y"][index], vertex["z"][index]])
        np.testing.assert_allclose(point, expected_point(row, col, z, axes), rtol=1e-5, atol=1e-6)
        colour = [vertex[c][index] for c in ("red", "green", "blue")]
        np.testing.assert_array_equal(colour, np.round(image[0, :, row, col].numpy() * 255).astype(np.uint8))
    assert "lotus-depth point cloud" in ply.comments[0] and f"{axes} camera axes" in ply.comments[0]


def test_step_keeps_every_nth_pixel(tmp_path):
    depth, image = scene()
    ply = PlyData.read(str(lotus_core.save_point_cloud(tmp_path / "s.ply", depth, image, fov_degrees=FOV, step=3)))
    rows, cols = len(range(0, H, 3)), len(range(0, W, 3))
    assert ply["vertex"].count == rows * cols
    index = 3 * cols + 4  # grid row 3, column 4 = pixel (9, 12)
    point = [ply["vertex"][axis][index] for axis in "xyz"]
    np.testing.assert_allclose(point, expected_point(9, 12, 2.0), rtol=1e-5)


def test_mesh_faces_face_the_camera_and_skip_depth_edges(tmp_path):
    depth, image = scene()
    path = lotus_core.save_point_cloud(tmp_path / "m.ply", depth, image, fov_degrees=FOV, mesh=True)
    ply = PlyData.read(str(path))
    points = np.stack([ply["vertex"][a] for a in "xyz"], axis=1).astype(np.float64)
    faces = np.stack(ply["face"]["vertex_indices"])
    # two triangles per grid cell, minus the cells with corners on both box (z = 2) and wall (z = 6); of those,
    # the cells at the box's top-left and bottom-right corners keep the one triangle that misses the box
    cells_on_edge = (8 + 1) * (10 + 1) - (8 - 1) * (10 - 1)  # cells touching the 8x10 box, minus those inside it
    assert len(faces) == 2 * ((H - 1) * (W - 1) - cells_on_edge) + 2
    a, b, c = (points[faces[:, i]] for i in range(3))
    normals = np.cross(b - a, c - a)
    assert (np.einsum("ij,ij->i", normals, -(a + b + c) / 3) > 0).all()  # counter-clockwise from the camera
    z = -points[:, 2]
    assert (z[faces].max(axis=1) / z[faces].min(axis=1) <= 1.05).all()

    everything = lotus_core.save_point_cloud(tmp_path / "all.ply", depth, image, fov_degrees=FOV, mesh=True,
                                             edge_threshold=100.0, binary=False)
    assert PlyData.read(str(everything))["face"].count == 2 * (H - 1) * (W - 1)


def test_affine_depth_must_be_made_metric_first(tmp_path):
    relative = lotus_core.DepthMap(torch.rand(1, 1, 8, 8), "disparity")
    with pytest.raises(lotus_core.LotusError, match="needs metric depth"):
        lotus_core.save_point_cloud(tmp_path / "x.ply", relative)
    metric = lotus_core.with_near_far(relative, 1.0, 4.0)
    ply = PlyData.read(str(lotus_core.save_point_cloud(tmp_path / "x.ply", metric)))
    assert ply["vertex"].count == 64 and "red" not in ply["vertex"].data.dtype.names
    z = -np.asarray(ply["vertex"]["z"])
    assert 1.0 - 1e-5 <= z.min() and z.max() <= 4.0 + 1e-5
    with pytest.raises(lotus_core.LotusError, match="differ in size"):
        lotus_core.save_point_cloud(tmp_path / "x.ply", metric, torch.rand(1, 3, 8, 9))


def test_write_ply_checks_its_arrays(tmp_path):
    with pytest.raises(lotus_core.LotusError, match=r"points must be \[N, 3\]"):
        lotus_core.write_ply(tmp_path / "x.ply", np.zeros((4, 2)))
    with pytest.raises(lotus_core.LotusError, match="colors must be uint8"):
        lotus_core.write_ply(tmp_path / "x.ply", np.zeros((4, 3)), np.zeros((4, 3)))
