"""The dataset job on one machine: inputs to result files, resumable, one failure never stopping the run.

A run is planned first (``plan_job``: inputs found and named, collisions refused, the settings
compared with those of the results already in the output folder, complete results skipped), then
each input is decoded and made ready for the networks on the CPU (``prepare``), predicted (``predict_prepared``) and
written atomically (``outputs``). ``on_ray.run_job_on_ray`` runs the same three steps on a Ray
cluster, so both give the same files bit for bit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

import torch

from ..depthmap import DepthMap
from ..errors import LotusError, check_choice
from ..loading.model import LotusModel
from ..loading.variants import Quantity
from ..lotus2.model import Lotus2Model
from ..lotus2.predict import DEFAULT_SHARPENER_STEPS, predict_lotus2
from ..outputs.colormaps import COLORMAPS
from ..outputs.files import FILE_FORMATS, atomic_path
from ..prediction.images import MIN_EDGE, RESIZE_MODES
from ..prediction.memory import check_vae_tile_size
from ..prediction.predict import DEFAULT_PROCESSING_RESOLUTION, GEOMETRIES, predict
from ..progress import ProgressCallback
from ..quality.ensemble import predict_ensemble
from ..quality.highres import predict_tiled
from ..quality.video import predict_video
from .outputs import image_files, is_complete, write_image, write_video
from .reading import for_networks, read_image, read_video
from .seeds import image_seed
from .sources import Source, find_sources

log = logging.getLogger(__name__)

SETTINGS_FILE = "lotus_job.json"
FAILURES_FILE = "failures.jsonl"


@dataclass(frozen=True)
class JobOptions:
    """How a dataset run predicts and what it writes (the CLI's options, as one value)."""

    formats: tuple[str, ...] = ("png16", "npy")
    colormap: str = "spectral"
    processing_resolution: int = DEFAULT_PROCESSING_RESOLUTION
    seed: int = 0
    geometry: str = GEOMETRIES[0]
    resample: str = "bilinear"
    ensemble_size: int = 1
    flip: bool = False
    tile_size: int = 0
    tile_overlap: int | None = None
    # Images per network pass. 1: every result is independent of the run's order and batches, bit for
    # bit; more runs faster on a GPU, but batched kernels change the last bits (~1e-6) with the batch.
    batch_size: int = 1
    vae_tile_size: int | None = None
    memory_limit: int | None = None
    overwrite: bool = False
    sharpener_steps: int = DEFAULT_SHARPENER_STEPS  # Lotus-2 only: detail-sharpener passes (0 = core step only)

    def check(self) -> None:
        """Refuse bad options before any work (they would otherwise fail every file alike)."""
        if not self.formats:
            raise LotusError("formats is empty: name at least one of " + ", ".join(FILE_FORMATS))
        for kind in self.formats:
            check_choice("format", kind, FILE_FORMATS)
        check_choice("colormap", self.colormap, COLORMAPS)
        check_choice("geometry", self.geometry, GEOMETRIES)
        check_choice("resample", self.resample, RESIZE_MODES)
        for name, low in (("processing_resolution", 0), ("ensemble_size", 1), ("tile_size", 0), ("batch_size", 1),
                          ("sharpener_steps", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise LotusError(f"{name}={value!r} must be an integer >= {low}")
        if 0 < self.processing_resolution < MIN_EDGE:
            raise LotusError(f"processing_resolution={self.processing_resolution} must be 0 (native) or >= {MIN_EDGE}")
        check_vae_tile_size(self.vae_tile_size)
        if sum((self.ensemble_size > 1, self.tile_size > 0)) > 1:
            raise LotusError("ensemble_size > 1 and tile_size cannot be combined: pick one")

    def results_settings(self, model: ModelFacts) -> dict:
        """What decides the numbers in the results (not which files are written): a resumed run must
        match them, or it would mix results of two settings in one folder."""
        keep = (("processing_resolution", "seed", "sharpener_steps") if model.lotus2 else
                ("processing_resolution", "seed", "geometry", "resample", "ensemble_size", "flip", "tile_size",
                 "tile_overlap"))
        return {"model": model.name, "quantity": model.quantity.value, "dtype": model.dtype,
                **{name: getattr(self, name) for name in keep}}

    @property
    def images_per_call(self) -> int:
        """Inputs per prediction call: ensembles and tiles take one image (they batch its passes)."""
        return 1 if self.ensemble_size > 1 or self.tile_size > 0 else self.batch_size

    def check_for(self, model: ModelFacts) -> None:
        """Refuse options the model family does not have."""
        if model.lotus2 and (self.ensemble_size > 1 or self.tile_size):
            raise LotusError("ensembles and high-res tiles are Lotus 1 modes; Lotus-2 has sharpener_steps")


@dataclass(frozen=True)
class ModelFacts:
    """What the planner needs to know of a model without holding it (a Ray driver has none)."""

    name: str
    quantity: Quantity
    dtype: str
    lotus2: bool = False  # Lotus-2 (FLUX): its own resizing rule and sharpener steps, no Lotus 1 modes

    @classmethod
    def of(cls, model: LotusModel | Lotus2Model) -> ModelFacts:
        lotus2 = isinstance(model, Lotus2Model)
        dtype = model.dtype if lotus2 else model.unet.dtype
        return cls(model.name, model.quantity, str(dtype).removeprefix("torch."), lotus2)


@dataclass(frozen=True)
class Task:
    """One input to predict, and the files its results go to (a video: the first frame's)."""

    source: Source
    files: dict[str, str]


@dataclass
class JobPlan:
    output: Path
    todo: list[Task]
    skipped: int


@dataclass
class Prepared:
    """An input decoded and made ready for the networks on the CPU (``for_networks``: [1 or T frames,
    3, h, w] in [-1, 1] at the processing size; high-res tiles: the decoded image itself), and the
    size its results are restored to."""

    task: Task
    pixels: torch.Tensor
    size: tuple[int, int]
    frame_rate: float | None = None

    @property
    def batch_key(self) -> tuple:
        """Inputs that can share a network pass: images of one processed and one restored size (a
        video is a sequence of its own)."""
        if self.task.source.is_video:
            return ("video", self.task.source.name)
        return (tuple(self.pixels.shape), self.size)


@dataclass
class JobSummary:
    output: Path
    done: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    failures: Path | None = None
    interrupted: bool = False

    def describe(self) -> str:
        rate = f" ({self.done / self.seconds:.3g} images/s)" if self.done and self.seconds else ""
        text = (f"{self.done} done, {self.skipped} skipped (already complete), {self.failed} failed"
                f" in {self.seconds:.1f} s{rate}; results in {self.output}")
        if self.failed:
            text += f"; failures listed in {self.failures}"
        if self.interrupted:
            text += "; interrupted: run the same command again to resume"
        return text


class JobInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run, with what the run had done (finished results stay; the rest resumes)."""

    def __init__(self, summary: JobSummary) -> None:
        super().__init__()
        self.summary = summary

    def __str__(self) -> str:  # the summary is completed after this is raised (``recording``'s finally)
        return self.summary.describe()


class JobProgress(Protocol):
    """What a front end shows: the images to do, each input's current stage, each finished input."""

    def begin(self, total: int) -> None: ...

    def stage(self, name: str, stage: str) -> None: ...

    def advance(self, count: int) -> None: ...


@dataclass
class FailureLog:
    """The run's failures as JSON lines (``failures.jsonl``), each written as it happens."""

    path: Path
    count: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.path.unlink(missing_ok=True)  # a new run's record: what failed this time

    def add(self, source: Source, stage: str, error: BaseException) -> None:
        message = describe_error(error)
        where = "" if str(source.path) in message else f"{source.path}: "
        log.error("Lotus: %s failed: %s%s", stage, where, message)
        record = {"input": str(source.path), "name": source.name, "stage": stage, "error": message,
                  "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        with open(self.path, "a") as file:
            file.write(json.dumps(record) + "\n")
        self.count += 1


def describe_error(error: BaseException) -> str:
    """A failure's message: ours as written, anything else with its type (``KeyError: 'x'`` says more)."""
    return str(error) if isinstance(error, LotusError) else f"{type(error).__name__}: {error}"


def plan_job(inputs: list[str | Path], output: Path, options: JobOptions, model: ModelFacts) -> JobPlan:
    """Find and name the inputs, refuse collisions and settings that differ from the results already
    in ``output`` (unless ``options.overwrite``), record the settings, and skip complete results."""
    options.check()
    options.check_for(model)
    sources = find_sources(inputs, output)
    if not sources:
        raise LotusError("no image or video files found in " + ", ".join(map(str, inputs)))
    output.mkdir(parents=True, exist_ok=True)
    _record_settings(output / SETTINGS_FILE, options.results_settings(model), options.overwrite)
    todo, skipped = [], 0
    uncertainty = options.ensemble_size > 1
    for source in sources:
        files = image_files(source.stem, model.quantity, options.formats, options.colormap,
                            uncertainty=uncertainty and not source.is_video)
        if not options.overwrite and is_complete(output, source.stem, files, source.is_video):
            skipped += 1
        else:
            todo.append(Task(source, files))
    return JobPlan(output, todo, skipped)


def prepare(task: Task, options: JobOptions, model: ModelFacts) -> Prepared:
    """Decode ``task``'s input and resize it for the networks (CPU work); Lotus-2 and high-res tiles
    take the decoded pixels (their own resizing rule; the full resolution)."""
    source = task.source
    if source.is_video:
        frames, rate = read_video(source.path)
        sizes = {tuple(frame.shape[-2:]) for frame in frames}
        if len(sizes) > 1:
            raise LotusError(f"{source.path}: frames of {len(sizes)} sizes; a video needs one")
        pixels = torch.cat([frame if model.lotus2 else for_networks(frame, options.processing_resolution,
                                                                    options.resample) for frame in frames])
        return Prepared(task, pixels, sizes.pop(), rate)
    image = read_image(source.path)
    size = tuple(image.shape[-2:])
    if options.tile_size or model.lotus2:
        return Prepared(task, image, size)
    return Prepared(task, for_networks(image, options.processing_resolution, options.resample), size)


def predict_prepared(model: LotusModel | Lotus2Model, group: list[Prepared], options: JobOptions,
                     callback: ProgressCallback | None = None) -> list[DepthMap]:
    """Predict prepared inputs of one ``batch_key`` in one call, each with its own seed; one result per
    input (a video's holds its frames). The same numbers wherever and with whom it runs."""
    first = group[0]
    seeds = [image_seed(options.seed, prepared.task.source.name) for prepared in group]
    common = dict(geometry=options.geometry, vae_tile_size=options.vae_tile_size, memory_limit=options.memory_limit,
                  callback=callback)
    at_size = dict(processing_resolution=options.processing_resolution, prepared_size=first.size, **common)
    if isinstance(model, Lotus2Model):  # one image (or video) at a time, each with its own seed
        return [predict_lotus2(model, prepared.pixels, seed=seed, sharpener_steps=options.sharpener_steps,
                               processing_resolution=options.processing_resolution, callback=callback)
                for prepared, seed in zip(group, seeds, strict=True)]
    if first.task.source.is_video:
        results = [predict_video(model, first.pixels, seed=seeds[0], **at_size)]
    elif options.tile_size:
        results = [predict_tiled(model, first.pixels, tile_size=options.tile_size, overlap=options.tile_overlap,
                                 processing_resolution=options.processing_resolution, resample=options.resample,
                                 seed=seeds[0], **common)]
    elif options.ensemble_size > 1:
        results = [predict_ensemble(model, first.pixels, ensemble_size=options.ensemble_size, flip=options.flip,
                                    seed=seeds[0], **at_size)]
    else:
        batch = predict(model, torch.cat([prepared.pixels for prepared in group]), seed=seeds,
                        chunk_size=len(group), **at_size)
        results = [batch.frame(index) for index in range(len(group))]
    return results


def write_results(output: Path, prepared: Prepared, prediction: DepthMap, options: JobOptions) -> None:
    task = prepared.task
    if task.source.is_video:
        write_video(output, task.source.stem, prediction, options.formats, options.colormap, prepared.frame_rate)
    else:
        write_image(output, prediction, task.files, options.colormap)


def batches(prepared: Iterator[Prepared], batch_size: int) -> Iterator[list[Prepared]]:
    """Consecutive prepared inputs grouped by ``batch_key``, at most ``batch_size`` images a group
    (videos, ensembles and tiles always alone: they are batches of their own)."""
    group: list[Prepared] = []
    for item in prepared:
        if group and item.batch_key != group[0].batch_key:
            yield group
            group = []
        group.append(item)
        if len(group) >= batch_size:  # full: predict it before reading on
            yield group
            group = []
    if group:
        yield group


def run_job(model: LotusModel | Lotus2Model, inputs: list[str | Path], output: str | Path,
            options: JobOptions = JobOptions(), *, progress: JobProgress | None = None) -> JobSummary:
    """Predict every input into ``output`` on this machine; returns what was done.

    A file that cannot be read, predicted or written is logged, listed in ``failures.jsonl`` and
    left for the next run; the others go on. Ctrl-C stops at once and loses nothing finished:
    every file appears complete under its name or not at all.
    """
    facts = ModelFacts.of(model)
    plan = plan_job(inputs, Path(output), options, facts)
    if progress is not None:
        progress.begin(len(plan.todo))
    with recording(plan) as (summary, failures):
        prepared_inputs = _prepared(plan.todo, options, facts, failures, progress)
        for group in batches(prepared_inputs, options.images_per_call):
            names = ", ".join(prepared.task.source.name for prepared in group)
            callback = None if progress is None else _stage_callback(progress, names)
            try:
                predictions = predict_prepared(model, group, options, callback)
            except Exception as error:  # this batch's inputs fail; the run goes on
                for prepared in group:
                    failures.add(prepared.task.source, "predict", error)
                _advance(progress, len(group))
                continue
            for prepared, prediction in zip(group, predictions, strict=True):
                if progress is not None:
                    progress.stage(prepared.task.source.name, "writing")
                try:
                    write_results(plan.output, prepared, prediction, options)
                    summary.done += 1
                except Exception as error:
                    failures.add(prepared.task.source, "write", error)
                _advance(progress, 1)
    return summary


@contextlib.contextmanager
def recording(plan: JobPlan) -> Iterator[tuple[JobSummary, FailureLog]]:
    """A run's record, for this machine's job and Ray's alike: its summary and failures manifest,
    timed, and Ctrl-C turned into JobInterrupted, which carries the summary so far."""
    summary = JobSummary(plan.output, skipped=plan.skipped)
    failures = FailureLog(plan.output / FAILURES_FILE)
    summary.failures = failures.path
    start = time.perf_counter()
    try:
        yield summary, failures
    except KeyboardInterrupt:
        summary.interrupted = True
        raise JobInterrupted(summary) from None
    finally:
        summary.failed = failures.count
        summary.seconds = time.perf_counter() - start


def _prepared(todo: list[Task], options: JobOptions, facts: ModelFacts, failures: FailureLog,
              progress: JobProgress | None) -> Iterator[Prepared]:
    for task in todo:
        if progress is not None:
            progress.stage(task.source.name, "reading")
        try:
            yield prepare(task, options, facts)
        except Exception as error:
            failures.add(task.source, "read", error)
            _advance(progress, 1)


def _stage_callback(progress: JobProgress, names: str) -> ProgressCallback:
    def report(done: int, total: int) -> None:
        progress.stage(names, f"predicting, step {done}/{total}")

    return report


def _advance(progress: JobProgress | None, count: int) -> None:
    if progress is not None:
        progress.advance(count)


def _record_settings(path: Path, settings: dict, overwrite: bool) -> None:
    """Keep one output folder to one set of settings: refuse to resume into results made otherwise."""
    if path.is_file() and not overwrite:
        try:
            earlier = json.loads(path.read_text()).get("settings", {})
        except ValueError:
            earlier = {}
        changed = {key: (earlier.get(key), value) for key, value in settings.items() if earlier.get(key) != value}
        if changed:
            shown = ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changed.items())
            raise LotusError(f"{path.parent} holds results made with other settings ({shown}); nothing was"
                             " written. Use another output folder, or overwrite to redo every result")
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps({"settings": settings}, indent=1, default=str))

