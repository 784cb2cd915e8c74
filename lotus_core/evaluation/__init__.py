"""``lotus-depth eval``: the zero-shot depth and normal benchmarks, measured as the paper measures them.

The layers, one module each: ``datasets`` (the Marigold/Lotus packaging: tar archive or folder, one
file list per split), ``protocol`` (each dataset's depth range, masks and the scale/shift alignment),
``metrics`` (per image), ``run`` (``evaluate``: predictions cached on disk, so a run resumes),
``report`` (table beside the paper's figures, JSON, per-image CSV) and ``cli``.
"""

from .datasets import DATASETS, open_dataset
from .run import Evaluation, evaluate

__all__ = ["DATASETS", "Evaluation", "evaluate", "open_dataset"]
