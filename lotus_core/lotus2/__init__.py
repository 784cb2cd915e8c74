"""Lotus-2 (arXiv 2512.01030): depth and normals from FLUX.1-dev with two LoRA adapters and a small LCM.

    model = load_lotus2("FLUX.1-dev", "depth")            # a diffusers FLUX folder; the release is fetched
    depth = predict_lotus2(model, images, sharpener_steps=10)   # a DepthMap (disparity: near = high)

``load`` builds the model (peft adapters on diffusers' FluxTransformer2DModel), ``predict`` runs the
official steps, ``conditioning`` computes and caches the empty-prompt conditioning, ``weights`` reads
the release files (also for ComfyUI's own LoRA patching), ``releases`` names and fetches them,
``command`` is the ``lotus-depth lotus2`` command line.
"""

from .conditioning import (
    EmptyPromptConditioning,
    cached_empty_prompt,
    encode_empty_prompt,
    load_conditioning,
    save_conditioning,
)
from .load import add_lora_adapter, build_lotus2, load_lotus2
from .model import CORE_ADAPTER, SHARPENER_ADAPTER, Lotus2Model
from .predict import (
    DEFAULT_MAX_EDGE,
    DEFAULT_SHARPENER_STEPS,
    GUIDANCE,
    lotus2_flow,
    lotus2_processing_size,
    lotus2_resize,
    lotus2_values,
    posterior_sample,
    predict_lotus2,
    sharpener_sigmas,
)
from .releases import TASK_LORA_RANK, TASK_QUANTITY, TASKS, Lotus2Files, fetch_lotus2, file_names, files_in, release
from .weights import LocalContinuityModule, Lotus2Lora, lcm_from_state_dict, read_lcm, read_lora

# The names lotus_core exports at its top level, where Lotus 1 has defaults of its own.
LOTUS2_CORE_ADAPTER, LOTUS2_GUIDANCE, LOTUS2_TASKS, LOTUS2_TASK_QUANTITY = CORE_ADAPTER, GUIDANCE, TASKS, TASK_QUANTITY
LOTUS2_MAX_EDGE, LOTUS2_SHARPENER_STEPS = DEFAULT_MAX_EDGE, DEFAULT_SHARPENER_STEPS

__all__ = [
    "LOTUS2_CORE_ADAPTER", "LOTUS2_GUIDANCE", "LOTUS2_MAX_EDGE", "LOTUS2_SHARPENER_STEPS", "LOTUS2_TASKS",
    "LOTUS2_TASK_QUANTITY",
    "CORE_ADAPTER", "DEFAULT_MAX_EDGE", "DEFAULT_SHARPENER_STEPS", "EmptyPromptConditioning", "GUIDANCE",
    "LocalContinuityModule", "Lotus2Files", "Lotus2Lora", "Lotus2Model", "SHARPENER_ADAPTER", "TASKS",
    "TASK_LORA_RANK", "TASK_QUANTITY", "add_lora_adapter", "build_lotus2", "cached_empty_prompt",
    "encode_empty_prompt", "fetch_lotus2", "file_names", "files_in", "lcm_from_state_dict", "load_conditioning",
    "load_lotus2", "lotus2_flow", "lotus2_processing_size", "lotus2_resize", "lotus2_values", "posterior_sample",
    "predict_lotus2", "read_lcm", "read_lora", "release",
    "save_conditioning", "sharpener_sigmas",
]
