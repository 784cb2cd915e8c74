"""Lotus (ICLR 2025) single-step depth, disparity and normal prediction, without ComfyUI.

    import lotus_core
    model = lotus_core.load_model("lotus-depth-g-v2-1-disparity")  # a known release: downloaded once
    prediction = lotus_core.predict(model, images, seed=0)          # images: [B, 3, H, W] in [0, 1]
    control = lotus_core.to_controlnet(prediction)                  # [B, 1, H, W], near = white

Three groups of names: loading and prediction (``load_model`` … ``to_controlnet``), better-than-
reference prediction (``predict_ensemble``, ``predict_tiled``, ``predict_video``), and depth for other
tools (``DepthMap``, colour maps, levels, files, geometry, point clouds).
"""

from .depthmap import DepthMap, LotusPrediction, normals_to_image, to_controlnet
from .errors import LotusError, check_choice
from .loading.hub import fetch
from .loading.load import load_model
from .loading.model import LotusModel
from .loading.precision import PRECISIONS, choose_dtypes
from .loading.variants import KNOWN_CHECKPOINTS, Quantity
from .outputs.colormaps import COLORMAPS, colorize
from .outputs.files import read_depth_file, save_depth_frame, write_exr, write_npy, write_png16
from .outputs.geometry import (
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
from .prediction.predict import predict
from .quality.ensemble import predict_ensemble
from .quality.highres import predict_tiled
from .quality.video import predict_video

__all__ = [
    # loading and prediction
    "KNOWN_CHECKPOINTS", "LotusError", "LotusModel", "LotusPrediction", "PRECISIONS", "Quantity", "check_choice",
    "choose_dtypes", "fetch",
    "load_model", "normals_to_image", "predict", "to_controlnet",
    # better than the reference
    "predict_ensemble", "predict_tiled", "predict_video",
    # depth for other tools
    "COLORMAPS", "DepthMap", "NORMAL_CONVENTIONS", "colorize", "convert_normal_map", "decode_normals",
    "encode_normals", "normalize", "normals_from_depth", "percentile_range", "points_from_depth", "read_depth_file",
    "remap", "save_depth_frame", "save_point_cloud", "with_known_distances", "with_near_far", "write_exr",
    "write_npy", "write_ply", "write_png16",
]
