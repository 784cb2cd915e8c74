"""The one exception type the core raises for anything the caller can fix, and the one choice check."""

from __future__ import annotations

from collections.abc import Hashable, Iterable


class LotusError(ValueError):
    """A bad argument, image or checkpoint. The message names the thing, its value and the rule."""


# Shown as "lotus_core.LotusError" (ComfyUI's exception_type), not under the folder the pack was loaded from.
LotusError.__module__ = "lotus_core"


def check_choice(argument: str, value, choices: Iterable) -> None:
    """Raise a LotusError naming ``argument``, ``value`` and the ``choices`` unless value is one of them."""
    choices = list(choices)
    if not isinstance(value, Hashable) or value not in choices:
        raise LotusError(f"{argument}={value!r} is not one of {', '.join(map(repr, choices))}")
