"""The one exception type the core raises for anything the caller can fix."""


class LotusError(ValueError):
    """A bad argument, image or checkpoint. The message names the thing, its value and the rule."""
