"""``python -m lotus_core``: Lotus depth/normals for image and video files, without ComfyUI.

A thin front over the dataset job (``lotus_core.batch``): on this machine, or with ``--ray`` on a
Ray cluster.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from .batch.job import JobInterrupted, JobOptions, JobSummary, run_job
from .batch.outputs import image_files, write_image
from .batch.reading import read_image
from .batch.sources import find_sources
from .depthmap import to_controlnet
from .errors import LotusError
from .loading.load import load_model
from .loading.model import LotusModel
from .loading.precision import PRECISIONS, choose_dtypes
from .loading.variants import KNOWN_CHECKPOINTS, Quantity, known_checkpoint
from .outputs.colormaps import COLORMAPS
from .outputs.files import FILE_FORMATS
from .prediction.predict import DEFAULT_PROCESSING_RESOLUTION, GEOMETRIES
from .quality.highres import DEFAULT_OVERLAP
from .quality.video import predict_video
from .runtime import BACKENDS

MAX_RESOLUTION = 8192  # 4x the largest the networks are used at; memory grows with its square


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="lotus-depth", description=__doc__.split(":", 1)[1].split("\n")[0].strip(),
        epilog="Known releases (a name that is not an existing path is downloaded once into the Hugging Face"
               " cache; HF_HUB_OFFLINE, HF_ENDPOINT, HF_TOKEN, HF_HOME/HF_HUB_CACHE apply): "
               + ", ".join(k.name for k in KNOWN_CHECKPOINTS))
    parser.add_argument("checkpoint", help="Lotus UNet .safetensors file, diffusers folder, or a known release name")
    parser.add_argument("inputs", nargs="+",
                        help="image or video files, folders (searched recursively), glob patterns ('shots/**/*.jpg'),"
                             " or list files (.txt/.lst: one path per line); results mirror their relative paths")
    parser.add_argument("-o", "--output", type=Path, default=Path("lotus_output"),
                        help="output folder (default %(default)s); a run into a folder with complete results skips"
                             " them (resume)")
    parser.add_argument("--overwrite", action="store_true", help="redo results that already exist")
    parser.add_argument("--vae", help="SD1.x/SD2 VAE file or folder (default: the checkpoint folder's vae/)")
    parser.add_argument("--quantity", choices=[q.value for q in Quantity],
                        help="what the checkpoint predicts, for files not in the known-release table")
    parser.add_argument("--resolution", type=_resolution, default=DEFAULT_PROCESSING_RESOLUTION,
                        help=f"processing long edge (default %(default)s; 0 = native size; at most {MAX_RESOLUTION})")
    parser.add_argument("--geometry", choices=GEOMETRIES, default=GEOMETRIES[0],
                        help="exact: output pixel (r, c) is input pixel (r, c)'s depth (default); reference: the"
                             " official pipeline bit for bit, which drifts up to 8 processed px at the bottom right")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the run (default 0): each image's random numbers come from it and the image's"
                             " relative path, so results do not depend on order, batches or workers")
    parser.add_argument("--dtype", choices=PRECISIONS, default="fp32",
                        help="weights precision (default fp32, as the released weights; auto: bf16/fp16 on a GPU,"
                             " fp32 on a CPU; the VAE never in fp16)")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    parser.add_argument("--save", nargs="+", choices=list(FILE_FORMATS), default=["png16", "npy"],
                        help="png16: 16-bit PNG of the native output (metadata in text chunks); npy: float32"
                             " array; control: 8-bit ControlNet map (near = white); exr: 32-bit float EXR"
                             " (metadata in the header); color: 8-bit colour view (--colormap)")
    parser.add_argument("--colormap", choices=list(COLORMAPS), default="spectral",
                        help="colour map of --save color (default %(default)s, as the Lotus reference: near = red)")
    parser.add_argument("--vae-tile", type=int, default=None, metavar="PX",
                        help="run the VAE on overlapping PX-px tiles (multiple of 8, >= 256) to bound its memory;"
                             " 0 = never; default: only when the image would not fit in free memory")
    parser.add_argument("--memory-limit", type=_gigabytes, default=None, metavar="GB",
                        help="memory the activations may use (default: 3/4 of the available memory)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help="VAE in channels-last memory format (default: on a CPU only, where it is faster);"
                             " moves results by < 1e-4; --no-channels-last reproduces the reference bit for bit")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the networks: the first image pays minutes of compilation, later ones"
                             " run faster (worth it for many images; keep TORCHINDUCTOR_CACHE_DIR between runs)")
    parser.add_argument("--backend", choices=BACKENDS, default="eager",
                        help="CPU runtime: eager (torch, the default: the reference's numbers), openvino (pip install"
                             " 'lotus-depth[cpu-fast]': about 0.7x the time at 768 px, within 1e-4), auto (openvino"
                             " where installed and faster)")
    parser.add_argument("--batch-size", type=int, default=1, metavar="N",
                        help="images of one size per network pass (default 1: results bit for bit independent of"
                             " how a run is batched; more is faster on a GPU and moves results by ~1e-6)")
    parser.add_argument("--allow-pickle", action="store_true", help="accept .ckpt/.pt/.bin pickle checkpoints")
    cluster = parser.add_argument_group("on a Ray cluster (pip install 'lotus-depth[ray]')")
    cluster.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                         help="run the job on Ray: the cluster at ADDRESS (e.g. ray://head:10001), else RAY_ADDRESS"
                              " or a local one")
    cluster.add_argument("--workers", type=int, default=None,
                         help="model copies (actors); default: one per GPU of the cluster, else one")
    cluster.add_argument("--cpus-per-worker", type=float, default=1,
                         help="CPUs per model copy, and its torch threads (default %(default)s)")
    modes = parser.add_argument_group("better than the reference (pick at most one)")
    modes.add_argument("--ensemble", type=int, default=1, metavar="N",
                       help="N aligned predictions per image, combined by median; also writes the"
                            " members' spread as <name>_uncertainty.npy with --save npy")
    modes.add_argument("--flip", action="store_true", help="with --ensemble: every second member sees the mirror")
    modes.add_argument("--tile", type=int, default=0, metavar="SIZE",
                       help="full-resolution depth from a global pass plus SIZE px native tiles (e.g. 768)")
    modes.add_argument("--overlap", type=int, default=None,
                       help=f"with --tile: tile overlap in px (default {DEFAULT_OVERLAP}, or less than half the tile)")
    modes.add_argument("--video", action="store_true",
                       help="the input images (sorted by name) are frames of one video: shared noise, latent"
                            " carry-over, frame-to-frame alignment, one ControlNet normalisation for all frames"
                            " (video files get this by themselves)")
    args = parser.parse_args(argv)
    if sum((args.ensemble > 1, args.tile > 0, args.video)) > 1:
        parser.error("--ensemble, --tile and --video cannot be combined")
    if args.flip and args.ensemble < 2:
        parser.error("--flip needs --ensemble N (N >= 2)")
    if args.overlap is not None and not args.tile:
        parser.error("--overlap needs --tile SIZE")
    if args.tile and args.overlap is None:  # the default, but always less than half the tile
        args.overlap = min(DEFAULT_OVERLAP, (args.tile - 1) // 2 // 8 * 8)
    if args.video and args.ray is not None:
        parser.error("--video (frames of one sequence) runs on this machine; on Ray, pass video files")
    if args.batch_size < 1:
        parser.error(f"--batch-size {args.batch_size} must be at least 1")
    return args


def _resolution(text: str) -> int:
    """A --resolution: 0 (native) or a long edge up to MAX_RESOLUTION px."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not (value == 0 or 8 <= value <= MAX_RESOLUTION):
        raise argparse.ArgumentTypeError(f"{text!r} is not 0 (native size) or a long edge of 8..{MAX_RESOLUTION} px")
    return value


def _gigabytes(text: str) -> int:
    """A --memory-limit in GB (e.g. 2.5) as bytes."""
    try:
        gigabytes = float(text)
    except ValueError:
        gigabytes = 0.0
    if not gigabytes > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of GB > 0 (e.g. 2.5)")
    return int(gigabytes * 1e9)


def default_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    return "mps" if torch.backends.mps.is_available() else "cpu"


class DownloadBar:
    """A terminal progress bar for ``load_model(download_progress=…)``, shown once bytes flow."""

    def __init__(self, description: str) -> None:
        self.description = description
        self.bar: tqdm | None = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            from huggingface_hub.utils import are_progress_bars_disabled

            self.bar = tqdm(total=total, desc=self.description, unit="B", unit_scale=True, unit_divisor=1024,
                            disable=are_progress_bars_disabled())
        if self.bar.disable:  # closed, or progress bars turned off (HF_HUB_DISABLE_PROGRESS_BARS)
            return
        self.bar.total = total
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.bar.close()


@dataclass(frozen=True)
class ModelLoader:
    """The command line's model, loadable anywhere: here, or in each Ray worker (it is picklable, and
    resolves "best available device" and "auto" precision on the machine that loads it)."""

    checkpoint: str
    vae: str | None = None
    quantity: str | None = None
    device: str | None = None
    dtype: str = "fp32"
    channels_last: bool | None = None
    allow_pickle: bool = False
    compile: bool = False
    backend: str = "eager"

    def __call__(self) -> LotusModel:
        device = self.device or default_device()
        release = None if Path(self.checkpoint).expanduser().exists() else known_checkpoint(self.checkpoint)
        progress = DownloadBar(f"downloading {release.name}") if release is not None else None
        unet_dtype, vae_dtype = choose_dtypes(self.dtype, device)
        model = load_model(self.checkpoint, self.vae, quantity=self.quantity, device=device, dtype=unet_dtype,
                           vae_dtype=vae_dtype, channels_last=self.channels_last, allow_pickle=self.allow_pickle,
                           download_progress=progress, backend="eager" if self.compile else self.backend)
        if self.compile:
            model.compile()
        return model


class TerminalProgress:
    """The job's progress as one terminal bar: images done, and what the current one is doing."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def begin(self, total: int) -> None:
        self.bar = tqdm(total=total, desc="lotus", unit="image", dynamic_ncols=True)

    def stage(self, name: str, stage: str) -> None:
        self.bar.set_postfix_str(f"{name}: {stage}", refresh=True)

    def advance(self, count: int) -> None:
        self.bar.update(count)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["eval"]:  # `lotus-depth eval …`: the benchmark evaluation, a command of its own
        from .evaluation.cli import main as evaluate

        return evaluate(argv[1:])
    if argv[:1] == ["lotus2"]:  # `lotus-depth lotus2 …`: Lotus-2 (FLUX-based), a command of its own
        from .lotus2.command import main as lotus2_main

        return lotus2_main(argv[1:])
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    loader = ModelLoader(args.checkpoint, args.vae, args.quantity, args.device, args.dtype, args.channels_last,
                         args.allow_pickle, args.compile, args.backend)
    options = JobOptions(formats=tuple(args.save), colormap=args.colormap, processing_resolution=args.resolution,
                         seed=args.seed, geometry=args.geometry, ensemble_size=args.ensemble, flip=args.flip,
                         tile_size=args.tile, tile_overlap=args.overlap, batch_size=args.batch_size,
                         vae_tile_size=args.vae_tile, memory_limit=args.memory_limit, overwrite=args.overwrite)
    if args.video:
        return run_reporting("lotus-depth", lambda progress: _frames_as_video(loader, args, options))

    def job(progress: TerminalProgress) -> JobSummary:
        find_sources(args.inputs, args.output)  # bad inputs fail in a second, before a model load of minutes
        if args.ray is not None:
            return _on_ray(loader, args, options)
        return run_job(loader(), args.inputs, args.output, options, progress=progress)

    return run_reporting("lotus-depth", job)


def run_reporting(program: str, job: Callable[[TerminalProgress], JobSummary]) -> int:
    """Run ``job`` with a terminal progress bar and say how it went: the summary (exit 0, or 1 when
    some files failed), what was done before Ctrl-C (130), or the error that stopped it (2)."""
    progress = TerminalProgress()
    try:
        with logging_redirect_tqdm():  # failures logged above the bar, not through it
            summary = job(progress)
    except JobInterrupted as interrupted:
        sys.stderr.write(f"{program}: {interrupted.summary.describe()}\n")
        return 130
    except KeyboardInterrupt:  # while loading or planning: nothing was written yet
        sys.stderr.write(f"{program}: interrupted before any result\n")
        return 130
    except (LotusError, OSError) as error:
        sys.stderr.write(f"{program}: error: {error}\n")
        return 2
    finally:
        progress.close()
    sys.stdout.write(f"{program}: {summary.describe()}\n")
    return 1 if summary.failed else 0


def _on_ray(loader: ModelLoader, args: argparse.Namespace, options: JobOptions) -> JobSummary:
    from .batch.on_ray import run_job_on_ray, start_ray

    start_ray(args.ray or None)
    return run_job_on_ray(loader, args.inputs, args.output, options, workers=args.workers,
                          cpus_per_worker=args.cpus_per_worker)


def _frames_as_video(loader: ModelLoader, args: argparse.Namespace, options: JobOptions) -> JobSummary:
    """--video: the input images, sorted by name, as the frames of one sequence."""
    start = time.perf_counter()
    sources = find_sources(args.inputs, args.output)
    if any(source.is_video for source in sources):
        raise LotusError("--video takes the frames of one video as image files; pass video files without --video")
    frames = [read_image(source.path) for source in sources]
    sizes = {tuple(frame.shape[-2:]) for frame in frames}
    if len(sizes) > 1:
        raise LotusError(f"--video needs frames of one size, got {len(sizes)} sizes: {sorted(sizes)}")
    model = loader()
    prediction = predict_video(model, torch.cat(frames), processing_resolution=options.processing_resolution,
                               seed=options.seed, geometry=options.geometry, vae_tile_size=options.vae_tile_size,
                               memory_limit=options.memory_limit)
    control = to_controlnet(prediction, per_image=False) if prediction.quantity is not Quantity.NORMAL else None
    for index, source in enumerate(sources):
        files = image_files(source.stem, model.quantity, options.formats, options.colormap)
        write_image(args.output, prediction, files, options.colormap, frame=index, control=control)
    return JobSummary(args.output, done=len(sources), seconds=time.perf_counter() - start)
