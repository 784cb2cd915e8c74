"""The standard zero-shot protocol (Marigold's evaluation, as the Lotus repository runs it): per dataset the
processing resolution, the ground truth's valid depth range and crops, and the least-squares scale/shift
alignment of an affine-invariant prediction to the ground truth."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import LotusError, check_choice
from ..loading.variants import Quantity
from .datasets import Sample

KITTI_CROPS = ("eigen", "garg")
KITTI_BENCHMARK_SIZE = (352, 1216)  # (height, width) of the KITTI depth benchmark's crop
NYU_EIGEN_CROP = (45, 471, 41, 601)  # rows [45, 471), columns [41, 601) of the 480 x 640 NYUv2 frame
# KITTI crops as fractions of the (benchmark-cropped) ground truth's height and width: (top, bottom, left, right)
KITTI_CROP_FRACTIONS = {
    "eigen": (0.3324324, 0.91351351, 0.0359477, 0.96405229),  # Eigen et al. (NeurIPS 2014)
    "garg": (0.40810811, 0.99189189, 0.03594771, 0.96405229),  # Garg et al. (ECCV 2016)
}
MIN_ALIGNED_DISPARITY = 1e-3  # aligned disparity is clipped here before 1/x, as the reference does
MIN_DEPTH = 1e-6  # the final floor of every aligned depth (the log metrics need > 0)


@dataclass(frozen=True)
class Protocol:
    """How one dataset is evaluated.

    Attributes:
        processing_resolution: the long edge the model sees (0 = the image's own size).
        restore: how a prediction made at another size returns to the image's ("bilinear" as the reference).
        depth_range: ground truth outside (min, max), open interval, is not scored; None for normals.
        crop: the evaluation crop: "nyu-eigen", or for KITTI "eigen" / "garg"; None for none.
        benchmark_crop: cut image and ground truth to KITTI's 1216 x 352 benchmark area first.
        alignment_max_res: fit the scale and shift on a nearest-downsampled copy whose long edge is at
            most this (ETH3D's 6048 px frames), then apply them at full size.
    """

    processing_resolution: int
    depth_range: tuple[float, float] | None
    restore: str = "bilinear"
    crop: str | None = None
    benchmark_crop: bool = False
    alignment_max_res: int | None = None


PROTOCOLS = {
    "nyuv2": Protocol(0, (1e-3, 10.0), crop="nyu-eigen"),
    "kitti": Protocol(0, (1e-5, 80.0), crop="eigen", benchmark_crop=True),
    "eth3d": Protocol(768, (1e-5, float("inf")), alignment_max_res=1024),
    "scannet": Protocol(0, (1e-3, 10.0)),
    "diode": Protocol(640, (0.6, 350.0)),
    "nyuv2-normals": Protocol(0, None),
    "scannet-normals": Protocol(0, None),
}


def kitti_crop(protocol: Protocol, crop: str) -> Protocol:
    """``protocol`` with KITTI's evaluation crop ``crop`` ("eigen", the suites' choice, or "garg")."""
    check_choice("kitti_crop", crop, KITTI_CROPS)
    return replace(protocol, crop=crop)


def prepare(sample: Sample, protocol: Protocol) -> Sample:
    """The sample as the protocol scores it: KITTI's benchmark crop of image, ground truth and mask."""
    if not protocol.benchmark_crop:
        return sample
    height, width = KITTI_BENCHMARK_SIZE
    rows, columns = sample.rgb.shape[:2]
    if rows < height or columns < width:
        raise LotusError(f"{sample.name!r} is {columns}x{rows}, smaller than KITTI's {width}x{height} benchmark"
                         " crop: is it a KITTI raw frame?")
    top, left = rows - height, (columns - width) // 2  # the bottom rows, centred: where the LiDAR sees

    def cut(array: np.ndarray) -> np.ndarray:
        return array[top:top + height, left:left + width]
    return Sample(sample.name, cut(sample.rgb), cut(sample.target), cut(sample.valid))


def evaluation_mask(sample: Sample, protocol: Protocol) -> np.ndarray:
    """[H, W] bool: the pixels scored: the dataset's own mask, the depth range, the crop."""
    mask = sample.valid.copy()
    if protocol.depth_range is not None:
        low, high = protocol.depth_range
        mask &= (sample.target > low) & (sample.target < high)
    if protocol.crop is not None:
        mask &= _crop_mask(mask.shape, protocol.crop)
    return mask


def _crop_mask(shape: tuple[int, int], crop: str) -> np.ndarray:
    height, width = shape
    if crop == "nyu-eigen":  # defined on 480 x 640 frames; scaled (exactly, in integers) for other sizes
        top, bottom, left, right = NYU_EIGEN_CROP
        rows = slice(top * height // 480, bottom * height // 480)
        columns = slice(left * width // 640, right * width // 640)
    else:
        top, bottom, left, right = KITTI_CROP_FRACTIONS[crop]
        rows = slice(int(top * height), int(bottom * height))
        columns = slice(int(left * width), int(right * width))
    mask = np.zeros(shape, bool)
    mask[rows, columns] = True
    return mask


def align(prediction: np.ndarray, depth: np.ndarray, mask: np.ndarray, quantity: Quantity,
          protocol: Protocol) -> np.ndarray:
    """The prediction as depth in the ground truth's units: least-squares scale and shift to the ground
    truth over ``mask``, in depth space for depth checkpoints and in disparity space (1 / depth) for
    disparity checkpoints, then clipped to the dataset's depth range.

    Raises a LotusError for an empty mask or a prediction that is constant over it (no fit exists).
    """
    if quantity is Quantity.NORMAL:
        raise LotusError("align needs a depth or disparity prediction, got normals")
    if prediction.shape != depth.shape or mask.shape != depth.shape:
        raise LotusError(f"align needs prediction, ground truth and mask of one size, got {prediction.shape},"
                         f" {depth.shape} and {mask.shape}")
    target = depth
    fit_mask = mask
    if quantity is Quantity.DISPARITY:
        fit_mask = mask & (depth > 0) & (prediction > 0)
        target = np.divide(1.0, depth, out=np.zeros_like(depth, dtype=np.float64), where=depth > 0)
    scale, shift = _fit(prediction, target, fit_mask, protocol.alignment_max_res)
    aligned = prediction.astype(np.float64) * scale + shift
    if quantity is Quantity.DISPARITY:
        aligned = 1.0 / np.clip(aligned, MIN_ALIGNED_DISPARITY, None)
    low, high = protocol.depth_range or (0.0, float("inf"))
    return np.clip(np.clip(aligned, low, high), MIN_DEPTH, None)


def _fit(prediction: np.ndarray, target: np.ndarray, mask: np.ndarray, max_resolution: int | None):
    """(scale, shift) minimising the squared error of ``scale * prediction + shift`` to ``target`` over ``mask``."""
    if max_resolution is not None and max(mask.shape) > max_resolution:
        factor = max_resolution / max(mask.shape)
        prediction, target, mask = (
            F.interpolate(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))[None, None],
                          scale_factor=factor, mode="nearest")[0, 0].numpy()
            for array in (prediction, target, mask))
        mask = mask > 0.5
    if not mask.any():
        raise LotusError("no valid ground-truth pixel to align the prediction to (empty mask after the depth"
                         " range and crop)")
    values = prediction[mask].astype(np.float64)
    if not np.isfinite(values).all():  # e.g. an fp16 overflow: no number can be scored
        raise LotusError(f"the prediction has {int((~np.isfinite(values)).sum())} non-finite values (nan/inf)"
                         " on the valid pixels")
    if np.ptp(values) == 0:
        raise LotusError(f"the prediction is constant ({values[0]:g}) over the {values.size} valid pixels:"
                         " no scale and shift fits it")
    design = np.stack([values, np.ones_like(values)], axis=1)
    (scale, shift), *_ = np.linalg.lstsq(design, target[mask].astype(np.float64), rcond=None)
    return scale, shift
