"""The published Lotus releases: what each predicts, where to download it, how to recognise it on disk.

``KNOWN_CHECKPOINTS`` is the one source of truth for loading (output quantity by name or hash),
downloading (``loading/hub.py``), the CLI and ComfyUI's loader (names offered for download) and the
README's model table (``models_markdown``).

The output quantity cannot be read from the weights (depth, disparity and normal checkpoints share
one architecture), so it comes from this table, from an explicit override, or not at all: guessing
would silently invert a depth map.

Facts come from the releases' Hugging Face pages (huggingface.co/jingheya, Kijai, Comfy-Org). Sizes are
approximate (the Hub's listing: UNet fp32 3.47 GB, VAE fp32 335 MB in v1 repos and fp16 167 MB in v2
repos); downloads use the exact sizes the Hub reports and fall back to these. No commit of the jingheya
repos has been pinned (``revision=None`` means the ``main`` branch), and no full sha256 of their files
is published here: downloads are verified against the sha256 the Hub itself reports for LFS files (see
``hub.py``). Only three 8-hex sha256 prefixes of Kijai's ComfyUI files are known.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import LotusError, check_choice


class Quantity(str, enum.Enum):
    """What a checkpoint's decoded output means."""

    DEPTH = "depth"  # affine-invariant depth in [0, 1], 0 = near (v1.x depth checkpoints)
    DISPARITY = "disparity"  # affine-invariant disparity in [0, 1], 1 = near (*-disparity)
    NORMAL = "normal"  # surface normals, RGB = (n + 1) / 2

    @property
    def near_is_high(self) -> bool:
        """True when larger values mean closer to the camera."""
        if self is Quantity.NORMAL:
            raise LotusError("normal maps have no near/far polarity; use a depth or disparity checkpoint")
        return self is Quantity.DISPARITY


def coerce_quantity(value) -> Quantity:
    if isinstance(value, Quantity):
        return value
    check_choice("quantity", value, [q.value for q in Quantity])
    return Quantity(value)


@dataclass(frozen=True)
class HubFile:
    """One file of a Hugging Face repo that a download fetches."""

    path: str  # inside the repo, "/"-separated
    size: int  # bytes, approximate (the Hub's own size is used when it answers)
    sha256: str | None = None  # full hex digest or a published prefix; None = not known here


@dataclass(frozen=True)
class SingleFile:
    """A ComfyUI single-file repackaging (UNet only: it needs a separate SD1.x/SD2 VAE)."""

    repo: str
    filename: str
    size: int  # bytes, approximate
    precision: str  # dtype of the stored tensors
    sha256: str | None = None  # published prefix, where known

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo}/resolve/main/{self.filename}"


@dataclass(frozen=True)
class KnownCheckpoint:
    """A published Lotus release (jingheya/<name> on Hugging Face) and its ComfyUI repackagings."""

    name: str  # the Hugging Face repo name under jingheya/
    quantity: Quantity
    generative: bool  # Lotus-G (image latent + noise, 8 channels) vs Lotus-D (4 channels)
    download: tuple[HubFile, ...] = ()  # what a download fetches: a self-contained diffusers folder
    single_files: tuple[SingleFile, ...] = ()  # ComfyUI repackagings, recognised on disk
    revision: str | None = None  # pinned commit; None = "main" (no commit of these repos is pinned)

    @property
    def repo(self) -> str:
        return f"jingheya/{self.name}"

    @property
    def kind(self) -> str:
        return "G" if self.generative else "D"

    @property
    def download_size(self) -> int:
        return sum(f.size for f in self.download)

    @property
    def files(self) -> tuple[str, ...]:
        """File names of the single-file repackagings (lower case)."""
        return tuple(f.filename.lower() for f in self.single_files)

    @property
    def sha256_prefixes(self) -> tuple[str, ...]:
        """Published sha256 (prefixes) of the single-file repackagings."""
        return tuple(f.sha256 for f in self.single_files if f.sha256)


UNET_FP32 = 3_470_300_000  # "3.47 GB": 867.6 M parameters in fp32 plus the safetensors header
UNET_FP16 = 1_735_197_352  # the Comfy-Org file's exact size; Kijai's fp16 files are "1.74 GB"
VAE_FP32 = 334_700_000  # "335 MB" (v1 repos)
VAE_FP16 = 167_400_000  # "167 MB" (v2 repos)


def _diffusers_folder(vae_size: int) -> tuple[HubFile, ...]:
    # model_index.json comes last: a folder that has it is a finished download.
    return (
        HubFile("unet/config.json", 2_000),
        HubFile("vae/config.json", 800),
        HubFile("unet/diffusion_pytorch_model.safetensors", UNET_FP32),
        HubFile("vae/diffusion_pytorch_model.safetensors", vae_size),
        HubFile("model_index.json", 700),
    )


V1_FOLDER = _diffusers_folder(VAE_FP32)
V2_FOLDER = _diffusers_folder(VAE_FP16)
KIJAI = "Kijai/lotus-comfyui"
D, G = False, True

KNOWN_CHECKPOINTS: tuple[KnownCheckpoint, ...] = (
    KnownCheckpoint("lotus-depth-g-v1-0", Quantity.DEPTH, G, V1_FOLDER, (
        SingleFile(KIJAI, "lotus-depth-g-v1-0.safetensors", UNET_FP32, "fp32", "41a8d50a"),
        SingleFile(KIJAI, "lotus-depth-g-v1-0-fp16.safetensors", UNET_FP16, "fp16", "e8454c55"),
    )),
    KnownCheckpoint("lotus-depth-d-v1-0", Quantity.DEPTH, D, V1_FOLDER),
    KnownCheckpoint("lotus-depth-d-v1-1", Quantity.DEPTH, D, V1_FOLDER, (
        SingleFile(KIJAI, "lotus-depth-d-v-1-1-fp16.safetensors", UNET_FP16, "fp16", "dc139421"),
        SingleFile("Comfy-Org/lotus", "lotus-depth-d-v1-1.safetensors", UNET_FP16, "fp16"),
    )),
    KnownCheckpoint("lotus-depth-g-v2-0-disparity", Quantity.DISPARITY, G, V2_FOLDER),
    KnownCheckpoint("lotus-depth-g-v2-1-disparity", Quantity.DISPARITY, G, V2_FOLDER),
    KnownCheckpoint("lotus-depth-d-v2-0-disparity", Quantity.DISPARITY, D, V2_FOLDER),
    KnownCheckpoint("lotus-normal-g-v1-0", Quantity.NORMAL, G, V1_FOLDER, (
        SingleFile(KIJAI, "lotus-normal-g-v1-0.safetensors", UNET_FP32, "fp32"),
        SingleFile(KIJAI, "lotus-normal-g-v1-0-fp16.safetensors", UNET_FP16, "fp16"),
    )),
    KnownCheckpoint("lotus-normal-d-v1-0", Quantity.NORMAL, D, V1_FOLDER, (
        SingleFile(KIJAI, "lotus-normal-d-v1-0.safetensors", UNET_FP32, "fp32"),
        SingleFile(KIJAI, "lotus-normal-d-v1-0-fp16.safetensors", UNET_FP16, "fp16"),
    )),
    # The v1-1 normal repos' layouts were not inspected: the larger (fp32) VAE size is assumed.
    KnownCheckpoint("lotus-normal-g-v1-1", Quantity.NORMAL, G, V1_FOLDER),
    KnownCheckpoint("lotus-normal-d-v1-1", Quantity.NORMAL, D, V1_FOLDER),
)


def known_checkpoint(name: str) -> KnownCheckpoint | None:
    """The release called ``name`` ("lotus-depth-g-v1-0", also "jingheya/…" or with a trailing "/")."""
    key = str(name).strip().rstrip("/").lower().removeprefix("jingheya/")
    return next((k for k in KNOWN_CHECKPOINTS if k.name == key), None)


def identify_by_name(path: Path) -> KnownCheckpoint | None:
    """The known release that a file or folder path names, if any.

    Matches a ComfyUI single-file name, a folder named like the repo, or a Hugging Face cache
    folder (``models--jingheya--<name>``) anywhere in the path.
    """
    for known in KNOWN_CHECKPOINTS:
        if path.name.lower() in known.files:
            return known
    for part in (p.lower() for p in reversed(path.parts)):
        stem = part.removesuffix(".safetensors").removesuffix("-fp16").removesuffix("_fp16")
        for known in KNOWN_CHECKPOINTS:
            if stem == known.name or stem.endswith("--" + known.name):
                return known
    return None


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file, read in 16 MB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def identify_by_hash(path: Path) -> KnownCheckpoint | None:
    """The known release whose published sha256 this file has (for renamed files)."""
    prefixes = {p: k for k in KNOWN_CHECKPOINTS for p in k.sha256_prefixes}
    if not prefixes or not path.is_file():
        return None
    hex_digest = sha256_of(path)
    return next((k for p, k in prefixes.items() if hex_digest.startswith(p)), None)


def _gigabytes(size: int) -> str:
    return f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB"


def models_markdown() -> str:
    """The README's model table, generated from ``KNOWN_CHECKPOINTS``."""
    predicts = {Quantity.DEPTH: "depth, near = 0", Quantity.DISPARITY: "disparity, near = 1",
                Quantity.NORMAL: "normals"}
    control = {Quantity.DEPTH: "inverted", Quantity.DISPARITY: "as is", Quantity.NORMAL: "—"}
    rows = [
        "| name (downloads `jingheya/<name>`) | kind | predicts | ControlNet map | download | sha256 pinned"
        " | ComfyUI single files recognised on disk (UNet only: need an SD VAE) |",
        "|---|---|---|---|---|---|---|",
    ]
    for known in KNOWN_CHECKPOINTS:
        pinned = "yes" if all(f.sha256 for f in known.download if f.path.endswith(".safetensors")) else "no"
        singles = ", ".join(
            f"`{f.filename}` ({f.repo.split('/')[0]}, {_gigabytes(f.size)} {f.precision}, "
            + (f"sha256 `{f.sha256}…`)" if f.sha256 else "no hash)")
            for f in known.single_files
        ) or "—"
        rows.append(f"| `{known.name}` | {known.kind} | {predicts[known.quantity]} | {control[known.quantity]}"
                    f" | ≈ {_gigabytes(known.download_size)} | {pinned} | {singles} |")
    return "\n".join(rows) + "\n"
