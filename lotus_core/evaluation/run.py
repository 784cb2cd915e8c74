"""``evaluate``: predict every image of a benchmark split (or take the prediction from the cache), score it."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..batch.seeds import image_seed
from ..errors import LotusError
from ..loading.load import load_model
from ..loading.model import LotusModel
from ..loading.precision import choose_dtypes
from ..loading.variants import Quantity
from ..prediction.predict import predict
from ..quality.ensemble import predict_ensemble
from ..quality.highres import DEFAULT_OVERLAP, predict_tiled
from .datasets import EvalDataset, Sample, open_dataset
from .metrics import PooledAngles, angular_errors, depth_metrics, normal_metrics
from .protocol import PROTOCOLS, Protocol, align, evaluation_mask, kitti_crop, prepare

log = logging.getLogger(__name__)

DEFAULT_SEED = 42  # the reference's evaluation scripts run with --seed=42
CACHE_FOLDER = "predictions"
SETTINGS_FILE = "settings.json"  # in the cache folder: what its predictions were made with


@dataclass(frozen=True)
class PredictionOptions:
    """How each image is predicted (with the checkpoint, what the cached predictions depend on)."""

    processing_resolution: int
    seed: int  # the run's; each image's is image_seed(seed, its name)
    ensemble_size: int = 1
    flip: bool = False
    tile_size: int = 0
    restore: str = "bilinear"


@dataclass
class Evaluation:
    """The outcome of one evaluation.

    Attributes:
        dataset: the benchmark's name.
        settings: everything the predictions depend on (checkpoint, resolution, seed, ...), plus the
            dataset's path and file list.
        images: one row per scored image: ``name``, ``valid_pixels`` and its metrics.
        failures: image name -> why it could not be scored (empty mask, constant prediction).
        metrics: the dataset's figures: depth metrics averaged over the scored images; normal metrics
            over all their pixels together.
        predicted / cached: images predicted by this run / taken from the cache folder.
    """

    dataset: str
    settings: dict
    images: list[dict] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    predicted: int = 0
    cached: int = 0


def evaluate(
    checkpoint: str | Path | LotusModel,
    dataset: str,
    path: str | Path,
    output: str | Path,
    *,
    split_file: str | Path | None = None,
    vae: str | Path | None = None,
    quantity: Quantity | str | None = None,
    processing_resolution: int | None = None,
    seed: int = DEFAULT_SEED,
    dtype: str = "fp32",
    device: str | None = None,
    ensemble_size: int = 1,
    flip: bool = False,
    tile_size: int = 0,
    kitti_crop_name: str = "eigen",
    limit: int | None = None,
    show_progress: bool = False,
) -> Evaluation:
    """Evaluate a checkpoint on one benchmark split by the standard protocol (``protocol``).

    Args:
        checkpoint: a loaded ``LotusModel``, or what ``load_model`` takes (file, folder, release name).
        dataset: a name of ``DATASETS`` ("nyuv2", "kitti", "eth3d", "scannet", "diode", "nyuv2-normals",
            "scannet-normals").
        path: the dataset's tar archive or extracted folder; ``split_file`` its file list (default:
            found beside the archive or in the folder, see ``open_dataset``).
        output: folder for the cache of predictions (``predictions/``, one .npy per image): a run
            that stops resumes from it; a run with other prediction settings is refused there.
        processing_resolution: default: the dataset's, as the reference configs (0 = native).
        seed: the run's seed; image ``name`` gets ``image_seed(seed, name)``, as in the batch job.
        dtype, device, vae, quantity: as ``load_model`` (ignored for a loaded model).
        ensemble_size, flip: ``predict_ensemble`` (1 = a single prediction); tile_size: ``predict_tiled``.
        kitti_crop_name: KITTI's evaluation crop, "eigen" (the suites') or "garg".
        limit: evaluate only the first ``limit`` images of the split (a quick check).
        show_progress: a progress bar with the ETA on stderr.
    """
    if ensemble_size < 1 or (ensemble_size > 1 and tile_size):
        raise LotusError(f"ensemble_size={ensemble_size} and tile_size={tile_size}: ensemble_size must be >= 1,"
                         " and ensembles and tiles cannot be combined")
    if limit is not None and limit < 1:
        raise LotusError(f"limit={limit} must be >= 1")
    data = open_dataset(dataset, path, split_file)
    try:
        protocol = PROTOCOLS[dataset]
        if dataset == "kitti":
            protocol = kitti_crop(protocol, kitti_crop_name)
        if processing_resolution is None:
            processing_resolution = protocol.processing_resolution
        model = checkpoint if isinstance(checkpoint, LotusModel) else _load(checkpoint, vae, quantity, dtype, device)
        _check_task(model, data)
        options = PredictionOptions(processing_resolution, seed, ensemble_size, flip, tile_size, protocol.restore)
        predictions_depend_on = {
            "dataset": dataset,
            "checkpoint": str(checkpoint) if not isinstance(checkpoint, LotusModel) else model.name,
            "model": model.name, "quantity": model.quantity.value, "generative": model.generative,
            "dtype": str(model.unet.dtype).removeprefix("torch."),
            "vae_dtype": str(model.vae.dtype).removeprefix("torch."), **asdict(options),
        }
        cache = _Cache(Path(output).expanduser() / CACHE_FOLDER, predictions_depend_on)
        result = Evaluation(dataset, {
            **predictions_depend_on, "device": str(model.device), "dataset_path": str(data.archive.path),
            "split_file": str(data.split_file), "limit": limit, "published_split_images": data.spec.images,
            "kitti_crop": protocol.crop if dataset == "kitti" else None})
        count = len(data) if limit is None else min(limit, len(data))
        _score_all(model, data, count, protocol, cache, options, result, show_progress)
    finally:
        data.close()
    return result


def _load(checkpoint, vae, quantity, dtype: str, device: str | None) -> LotusModel:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    unet_dtype, vae_dtype = choose_dtypes(dtype, device)
    return load_model(checkpoint, vae, quantity=quantity, device=device, dtype=unet_dtype, vae_dtype=vae_dtype)


def _check_task(model: LotusModel, data: EvalDataset) -> None:
    normals = model.quantity is Quantity.NORMAL
    if normals != (data.spec.task == "normal"):
        raise LotusError(f"dataset={data.spec.name!r} scores {data.spec.task}, but the checkpoint {model.name!r}"
                         f" predicts {model.quantity.value}")


def _score_all(model: LotusModel, data: EvalDataset, count: int, protocol: Protocol, cache: _Cache,
               options: PredictionOptions, result: Evaluation, show_progress: bool) -> None:
    """Predict (or read from the cache) and score the first ``count`` images into ``result``."""
    pooled = PooledAngles() if model.quantity is Quantity.NORMAL else None
    for index in tqdm(range(count), desc=f"eval {data.spec.name}", unit="image", disable=not show_progress):
        sample = prepare(data.sample(index), protocol)
        prediction = cache.load(sample.name)
        if prediction is None:
            prediction = _predict(model, sample, options)
            cache.store(sample.name, prediction)
            result.predicted += 1
        else:
            result.cached += 1
        try:
            row, errors = _score(prediction, sample, model.quantity, protocol)
        except LotusError as error:  # this image cannot be scored; the others still can
            log.warning("%s: not scored: %s", sample.name, error)
            result.failures[sample.name] = str(error)
            continue
        result.images.append(row)
        if pooled is not None:
            pooled.add(errors)
    if not result.images:
        raise LotusError(f"none of the {count} images could be scored; first reason:"
                         f" {next(iter(result.failures.values()))}")
    if pooled is not None:
        result.metrics = pooled.summary()
    else:
        names = [key for key in result.images[0] if key not in ("name", "valid_pixels")]
        result.metrics = {name: float(np.mean([row[name] for row in result.images])) for name in names}


def _predict(model: LotusModel, sample: Sample, options: PredictionOptions) -> np.ndarray:
    """The model's raw prediction at the sample's size: [H, W] depth/disparity or [H, W, 3] normals."""
    image = torch.from_numpy(sample.rgb).permute(2, 0, 1)[None].float().div(255).to(model.device)
    common = dict(processing_resolution=options.processing_resolution, seed=image_seed(options.seed, sample.name))
    if options.ensemble_size > 1:
        prediction = predict_ensemble(model, image, ensemble_size=options.ensemble_size, flip=options.flip,
                                      restore=options.restore, **common)
    elif options.tile_size:
        tile = options.tile_size
        overlap = min(DEFAULT_OVERLAP, (tile - 1) // 2 // 8 * 8)  # as the main command: less than half a tile
        prediction = predict_tiled(model, image, tile_size=tile, overlap=overlap, **common)
    else:
        prediction = predict(model, image, restore=options.restore, **common)
    values = prediction.values[0].float().cpu().numpy()
    return values[0] if values.shape[0] == 1 else values.transpose(1, 2, 0)


def _score(prediction: np.ndarray, sample: Sample, quantity: Quantity,
           protocol: Protocol) -> tuple[dict, np.ndarray | None]:
    mask = evaluation_mask(sample, protocol)
    row = {"name": sample.name, "valid_pixels": int(mask.sum())}
    if quantity is Quantity.NORMAL:
        errors = angular_errors(prediction, sample.target, mask)
        return {**row, **normal_metrics(errors)}, errors
    aligned = align(prediction, sample.target, mask, quantity, protocol)
    return {**row, **depth_metrics(aligned, sample.target, mask)}, None


class _Cache:
    """Predictions on disk, one .npy per image under the image's own path, and the settings they were made
    with. Files are written whole (temporary name, then renamed), so a run killed mid-write leaves none half."""

    def __init__(self, folder: Path, settings: dict) -> None:
        self.folder = folder
        settings_file = folder / SETTINGS_FILE
        if settings_file.is_file():
            stored = json.loads(settings_file.read_text())
            differing = {key: (stored.get(key), value) for key, value in settings.items() if stored.get(key) != value}
            if differing:
                changes = ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in differing.items())
                raise LotusError(f"the output folder's predictions ({str(folder)!r}) were made with other settings"
                                 f" ({changes}): choose another output folder, or delete that one to start over")
        else:
            folder.mkdir(parents=True, exist_ok=True)
            _write_atomically(settings_file, json.dumps(settings, indent=2).encode())

    def _file(self, name: str) -> Path:
        if Path(name).is_absolute() or ".." in Path(name).parts:  # a file list must not write outside the cache
            raise LotusError(f"image name {name!r} in the file list must be a relative path inside the dataset")
        return self.folder / f"{name}.npy"

    def load(self, name: str) -> np.ndarray | None:
        file = self._file(name)
        return np.load(file) if file.is_file() else None

    def store(self, name: str, prediction: np.ndarray) -> None:
        file = self._file(name)
        file.parent.mkdir(parents=True, exist_ok=True)
        with open(file.with_name(file.name + ".partial"), "wb") as stream:
            np.save(stream, prediction.astype(np.float32))
        os.replace(file.with_name(file.name + ".partial"), file)


def _write_atomically(file: Path, data: bytes) -> None:
    partial = file.with_name(file.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, file)
