"""Lotus (ICLR 2025) single-step depth, disparity and normal prediction, without ComfyUI.

    import lotus_core
    model = lotus_core.load_model("lotus-depth-g-v1-0.safetensors", vae="vae-ft-mse-840000-ema-pruned.safetensors")
    prediction = lotus_core.predict(model, images, seed=0)   # images: [B, 3, H, W] in [0, 1]
    control = lotus_core.to_controlnet(prediction)           # [B, 1, H, W], near = white

    model = lotus_core.load_model("lotus-depth-g-v2-1-disparity")  # a known release: downloaded once
"""

from .ensemble import predict_ensemble
from .errors import LotusError
from .hub import fetch
from .inference import predict
from .loading import load_model
from .model import LotusModel
from .outputs import LotusPrediction, normals_to_image, to_controlnet
from .tiling import predict_tiled
from .variants import KNOWN_CHECKPOINTS, Quantity
from .video import predict_video

__all__ = [
    "KNOWN_CHECKPOINTS",
    "LotusError",
    "LotusModel",
    "LotusPrediction",
    "Quantity",
    "fetch",
    "load_model",
    "normals_to_image",
    "predict",
    "predict_ensemble",
    "predict_tiled",
    "predict_video",
    "to_controlnet",
]

# Depth outputs for other tools (issue 7): files, colour maps, levels, normals from depth, point clouds.
from .colormaps import COLORMAPS, colorize  # noqa: E402
from .depthmap import DepthMap, with_known_distances, with_near_far  # noqa: E402
from .export import read_depth_file, save_depth_frame, write_exr, write_npy, write_png16  # noqa: E402
from .geometry import (  # noqa: E402
    NORMAL_CONVENTIONS,
    convert_normal_map,
    decode_normals,
    encode_normals,
    normals_from_depth,
    points_from_depth,
)
from .levels import normalize, percentile_range, remap  # noqa: E402
from .pointcloud import save_point_cloud, write_ply  # noqa: E402

__all__ += [
    "COLORMAPS", "DepthMap", "NORMAL_CONVENTIONS", "colorize", "convert_normal_map", "decode_normals",
    "encode_normals", "normalize", "normals_from_depth", "percentile_range", "points_from_depth",
    "read_depth_file", "remap", "save_depth_frame", "save_point_cloud", "with_known_distances", "with_near_far",
    "write_exr", "write_npy", "write_ply", "write_png16",
]
