"""Images and videos as the networks want them: decoded as the user sees them, at full precision.

Phone photos are turned by their EXIF orientation (as ComfyUI's Load Image does). 16-bit PNG and
TIFF keep their 16 bits: Pillow holds 16-bit greyscale, but reduces 16-bit RGB to 8 bits, so those
pixels are decoded by PyAV (FFmpeg) and oriented with Pillow's own EXIF rules. Every failure is a
LotusError that names the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import LotusError
from ..prediction.images import check_images, processing_size
from ..prediction.predict import network_pixels

TIFF_BITS_PER_SAMPLE = 258
# PNG: 8-byte signature, then the IHDR chunk (length, type, width, height), then the bit depth.
PNG_BIT_DEPTH_OFFSET = 24


def read_image(path: Path) -> torch.Tensor:
    """An image file as [1, 3, H, W] float32 RGB in [0, 1], EXIF orientation applied."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # no silent 300 MP decode
            with Image.open(path) as image:
                if _is_rgb48(image, path):
                    pixels = _oriented(_decode_rgb48(path), image.getexif())
                    return _as_batch(pixels.astype(np.float32) / 65535)
                return _as_batch(_rgb(ImageOps.exif_transpose(image)))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise LotusError(f"{path}: too many pixels to decode safely ({error}); raise PIL.Image.MAX_IMAGE_PIXELS"
                         " if the file is trusted") from None
    except LotusError:
        raise
    except Exception as error:  # Pillow and FFmpeg raise many kinds for a damaged file
        raise LotusError(f"{path}: cannot read the image: {error}") from None


def read_video(path: Path) -> tuple[list[torch.Tensor], float | None]:
    """A video's frames in order, each [1, 3, H, W] in [0, 1], and its frame rate (None if unknown)."""
    av = _pyav(f"reading the video {path}")
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            rate = float(stream.average_rate) if stream.average_rate else None
            frames = [_as_batch(frame.to_ndarray(format="rgb24").astype(np.float32) / 255)
                      for frame in container.decode(stream)]
    except Exception as error:
        raise LotusError(f"{path}: cannot read the video: {error}") from None
    if not frames:
        raise LotusError(f"{path}: the video has no frames")
    return frames, rate


def for_networks(image: torch.Tensor, resolution: int, resample: str) -> torch.Tensor:
    """``image`` as the networks see it (``network_pixels``: [-1, 1], long edge ``resolution``, 0 =
    as is), computed as ``predict`` computes it: with ``prepared_size`` the numbers are the same."""
    return network_pixels(check_images(image), processing_size(*image.shape[-2:], resolution), resample)


def _rgb(image: Image.Image) -> np.ndarray:
    """[H, W, 3] float32 in [0, 1]; 16-bit greyscale keeps its 16 bits, float images their values."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        grey = np.asarray(image, dtype=np.float32) / 65535
    elif image.mode == "F":
        grey = np.asarray(image, dtype=np.float32)
    else:
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    return np.repeat(grey[..., None], 3, axis=2)


def _as_batch(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]


def _is_rgb48(image: Image.Image, path: Path) -> bool:
    """Whether the file holds 16 bits per colour channel, which Pillow would reduce to 8."""
    if image.mode not in ("RGB", "RGBA"):
        return False
    if image.format == "PNG":
        with open(path, "rb") as file:
            header = file.read(PNG_BIT_DEPTH_OFFSET + 1)
        return len(header) > PNG_BIT_DEPTH_OFFSET and header[PNG_BIT_DEPTH_OFFSET] == 16
    if image.format == "TIFF":
        bits = image.tag_v2.get(TIFF_BITS_PER_SAMPLE, (8,))
        return max(bits if isinstance(bits, tuple) else (bits,)) == 16
    return False


def _decode_rgb48(path: Path) -> np.ndarray:
    """[H, W, 3] uint16 pixels of a 16-bit RGB(A) file, decoded by FFmpeg (alpha dropped)."""
    av = _pyav(f"reading the 16-bit image {path} at full precision")
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return frame.to_ndarray(format="rgb48le")


def _oriented(pixels: np.ndarray, exif: Image.Exif) -> np.ndarray:
    """``pixels`` [H, W, C] turned by the EXIF orientation, by Pillow's rules, one channel at a time."""
    if exif.get(0x0112, 1) == 1:
        return pixels
    channels = []
    for channel in np.moveaxis(pixels, 2, 0):
        plane = Image.fromarray(np.ascontiguousarray(channel))
        plane.getexif().update(exif)
        channels.append(np.asarray(ImageOps.exif_transpose(plane)))
    return np.stack(channels, axis=2)


def _pyav(purpose: str):
    try:
        import av
    except ImportError:
        raise LotusError(f"{purpose} needs PyAV: pip install av") from None
    return av
