"""An evaluation's outputs: the table beside the paper's figures, a JSON file with every number, a per-image CSV."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from .metrics import DEPTH_METRICS, NORMAL_METRICS
from .run import Evaluation

PAPER = "Lotus, arXiv 2409.18124 v5"
# The paper's figures in its own units (% for AbsRel and the accuracies, degrees for angles), by
# (quantity the checkpoint predicts, generative?) -> (source, dataset -> metric -> figure).
# Disparity checkpoints (v2) are the paper's Lotus-G / Lotus-D (Table 1, Table 3's disparity rows);
# depth checkpoints (v1-0) are Table 3's depth-space rows, which have no DIODE column.
PAPER_FIGURES = {
    ("disparity", True): ("Lotus-G, Table 1", {
        "nyuv2": {"abs_rel": 5.4, "delta1": 96.8, "delta2": 99.2},
        "kitti": {"abs_rel": 8.5, "delta1": 92.2, "delta2": 98.4},
        "eth3d": {"abs_rel": 5.9, "delta1": 97.0, "delta2": 99.2},
        "scannet": {"abs_rel": 5.9, "delta1": 95.7, "delta2": 98.8},
        "diode": {"abs_rel": 22.9, "delta1": 72.9, "delta2": 86.0},
    }),
    ("disparity", False): ("Lotus-D, Table 1", {
        "nyuv2": {"abs_rel": 5.1, "delta1": 97.2},
        "kitti": {"abs_rel": 8.1, "delta1": 93.1},
        "eth3d": {"abs_rel": 6.1, "delta1": 97.0},
        "scannet": {"abs_rel": 5.5, "delta1": 96.5},
        "diode": {"abs_rel": 22.8, "delta1": 73.8},
    }),
    ("depth", True): ("Lotus-G in depth space, Table 3 '+ Mixture Dataset'", {
        "nyuv2": {"abs_rel": 5.425, "delta1": 96.60},
        "kitti": {"abs_rel": 11.324, "delta1": 87.69},
        "eth3d": {"abs_rel": 6.172, "delta1": 96.08},
        "scannet": {"abs_rel": 6.024, "delta1": 96.03},
    }),
    ("depth", False): ("Lotus-D in depth space, Table 3 '- Noise Input'", {
        "nyuv2": {"abs_rel": 5.334, "delta1": 96.73},
        "kitti": {"abs_rel": 9.334, "delta1": 92.81},
        "eth3d": {"abs_rel": 6.846, "delta1": 95.29},
        "scannet": {"abs_rel": 5.982, "delta1": 96.29},
    }),
    ("normal", True): ("Lotus-G, Table 2", {
        "nyuv2-normals": {"mean": 16.5, "within_11.25": 59.4, "within_30": 83.5},
        "scannet-normals": {"mean": 15.1, "within_11.25": 63.9, "within_30": 85.3}}),
    ("normal", False): ("Lotus-D, Table 2", {
        "nyuv2-normals": {"mean": 16.2, "within_11.25": 59.8, "within_30": 83.9},
        "scannet-normals": {"mean": 14.7, "within_11.25": 64.0, "within_30": 86.1}}),
}
# How each metric is shown: label, factor from the stored fraction to the table's unit
SHOWN = {
    "abs_rel": ("AbsRel ↓ (%)", 100), "delta1": ("δ1 ↑ (%)", 100), "delta2": ("δ2 ↑ (%)", 100),
    "delta3": ("δ3 ↑ (%)", 100), "sq_rel": ("SqRel ↓ (%)", 100), "rmse": ("RMSE ↓ (m)", 1),
    "rmse_log": ("RMSE log ↓", 1), "log10": ("log10 ↓", 1), "mean": ("mean angle ↓ (°)", 1),
    "median": ("median angle ↓ (°)", 1), "within_11.25": ("< 11.25° ↑ (%)", 100),
    "within_22.5": ("< 22.5° ↑ (%)", 100), "within_30": ("< 30° ↑ (%)", 100),
}

CELL_LABELS = {False: "AbsRel / δ1 (%)", True: "mean angle (°) / < 11.25° (%) / < 30° (%)"}


def paper_figures(evaluation: Evaluation) -> tuple[str, dict[str, float]]:
    """(source, metric -> figure in the table's unit) the paper gives for this checkpoint kind and dataset."""
    settings = evaluation.settings
    source, figures = PAPER_FIGURES[(settings["quantity"], settings["generative"])]
    return source, figures.get(evaluation.dataset, {})


def shown_metrics(evaluation: Evaluation) -> dict[str, float]:
    """The dataset's metrics in the table's units (percent for fractions)."""
    return {name: value * SHOWN[name][1] for name, value in evaluation.metrics.items()}


def table(evaluation: Evaluation) -> str:
    """The run's figures beside the paper's, and the difference, as text."""
    settings = evaluation.settings
    source, figures = paper_figures(evaluation)
    scored = len(evaluation.images)
    total = scored + len(evaluation.failures)
    resolution = settings["processing_resolution"] or "native"
    mode = ""
    if settings["ensemble_size"] > 1:
        mode = f", ensemble {settings['ensemble_size']}{' + flip' if settings['flip'] else ''}"
    elif settings["tile_size"]:
        mode = f", tiles {settings['tile_size']} px"
    if settings["kitti_crop"]:
        mode += f", {settings['kitti_crop']} crop"
    ours = shown_metrics(evaluation)
    # the paper's own cell: "AbsRel / δ1" (Table 1), "mean / < 11.25° / < 30°" (Table 2)
    cell = ["abs_rel", "delta1"] if settings["quantity"] != "normal" else ["mean", "within_11.25", "within_30"]
    paper_cell = " / ".join(f"{figures[name]:g}" for name in cell) if all(name in figures for name in cell) else "–"
    lines = [
        f"{evaluation.dataset}: {scored} of {total} images scored; {settings['model']} ({settings['quantity']}),"
        f" resolution {resolution}, seed {settings['seed']}, {settings['dtype']}{mode}",
        f"as in the paper, {CELL_LABELS[settings['quantity'] == 'normal']}: "
        f"{' / '.join(f'{ours[name]:.1f}' for name in cell)}   paper: {paper_cell}",
        f"{'metric':<22}{'this run':>10}{'paper':>10}{'difference':>12}",
    ]
    for name in DEPTH_METRICS if settings["quantity"] != "normal" else NORMAL_METRICS:
        label = SHOWN[name][0]
        paper = figures.get(name)
        paper_text, difference = ("–", "") if paper is None else (f"{paper:g}", f"{ours[name] - paper:+.2f}")
        lines.append(f"{label:<22}{ours[name]:>10.2f}{paper_text:>10}{difference:>12}")
    lines.append(f"paper: {source} ({PAPER})" if figures else f"paper: no figure for this checkpoint kind ({source})")
    if evaluation.failures:
        lines.append(f"not scored: {len(evaluation.failures)} image(s), reasons in the JSON and the CSV")
    if total != settings["published_split_images"]:
        lines.append(f"note: the paper's split has {settings['published_split_images']} images, this run {total}:"
                     " the comparison is indicative only")
    return "\n".join(lines)


def write_json(evaluation: Evaluation, file: Path) -> None:
    """Every number of the run: settings, dataset metrics (stored units and the table's), the paper's, each image's."""
    source, figures = paper_figures(evaluation)
    document = {
        "dataset": evaluation.dataset,
        "settings": evaluation.settings,
        "images_scored": len(evaluation.images),
        "images_not_scored": evaluation.failures,
        "predicted_this_run": evaluation.predicted,
        "taken_from_cache": evaluation.cached,
        "metrics": evaluation.metrics,
        "metrics_as_in_table": shown_metrics(evaluation),
        "paper": {"source": f"{source} ({PAPER})", "figures": figures},
        "images": evaluation.images,
    }
    file.write_text(json.dumps(document, indent=2, allow_nan=False))


def write_csv(evaluation: Evaluation, file: Path) -> None:
    """One row per image of the run, scored or not (then with the reason), metrics in stored units."""
    metric_names = list(evaluation.metrics)
    with open(file, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["name", "valid_pixels", *metric_names, "not_scored_because"])
        for row in evaluation.images:
            writer.writerow([row["name"], row["valid_pixels"], *(_number(row[name]) for name in metric_names), ""])
        for name, reason in evaluation.failures.items():
            writer.writerow([name, "", *[""] * len(metric_names), reason])


def _number(value: float) -> str:
    return repr(value) if math.isfinite(value) else ""
