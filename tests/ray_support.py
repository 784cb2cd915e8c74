"""Models for the Ray job's tests, built inside Ray's worker processes (this folder is on their PYTHONPATH)."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import lotus_core


def load_model_that_dies_once(checkpoint: str, vae: str, marker: str, after: int = 2) -> lotus_core.LotusModel:
    """A real model whose worker process is killed (``os._exit``: no cleanup, as a lost node) at its
    ``after``-th network pass, once per test: the first worker to get there leaves ``marker`` behind."""
    model = lotus_core.load_model(checkpoint, vae)
    passes = itertools.count()

    def die_once(module, args):
        if next(passes) == after and not Path(marker).exists():
            Path(marker).write_text(str(os.getpid()))
            os._exit(1)

    model.unet.register_forward_pre_hook(die_once)
    return model
