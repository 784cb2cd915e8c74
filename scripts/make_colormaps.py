"""Regenerate lotus_core/assets/colormaps.safetensors from matplotlib (run once; matplotlib is a test dependency).

    .venv/bin/python scripts/make_colormaps.py

Each map is matplotlib's own 256-entry lookup table (``cmap(np.arange(256))``: integer input indexes the
table directly), RGB only, as float32. Provenance and checksums: lotus_core/assets/README.md.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import matplotlib
import numpy as np
import torch
from safetensors.torch import save_file

# our name -> matplotlib name
MAPS = {"spectral": "Spectral", "inferno": "inferno", "magma": "magma", "turbo": "turbo",
        "viridis": "viridis", "gray": "gray"}
OUT = Path(__file__).resolve().parents[1] / "lotus_core" / "assets" / "colormaps.safetensors"


def main() -> None:
    tables = {}
    for name, mpl_name in MAPS.items():
        cmap = matplotlib.colormaps[mpl_name].resampled(256)
        tables[name] = torch.from_numpy(cmap(np.arange(256))[:, :3].astype(np.float32)).contiguous()
    save_file(tables, OUT, metadata={"source": f"matplotlib {matplotlib.__version__}",
                                     "maps": ",".join(f"{k}={v}" for k, v in MAPS.items())})
    print(OUT, hashlib.sha256(OUT.read_bytes()).hexdigest())


if __name__ == "__main__":
    main()
