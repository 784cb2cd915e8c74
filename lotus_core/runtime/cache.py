"""Where converted networks are kept between processes, and the fingerprint that names them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

CACHE_ENV = "LOTUS_RUNTIME_CACHE"


def cache_root() -> Path:
    """``$LOTUS_RUNTIME_CACHE``, else ``lotus-depth/runtime`` under the user's cache folder."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        base = Path(os.environ["LOCALAPPDATA"])
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "lotus-depth" / "runtime"


def fingerprint(module: torch.nn.Module, *extra: str) -> str:
    """A digest of the module's class, every weight's name, shape, dtype and bytes, and ``extra``
    (e.g. the converter's version): equal digests mean the same network, whichever file it came from."""
    digest = hashlib.sha256(type(module).__qualname__.encode())
    for part in extra:
        digest.update(part.encode())
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        # uint8 view: numpy has no bf16, and the buffer is hashed in place, without a copy
        digest.update(tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:24]
