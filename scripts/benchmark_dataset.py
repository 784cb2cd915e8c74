"""Throughput of the dataset job on this machine against the same job on a local Ray cluster.

    .venv/bin/python scripts/benchmark_dataset.py                  # the README's table (about 15 min here)
    .venv/bin/python scripts/benchmark_dataset.py --images 4 --resolution 256   # a quick look

Full-size Lotus-G architecture with random weights (scripts/benchmark.py writes the folder), the
same images and options everywhere, every configuration in a fresh process: the local job (torch on
all cores) and Ray jobs with one worker on all cores and with one worker per core (each with as many
torch threads as its CPUs, so the cores are never oversubscribed). A run's time is wall time from
the start of the job (Ray: cluster start, actors and their model loads included) to its summary,
plus "warm", the time from the first result to the last, which leaves start-up out. Prints a
Markdown table; compare within one run (shared machines are noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))


def child(args: argparse.Namespace) -> None:
    """One configuration, in this fresh process: prints a JSON line with its times."""
    import functools

    import torch

    import lotus_core
    from lotus_core.batch.job import JobOptions, run_job

    options = JobOptions(processing_resolution=args.resolution, formats=("npy",))
    load = functools.partial(lotus_core.load_model, args.folder, quantity="depth")
    start = time.perf_counter()
    if args.workers == 0:
        torch.set_num_threads(os.cpu_count())
        summary = run_job(load(), [args.inputs], args.output, options)
    else:
        import ray

        from lotus_core.batch.on_ray import run_job_on_ray

        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        summary = run_job_on_ray(load, [args.inputs], args.output, options, workers=args.workers,
                                 cpus_per_worker=os.cpu_count() // args.workers)
    seconds = time.perf_counter() - start
    stamps = sorted(path.stat().st_mtime for path in Path(args.output).rglob("*.npy"))
    print(json.dumps({"seconds": seconds, "done": summary.done, "warm": stamps[-1] - stamps[0]}))


def run(folder: Path, inputs: Path, output: Path, workers: int, resolution: int) -> dict:
    command = [sys.executable, __file__, "--child", "--folder", str(folder), "--inputs", str(inputs),
               "--output", str(output), "--workers", str(workers), "--resolution", str(resolution)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=384, help="processing resolution (default 384)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    import torch
    from benchmark import machine, write_folder

    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        write_folder(root / "model")
        rng = np.random.default_rng(0)
        (root / "inputs").mkdir()
        for index in range(args.images):
            pixels = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "inputs" / f"{index:03d}.png")
        cpus = os.cpu_count()
        configurations = [("local job", 0), (f"Ray, 1 worker x {cpus} CPUs", 1),
                          (f"Ray, {cpus} workers x 1 CPU", cpus)]
        print(f"{machine(torch.device('cpu'))}; load average {os.getloadavg()[0]:.2f}")
        print(f"{args.images} images 640x480 at processing resolution {args.resolution}, fp32, full-size Lotus-G\n")
        print("| configuration | wall s | images/s | warm s (first to last result) | wall / local |")
        print("|---|---|---|---|---|")
        local = None
        for name, workers in configurations:
            result = run(root / "model", root / "inputs", root / f"out{workers}", workers, args.resolution)
            local = local or result["seconds"]
            print(f"| {name} | {result['seconds']:.1f} | {result['done'] / result['seconds']:.3f} |"
                  f" {result['warm']:.1f} | {result['seconds'] / local:.2f} |", flush=True)
        print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
