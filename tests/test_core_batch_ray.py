"""The dataset job on a real local Ray cluster (``ray.init(num_cpus=2)``: this machine's cores), tiny models.

Ray Data runs for real: CPU tasks decode, an actor pool predicts and writes. Each test runs a small
dataset end to end (seconds), the cluster is shared by the module.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from ray_support import load_model_that_dies_once
from test_core_batch import OPTIONS, assert_complete_files_only, write_png, write_video
from tiny import save_unet_file, save_vae_file, synthetic_rgb, tiny_unet, tiny_vae

import lotus_core
from lotus_core.batch.job import JobOptions, run_job

ray = pytest.importorskip("ray", reason="the Ray job's tests need ray[data] (requirements-dev.txt)")
from lotus_core.batch.on_ray import run_job_on_ray  # noqa: E402  (after the skip: needs ray)

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of 2 CPUs whose workers import lotus_core and these tests' helpers."""
    path = os.pathsep.join([str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH", "")])
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = path  # workers inherit the driver's environment
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()
    if previous is None:
        os.environ.pop("PYTHONPATH")
    else:
        os.environ["PYTHONPATH"] = previous


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray_model")
    unet = save_unet_file(tiny_unet(True, seed=21), folder / "lotus-depth-g-v2-1-disparity.safetensors")
    vae = save_vae_file(tiny_vae(seed=22), folder / "vae.safetensors")
    return str(unet), str(vae)


@pytest.fixture
def dataset(tmp_path):
    """Images in folders, one of another size, a video, and a file that is not an image."""
    for index, name in enumerate(("a/one.png", "a/two.png", "b/one.png", "c/four.png", "c/five.png")):
        write_png(tmp_path / "in" / name, 40, 56, seed=index)
    write_png(tmp_path / "in" / "b" / "tall.png", 72, 40, seed=9)
    write_video(tmp_path / "in" / "clip.mkv", [synthetic_rgb(32, 48, index).numpy() for index in range(3)])
    (tmp_path / "in" / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n nothing more")
    return tmp_path / "in"


def result_files(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*"))
            if path.is_file() and path.suffix in (".npy", ".png") or path.name == "frames.json"}


def test_ray_writes_the_local_jobs_files_bit_for_bit(cluster, checkpoint, dataset, tmp_path):
    load = functools.partial(lotus_core.load_model, *checkpoint)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray worker (1 CPU): oneDNN's sums depend on the thread count
    try:
        local = run_job(load(), [dataset], tmp_path / "local", OPTIONS)
    finally:
        torch.set_num_threads(threads)
    on_ray = run_job_on_ray(load, [dataset], tmp_path / "ray", OPTIONS, workers=1, cpus_per_worker=1)

    assert (on_ray.done, on_ray.failed) == (local.done, local.failed) == (7, 1)
    local_files, ray_files = result_files(tmp_path / "local"), result_files(tmp_path / "ray")
    assert len(local_files) == 6 * 3 + 3 * 3 + 1  # six images, three video frames (npy, png16, control), an index
    for name, content in local_files.items():  # the PNGs carry the same metadata too
        assert ray_files[name] == content, name
    assert ray_files.keys() == local_files.keys()
    failure, = map(json.loads, (tmp_path / "ray" / "failures.jsonl").open())
    assert failure["name"] == "b/broken.png" and failure["stage"] == "read" and "broken.png" in failure["error"]


def test_a_killed_worker_loses_and_duplicates_nothing(cluster, checkpoint, dataset, tmp_path):
    marker = tmp_path / "killed"
    load = functools.partial(load_model_that_dies_once, *checkpoint, str(marker))
    summary = run_job_on_ray(load, [dataset], tmp_path / "out", OPTIONS, workers=1)
    assert marker.exists(), "no worker was killed: the test did not test anything"
    assert (summary.done, summary.failed) == (7, 1)
    assert_complete_files_only(tmp_path / "out")
    reference = run_job(lotus_core.load_model(*checkpoint), [dataset], tmp_path / "local", OPTIONS)
    assert reference.done == 7
    assert sorted(result_files(tmp_path / "out")) == sorted(result_files(tmp_path / "local"))
    failures = (tmp_path / "out" / "failures.jsonl").read_text().splitlines()
    assert len(failures) == 1  # the broken file, once: the retried batch was not recorded twice


def test_resume_on_ray_recomputes_nothing_already_done(cluster, checkpoint, dataset, tmp_path):
    load = functools.partial(lotus_core.load_model, *checkpoint)
    first = run_job_on_ray(load, [dataset], tmp_path / "out", OPTIONS)
    assert first.done == 7
    written = {path: path.stat().st_mtime_ns for path in (tmp_path / "out").rglob("*.npy")}
    os.remove(tmp_path / "out" / "a" / "two_disparity.npy")  # as if a run had stopped before this image
    second = run_job_on_ray(load, [dataset], tmp_path / "out", OPTIONS)
    assert (second.done, second.skipped, second.failed) == (1, 6, 1)
    for path, stamp in written.items():
        if path.name != "two_disparity.npy":
            assert path.stat().st_mtime_ns == stamp, f"{path} was written again"
    assert np.load(tmp_path / "out" / "a" / "two_disparity.npy").shape == (40, 56)
    with Image.open(tmp_path / "out" / "a" / "two_control.png") as control:
        assert control.size == (56, 40)


def test_lotus2_runs_on_ray_as_on_this_machine(cluster, tmp_path):
    """The second model family through the same job: Lotus-2 on a tiny diffusers FLUX folder."""
    from lotus2_tiny import tiny_flux_transformer, tiny_flux_vae, write_release, write_text_encoders

    folder = tmp_path / "FLUX.1-dev"
    transformer = tiny_flux_transformer(seed=1)
    transformer.save_pretrained(folder / "transformer")
    tiny_flux_vae(seed=2).save_pretrained(folder / "vae")
    write_text_encoders(folder)
    write_release(tmp_path / "Lotus-2", transformer, "depth", seed=3)
    for index, name in enumerate(("a.png", "b/c.png")):
        write_png(tmp_path / "in" / name, 40, 56, seed=index)
    load = functools.partial(lotus_core.load_lotus2, folder, "depth", lotus2_dir=tmp_path / "Lotus-2")
    options = JobOptions(processing_resolution=64, sharpener_steps=1, formats=("npy",))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = run_job(load(), [tmp_path / "in"], tmp_path / "local", options)  # also caches the conditioning
    finally:
        torch.set_num_threads(threads)
    on_ray = run_job_on_ray(load, [tmp_path / "in"], tmp_path / "ray", options, workers=1, cpus_per_worker=1)
    assert local.done == on_ray.done == 2
    for name in ("a_disparity.npy", "b/c_disparity.npy"):
        assert np.array_equal(np.load(tmp_path / "local" / name), np.load(tmp_path / "ray" / name)), name
