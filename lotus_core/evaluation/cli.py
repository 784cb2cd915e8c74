"""``lotus-depth eval``: score a checkpoint on a zero-shot benchmark as the paper does, beside the paper's figures."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..errors import LotusError
from ..loading.precision import PRECISIONS
from ..loading.variants import Quantity
from .datasets import DATASETS, SPLIT_FILES_URL
from .protocol import KITTI_CROPS, PROTOCOLS
from .report import table, write_csv, write_json
from .run import DEFAULT_SEED, evaluate

RESULTS_FILE = "results.json"
PER_IMAGE_FILE = "per_image.csv"


def parse_args(argv: list[str]) -> argparse.Namespace:
    resolutions = ", ".join(f"{name} {protocol.processing_resolution or 'native'}"
                            for name, protocol in PROTOCOLS.items())
    parser = argparse.ArgumentParser(
        prog="lotus-depth eval", description=__doc__.split(":", 1)[1].strip(),
        epilog=f"Data: the Marigold evaluation archives; file lists: {SPLIT_FILES_URL} (README: 'Evaluate on the"
               " standard benchmarks'). Writes <output>/results.json, <output>/per_image.csv and caches the"
               " predictions in <output>/predictions/, so an interrupted run resumes.")
    parser.add_argument("checkpoint", help="Lotus UNet .safetensors file, diffusers folder, or a known release name")
    parser.add_argument("dataset", choices=list(DATASETS), help="the benchmark")
    parser.add_argument("path", type=Path, help="the dataset's tar archive or its extracted folder")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="results and prediction cache (default: lotus_eval/<dataset>)")
    parser.add_argument("--split-file", type=Path, default=None,
                        help="the split's file list (default: its own name, beside the archive or in the folder)")
    parser.add_argument("--vae", help="SD1.x/SD2 VAE file or folder (default: the checkpoint folder's vae/)")
    parser.add_argument("--quantity", choices=[q.value for q in Quantity],
                        help="what the checkpoint predicts, for files not in the known-release table")
    parser.add_argument("--resolution", type=int, default=None,
                        help=f"processing long edge, 0 = native (default: the dataset's: {resolutions})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help="run seed; each image's seed is derived from it and the image's name (default 42,"
                             " as the reference's scripts)")
    parser.add_argument("--dtype", choices=PRECISIONS, default="fp32", help="weights precision (default fp32)")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: cuda if available)")
    parser.add_argument("--ensemble", type=int, default=1, metavar="N", help="N predictions per image, combined")
    parser.add_argument("--flip", action="store_true", help="with --ensemble: every second member sees the mirror")
    parser.add_argument("--tile", type=int, default=0, metavar="SIZE",
                        help="full-resolution depth from a global pass plus SIZE px tiles")
    parser.add_argument("--kitti-crop", choices=KITTI_CROPS, default="eigen",
                        help="KITTI's evaluation crop (default eigen, as Marigold's and Lotus's suites)")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N images (a quick check)")
    args = parser.parse_args(argv)
    if args.ensemble > 1 and args.tile:
        parser.error("--ensemble and --tile cannot be combined")
    if args.flip and args.ensemble < 2:
        parser.error("--flip needs --ensemble N (N >= 2)")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    output = args.output or Path("lotus_eval") / args.dataset
    try:
        evaluation = evaluate(
            args.checkpoint, args.dataset, args.path, output, split_file=args.split_file, vae=args.vae,
            quantity=args.quantity, processing_resolution=args.resolution, seed=args.seed, dtype=args.dtype,
            device=args.device, ensemble_size=args.ensemble, flip=args.flip, tile_size=args.tile,
            kitti_crop_name=args.kitti_crop, limit=args.limit, show_progress=True)
        write_json(evaluation, output / RESULTS_FILE)
        write_csv(evaluation, output / PER_IMAGE_FILE)
    except (LotusError, OSError) as error:
        sys.stderr.write(f"lotus-depth eval: error: {error}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"lotus-depth eval: interrupted; the predictions made so far are kept in {output}:"
                         " the same command resumes\n")
        return 130
    sys.stdout.write(table(evaluation) + "\n")
    sys.stdout.write(f"wrote {output / RESULTS_FILE} and {output / PER_IMAGE_FILE}"
                     f" ({evaluation.predicted} predicted, {evaluation.cached} from the cache)\n")
    return 0
