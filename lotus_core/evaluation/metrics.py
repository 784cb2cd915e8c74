"""The benchmark metrics of one image: depth (after alignment) against ground truth, normals by angle."""

from __future__ import annotations

import numpy as np

from ..errors import LotusError

# name -> what it is, in the table's order; fractions (AbsRel, SqRel, δ) are shown x100, as in the paper
DEPTH_METRICS = {
    "abs_rel": "mean |d - d*| / d*",
    "delta1": "share of pixels with max(d / d*, d* / d) < 1.25",
    "delta2": "... < 1.25^2",
    "delta3": "... < 1.25^3",
    "sq_rel": "mean (d - d*)^2 / d*",
    "rmse": "sqrt(mean (d - d*)^2), in the ground truth's unit",
    "rmse_log": "sqrt(mean (ln d - ln d*)^2)",
    "log10": "mean |log10 d - log10 d*|",
}
NORMAL_THRESHOLDS = (11.25, 22.5, 30.0)  # degrees: the paper's accuracies (Table 2)
NORMAL_METRICS = {
    "mean": "mean angular error, degrees",
    "median": "median angular error, degrees",
    **{f"within_{threshold:g}": f"share of pixels within {threshold:g} degrees" for threshold in NORMAL_THRESHOLDS},
}


def depth_metrics(prediction: np.ndarray, depth: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """``DEPTH_METRICS`` of an aligned depth ``prediction`` against ground truth ``depth`` over ``mask``
    (all [H, W]; both depths > 0 on the mask)."""
    if not mask.any():
        raise LotusError("no valid ground-truth pixel to score (empty mask)")
    predicted, truth = prediction[mask].astype(np.float64), depth[mask].astype(np.float64)
    if (predicted <= 0).any() or (truth <= 0).any():
        raise LotusError("depth metrics need positive depths on the mask (align the prediction first)")
    # one division and one logarithm per pixel: ETH3D frames have 24 M pixels
    error = predicted - truth
    relative = predicted / truth
    log_error = np.abs(np.log(relative))  # |ln d - ln d*|
    ratio = np.maximum(relative, 1 / relative)
    return {
        "abs_rel": float(np.mean(np.abs(relative - 1))),
        "delta1": float(np.mean(ratio < 1.25)),
        "delta2": float(np.mean(ratio < 1.25 ** 2)),
        "delta3": float(np.mean(ratio < 1.25 ** 3)),
        "sq_rel": float(np.mean(error * error / truth)),
        "rmse": float(np.sqrt(np.mean(error * error))),
        "rmse_log": float(np.sqrt(np.mean(log_error * log_error))),
        "log10": float(np.mean(log_error) / np.log(10)),
    }


def angular_errors(prediction: np.ndarray, normals: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Degrees between predicted and true normals ([H, W, 3], any length) at the ``mask`` pixels."""
    if not mask.any():
        raise LotusError("no valid ground-truth normal to score (empty mask)")
    predicted, truth = prediction[mask].astype(np.float64), normals[mask].astype(np.float64)
    if not np.isfinite(predicted).all():
        raise LotusError(f"{int((~np.isfinite(predicted).all(axis=1)).sum())} predicted normals on the mask are"
                         " not finite (nan/inf)")
    lengths = np.linalg.norm(predicted, axis=1) * np.linalg.norm(truth, axis=1)
    if (lengths == 0).any():
        raise LotusError(f"{int((lengths == 0).sum())} predicted normals on the mask are zero vectors")
    cosine = np.clip(np.sum(predicted * truth, axis=1) / lengths, -1.0, 1.0)
    return np.degrees(np.arccos(cosine))


def normal_metrics(errors: np.ndarray) -> dict[str, float]:
    """``NORMAL_METRICS`` of angular ``errors`` in degrees (one image's, or all pixels of a dataset)."""
    if errors.size == 0:
        raise LotusError("no angular errors to summarise")
    return {
        "mean": float(np.mean(errors)),
        "median": float(np.median(errors)),
        **{f"within_{threshold:g}": float(np.mean(errors < threshold)) for threshold in NORMAL_THRESHOLDS},
    }


class PooledAngles:
    """Angular errors of every pixel of a dataset, summarised as the DSINE protocol (Lotus's normal
    evaluation) does: over all pixels together, not per image. Kept as counts in bins of
    ``MEDIAN_BIN`` degrees, so memory stays constant; the mean and the accuracies are exact, the
    median is within half a bin."""

    MEDIAN_BIN = 0.001

    def __init__(self) -> None:
        self.counts = np.zeros(int(round(180 / self.MEDIAN_BIN)) + 1, np.int64)
        self.total = 0.0
        self.below = dict.fromkeys(NORMAL_THRESHOLDS, 0)

    def add(self, errors: np.ndarray) -> None:
        self.counts += np.bincount(np.round(errors / self.MEDIAN_BIN).astype(np.int64), minlength=self.counts.size)
        self.total += float(errors.sum())
        for threshold in NORMAL_THRESHOLDS:
            self.below[threshold] += int((errors < threshold).sum())

    def summary(self) -> dict[str, float]:
        pixels = int(self.counts.sum())
        if pixels == 0:
            raise LotusError("no angular errors to summarise")
        cumulative = np.cumsum(self.counts)
        # the middle value (odd count) or the two middle values (even), as np.median, by their bins
        middle = np.searchsorted(cumulative, [(pixels + 1) // 2, pixels // 2 + 1])
        return {
            "mean": self.total / pixels,
            "median": float(middle.mean()) * self.MEDIAN_BIN,
            **{f"within_{threshold:g}": self.below[threshold] / pixels for threshold in NORMAL_THRESHOLDS},
        }
