"""torch networks as OpenVINO programs: converted once to an IR on disk, compiled per input shape.

The IR keeps every spatial size open, so one conversion serves every processing size; each new
size is compiled for that shape (static shapes run fastest), and OpenVINO keeps the compiled
programs in ``<cache>/compiled/<precision>``, so a later process reads them instead of compiling again.
"""

from __future__ import annotations

import copy
import os
import shutil
import warnings
from functools import lru_cache
from pathlib import Path

import torch

from .cache import cache_root

IR_FILE = "network.xml"
# OpenVINO's own names for the two precisions its CPU plugin computes in
INFERENCE_PRECISIONS = {torch.float32: "f32", torch.bfloat16: "bf16"}


def installed() -> bool:
    """Whether openvino imports (a broken install counts as none)."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def version() -> str:
    import openvino

    return openvino.__version__


def convert(module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], folder: Path) -> Path:
    """Trace ``module`` on ``example_inputs`` into an fp32 IR in ``folder`` (written whole or not at all);
    returns the IR file."""
    import openvino

    if any(p.dtype != torch.float32 for p in module.parameters()):  # a copy: eager must survive a failure
        module = copy.deepcopy(module).float()
    with torch.no_grad(), warnings.catch_warnings():
        # diffusers' shape checks, frozen into the trace: harmless, as the caller traces at sizes that take
        # the general path (backend.TRACE_LATENT)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # OpenVINO's PyTorch frontend traces with torch.jit, which torch 2.13 marks deprecated
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.trace", category=DeprecationWarning)
        network = openvino.convert_model(module, example_input=example_inputs)
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    # fp16 compression (OpenVINO's default) would cost the fp32 path its accuracy
    openvino.save_model(network, partial / IR_FILE, compress_to_fp16=False)
    try:
        partial.rename(folder)
    except OSError:  # another process wrote the same network first: theirs is as good
        shutil.rmtree(partial, ignore_errors=True)
    return folder / IR_FILE


class CompiledNetwork:
    """Runs an IR on the CPU in ``dtype`` (fp32 or bf16), compiled for the input shapes of the latest
    call: a new shape replaces the program in memory (a compiled network holds its own weights; VAE
    tiles of one prediction share one shape)."""

    def __init__(self, ir_file: Path, dtype: torch.dtype) -> None:
        self.ir_file = ir_file
        self.dtype = dtype
        self._shapes: tuple | None = None
        self._compiled = None

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        shapes = tuple(tuple(t.shape) for t in inputs)
        if shapes != self._shapes:
            self._compiled = None  # the old program's memory goes before the new one is built
            self._compiled, self._shapes = self._compile(shapes), shapes
        arrays = [t.detach().cpu().float().numpy() if t.is_floating_point() else t.detach().cpu().numpy()
                  for t in inputs]
        return torch.from_numpy(self._compiled(arrays)[0])

    def _compile(self, shapes: tuple) -> object:
        import openvino

        core = _core()
        # memory-mapped; the compiled program keeps the original weights mapped beside its repacked copy
        # (for the fp32 UNet 3.5 + 3.6 GB: README, "Faster on CPUs")
        network = core.read_model(self.ir_file)
        network.reshape({port: openvino.PartialShape(list(shape)) for port, shape in zip(network.inputs, shapes,
                                                                                              strict=True)})
        return core.compile_model(network, "CPU", {
            "INFERENCE_PRECISION_HINT": INFERENCE_PRECISIONS[self.dtype],  # bf16 is its default where native
            "PERFORMANCE_HINT": "LATENCY",
            # one folder per precision: OpenVINO 2026.4's cache key leaves the precision out, and a bf16
            # compilation handed the f32 program gave wrong results (max abs 1.75 on the VAE decoder)
            "CACHE_DIR": str(cache_root() / "compiled" / INFERENCE_PRECISIONS[self.dtype]),
        })


@lru_cache(maxsize=1)
def _core():
    import openvino

    return openvino.Core()
