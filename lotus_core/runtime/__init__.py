"""Runtime backends: the networks of a ``LotusModel`` converted for a runtime faster than torch eager on CPUs.

``LotusModel.use_backend`` (or ``load_model(..., backend=...)``) swaps them in; ``predict`` and
everything built on it run unchanged. One backend so far, OpenVINO (chosen by measurement: README,
"Faster on CPUs"), from the optional extra ``lotus-depth[cpu-fast]``.
"""

from .backend import BACKENDS, runtime_unavailable, use_backend
from .cache import CACHE_ENV, cache_root

__all__ = ["BACKENDS", "CACHE_ENV", "cache_root", "runtime_unavailable", "use_backend"]
