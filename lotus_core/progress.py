"""Progress of a long prediction, and the places where its caller may stop it (e.g. ComfyUI's Cancel).

Two hooks, both optional: ``callback(done, total)`` is told after every step (a VAE tile, a UNet
pass, a high-res tile, an ensemble member) and ``check_interrupt()`` is called before every layer of
the networks, so a caller that raises from either stops the work within one layer, even inside one
large image.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

ProgressCallback = Callable[[int, int], None]
InterruptCheck = Callable[[], None]
# The layers after which a stop request is honoured: each is at most a few seconds of work on a CPU.
CHECKED_LAYERS = (torch.nn.Conv2d, torch.nn.Linear)


class Steps:
    """Counts the steps of one call and reports each to ``callback(done, total)``."""

    def __init__(self, callback: ProgressCallback | None, total: int) -> None:
        self.callback, self.total, self.done = callback, total, 0

    def advance(self) -> None:
        self.done = min(self.done + 1, self.total)
        if self.callback is not None:
            self.callback(self.done, self.total)

    def replan(self, remaining: int) -> None:
        """The work left changed (e.g. smaller chunks after running out of memory)."""
        self.total = self.done + remaining


def part(callback: ProgressCallback | None, index: int, count: int) -> ProgressCallback | None:
    """The callback for part ``index`` of ``count`` equal parts of a call that reports to ``callback``."""
    if callback is None:
        return None
    return lambda done, total: callback(index * total + done, count * total)


@contextlib.contextmanager
def interruptible(modules: tuple[torch.nn.Module, ...], check: InterruptCheck | None) -> Iterator[None]:
    """Call ``check()`` before every convolution and linear layer of ``modules`` while in the block."""
    if check is None:
        yield
        return
    def hook(*_) -> None:  # a pre-hook's return value would replace the layer's input
        check()

    handles = [layer.register_forward_pre_hook(hook)
               for module in modules for layer in module.modules() if isinstance(layer, CHECKED_LAYERS)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
