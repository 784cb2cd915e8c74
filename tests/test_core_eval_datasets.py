"""The evaluation's dataset readers, on small archives written here in each benchmark's real format.

The writers below produce what the Marigold evaluation archives hold (member names "./<path>", the
file list beside the archive): NYUv2 and ScanNet depth as 16-bit PNG in mm, KITTI as sparse 16-bit
PNG in 1/256 m, ETH3D as raw float32 with inf holes, DIODE as .npy depth plus .npy mask, NYUv2
normals as .npy vectors. test_core_eval_cli.py evaluates archives written by them.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lotus_core import LotusError
from lotus_core.evaluation.datasets import DATASETS, open_dataset
from lotus_core.evaluation.protocol import PROTOCOLS, evaluation_mask, prepare

pytestmark = pytest.mark.core


def png_bytes(array: np.ndarray, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=format)
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def picture(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth uint8 RGB picture (JPEG keeps it close)."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    channels = [np.sin(6 * x + seed), np.cos(5 * y - seed), np.sin(3 * (x + y) + 2 * seed)]
    return ((np.stack(channels, -1) * 0.4 + 0.5) * 255).round().astype(np.uint8)


def room_depth(height: int, width: int, seed: int) -> np.ndarray:
    """Metres: a tilted plane between about 1 and 6 m, different per seed."""
    y, x = np.mgrid[0:height, 0:width]
    return 1.0 + 0.3 * seed + 4.0 * (y / height) * (0.5 + 0.5 * x / width)


def write_dataset(root: Path, files: dict[str, bytes], lines: list[str], split_name: str, *,
                  as_tar: bool = True, dot_prefix: bool = True) -> Path:
    """The dataset as a tar archive (members "./<path>", as published) or a folder, its file list beside it."""
    root.mkdir(parents=True, exist_ok=True)
    if as_tar:
        path = root / "data.tar"
        with tarfile.open(path, "w") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(("./" if dot_prefix else "") + name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        (root / split_name).write_text("\n".join(lines) + "\n")
        return path
    path = root / "data"
    for name, data in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    (path / split_name).write_text("\n".join(lines) + "\n")
    return path


def split_name(dataset: str) -> str:
    return Path(DATASETS[dataset].split_file).name


def nyu_files(count: int = 3, size=(48, 64)) -> tuple[dict[str, bytes], list[str], list[np.ndarray]]:
    """NYUv2 labeled test as Marigold packs it: rgb_*.png, depth_*.png (uint16 mm, raw), filled_*.png."""
    files, lines, depths = {}, [], []
    for index in range(count):
        stem = f"test/room_{index}/"
        depth_mm = np.round(room_depth(*size, index) * 1000).astype(np.uint16)
        depth_mm[: size[0] // 6, : size[1] // 5] = 0  # Kinect holes
        files[stem + f"rgb_{index:04d}.png"] = png_bytes(picture(*size, index))
        files[stem + f"depth_{index:04d}.png"] = png_bytes(depth_mm)
        files[stem + f"filled_{index:04d}.png"] = png_bytes(np.maximum(depth_mm, 1500).astype(np.uint16))
        lines.append(f"{stem}rgb_{index:04d}.png {stem}depth_{index:04d}.png {stem}filled_{index:04d}.png")
        depths.append(depth_mm / 1000.0)
    return files, lines, depths


def write_nyu(root: Path, count: int = 3, size=(48, 64), **options) -> tuple[Path, list[np.ndarray]]:
    files, lines, depths = nyu_files(count, size)
    return write_dataset(root, files, lines, split_name("nyuv2"), **options), depths


@pytest.mark.parametrize("as_tar, dot_prefix", [(True, True), (True, False), (False, True)])
def test_nyu_depth_png_in_millimetres_from_tar_or_folder(tmp_path, as_tar, dot_prefix):
    path, depths = write_nyu(tmp_path, as_tar=as_tar, dot_prefix=dot_prefix)
    data = open_dataset("nyuv2", path)
    assert len(data) == 3 and data.names[1] == "test/room_1/rgb_0001.png"
    sample = data.sample(1)
    np.testing.assert_array_equal(sample.rgb, picture(48, 64, 1))  # PNG: lossless
    np.testing.assert_array_equal(sample.target, depths[1])  # raw depth, not the filled one
    mask = evaluation_mask(sample, PROTOCOLS["nyuv2"])
    assert not mask[:8, :12].any()  # holes (0 mm) are outside the 1 mm .. 10 m range
    # Eigen crop rows [45, 471), columns [41, 601) of 480 x 640, scaled in integers: 48 x 64 -> [4, 47), [4, 60)
    assert not mask[:4].any() and not mask[47:].any() and not mask[:, :4].any() and not mask[:, 60:].any()
    assert mask[10:47, 4:60].all()
    data.close()


def test_nyu_eigen_crop_on_the_real_frame_size():
    from lotus_core.evaluation.datasets import Sample

    sample = Sample("x", np.zeros((480, 640, 3), np.uint8), np.full((480, 640), 2.0), np.ones((480, 640), bool))
    mask = evaluation_mask(sample, PROTOCOLS["nyuv2"])
    assert mask.sum() == (471 - 45) * (601 - 41)
    assert mask[45, 41] and mask[470, 600] and not mask[44, 41] and not mask[471, 600] and not mask[45, 601]


def kitti_files() -> tuple[dict[str, bytes], list[str], np.ndarray]:
    """KITTI Eigen test: a 1242 x 375 frame and sparse LiDAR depth (uint16, metres x 256, 0 = no point)."""
    height, width = 375, 1242
    depth = np.zeros((height, width))
    rng = np.random.default_rng(0)
    rows, columns = rng.integers(150, height, 4000), rng.integers(0, width, 4000)
    depth[rows, columns] = rng.uniform(2, 90, rows.size)  # some beyond the 80 m cap
    encoded = np.round(depth * 256).astype(np.uint16)
    rgb_name = "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png"
    gt_name = "2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png"
    files = {rgb_name: png_bytes(picture(height, width, 0)), gt_name: png_bytes(encoded)}
    lines = [f"{rgb_name} {gt_name} 721.5377",
             "2011_09_26/2011_09_26_drive_0009_sync/image_02/data/0000000042.png None 721.5377"]
    return files, lines, encoded / 256.0


def test_kitti_sparse_png_over_256_benchmark_crop_and_eigen_mask(tmp_path):
    files, lines, depth = kitti_files()
    data = open_dataset("kitti", write_dataset(tmp_path, files, lines, split_name("kitti")))
    assert len(data) == 1  # the line without ground truth ("None") is skipped, as the suites do
    sample = prepare(data.sample(0), PROTOCOLS["kitti"])
    assert sample.rgb.shape == (352, 1216, 3) and sample.target.shape == (352, 1216)
    np.testing.assert_array_equal(sample.target, depth[375 - 352:, 13:13 + 1216])  # bottom rows, centred
    mask = evaluation_mask(sample, PROTOCOLS["kitti"])
    target = sample.target
    # Eigen crop on 352 x 1216: rows [117, 321), columns [43, 1172); only LiDAR points within (1e-5, 80) m
    inside = np.zeros_like(mask)
    inside[117:321, 43:1172] = True
    np.testing.assert_array_equal(mask, inside & (target > 1e-5) & (target < 80))
    assert 0 < mask.sum() < 0.02 * mask.size  # sparse
    data.close()


def eth3d_files(size=(40, 60)) -> tuple[dict[str, bytes], list[str], np.ndarray]:
    """ETH3D: a JPG and its depth as raw little-endian float32, row-major, inf where unknown."""
    depth = room_depth(*size, 2).astype(np.float32)
    depth[5:9, 10:30] = np.inf
    rgb_name = "rgb/courtyard/images/dslr_images/DSC_0286.JPG"
    depth_name = "depth/courtyard/ground_truth_masked/dslr_images/DSC_0286.JPG"
    files = {rgb_name: png_bytes(picture(*size, 2), "JPEG"), depth_name: depth.astype("<f4").tobytes()}
    return files, [f"{rgb_name} {depth_name}"], depth


def test_eth3d_float_binary_with_inf_holes(tmp_path):
    files, lines, depth = eth3d_files()
    data = open_dataset("eth3d", write_dataset(tmp_path, files, lines, split_name("eth3d")))
    sample = data.sample(0)
    assert sample.rgb.shape == (40, 60, 3)
    finite = np.isfinite(depth)
    np.testing.assert_array_equal(sample.target[finite], depth[finite].astype(np.float64))
    assert (sample.target[~finite] == 0).all()
    np.testing.assert_array_equal(evaluation_mask(sample, PROTOCOLS["eth3d"]), finite)
    data.close()


def test_eth3d_depth_of_another_size_is_refused(tmp_path):
    files, lines, _ = eth3d_files()
    depth_name = lines[0].split()[1]
    files[depth_name] = files[depth_name][:-4]
    data = open_dataset("eth3d", write_dataset(tmp_path, files, lines, split_name("eth3d")))
    with pytest.raises(LotusError, match=r"holds 2399 float32 values.*60x40 = 2400 pixels"):
        data.sample(0)
    data.close()


def test_scannet_depth_png_in_millimetres(tmp_path):
    depth_mm = np.round(room_depth(48, 64, 1) * 1000).astype(np.uint16)
    depth_mm[0, :] = 0
    files = {"scene0000_00/color/000000.jpg": png_bytes(picture(48, 64, 1), "JPEG"),
             "scene0000_00/depth/000000.png": png_bytes(depth_mm)}
    path = write_dataset(tmp_path, files, ["scene0000_00/color/000000.jpg scene0000_00/depth/000000.png"],
                         split_name("scannet"), as_tar=False)
    sample = open_dataset("scannet", path).sample(0)
    np.testing.assert_array_equal(sample.target, depth_mm / 1000.0)
    mask = evaluation_mask(sample, PROTOCOLS["scannet"])
    assert not mask[0].any() and mask[1:].all()
    assert np.abs(sample.rgb.astype(int) - picture(48, 64, 1)).mean() < 3  # JPEG


def diode_files(size=(48, 64)) -> tuple[dict[str, bytes], list[str], np.ndarray, np.ndarray]:
    """DIODE val: image.png, depth.npy [H, W, 1] float32 metres, depth_mask.npy [H, W] float32 0/1."""
    depth = (room_depth(*size, 3) * 3).astype(np.float32)[..., None]
    valid = np.ones(size, np.float32)
    valid[:, :7] = 0
    depth[40:, 50:] = 0.4  # nearer than DIODE's 0.6 m minimum, inside the mask
    stem = "indoors/scene_00019/scan_00183/00019_00183_indoors_000_010"
    files = {f"{stem}.png": png_bytes(picture(*size, 3)), f"{stem}_depth.npy": npy_bytes(depth),
             f"{stem}_depth_mask.npy": npy_bytes(valid)}
    return files, [f"{stem}.png {stem}_depth.npy {stem}_depth_mask.npy"], depth[..., 0], valid > 0


def test_diode_npy_depth_and_mask(tmp_path):
    files, lines, depth, valid = diode_files()
    sample = open_dataset("diode", write_dataset(tmp_path, files, lines, split_name("diode"))).sample(0)
    np.testing.assert_array_equal(sample.target, depth.astype(np.float64))
    np.testing.assert_array_equal(sample.valid, valid)
    expected = valid & (depth > 0.6) & (depth < 350)
    assert expected.sum() < valid.sum()  # the range removes some of the mask's pixels
    np.testing.assert_array_equal(evaluation_mask(sample, PROTOCOLS["diode"]), expected)


def test_diode_line_without_mask_column_is_refused(tmp_path):
    files, lines, _, _ = diode_files()
    path = write_dataset(tmp_path, files, [" ".join(lines[0].split()[:2])], split_name("diode"))
    with pytest.raises(LotusError, match=r"line 1 of .* has 2 field\(s\), diode needs 3"):
        open_dataset("diode", path)


def normal_files(count: int = 2, size=(32, 48)) -> tuple[dict[str, bytes], list[str], list[np.ndarray]]:
    """NYUv2 normals as Marigold packs them: NNNNNN_img.png, NNNNNN_normal.npy ([H, W, 3], zero = unknown)."""
    files, lines, normals = {}, [], []
    for index in range(count):
        y, x = np.mgrid[0:size[0], 0:size[1]] / 50.0
        vectors = np.stack([x - 0.4, y - 0.3, np.ones_like(x)], -1)
        vectors /= np.linalg.norm(vectors, axis=-1, keepdims=True)
        vectors[:3] = 0
        files[f"{index:06d}_img.png"] = png_bytes(picture(*size, index))
        files[f"{index:06d}_normal.npy"] = npy_bytes(vectors.astype(np.float32))
        lines.append(f"{index:06d}_img.png {index:06d}_normal.npy")
        normals.append(vectors)
    return files, lines, normals


def test_normals_npy_with_zero_vectors_unknown(tmp_path):
    files, lines, normals = normal_files()
    path = write_dataset(tmp_path, files, lines, split_name("nyuv2-normals"))
    sample = open_dataset("nyuv2-normals", path).sample(1)
    np.testing.assert_allclose(sample.target, normals[1], atol=1e-7)
    assert not sample.valid[:3].any() and sample.valid[3:].all()


def test_wrong_dataset_path(tmp_path):
    with pytest.raises(LotusError, match=r"dataset path .*nowhere.tar' does not exist"):
        open_dataset("nyuv2", tmp_path / "nowhere.tar")
    (tmp_path / "notes.txt").write_text("not a tar")
    with pytest.raises(LotusError, match="neither a folder nor a tar archive"):
        open_dataset("nyuv2", tmp_path / "notes.txt")
    with pytest.raises(LotusError, match=r"dataset='nyu' is not one of 'nyuv2', 'kitti'"):
        open_dataset("nyu", tmp_path)


def test_missing_file_list_says_where_to_get_it(tmp_path):
    path, _ = write_nyu(tmp_path)
    (tmp_path / split_name("nyuv2")).unlink()
    with pytest.raises(LotusError, match=r"no file list for nyuv2: put filename_list_test.txt \(https://github"
                                         r".com/prs-eth/Marigold/tree/main/data_split/nyu_depth/labeled/"):
        open_dataset("nyuv2", path)


def test_missing_file_in_the_archive_is_refused_up_front(tmp_path):
    files, lines, _ = nyu_files()
    del files["test/room_2/depth_0002.png"]
    path = write_dataset(tmp_path, files, lines, split_name("nyuv2"))
    with pytest.raises(LotusError, match=r"1 of the files listed in .* are missing from .*data.tar', e.g."
                                         r" 'test/room_2/depth_0002.png'"):
        open_dataset("nyuv2", path)
