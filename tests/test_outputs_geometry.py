"""Depth -> normals on analytic surfaces (planes, a sphere), normal-map conventions, metric depth."""

from __future__ import annotations

import math

import pytest
import torch

import lotus_core
from lotus_core.outputs.geometry import focal_length_px

H, W, FOV = 96, 128, 60.0


def rays(height=H, width=W, fov=FOV) -> torch.Tensor:
    """[3, H, W] camera-frame ray directions with z = -1 (OpenGL frame), through the pixel centres."""
    focal = focal_length_px(width, fov)
    cols = (torch.arange(width, dtype=torch.float64) + 0.5 - width / 2) / focal
    rows = (torch.arange(height, dtype=torch.float64) + 0.5 - height / 2) / focal
    return torch.stack([cols.expand(height, width), -rows[:, None].expand(height, width),
                        -torch.ones(height, width, dtype=torch.float64)])


def plane_depth(normal, offset) -> torch.Tensor:
    """z-depth [1, 1, H, W] of the plane n . P = offset seen through every pixel."""
    n = torch.tensor(normal, dtype=torch.float64)
    t = offset / (n.view(3, 1, 1) * rays()).sum(0)
    return t[None, None].float()


def sphere_depth(center, radius) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """z-depth of a sphere in front of a far wall, its true normals [3, H, W] and where it is hit."""
    c = torch.tensor(center, dtype=torch.float64).view(3, 1, 1)
    d = rays()
    # |t d - c|^2 = r^2  ->  t^2 |d|^2 - 2 t d.c + |c|^2 - r^2 = 0; the nearer root
    a, b, k = (d * d).sum(0), -2 * (d * c).sum(0), (c * c).sum() - radius ** 2
    disc = b * b - 4 * a * k
    hit = disc > 0
    t = torch.where(hit, (-b - disc.clamp_min(0).sqrt()) / (2 * a), torch.full_like(a, 20.0))
    normals = (t * d - c) / radius
    return t[None, None].float(), normals.float(), hit


def angles_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    cos = (torch.nn.functional.normalize(a.double(), dim=0) * torch.nn.functional.normalize(b.double(), dim=0)).sum(0)
    return torch.rad2deg(torch.arccos(cos.clamp(-1, 1)))


PLANES = [((0.0, 0.0, 1.0), -4.0), ((0.3, -0.2, 0.93), -5.0), ((-0.6, 0.1, 0.8), -3.0), ((0.0, 0.7, 0.7), -2.0)]


@pytest.mark.parametrize("normal, offset", PLANES)
def test_pinhole_normals_of_planes_from_metric_depth(normal, offset):
    z = plane_depth(normal, offset)
    assert (z > 0).all()
    normals = lotus_core.normals_from_depth(lotus_core.DepthMap(z, "depth", unit="m"), fov_degrees=FOV)[0]
    truth = torch.tensor(normal).view(3, 1, 1).expand(3, H, W)
    assert angles_deg(normals, truth).max() < 0.05  # chords of a plane lie in it: exact up to float32


@pytest.mark.parametrize("quantity", ["depth", "disparity"])
def test_affine_invariant_maps_with_their_near_far_give_the_same_planes(quantity):
    normal, offset = PLANES[1]
    z = plane_depth(normal, offset).double()
    near, far = z.min().item(), z.max().item()
    if quantity == "depth":
        values = (z - near) / (far - near)
    else:
        values = (1 / z - 1 / far) / (1 / near - 1 / far)
    depth = lotus_core.DepthMap(values.float(), quantity)
    normals = lotus_core.normals_from_depth(depth, fov_degrees=FOV, near=near, far=far)[0]
    assert angles_deg(normals, torch.tensor(normal).view(3, 1, 1).expand(3, H, W)).max() < 0.1
    # only the ratio far / near matters under a pinhole camera
    scaled = lotus_core.normals_from_depth(depth, fov_degrees=FOV, near=near * 7, far=far * 7)
    torch.testing.assert_close(scaled[0], normals, atol=1e-4, rtol=0)
    # the wrong quantity bends the plane
    other = "disparity" if quantity == "depth" else "depth"
    bent = lotus_core.normals_from_depth(lotus_core.DepthMap(values.float(), other), fov_degrees=FOV,
                                         near=near, far=far)[0]
    assert angles_deg(bent, normals).max() > 2


def test_pinhole_normals_of_a_sphere():
    z, truth, hit = sphere_depth((0.3, -0.2, -4.0), 1.2)
    normals = lotus_core.normals_from_depth(lotus_core.DepthMap(z, "depth", unit="m"), fov_degrees=FOV)[0]
    # pixels whose 3x3 neighbourhood is all on the sphere (central differences do not cross the rim)
    inside = -torch.nn.functional.max_pool2d(-hit.float()[None, None], 3, 1, 1)[0, 0] > 0
    errors = angles_deg(normals, truth)[inside]
    assert inside.sum() > 2000
    assert errors.median() < 0.5 and torch.quantile(errors, 0.95) < 2.0, (errors.median(), errors.max())
    # facing the camera: z component > 0, and the sphere's right side points right
    assert (normals[2][inside] > 0).all()
    right = inside & (truth[0] > 0.5)
    assert (normals[0][right] > 0).all()


def test_orthographic_normals_of_a_height_plane_and_a_hemisphere():
    cols = (torch.arange(W) + 0.5) / W
    rows = (torch.arange(H) + 0.5) / W
    # depth along -z grows with x: z = -(0.2 x + 0.1 y'), relief 1 => depth map holds 0.2 x + 0.1 y' directly
    depth_values = 0.2 * cols[None, :] + 0.1 * rows[:, None]
    span = depth_values.max() - depth_values.min()
    depth = lotus_core.DepthMap(((depth_values - depth_values.min()) / span)[None, None].float(), "depth")
    normals = lotus_core.normals_from_depth(depth, camera="orthographic", relief=span.item())[0]
    # surface z(x, y_up) = -(0.2 x - 0.1 y_up) => normal ~ (-dz/dx, -dz/dy_up, 1) = (0.2, -0.1, 1)
    truth = torch.tensor([0.2, -0.1, 1.0]).view(3, 1, 1).expand(3, H, W)
    assert angles_deg(normals, truth).max() < 0.05

    radius = 0.3  # a hemisphere bulging towards the viewer from a flat background, in image widths
    x, y = cols[None, :] - 0.5, rows[:, None] - rows.mean()
    rho2 = x ** 2 + y ** 2
    height = torch.sqrt((radius ** 2 - rho2).clamp_min(0))
    depth = lotus_core.DepthMap((1 - height / radius)[None, None].float(), "depth")
    normals = lotus_core.normals_from_depth(depth, camera="orthographic", relief=radius)[0]
    truth = torch.stack([x.expand(H, W), -y.expand(H, W), height])
    inside = rho2 < (0.8 * radius) ** 2
    errors = angles_deg(normals, truth)[inside]
    assert errors.median() < 1.0 and errors.max() < 5.0, (errors.median(), errors.max())


@pytest.mark.parametrize("vector, expected", [
    ((1, 0, 0), {"lotus": (0, .5, .5), "opengl": (1, .5, .5), "directx": (1, .5, .5), "omnidata": (1, .5, .5)}),
    ((0, 1, 0), {"lotus": (.5, 1, .5), "opengl": (.5, 1, .5), "directx": (.5, 0, .5), "omnidata": (.5, 0, .5)}),
    ((0, 0, 1), {"lotus": (.5, .5, 1), "opengl": (.5, .5, 1), "directx": (.5, .5, 1), "omnidata": (.5, .5, 0)}),
], ids=["right", "up", "towards-viewer"])
def test_normal_map_conventions(vector, expected):
    n = torch.tensor(vector, dtype=torch.float32).view(1, 3, 1, 1)
    assert set(expected) == set(lotus_core.NORMAL_CONVENTIONS)
    for convention, rgb in expected.items():
        encoded = lotus_core.encode_normals(n, convention)
        torch.testing.assert_close(encoded.flatten(), torch.tensor(rgb, dtype=torch.float32))
        torch.testing.assert_close(lotus_core.decode_normals(encoded, convention), n)


def test_convert_normal_map_between_conventions():
    normals = torch.nn.functional.normalize(torch.randn(2, 3, 8, 9, generator=torch.Generator().manual_seed(0)), dim=1)
    lotus = lotus_core.encode_normals(normals, "lotus")
    # Lotus maintainers: Omnidata is the exact opposite in all three channels; DirectX flips OpenGL's green
    torch.testing.assert_close(lotus_core.convert_normal_map(lotus, "lotus", "omnidata"), 1 - lotus)
    opengl = lotus_core.convert_normal_map(lotus, "lotus", "opengl")
    directx = lotus_core.convert_normal_map(lotus, "lotus", "directx")
    torch.testing.assert_close(directx[:, 1], 1 - opengl[:, 1])
    torch.testing.assert_close(directx[:, [0, 2]], opengl[:, [0, 2]])
    torch.testing.assert_close(lotus_core.convert_normal_map(opengl, "opengl", "lotus"), lotus)
    with pytest.raises(lotus_core.LotusError, match="convention='vulkan' is not one of"):
        lotus_core.encode_normals(normals, "vulkan")


def test_with_near_far():
    values = torch.tensor([0.0, 0.25, 1.0]).view(1, 1, 1, 3)
    depth = lotus_core.with_near_far(lotus_core.DepthMap(values, "depth"), 2.0, 10.0, unit="m")
    torch.testing.assert_close(depth.values.flatten(), torch.tensor([2.0, 4.0, 10.0]))
    assert depth.is_metric and depth.unit == "m" and depth.quantity is lotus_core.Quantity.DEPTH
    disparity = lotus_core.with_near_far(lotus_core.DepthMap(values, "disparity"), 2.0, 10.0)
    torch.testing.assert_close(disparity.values.flatten(), 1 / torch.tensor([0.1, 0.1 + 0.25 * 0.4, 0.5]))
    assert lotus_core.with_near_far(depth, 5, 6) is depth  # already metric
    with pytest.raises(lotus_core.LotusError, match="0 < near < far"):
        lotus_core.with_near_far(lotus_core.DepthMap(values, "depth"), 10, 2)


@pytest.mark.parametrize("quantity", ["depth", "disparity"])
def test_with_known_distances_recovers_the_scene(quantity):
    z = plane_depth(*PLANES[2]).double().repeat(2, 1, 1, 1)
    z[1] *= 3  # the second frame is the same scene, three times as far
    if quantity == "depth":
        values = 0.04 * z + 0.1  # an unknown affine map per scene, as Lotus predicts
    else:
        values = 2.5 / z - 0.05
    depth = lotus_core.DepthMap(values.float(), quantity)
    a, b = (10, 20), (100, 70)
    for frame in range(2):
        za, zb = z[frame, 0, a[1], a[0]].item(), z[frame, 0, b[1], b[0]].item()
        single = lotus_core.DepthMap(depth.values[frame:frame + 1], quantity)
        fitted = lotus_core.with_known_distances(single, (*a, za), (*b, zb), unit="m")
        torch.testing.assert_close(fitted.values.double(), z[frame:frame + 1], rtol=1e-4, atol=0)
        assert fitted.is_metric and fitted.unit == "m"
        with pytest.raises(lotus_core.LotusError, match="contradicts the map's polarity"):
            lotus_core.with_known_distances(single, (*a, zb), (*b, za))  # the two distances swapped
    with pytest.raises(lotus_core.LotusError, match="outside the 128x96 image"):
        lotus_core.with_known_distances(depth, (128, 0, 1.0), (0, 0, 2.0))
    with pytest.raises(lotus_core.LotusError, match="equal"):
        lotus_core.with_known_distances(depth, (*a, 2.0), (*b, 2.0))


def test_focal_length_and_fov_checks():
    assert focal_length_px(100, 90) == pytest.approx(50)
    assert focal_length_px(100, 2 * math.degrees(math.atan(0.5))) == pytest.approx(100)
    with pytest.raises(lotus_core.LotusError, match="fov_degrees=180"):
        focal_length_px(100, 180)
    with pytest.raises(lotus_core.LotusError, match="camera='fisheye'"):
        lotus_core.normals_from_depth(lotus_core.DepthMap(torch.rand(1, 1, 8, 8), "depth"), camera="fisheye")
