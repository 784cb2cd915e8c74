"""``lotus-depth lotus2``: Lotus-2 depth or normals of image files, with the same file writers as Lotus 1.

    lotus-depth lotus2 /models/FLUX.1-dev photos/ -o out --task depth --sharpener-steps 10 --save png16 npy

Reached from ``lotus_core.cli.main`` (a first argument ``lotus2`` hands the rest to ``main`` here).
A front over the dataset job, as the Lotus 1 command: the same inputs, names, files, resume and
failures manifest.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ..batch.job import JobOptions, JobSummary, run_job
from ..batch.sources import find_sources
from ..cli import TerminalProgress, run_reporting
from ..loading.precision import resolve_dtype
from ..outputs.colormaps import COLORMAPS
from ..outputs.files import FILE_FORMATS
from .load import load_lotus2
from .predict import DEFAULT_MAX_EDGE, DEFAULT_SHARPENER_STEPS
from .releases import TASKS


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lotus-depth lotus2",
                                     description="Lotus-2 (FLUX-based) depth or normals of image files.")
    parser.add_argument("flux", type=Path, help="a diffusers FLUX.1-dev folder (transformer/, vae/, text encoders)")
    parser.add_argument("inputs", nargs="+", help="image files, folders, glob patterns or list files")
    parser.add_argument("-o", "--output", type=Path, default=Path("lotus_output"), help="output folder")
    parser.add_argument("--task", choices=TASKS, default="depth")
    parser.add_argument("--lotus2-dir", type=Path, default=None,
                        help="folder with the release's three files (default: downloaded from jingheya/Lotus-2)")
    parser.add_argument("--conditioning-cache", type=Path, default=None,
                        help="where the empty-prompt conditioning is cached (default: <flux>/lotus2_cache)")
    parser.add_argument("--sharpener-steps", type=int, default=DEFAULT_SHARPENER_STEPS,
                        help="detail sharpener steps (0 = core predictor only; default %(default)s)")
    parser.add_argument("--resolution", type=int, default=DEFAULT_MAX_EDGE,
                        help="cap on the processed long edge (0 = none; default %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the run: each image's VAE sample comes from it and the image's relative path")
    parser.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: cuda if available)")
    parser.add_argument("--save", nargs="+", choices=list(FILE_FORMATS), default=["png16", "npy"])
    parser.add_argument("--colormap", choices=list(COLORMAPS), default="spectral")
    parser.add_argument("--overwrite", action="store_true", help="redo results that already exist")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    options = JobOptions(formats=tuple(args.save), colormap=args.colormap, processing_resolution=args.resolution,
                         seed=args.seed, sharpener_steps=args.sharpener_steps, overwrite=args.overwrite)

    def job(progress: TerminalProgress) -> JobSummary:
        find_sources(args.inputs, args.output)  # bad inputs fail in a second, before loading 12 B parameters
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = load_lotus2(args.flux, args.task, lotus2_dir=args.lotus2_dir, cache_dir=args.conditioning_cache,
                            dtype=resolve_dtype("dtype", args.dtype, device), device=device)
        return run_job(model, args.inputs, args.output, options, progress=progress)

    return run_reporting("lotus-depth lotus2", job)
