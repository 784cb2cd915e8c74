"""The evaluation protocol's alignment and the metrics, against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lotus_core import LotusError, Quantity
from lotus_core.evaluation.metrics import PooledAngles, angular_errors, depth_metrics, normal_metrics
from lotus_core.evaluation.protocol import PROTOCOLS, Protocol, align

pytestmark = pytest.mark.core

UNBOUNDED = Protocol(0, (1e-6, float("inf")))


def test_depth_metrics_by_hand():
    truth = np.array([[1.0, 2.0, 4.0]])
    predicted = np.array([[1.1, 1.8, 5.0]])
    metrics = depth_metrics(predicted, truth, np.ones_like(truth, bool))
    # |e| / d = 0.1, 0.1, 0.25; e^2 / d = 0.01, 0.02, 0.25; e^2 = 0.01, 0.04, 1
    assert metrics["abs_rel"] == pytest.approx(0.45 / 3)
    assert metrics["sq_rel"] == pytest.approx(0.28 / 3)
    assert metrics["rmse"] == pytest.approx(math.sqrt(1.05 / 3))
    logs = [math.log(1.1), math.log(0.9), math.log(1.25)]
    assert metrics["rmse_log"] == pytest.approx(math.sqrt(sum(v * v for v in logs) / 3))
    assert metrics["log10"] == pytest.approx(sum(abs(v) for v in logs) / math.log(10) / 3)
    # ratios 1.1, 1.111, 1.25: 1.25 is not < 1.25
    assert metrics["delta1"] == pytest.approx(2 / 3)
    assert metrics["delta2"] == metrics["delta3"] == 1.0


def test_depth_metrics_only_over_the_mask():
    truth = np.array([[1.0, 2.0, 4.0]])
    predicted = np.array([[1.1, 100.0, 5.0]])
    metrics = depth_metrics(predicted, truth, np.array([[True, False, True]]))
    assert metrics["abs_rel"] == pytest.approx((0.1 + 0.25) / 2)


def scene(height=30, width=40) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:height, 0:width]
    depth = 1.0 + 3.0 * y / height + 2.0 * x / width  # 1 .. 6 m
    return depth, np.ones(depth.shape, bool)


def test_affine_depth_prediction_aligns_to_abs_rel_zero():
    depth, mask = scene()
    prediction = (depth - 0.3) / 7.5  # what a depth checkpoint gives: depth up to scale and shift
    aligned = align(prediction, depth, mask, Quantity.DEPTH, PROTOCOLS["nyuv2"])
    np.testing.assert_allclose(aligned, depth, rtol=1e-10)
    metrics = depth_metrics(aligned, depth, mask)
    assert metrics["abs_rel"] < 1e-10 and metrics["delta1"] == 1.0


def test_affine_disparity_prediction_aligns_in_disparity_space_to_abs_rel_zero():
    depth, mask = scene()
    prediction = 0.7 / depth + 0.05  # a disparity checkpoint: 1 / depth up to scale and shift
    aligned = align(prediction, depth, mask, Quantity.DISPARITY, PROTOCOLS["nyuv2"])
    assert depth_metrics(aligned, depth, mask)["abs_rel"] < 1e-10
    # the same values read as depth cannot fit: the space of the fit matters
    assert depth_metrics(align(prediction, depth, mask, Quantity.DEPTH, PROTOCOLS["nyuv2"]), depth,
                         mask)["abs_rel"] > 0.01


def test_alignment_uses_only_the_mask():
    depth, mask = scene()
    prediction = (depth - 0.3) / 7.5
    prediction[:5] = 0.9  # wrong, but masked out
    mask[:5] = False
    aligned = align(prediction, depth, mask, Quantity.DEPTH, UNBOUNDED)
    np.testing.assert_allclose(aligned[mask], depth[mask], rtol=1e-10)


def test_least_squares_fit_by_hand():
    # prediction 0, 1, 2 against depth 1, 2, 4: scale 1.5, shift 5/6 (normal equations), aligned 5/6, 7/3, 23/6
    prediction, depth, mask = np.array([[0.0, 1.0, 2.0]]), np.array([[1.0, 2.0, 4.0]]), np.ones((1, 3), bool)
    np.testing.assert_allclose(align(prediction, depth, mask, Quantity.DEPTH, UNBOUNDED), [[5 / 6, 7 / 3, 23 / 6]])


def test_aligned_depth_is_clipped_to_the_dataset_range():
    depth, mask = scene()
    prediction = depth.copy()
    prediction[0, 0] = 50.0  # one outlier: aligned far beyond NYUv2's 10 m
    aligned = align(prediction, depth, mask, Quantity.DEPTH, PROTOCOLS["nyuv2"])
    assert aligned.max() == 10.0 and aligned.min() >= 1e-3


def test_disparity_at_or_below_zero_after_alignment_becomes_the_far_limit():
    depth, mask = scene()
    prediction = 0.7 / depth
    prediction[0, 0] = -5.0  # aligned disparity < 1e-3 -> depth 1000 m -> clipped to 10 m
    aligned = align(prediction, depth, mask, Quantity.DISPARITY, PROTOCOLS["nyuv2"])
    assert aligned[0, 0] == 10.0


def test_alignment_on_a_downsampled_copy_for_large_frames():
    # ETH3D: the fit runs on a nearest-downsampled copy (long edge 1024); an exact affine still aligns exactly
    depth, mask = scene(700, 2100)
    prediction = 0.7 / depth + 0.05
    aligned = align(prediction, depth, mask, Quantity.DISPARITY, PROTOCOLS["eth3d"])
    assert aligned.shape == depth.shape
    assert depth_metrics(aligned, depth, mask)["abs_rel"] < 1e-9


def test_empty_mask_and_constant_prediction_are_clear_errors():
    depth, mask = scene()
    with pytest.raises(LotusError, match="no valid ground-truth pixel to align"):
        align(depth / 10, depth, np.zeros_like(mask), Quantity.DEPTH, UNBOUNDED)
    with pytest.raises(LotusError, match=r"the prediction is constant \(0.5\) over the 1200 valid pixels"):
        align(np.full_like(depth, 0.5), depth, mask, Quantity.DEPTH, UNBOUNDED)
    broken = depth / 10
    broken[3, 4] = np.nan
    with pytest.raises(LotusError, match=r"the prediction has 1 non-finite values \(nan/inf\)"):
        align(broken, depth, mask, Quantity.DEPTH, UNBOUNDED)
    with pytest.raises(LotusError, match="empty mask"):
        depth_metrics(depth, depth, np.zeros_like(mask))
    with pytest.raises(LotusError, match="needs a depth or disparity prediction"):
        align(depth, depth, mask, Quantity.NORMAL, UNBOUNDED)


def rotated(normals: np.ndarray, degrees: float) -> np.ndarray:
    """``normals`` turned by ``degrees`` about the image's x axis."""
    angle = math.radians(degrees)
    rotation = np.array([[1, 0, 0], [0, math.cos(angle), -math.sin(angle)], [0, math.sin(angle), math.cos(angle)]])
    return normals @ rotation.T


def test_angular_errors_and_normal_metrics_by_hand():
    truth = np.zeros((2, 2, 3))
    truth[..., 2] = 1.0
    predicted = np.stack([rotated(truth[0], 5.0), rotated(truth[1], 40.0) * 3.0])  # length does not matter
    errors = angular_errors(predicted, truth, np.ones((2, 2), bool))
    np.testing.assert_allclose(errors, [5, 5, 40, 40], atol=1e-9)
    metrics = normal_metrics(errors)
    assert metrics["mean"] == pytest.approx(22.5) and metrics["median"] == pytest.approx(22.5)
    assert metrics["within_11.25"] == 0.5 and metrics["within_22.5"] == 0.5 and metrics["within_30"] == 0.5
    with pytest.raises(LotusError, match="2 predicted normals on the mask are zero vectors"):
        angular_errors(np.zeros_like(truth[:1]), truth[:1], np.ones((1, 2), bool))


def test_pooled_angles_summarise_all_pixels_together():
    rng = np.random.default_rng(1)
    images = [rng.uniform(0, 60, 500), rng.uniform(0, 10, 100)]
    pooled = PooledAngles()
    for errors in images:
        pooled.add(errors)
    everything = np.concatenate(images)
    summary, exact = pooled.summary(), normal_metrics(everything)
    assert summary["mean"] == pytest.approx(exact["mean"], rel=1e-12)
    assert abs(summary["median"] - exact["median"]) <= PooledAngles.MEDIAN_BIN
    assert summary["within_11.25"] == exact["within_11.25"] and summary["within_30"] == exact["within_30"]
    # pooled, not per image: the small image weighs by its pixels
    assert summary["mean"] != pytest.approx(np.mean([errors.mean() for errors in images]))
