"""Depth files other tools read, all written by ``save_depth_frame`` (the one registry: ``FILE_FORMATS``):
16-bit PNG, 32-bit float EXR and float32 .npy of the values, and 8-bit PNGs for looking at them (the
ControlNet map, a colour map), each with their meaning.

Every file carries the same metadata (``depth_metadata``): model, quantity, polarity, the frame's
value range, the processing resolution and, for metric maps, the unit. It goes into PNG text
chunks and EXR header attributes; a .npy header cannot hold extra keys (numpy refuses to load
such files), so .npy files get a ``<file>.json`` sidecar.

A 16-bit PNG stores ``round((value - low) / (high - low) * 65535)`` with ``low = min(0, data)`` and
``high = max(1, data)`` unless given: Lotus maps (in [0, 1]) are stored as ``value * 65535``, and
the ``lotus_encoding_low/high`` keys say how to get any other range back.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from ..depthmap import DepthMap, normals_to_image, to_controlnet
from ..errors import LotusError, check_choice
from ..loading.variants import Quantity
from .colormaps import colorize

# format -> file ending. png16/exr/npy hold the values (normals: an 8-bit RGB normal map for png16, PIL
# writes RGB PNGs with 8 bits per channel only); control and color are 8-bit pictures of depth.
FILE_FORMATS = {"png16": ".png", "exr": ".exr", "npy": ".npy", "control": ".png", "color": ".png"}
PNG16_MAX = 65535
# key -> type, for reading the text of PNG chunks and sidecars back
METADATA_TYPES = {
    "lotus_software": str, "lotus_model": str, "lotus_quantity": str, "lotus_polarity": str,
    "lotus_value_min": float, "lotus_value_max": float, "lotus_processing_resolution": int,
    "lotus_unit": str, "lotus_frame": int, "lotus_encoding": str, "lotus_encoding_low": float,
    "lotus_encoding_high": float,
}


def depth_metadata(depth: DepthMap, frame: int = 0) -> dict[str, str | int | float]:
    """What a saved frame means, as flat ``lotus_*`` keys (values: str, int or float)."""
    values = depth.values[frame]
    meta: dict[str, str | int | float] = {
        "lotus_software": f"lotus-depth {_version()}",
        "lotus_model": depth.model,
        "lotus_quantity": "metric depth" if depth.is_metric else depth.quantity.value,
        "lotus_value_min": float(values.min()),
        "lotus_value_max": float(values.max()),
        "lotus_frame": frame,
    }
    if depth.quantity is not Quantity.NORMAL:
        meta["lotus_polarity"] = depth.polarity
    if depth.processing_resolution is not None:
        meta["lotus_processing_resolution"] = int(depth.processing_resolution)
    if depth.is_metric:
        meta["lotus_unit"] = depth.unit
    return meta


def png16_range(values) -> tuple[float, float]:
    """The png16 encoding range of ``values`` (one frame, or a whole batch so frames compare directly):
    ``min(0, data)`` .. ``max(1, data)``, so Lotus maps in [0, 1] are stored as ``value * 65535``."""
    return min(0.0, float(values.min())), max(1.0, float(values.max()))


def write_png16(path: str | Path, values, metadata: dict | None = None, *, low: float | None = None,
                high: float | None = None) -> Path:
    """A 16-bit greyscale PNG of [H, W] values (tensor or array), metadata in text chunks."""
    array = _frame(values)
    default_low, default_high = png16_range(array)
    low = default_low if low is None else float(low)
    high = default_high if high is None else float(high)
    if not high > low:
        raise LotusError(f"png16 range low={low!r}, high={high!r} is empty")
    if array.min() < low or array.max() > high:
        raise LotusError(f"values {array.min():.6g}..{array.max():.6g} lie outside the png16 range {low}..{high}")
    pixels = np.round((array.astype(np.float64) - low) / (high - low) * PNG16_MAX).astype(np.uint16)
    info = PngInfo()
    encoding = {"lotus_encoding": "value = low + pixel / 65535 * (high - low)",
                "lotus_encoding_low": low, "lotus_encoding_high": high}
    for key, value in {**(metadata or {}), **encoding}.items():
        info.add_text(key, _text(value))
    path = Path(path)
    with atomic_path(path) as temporary:
        Image.fromarray(pixels).save(temporary, pnginfo=info, compress_level=4)
    return path


def write_exr(path: str | Path, values, metadata: dict | None = None) -> Path:
    """A 32-bit float, ZIP-compressed EXR: channel Y for [H, W], R/G/B for [H, W, 3] (e.g. normals).

    Metadata become header attributes (strings, ints, floats). Needs the ``OpenEXR`` package.
    """
    try:
        import OpenEXR
    except ImportError:
        raise LotusError("writing EXR files needs the OpenEXR package: pip install OpenEXR") from None
    array = _frame(values, allow_rgb=True)
    channels = {"Y": array} if array.ndim == 2 else {"RGB": array}
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    header.update({k: v for k, v in (metadata or {}).items() if isinstance(v, (str, int, float))})
    path = Path(path)
    with OpenEXR.File(header, channels) as file, atomic_path(path) as temporary:
        file.write(str(temporary))
    return path


def write_npy(path: str | Path, values, metadata: dict | None = None) -> Path:
    """A float32 .npy of [H, W] (or [H, W, 3]) values; metadata in ``<path>.json`` next to it."""
    array = _frame(values, allow_rgb=True)
    path = Path(path)
    if metadata:  # first: a complete .npy always has its sidecar
        with atomic_path(sidecar(path)) as temporary:
            temporary.write_text(json.dumps(metadata, indent=1))
    with atomic_path(path) as temporary:
        np.save(temporary, array)
    return path


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A hidden temporary name beside ``path`` (same ending, so writers pick the same format) that
    becomes ``path`` only once the write has completed: an interrupted write (Ctrl-C, a full disk, a
    killed worker) never leaves a truncated file under the final name, and readers never see one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial{path.suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def sidecar(path: str | Path) -> Path:
    """Where a .npy file's metadata go: ``name.npy`` -> ``name.npy.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def save_depth_frame(path: str | Path, depth: DepthMap, frame: int, fmt: str, *, low: float | None = None,
                     high: float | None = None, colormap: str = "spectral", control: torch.Tensor | None = None,
                     extra: dict | None = None) -> Path:
    """One frame of a DepthMap in one of ``FILE_FORMATS`` at ``path``, with ``depth_metadata`` (plus
    ``extra`` keys, e.g. a ComfyUI workflow).

    ``low``/``high``: the png16 encoding range (default: ``min(0, data)`` .. ``max(1, data)`` of the
    frame). ``control``: the ControlNet map [B, 1, H, W] to write instead of the frame's own (one
    normalisation for a whole video). ``colormap``: the colour map of ``color`` (see ``COLORMAPS``).
    """
    check_choice("format", fmt, FILE_FORMATS)
    metadata = {**(extra or {}), **depth_metadata(depth, frame)}
    one = depth.frame(frame)
    if depth.quantity is Quantity.NORMAL:
        if fmt in ("control", "color"):
            raise LotusError(f"format={fmt!r} pictures depth or disparity; normals have png16, exr and npy")
        vectors = one.values[0].movedim(0, -1)  # [H, W, 3] unit vectors
        if fmt == "png16":
            return write_png8(path, normals_to_image(one)[0].movedim(0, -1), metadata)
        return (write_exr if fmt == "exr" else write_npy)(path, vectors, metadata)
    if fmt == "png16":
        return write_png16(path, one.values[0, 0], metadata, low=low, high=high)
    if fmt == "control":
        picture = to_controlnet(one) if control is None else control[frame:frame + 1]
        return write_png8(path, picture[0, 0], metadata)
    if fmt == "color":  # truncated to 8 bits, as the reference's visualisation
        return write_png8(path, colorize(one, colormap)[0].movedim(0, -1), metadata, rounding=np.floor)
    return (write_exr if fmt == "exr" else write_npy)(path, one.values[0, 0], metadata)


def write_png8(path: str | Path, picture, metadata: dict | None = None, *, rounding=np.round) -> Path:
    """An 8-bit PNG of [H, W] (grey) or [H, W, 3] (RGB) values in [0, 1], metadata in text chunks."""
    array = _frame(picture, allow_rgb=True)
    pixels = rounding(np.clip(array, 0, 1) * 255).astype(np.uint8)
    info = PngInfo()
    for key, value in (metadata or {}).items():
        info.add_text(key, _text(value))
    path = Path(path)
    with atomic_path(path) as temporary:
        Image.fromarray(pixels).save(temporary, pnginfo=info)
    return path


def read_depth_file(path: str | Path) -> tuple[np.ndarray, dict]:
    """Read a file written here back: (float32 values [H, W] or [H, W, 3], metadata with typed values).

    PNG pixels are mapped back through their ``lotus_encoding_low/high`` keys (``/ 65535`` without).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".png":
        with Image.open(path) as image:
            meta = _typed(dict(image.text))
            pixels = np.asarray(image).astype(np.float64)
        low, high = meta.get("lotus_encoding_low", 0.0), meta.get("lotus_encoding_high", 1.0)
        return (low + pixels / PNG16_MAX * (high - low)).astype(np.float32), meta
    if suffix == ".exr":
        import OpenEXR

        with OpenEXR.File(str(path)) as file:  # the header and pixels are only valid while it is open
            meta = {k: v for k, v in file.header().items() if k.startswith("lotus_")}
            channels = file.channels()
            array = np.array((channels["Y"] if "Y" in channels else channels["RGB"]).pixels, dtype=np.float32)
        return array, meta
    if suffix == ".npy":
        array = np.load(path, allow_pickle=False)
        meta_path = sidecar(path)
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        return array, meta
    raise LotusError(f"{path.name!r}: not a .png, .exr or .npy file")


def _frame(values, allow_rgb: bool = False) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu().numpy()
    array = np.ascontiguousarray(values, dtype=np.float32)
    if not (array.ndim == 2 or (allow_rgb and array.ndim == 3 and array.shape[-1] == 3)):
        shapes = "[H, W] or [H, W, 3]" if allow_rgb else "[H, W]"
        raise LotusError(f"one frame must be {shapes}, got {array.shape}")
    if not np.isfinite(array).all():
        raise LotusError("values contain NaN or Inf; depth files must hold finite values")
    return array


def _text(value) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _typed(text: dict[str, str]) -> dict:
    typed = {}
    for key, value in text.items():
        kind = METADATA_TYPES.get(key)
        if kind is not None:
            typed[key] = kind(value)
    return typed


def _version() -> str:
    try:
        return version("lotus-depth")
    except PackageNotFoundError:
        return "dev"
