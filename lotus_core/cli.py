"""``python -m lotus_core``: Lotus depth/normals for image files, without ComfyUI."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from .depthmap import DepthMap, to_controlnet
from .errors import LotusError
from .loading.load import load_model
from .loading.precision import PRECISIONS, choose_dtypes
from .loading.variants import KNOWN_CHECKPOINTS, Quantity, known_checkpoint
from .outputs.colormaps import COLORMAPS
from .outputs.files import FILE_FORMATS, save_depth_frame, write_npy
from .prediction.predict import DEFAULT_PROCESSING_RESOLUTION, GEOMETRIES, predict
from .quality.ensemble import predict_ensemble
from .quality.highres import DEFAULT_OVERLAP, predict_tiled
from .quality.video import predict_video

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="lotus-depth", description=__doc__.split(":", 1)[1].strip(),
        epilog="Known releases (a name that is not an existing path is downloaded once into the Hugging Face"
               " cache; HF_HUB_OFFLINE, HF_ENDPOINT, HF_TOKEN, HF_HOME/HF_HUB_CACHE apply): "
               + ", ".join(k.name for k in KNOWN_CHECKPOINTS))
    parser.add_argument("checkpoint", help="Lotus UNet .safetensors file, diffusers folder, or a known release name")
    parser.add_argument("inputs", nargs="+", type=Path, help="image files or folders (searched recursively)")
    parser.add_argument("-o", "--output", type=Path, default=Path("lotus_output"), help="output folder")
    parser.add_argument("--vae", help="SD1.x/SD2 VAE file or folder (default: the checkpoint folder's vae/)")
    parser.add_argument("--quantity", choices=[q.value for q in Quantity],
                        help="what the checkpoint predicts, for files not in the known-release table")
    parser.add_argument("--resolution", type=int, default=DEFAULT_PROCESSING_RESOLUTION,
                        help="processing long edge (default %(default)s; 0 = native size)")
    parser.add_argument("--geometry", choices=GEOMETRIES, default=GEOMETRIES[0],
                        help="exact: output pixel (r, c) is input pixel (r, c)'s depth (default); reference: the"
                             " official pipeline bit for bit, which drifts up to 8 processed px at the bottom right")
    parser.add_argument("--seed", type=int, default=0, help="seed for noise and VAE sampling (default 0)")
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
    parser.add_argument("--allow-pickle", action="store_true", help="accept .ckpt/.pt/.bin pickle checkpoints")
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
                       help="the inputs (in the order given; a folder's files sorted) are frames of one video:"
                            " shared noise, latent carry-over,"
                            " frame-to-frame alignment, one ControlNet normalisation for all frames")
    args = parser.parse_args(argv)
    if sum((args.ensemble > 1, args.tile > 0, args.video)) > 1:
        parser.error("--ensemble, --tile and --video cannot be combined")
    if args.flip and args.ensemble < 2:
        parser.error("--flip needs --ensemble N (N >= 2)")
    if args.overlap is not None and not args.tile:
        parser.error("--overlap needs --tile SIZE")
    if args.tile and args.overlap is None:  # the default, but always less than half the tile
        args.overlap = min(DEFAULT_OVERLAP, (args.tile - 1) // 2 // 8 * 8)
    return args


def _gigabytes(text: str) -> int:
    """A --memory-limit in GB (e.g. 2.5) as bytes."""
    try:
        gigabytes = float(text)
    except ValueError:
        gigabytes = 0.0
    if not gigabytes > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of GB > 0 (e.g. 2.5)")
    return int(gigabytes * 1e9)


def find_images(inputs: list[Path]) -> list[Path]:
    found = []
    for path in inputs:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            found.append(path)
        else:
            raise LotusError(f"input {str(path)!r} does not exist")
    return found


def read_image(path: Path) -> torch.Tensor:
    """An image file as a core batch [1, 3, H, W] in [0, 1]."""
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(rgb).permute(2, 0, 1)[None]


def default_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    return "mps" if torch.backends.mps.is_available() else "cpu"


def save(prediction: DepthMap, stem: Path, kinds: list[str], *, colormap: str = "spectral",
         control: torch.Tensor | None = None) -> None:
    """Write one image's prediction in each of ``kinds`` (``FILE_FORMATS``) as <stem>_<what>.<ending>;
    ``control`` overrides its ControlNet map (video: one normalisation for the sequence)."""
    quantity = prediction.quantity.value
    what = {"control": "control", "color": f"{quantity}_{colormap}"}  # other formats: the quantity
    if prediction.quantity is Quantity.NORMAL:  # a normal map is the one picture of normals
        kinds = list(dict.fromkeys("png16" if kind in ("control", "color") else kind for kind in kinds))
    for kind in kinds:
        save_depth_frame(f"{stem}_{what.get(kind, quantity)}{FILE_FORMATS[kind]}", prediction, 0, kind,
                         colormap=colormap, control=control)
    if "npy" in kinds and prediction.uncertainty is not None:
        write_npy(f"{stem}_uncertainty.npy", prediction.uncertainty[0, 0],
                  {"lotus_model": prediction.model, "lotus_quantity": f"spread of the ensemble's {quantity}"})


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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["eval"]:  # `lotus-depth eval …`: the benchmark evaluation, a command of its own
        from .evaluation.cli import main as evaluate

        return evaluate(argv[1:])
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        images = find_images(args.inputs)
        if not images:
            raise LotusError("no images found in " + ", ".join(map(str, args.inputs)))
        device = args.device or default_device()
        release = None if Path(args.checkpoint).expanduser().exists() else known_checkpoint(args.checkpoint)
        progress = DownloadBar(f"downloading {release.name}") if release is not None else None
        unet_dtype, vae_dtype = choose_dtypes(args.dtype, device)
        model = load_model(args.checkpoint, args.vae, quantity=args.quantity, device=device, dtype=unet_dtype,
                           vae_dtype=vae_dtype, channels_last=args.channels_last, allow_pickle=args.allow_pickle,
                           download_progress=progress)
        if args.compile:
            model.compile()
        args.output.mkdir(parents=True, exist_ok=True)
        options = dict(processing_resolution=args.resolution, seed=args.seed, vae_tile_size=args.vae_tile,
                       memory_limit=args.memory_limit, geometry=args.geometry)
        if args.video:
            frames = [read_image(path) for path in images]
            sizes = {tuple(frame.shape[-2:]) for frame in frames}
            if len(sizes) > 1:
                raise LotusError(f"--video needs frames of one size, got {len(sizes)} sizes: {sorted(sizes)}")
            frames = torch.cat(frames)
            prediction = predict_video(model, frames, **options)
            depth = prediction.quantity is not Quantity.NORMAL
            control = to_controlnet(prediction, per_image=False) if depth else None
            for index, path in enumerate(images):
                save(prediction.frame(index), args.output / path.stem, args.save, colormap=args.colormap,
                     control=None if control is None else control[index:index + 1])
            return 0
        for path in tqdm(images, desc="lotus", unit="image", disable=len(images) < 2):
            image = read_image(path)
            if args.ensemble > 1:
                prediction = predict_ensemble(model, image, ensemble_size=args.ensemble, flip=args.flip, **options)
            elif args.tile:
                prediction = predict_tiled(model, image, tile_size=args.tile, overlap=args.overlap, **options)
            else:
                prediction = predict(model, image, **options)
            save(prediction, args.output / path.stem, args.save, colormap=args.colormap)
    except (LotusError, OSError) as error:
        sys.stderr.write(f"lotus-depth: error: {error}\n")
        return 2
    return 0
