"""Lotus (ICLR 2025) single-step depth, disparity and normal prediction, without ComfyUI.

    import lotus_core
    model = lotus_core.load_model("lotus-depth-g-v2-1-disparity")  # a known release: downloaded once
    prediction = lotus_core.predict(model, images, seed=0)          # images: [B, 3, H, W] in [0, 1]
    control = lotus_core.to_controlnet(prediction)                  # [B, 1, H, W], near = white

The layers, each a subpackage: ``loading`` (checkpoints, releases, precision), ``prediction`` (the
pipeline, its memory plan, VAE tiles), ``quality`` (ensembles, high-res tiles, video), ``outputs``
(depth for other tools), ``batch`` (the dataset job, on one machine or a Ray cluster), ``evaluation``
(the standard benchmarks), ``lotus2`` (Lotus-2, FLUX-based) and ``runtime`` (CPU backends). Every
prediction returns one type, ``DepthMap``, which every output function takes. This module's names
are the public API: ComfyUI's nodes use nothing else.
"""

from .batch.job import JobOptions, JobSummary, run_job
from .batch.on_ray import run_job_on_ray
from .batch.seeds import image_seed
from .depthmap import DepthMap, LotusPrediction, normals_to_image, to_controlnet
from .errors import LotusError, check_choice
from .loading.checkpoint import holds_lotus_unet
from .loading.hub import fetch, missing_files
from .loading.load import load_model
from .loading.model import LotusModel
from .loading.precision import PRECISIONS, choose_dtypes
from .loading.variants import KNOWN_CHECKPOINTS, KnownCheckpoint, Quantity, known_checkpoint
from .lotus2 import (  # Lotus-2
    LOTUS2_CORE_ADAPTER,
    LOTUS2_GUIDANCE,
    LOTUS2_MAX_EDGE,
    LOTUS2_SHARPENER_STEPS,
    LOTUS2_TASK_QUANTITY,
    LOTUS2_TASKS,
    EmptyPromptConditioning,
    Lotus2Files,
    Lotus2Lora,
    Lotus2Model,
    build_lotus2,
    cached_empty_prompt,
    encode_empty_prompt,
    fetch_lotus2,
    load_conditioning,
    load_lotus2,
    lotus2_flow,
    lotus2_resize,
    lotus2_values,
    posterior_sample,
    predict_lotus2,
    read_lcm,
    read_lora,
    save_conditioning,
)
from .outputs.colormaps import COLORMAPS, colorize
from .outputs.files import (
    FILE_FORMATS,
    png16_range,
    read_depth_file,
    save_depth_frame,
    write_exr,
    write_npy,
    write_png16,
)
from .outputs.geometry import (
    AXES,
    CAMERAS,
    NORMAL_CONVENTIONS,
    convert_normal_map,
    decode_normals,
    encode_normals,
    normals_from_depth,
    points_from_depth,
)
from .outputs.levels import normalize, percentile_range, remap
from .outputs.metric import with_known_distances, with_near_far
from .outputs.pointcloud import save_point_cloud, write_ply
from .prediction.memory import activation_bytes, available_bytes, usable_bytes
from .prediction.predict import DEFAULT_PROCESSING_RESOLUTION, GEOMETRIES, predict
from .progress import InterruptCheck, ProgressCallback
from .quality.ensemble import REDUCTIONS, predict_ensemble
from .quality.highres import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE, predict_tiled
from .quality.video import ALIGN_MODES, DEFAULT_LATENT_BLEND, predict_video
from .runtime import BACKENDS, CACHE_ENV, runtime_unavailable  # runtime backends

__all__ = [
    # loading
    "KNOWN_CHECKPOINTS", "KnownCheckpoint", "LotusModel", "PRECISIONS", "Quantity", "choose_dtypes", "fetch",
    "holds_lotus_unet", "known_checkpoint", "load_model", "missing_files",
    # prediction: one entry point, its options and its memory budget
    "DEFAULT_PROCESSING_RESOLUTION", "GEOMETRIES", "InterruptCheck", "ProgressCallback", "activation_bytes",
    "available_bytes", "predict", "usable_bytes",
    # better than the reference
    "ALIGN_MODES", "DEFAULT_LATENT_BLEND", "DEFAULT_OVERLAP", "DEFAULT_TILE_SIZE", "REDUCTIONS", "predict_ensemble",
    "predict_tiled", "predict_video",
    # the one value type, and depth for other tools
    "AXES", "CAMERAS", "COLORMAPS", "DepthMap", "FILE_FORMATS", "NORMAL_CONVENTIONS", "colorize",
    "convert_normal_map", "decode_normals", "encode_normals", "normalize", "normals_from_depth", "normals_to_image",
    "percentile_range", "png16_range", "points_from_depth", "read_depth_file", "remap", "save_depth_frame",
    "save_point_cloud", "to_controlnet", "with_known_distances", "with_near_far", "write_exr", "write_npy",
    "write_ply", "write_png16",
    # Lotus-2
    "LOTUS2_CORE_ADAPTER", "LOTUS2_GUIDANCE", "LOTUS2_MAX_EDGE", "LOTUS2_SHARPENER_STEPS", "LOTUS2_TASKS",
    "LOTUS2_TASK_QUANTITY", "EmptyPromptConditioning", "Lotus2Files", "Lotus2Lora", "Lotus2Model", "build_lotus2",
    "cached_empty_prompt", "encode_empty_prompt", "fetch_lotus2", "load_conditioning", "load_lotus2", "lotus2_flow",
    "lotus2_resize", "lotus2_values", "posterior_sample", "predict_lotus2", "read_lcm", "read_lora",
    "save_conditioning",
    "BACKENDS", "CACHE_ENV", "runtime_unavailable",  # runtime backends
    # datasets: the file-to-file job, on this machine or on Ray
    "JobOptions", "JobSummary", "image_seed", "run_job", "run_job_on_ray",
    # errors, and names kept for older code
    "LotusError", "LotusPrediction", "check_choice",
]
