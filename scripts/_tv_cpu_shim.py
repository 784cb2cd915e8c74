"""Let PyPI's torchvision import beside a CPU-only torch.

torchvision's Python package registers fake kernels for its C++ ops ``nms`` and ``qnms`` at import
time. The PyPI wheel's compiled library needs CUDA libraries, so on a CPU torch those ops are never
defined and the import fails ("operator torchvision::nms does not exist"). Defining the two op
schemas first lets the pure-Python parts (transforms, models) import; the C++ ops themselves stay
unavailable, and neither ComfyUI's core nor this pack calls them. Installed as a ``.pth`` hook by
``scripts/setup_env.sh``; it does nothing until torchvision is imported.
"""

import importlib.abc
import sys

_library = None


class _TorchvisionShimFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        global _library
        if name != "torchvision":
            return None
        sys.meta_path.remove(self)
        import torch

        if torch.version.cuda is None and _library is None:
            try:
                _library = torch.library.Library("torchvision", "DEF")
                _library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
                _library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            except RuntimeError:
                pass  # a working torchvision C++ library already defined them
        return None


sys.meta_path.insert(0, _TorchvisionShimFinder())
