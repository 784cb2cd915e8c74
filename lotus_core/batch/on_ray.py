"""The dataset job on a Ray cluster (``pip install lotus-depth[ray]``): the local job's steps, spread out.

Decoding and resizing (``prepare``) run as CPU tasks; prediction and writing run in a pool of
actors, each holding one model (one GPU each where the cluster has GPUs, CPU actors otherwise); a
batch's images are grouped by size there. Planning (names, collisions, settings, resume) and the
failures manifest stay on the driver, so the semantics are the local job's. Every image's random
numbers come from its name and every file is written atomically, so a worker that dies and is
retried (Ray Data restarts actors and retries their tasks) leaves neither holes nor half files,
and the files equal the local job's bit for bit.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import LotusError
from ..loading.model import LotusModel
from .job import (
    JobOptions,
    JobSummary,
    ModelFacts,
    Prepared,
    Task,
    batches,
    describe_error,
    plan_job,
    predict_prepared,
    prepare,
    recording,
    write_results,
)
from .sources import Source


def start_ray(address: str | None = None) -> None:
    """Connect to the Ray cluster at ``address`` (None: ``RAY_ADDRESS``, else a new local one)."""
    ray = _ray()
    if not ray.is_initialized():
        ray.init(address=address)


def run_job_on_ray(load: Callable[[], LotusModel], inputs: list[str | Path], output: str | Path,
                   options: JobOptions = JobOptions(), *, workers: int | None = None,
                   cpus_per_worker: float = 1, gpus_per_worker: float | None = None) -> JobSummary:
    """Predict every input into ``output`` on the Ray cluster this process is connected to
    (``ray.init`` first; without it, Ray starts a local one).

    Args:
        load: builds the model inside each actor, e.g. ``functools.partial(load_model, "ckpt")``
            (picklable; it runs on the workers, once per actor, and once in a task to learn the
            model's name, quantity and precision for the plan).
        workers: actors, each with its own model; default: one per GPU of the cluster, else one.
        cpus_per_worker: CPUs reserved per actor; torch in the actor uses as many threads.
        gpus_per_worker: GPUs per actor; default: 1 where the cluster has GPUs, else 0.
    """
    start_ray()
    ray = _ray()
    cluster_gpus = int(ray.cluster_resources().get("GPU", 0))
    gpus = (1 if cluster_gpus else 0) if gpus_per_worker is None else gpus_per_worker
    workers = workers or max(cluster_gpus, 1)
    output = Path(output).resolve()
    facts = ray.get(ray.remote(num_cpus=cpus_per_worker, num_gpus=gpus)(_describe).remote(load))
    plan = plan_job(inputs, output, options, facts)
    with recording(plan) as (summary, failures):
        if plan.todo:
            # absolute: workers on other nodes do not run in this process's folder
            rows = [{"name": task.source.name, "path": str(task.source.path.resolve()),
                     "files": json.dumps(task.files)}
                    for task in plan.todo]
            results = (
                ray.data.from_items(rows)
                # Beside GPU actors, decoding runs in CPU tasks of its own; beside CPU actors, which hold the
                # node's CPUs, it asks what they ask, so that Ray fuses it into them instead of starving it.
                .map(_Prepare(options, facts), num_cpus=1 if gpus else cpus_per_worker)
                .map_batches(_Predictor, fn_constructor_kwargs={"load": load, "options": options, "output": output},
                             batch_size=options.batch_size, batch_format="numpy", concurrency=workers,
                             num_cpus=cpus_per_worker, num_gpus=gpus)
            )
            for row in results.iter_rows():
                if row["error"]:
                    failures.add(Source(row["name"], Path(row["path"])), row["stage"], LotusError(row["error"]))
                else:
                    summary.done += 1
    return summary


def _describe(load: Callable[[], LotusModel]) -> ModelFacts:
    return ModelFacts.of(load())


def _task(row: dict) -> Task:
    return Task(Source(row["name"], Path(row["path"])), json.loads(row["files"]))


@dataclass
class _Prepare:
    """CPU task: decode and resize one input; a failure travels on as a row with its message."""

    options: JobOptions
    model: ModelFacts

    def __call__(self, row: dict) -> dict:
        result = {**row, "stage": "", "error": "", "pixels": np.zeros((0,), np.float32), "height": 0, "width": 0,
                  "frame_rate": -1.0}
        try:
            prepared = prepare(_task(row), self.options, self.model)
        except Exception as error:
            return {**result, "stage": "read", "error": describe_error(error)}
        return {**result, "pixels": prepared.pixels.numpy(), "height": prepared.size[0], "width": prepared.size[1],
                "frame_rate": -1.0 if prepared.frame_rate is None else prepared.frame_rate}


class _Predictor:
    """Actor: one model, predicting and writing the batches it is given."""

    def __init__(self, load: Callable[[], LotusModel], options: JobOptions, output: Path) -> None:
        cpus = _assigned_cpus()
        if cpus:
            torch.set_num_threads(cpus)  # the actor's share of the node: no oversubscribed cores
        self.model = load()
        self.options = options
        self.output = output

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        outcome = {name: {"stage": str(stage), "error": str(error)}
                   for name, stage, error in zip(batch["name"], batch["stage"], batch["error"], strict=True)}
        ready = [self._prepared(batch, index) for index in range(len(batch["name"])) if not batch["error"][index]]
        ready.sort(key=lambda prepared: (repr(prepared.batch_key), prepared.task.source.name))
        for group in batches(iter(ready), self.options.images_per_call):
            try:
                predictions = predict_prepared(self.model, group, self.options)
            except Exception as error:
                outcome.update({prepared.task.source.name: {"stage": "predict", "error": describe_error(error)}
                                for prepared in group})
                continue
            for prepared, prediction in zip(group, predictions, strict=True):
                try:
                    write_results(self.output, prepared, prediction, self.options)
                except Exception as error:
                    outcome[prepared.task.source.name] = {"stage": "write", "error": describe_error(error)}
        names = [str(name) for name in batch["name"]]
        return {"name": names, "path": [str(path) for path in batch["path"]],
                "stage": [outcome[name]["stage"] for name in names],
                "error": [outcome[name]["error"] for name in names]}

    @staticmethod
    def _prepared(batch: dict[str, np.ndarray], index: int) -> Prepared:
        row = {key: batch[key][index] for key in ("name", "path", "files")}
        rate = float(batch["frame_rate"][index])
        return Prepared(_task({key: str(value) for key, value in row.items()}),
                        torch.from_numpy(np.ascontiguousarray(batch["pixels"][index])),
                        (int(batch["height"][index]), int(batch["width"][index])), None if rate < 0 else rate)


def _assigned_cpus() -> int:
    """CPUs Ray assigned to this worker (0 outside Ray)."""
    import ray

    if not ray.is_initialized():
        return 0
    return int(ray.get_runtime_context().get_assigned_resources().get("CPU", 0))


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401  (the Data library is a separate install: ray[data])
    except ImportError:
        raise LotusError("the Ray job needs Ray Data: pip install 'lotus-depth[ray]' (or 'ray[data]')") from None
    return ray
