"""Readers for the evaluation data as the reference suites package it (Marigold's, which the Lotus repository uses).

Each dataset is one tar archive (members named ``./<path>``) or the folder it extracts to, plus one
file list per split: a text file whose lines name an image and its ground truth, separated by spaces,
with paths relative to the archive's root. The file lists live in Marigold's repository
(``data_split/``), not in the archives; ``open_dataset`` finds one beside the archive or inside the folder.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import LotusError, check_choice

SPLIT_FILES_URL = "https://github.com/prs-eth/Marigold/tree/main/data_split"


@dataclass(frozen=True)
class Sample:
    """One image and its ground truth, as the dataset stores them.

    Attributes:
        name: the image's path inside the archive: its identity (cache file, per-image seed, CSV row).
        rgb: [H, W, 3] uint8.
        target: [H, W] depth in metres (0 where unknown), or [H, W, 3] surface normals.
        valid: [H, W] bool, the dataset's own validity mask (all True where it has none: ``protocol``
            adds the depth range and crops).
    """

    name: str
    rgb: np.ndarray
    target: np.ndarray
    valid: np.ndarray


class Archive:
    """The files of a prepared dataset: a tar archive or its extracted folder, read by relative path."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tar: tarfile.TarFile | None = None
        if path.is_dir():
            return
        if not path.is_file():
            raise LotusError(f"dataset path {str(path)!r} does not exist (expected the dataset's .tar archive"
                             " or the folder it extracts to)")
        if not tarfile.is_tarfile(path):
            raise LotusError(f"dataset path {str(path)!r} is neither a folder nor a tar archive")
        self._tar = tarfile.open(path)
        # The published archives name members "./<path>"; archives made with `tar -C dir .` or without
        # the dot differ only there, so both spellings are accepted.
        self._members = {member.name.removeprefix("./"): member
                         for member in self._tar.getmembers() if member.isfile()}

    def __contains__(self, name: str) -> bool:
        return name in self._members if self._tar is not None else (self.path / name).is_file()

    def read(self, name: str) -> bytes:
        if name not in self:
            raise LotusError(f"{name!r} is missing from the dataset at {str(self.path)!r}")
        if self._tar is None:
            return (self.path / name).read_bytes()
        return self._tar.extractfile(self._members[name]).read()

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()


def read_rgb(data: bytes) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(data)).convert("RGB"))  # a writable copy, as torch wants


def read_png_depth(data: bytes, units_per_metre: float) -> np.ndarray:
    """A 16-bit depth PNG (0 = no measurement) in metres."""
    return np.asarray(Image.open(io.BytesIO(data)), dtype=np.float64) / units_per_metre


def read_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def _nyu(archive: Archive, fields: list[str]) -> Sample:
    """rgb.png, depth.png (raw Kinect depth in mm; the list's third column, the filled depth, is not scored)."""
    return _depth_png_sample(archive, fields, units_per_metre=1000.0)


def _scannet(archive: Archive, fields: list[str]) -> Sample:
    """color.jpg, depth.png in mm."""
    return _depth_png_sample(archive, fields, units_per_metre=1000.0)


def _kitti(archive: Archive, fields: list[str]) -> Sample:
    """image.png, projected LiDAR depth as a 16-bit PNG in 1/256 m, sparse: 0 where no point landed."""
    return _depth_png_sample(archive, fields, units_per_metre=256.0)


def _depth_png_sample(archive: Archive, fields: list[str], units_per_metre: float) -> Sample:
    rgb = read_rgb(archive.read(fields[0]))
    depth = read_png_depth(archive.read(fields[1]), units_per_metre)
    _check_same_size(fields, rgb, depth)
    return Sample(fields[0], rgb, depth, np.ones(depth.shape, bool))


def _eth3d(archive: Archive, fields: list[str]) -> Sample:
    """image.JPG, depth as raw little-endian float32, row-major, at the image's size; inf = no measurement.

    The real files are 6048 x 4032 (Marigold hard-codes that shape); the shape is taken from the image
    instead, so any consistent pair reads, and a mismatched one is an error rather than a reshape.
    """
    rgb = read_rgb(archive.read(fields[0]))
    raw = np.frombuffer(archive.read(fields[1]), dtype="<f4")
    height, width = rgb.shape[:2]
    if raw.size != height * width:
        raise LotusError(f"ETH3D depth {fields[1]!r} holds {raw.size} float32 values, but its image {fields[0]!r}"
                         f" is {width}x{height} = {height * width} pixels")
    depth = raw.reshape(height, width).astype(np.float64)
    depth[~np.isfinite(depth)] = 0.0
    return Sample(fields[0], rgb, depth, np.ones(depth.shape, bool))


def _diode(archive: Archive, fields: list[str]) -> Sample:
    """image.png, depth.npy ([H, W, 1] metres), depth_mask.npy ([H, W], 1 = valid)."""
    rgb = read_rgb(archive.read(fields[0]))
    depth = read_npy(archive.read(fields[1])).squeeze().astype(np.float64)
    valid = read_npy(archive.read(fields[2])).squeeze().astype(bool)
    _check_same_size(fields, rgb, depth, valid)
    return Sample(fields[0], rgb, depth, valid)


def _normals(archive: Archive, fields: list[str]) -> Sample:
    """img.png, normal.npy ([H, W, 3] unit vectors, zero vectors where unknown)."""
    rgb = read_rgb(archive.read(fields[0]))
    normals = read_npy(archive.read(fields[1])).astype(np.float64)
    if normals.ndim != 3 or normals.shape[-1] != 3:
        raise LotusError(f"normals {fields[1]!r} must be an [H, W, 3] array, got shape {normals.shape}")
    _check_same_size(fields, rgb, normals)
    return Sample(fields[0], rgb, normals, np.linalg.norm(normals, axis=-1) > 0.5)


def _check_same_size(fields: list[str], rgb: np.ndarray, *others: np.ndarray) -> None:
    for name, other in zip(fields[1:], others, strict=False):
        if other.shape[:2] != rgb.shape[:2]:
            raise LotusError(f"{name!r} is {other.shape[1]}x{other.shape[0]}, but its image {fields[0]!r}"
                             f" is {rgb.shape[1]}x{rgb.shape[0]}")


@dataclass(frozen=True)
class DatasetSpec:
    """How one benchmark is packaged."""

    name: str
    task: str  # "depth" or "normal"
    archive: str  # the published archive's path under the suites' data root
    split_file: str  # the file list's path in Marigold's data_split/
    columns: int  # fields a line of the file list needs
    read: Callable[[Archive, list[str]], Sample]
    images: int  # in the published split, to say when a list is a different one


# Archive and file-list paths as Marigold's configs name them (config/dataset_depth, config/dataset_normals)
DATASETS = {spec.name: spec for spec in (
    DatasetSpec("nyuv2", "depth", "nyuv2/nyu_labeled_extracted.tar", "nyu_depth/labeled/filename_list_test.txt",
                2, _nyu, 654),
    DatasetSpec("kitti", "depth", "kitti/kitti_eigen_split_test.tar", "kitti_depth/eigen_test_files_with_gt.txt",
                2, _kitti, 652),
    DatasetSpec("eth3d", "depth", "eth3d/eth3d.tar", "eth3d_depth/eth3d_filename_list.txt", 2, _eth3d, 454),
    DatasetSpec("scannet", "depth", "scannet/scannet_val_sampled_800_1.tar",
                "scannet_depth/scannet_val_sampled_list_800_1.txt", 2, _scannet, 800),
    DatasetSpec("diode", "depth", "diode/diode_val.tar", "diode_depth/diode_val_all_filename_list.txt", 3,
                _diode, 771),
    DatasetSpec("nyuv2-normals", "normal", "nyuv2/test (normals data)", "nyu_normals/nyuv2_test.txt", 2,
                _normals, 654),
    DatasetSpec("scannet-normals", "normal", "scannet (normals data)", "scannet_normals/scannet_test.txt", 2,
                _normals, 300),
)}


class EvalDataset:
    """One split of one benchmark: the file list's entries, read one sample at a time."""

    def __init__(self, spec: DatasetSpec, archive: Archive, split_file: Path, entries: list[list[str]]) -> None:
        self.spec, self.archive, self.split_file, self.entries = spec, archive, split_file, entries

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def names(self) -> list[str]:
        return [fields[0] for fields in self.entries]

    def sample(self, index: int) -> Sample:
        return self.spec.read(self.archive, self.entries[index])

    def close(self) -> None:
        self.archive.close()


def open_dataset(name: str, path: str | Path, split_file: str | Path | None = None) -> EvalDataset:
    """The split of dataset ``name`` (``DATASETS``) stored at ``path`` (its tar archive or folder).

    ``split_file`` defaults to the file list's own name (e.g. ``filename_list_test.txt``) inside the
    folder or beside the archive. Every listed file is checked up front, so a broken archive is
    refused before any prediction is made.
    """
    check_choice("dataset", name, DATASETS)
    spec = DATASETS[name]
    archive = Archive(Path(path).expanduser())
    try:
        split = _find_split_file(spec, archive.path, split_file)
        entries = _read_split(spec, split)
        missing = [file for fields in entries for file in fields[:spec.columns] if file not in archive]
        if missing:
            raise LotusError(f"{len(missing)} of the files listed in {str(split)!r} are missing from"
                             f" {str(archive.path)!r}, e.g. {', '.join(map(repr, missing[:3]))}: is it the"
                             f" {name} data ({spec.archive}) and the list of that split?")
    except LotusError:
        archive.close()
        raise
    return EvalDataset(spec, archive, split, entries)


def _find_split_file(spec: DatasetSpec, path: Path, split_file: str | Path | None) -> Path:
    if split_file is not None:
        split = Path(split_file).expanduser()
        if not split.is_file():
            raise LotusError(f"split_file {str(split)!r} does not exist")
        return split
    file_name = Path(spec.split_file).name
    candidates = [path / file_name] if path.is_dir() else [path.parent / file_name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise LotusError(f"no file list for {spec.name}: put {file_name} ({SPLIT_FILES_URL}/{spec.split_file}) at"
                     f" {str(candidates[0])!r}, or name it with --split-file")


def _read_split(spec: DatasetSpec, split: Path) -> list[list[str]]:
    entries = []
    for number, line in enumerate(split.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < spec.columns:
            raise LotusError(f"line {number} of {str(split)!r} has {len(fields)} field(s), {spec.name} needs"
                             f" {spec.columns} (image, ground truth{', mask' if spec.columns == 3 else ''}): {line!r}")
        if fields[1] == "None":  # KITTI's Eigen list names 45 images without ground truth; the suites skip them
            continue
        entries.append(fields)
    if not entries:
        raise LotusError(f"the file list {str(split)!r} names no images with ground truth")
    return entries
