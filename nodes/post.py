"""Nodes that make Lotus depth usable by other tools: colour, levels, files, normals, metric depth, PLY.

Each is a thin adapter over ``lotus_core``. The ``depth`` inputs take the Lotus Depth node's
``lotus_depth`` (which knows whether it holds depth or disparity), a MASK or a depth IMAGE.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace

import folder_paths
import torch
from comfy.cli_args import args
from comfy_api.latest import io, ui

from ..lotus_core import (
    AXES,
    CAMERAS,
    COLORMAPS,
    FILE_FORMATS,
    NORMAL_CONVENTIONS,
    DepthMap,
    Quantity,
    colorize,
    convert_normal_map,
    encode_normals,
    normals_from_depth,
    percentile_range,
    png16_range,
    remap,
    save_depth_frame,
    save_point_cloud,
    with_known_distances,
    with_near_far,
)
from .base import LotusNode, schema
from .predict import LotusDepthMapType

QUANTITIES = ("auto", *(q.value for q in Quantity if q is not Quantity.NORMAL))
SCOPES = ("per image", "whole batch")
BIG = 1e6


def _depth_input(tooltip: str = "") -> io.MultiType.Input:
    return io.MultiType.Input(
        "depth", types=[LotusDepthMapType, io.Mask, io.Image],
        tooltip="lotus_depth from Lotus Depth (it knows depth from disparity), or any depth MASK / IMAGE"
                " (an IMAGE's channels are averaged)." + tooltip)


def _quantity_input() -> io.Combo.Input:
    return io.Combo.Input(
        "quantity", options=list(QUANTITIES), default="auto",
        tooltip="What the values mean. auto: what lotus_depth says; a plain MASK/IMAGE is taken as ComfyUI's"
                " convention, disparity-like (near = white). depth: near = low values. disparity: near = high.")


def _percentile_inputs() -> list:
    return [
        io.Float.Input("low_percentile", default=0.0, min=0.0, max=100.0, step=0.1,
                       tooltip="Values below this percentile are clipped to the low end (0 = the minimum)."),
        io.Float.Input("high_percentile", default=100.0, min=0.0, max=100.0, step=0.1,
                       tooltip="Values above this percentile are clipped to the high end (100 = the maximum)."),
    ]


def _as_values(depth) -> torch.Tensor:
    """[B, C, H, W] float on the CPU from a DepthMap, MASK [B, H, W] / [H, W] or IMAGE [B, H, W, C]."""
    if isinstance(depth, DepthMap):
        return depth.values.float().cpu()
    if not isinstance(depth, torch.Tensor) or depth.ndim not in (2, 3, 4):
        raise ValueError(f"depth must be lotus_depth, a MASK or an IMAGE, got {type(depth).__name__}"
                         f" {tuple(getattr(depth, 'shape', ()))}")
    if depth.ndim == 4:
        return depth[..., :3].movedim(-1, 1).float().cpu()
    return (depth if depth.ndim == 3 else depth[None])[:, None].float().cpu()


def _as_depth_map(depth, quantity: str) -> DepthMap:
    if isinstance(depth, DepthMap):
        if quantity == "auto" or quantity == depth.quantity.value:
            return depth.with_values(depth.values.float().cpu())
        if depth.is_metric:
            raise ValueError("the depth is metric (z-depth, near = low): its quantity can only be auto or depth")
        return replace(depth, values=depth.values.float().cpu(), quantity=Quantity(quantity))
    values = _as_values(depth).mean(dim=1, keepdim=True)
    return DepthMap(values, Quantity.DISPARITY if quantity == "auto" else Quantity(quantity))


def _output_files(prefix: str, values: torch.Tensor, ending: str) -> list[tuple[str, ui.SavedResult]]:
    """Where each frame of ``values`` [B, C, H, W] goes in ComfyUI's output folder, named as Save Image
    names files (``prefix`` may hold a subfolder and %date%; a counter follows), with its UI entry."""
    batch, _, height, width = values.shape
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
        prefix, folder_paths.get_output_directory(), width, height)
    files = [f"{name.replace('%batch_num%', str(frame))}_{counter + frame:05}_{ending}" for frame in range(batch)]
    return [(os.path.join(folder, file), ui.SavedResult(file, subfolder, io.FolderType.output)) for file in files]


def _to_image(values: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> IMAGE [B, H, W, 3]."""
    return values.expand(-1, 3, -1, -1).movedim(1, -1).contiguous()


class ColorizeDepth(LotusNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="LotusDepth_Colorize",
            display_name="Lotus Colorize Depth",
            description="Depth in colour for looking at it: Spectral (the Lotus reference's: near = red, far ="
                        " blue), inferno, magma, turbo, viridis or gray, near at the warm/bright end.",
            inputs=[
                _depth_input(),
                _quantity_input(),
                io.Combo.Input("colormap", options=list(COLORMAPS), default="spectral",
                               tooltip="spectral and turbo: near = red, far = blue; inferno, magma, viridis: near"
                                       " = bright; gray: near = white. Tables from matplotlib."),
                io.Combo.Input("stretch", options=[*SCOPES, "none"], default="per image",
                               tooltip="per image: each image's percentile range fills the map (as the Lotus"
                                       " reference). whole batch: one range for all frames (no colour flicker in"
                                       " video). none: values are used as they are (0..1)."),
                *_percentile_inputs(),
                io.Boolean.Input("reverse", default=False, tooltip="Put near at the other end of the map."),
            ],
            outputs=[io.Image.Output(display_name="image", tooltip="The coloured depth, RGB 0..1.")],
        )

    @classmethod
    def execute(cls, depth, quantity, colormap, stretch, low_percentile, high_percentile, reverse) -> io.NodeOutput:
        rgb = colorize(_as_depth_map(depth, quantity), colormap, low=low_percentile, high=high_percentile,
                       per_image=stretch == SCOPES[0], stretch=stretch != "none", reverse=reverse)
        return io.NodeOutput(rgb.movedim(1, -1).contiguous())


class RemapDepth(LotusNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="LotusDepth_Remap",
            display_name="Lotus Remap Depth",
            description="Levels for depth maps (MASK or IMAGE): input range (fixed or percentiles), gamma, invert,"
                        " clip, output range. An IMAGE is remapped per channel.",
            inputs=[
                _depth_input(),
                io.Combo.Input("input_range", options=["fixed", *SCOPES], default="fixed",
                               tooltip="fixed: in_low..in_high. per image / whole batch: the percentiles below,"
                                       " measured per image or over all frames (steady for video)."),
                io.Float.Input("in_low", default=0.0, min=-BIG, max=BIG, step=0.001,
                               tooltip="fixed range: the value that becomes out_low (out_high if inverted)."),
                io.Float.Input("in_high", default=1.0, min=-BIG, max=BIG, step=0.001,
                               tooltip="fixed range: the value that becomes out_high (out_low if inverted)."),
                *_percentile_inputs(),
                io.Float.Input("gamma", default=1.0, min=0.01, max=10.0, step=0.01,
                               tooltip="Applied to the 0..1 position t as t^gamma: < 1 lifts low values, > 1"
                                       " deepens them (before invert)."),
                io.Boolean.Input("invert", default=False, tooltip="Swap the ends (near = white <-> near = black)."),
                io.Boolean.Input("clip", default=True,
                                 tooltip="Clip values outside the input range to its ends."),
                io.Float.Input("out_low", default=0.0, min=-BIG, max=BIG, step=0.001,
                               tooltip="What the low end of the input range becomes."),
                io.Float.Input("out_high", default=1.0, min=-BIG, max=BIG, step=0.001,
                               tooltip="What the high end of the input range becomes."),
            ],
            outputs=[
                io.Image.Output(display_name="image", tooltip="The remapped map as an IMAGE (3 channels)."),
                io.Mask.Output(display_name="mask", tooltip="The remapped map as a MASK (channel mean)."),
            ],
        )

    @classmethod
    def execute(cls, depth, input_range, in_low, in_high, low_percentile, high_percentile, gamma, invert, clip,
                out_low, out_high) -> io.NodeOutput:
        values = _as_values(depth)  # [B,C,H,W]
        if input_range != "fixed":
            in_low, in_high = percentile_range(values, low_percentile, high_percentile,
                                               per_image=input_range == SCOPES[0])
        out = remap(values, in_low, in_high, gamma=gamma, invert=invert, clip=clip, out_low=out_low,
                    out_high=out_high)
        return io.NodeOutput(_to_image(out), out.mean(dim=1))


class SaveDepth(LotusNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="LotusDepth_SaveDepth",
            display_name="Lotus Save Depth",
            description="Saves every frame as a 16-bit PNG, 32-bit float EXR, float32 .npy, 8-bit ControlNet map or"
                        " colour map into ComfyUI's output folder, with what the values mean (model,"
                        " depth/disparity, polarity, value range, processing resolution) in the file (.npy: in a"
                        " .json next to it). The same writer as the lotus-depth command line.",
            inputs=[
                _depth_input(" lotus_depth saves the model's own values."),
                _quantity_input(),
                io.Combo.Input("format", options=list(FILE_FORMATS), default="png16",
                               tooltip="png16: 16-bit greyscale PNG (0..1 -> 0..65535; other ranges are written"
                                       " into the file). exr: 32-bit float, ZIP-compressed, channel Y. npy: float32"
                                       " array + .json metadata. control: 8-bit, near = white, per frame 0..255."
                                       " color: 8-bit Spectral colour map (near = red), as the Lotus reference."),
                io.String.Input("filename_prefix", default="lotus_depth",
                                tooltip="File name prefix, may contain a subfolder (lotus/depth) and %date% like"
                                        " Save Image; a counter is appended."),
            ],
            outputs=[],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, depth, quantity, format, filename_prefix) -> io.NodeOutput:
        depth_map = _as_depth_map(depth, quantity)
        values = depth_map.values
        # one png16 encoding for the whole batch, so frames compare directly
        low, high = png16_range(values)
        picture = FILE_FORMATS[format] == ".png"
        extra = cls._workflow_metadata() if picture else {}
        results = []
        for frame, (path, result) in enumerate(_output_files(filename_prefix, values, FILE_FORMATS[format])):
            save_depth_frame(path, depth_map, frame, format, low=low, high=high, extra=extra)
            results.append(result)
        return io.NodeOutput(ui={"images" if picture else "files": results})

    @classmethod
    def _workflow_metadata(cls) -> dict[str, str]:
        """The prompt and workflow, as Save Image embeds them (so the PNG can be dropped into ComfyUI)."""
        if args.disable_metadata:
            return {}
        extra = {}
        if cls.hidden.prompt is not None:
            extra["prompt"] = json.dumps(cls.hidden.prompt)
        for key, value in (cls.hidden.extra_pnginfo or {}).items():
            extra[key] = json.dumps(value)
        return extra


class MetricDepth(LotusNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="LotusDepth_MetricDepth",
            display_name="Lotus Metric Depth",
            description="Turns affine-invariant depth or disparity into distances (z-depth along the view axis),"
                        " from the distances of the map's ends or of two pixels.",
            inputs=[
                _depth_input(),
                _quantity_input(),
                io.Combo.Input("method", options=["near/far", "two known distances"], default="near/far",
                               tooltip="near/far: value 0 and 1 stand for far/near (disparity) or near/far"
                                       " (depth). two known distances: the distances of two pixels, fitted per"
                                       " image (depth linearly, disparity as 1/distance)."),
                io.Float.Input("near", default=1.0, min=0.001, max=BIG, step=0.01,
                               tooltip="near/far: the distance of the nearest value."),
                io.Float.Input("far", default=10.0, min=0.001, max=BIG, step=0.01,
                               tooltip="near/far: the distance of the farthest value."),
                io.Int.Input("a_x", default=0, min=0, max=16384, tooltip="Two known distances: pixel column of A."),
                io.Int.Input("a_y", default=0, min=0, max=16384, tooltip="Two known distances: pixel row of A."),
                io.Float.Input("a_distance", default=1.0, min=0.001, max=BIG, step=0.01,
                               tooltip="Two known distances: z-depth of A."),
                io.Int.Input("b_x", default=0, min=0, max=16384, tooltip="Two known distances: pixel column of B."),
                io.Int.Input("b_y", default=0, min=0, max=16384, tooltip="Two known distances: pixel row of B."),
                io.Float.Input("b_distance", default=10.0, min=0.001, max=BIG, step=0.01,
                               tooltip="Two known distances: z-depth of B."),
                io.String.Input("unit", default="m", tooltip="Unit of the distances, written into saved files."),
            ],
            outputs=[
                LotusDepthMapType.Output(display_name="lotus_depth",
                                         tooltip="Metric z-depth, for Save Depth, Point Cloud and Depth to Normals."),
                io.Mask.Output(display_name="distance",
                               tooltip="The same distances as a MASK (values are distances, not 0..1)."),
            ],
        )

    @classmethod
    def execute(cls, depth, quantity, method, near, far, a_x, a_y, a_distance, b_x, b_y, b_distance,
                unit) -> io.NodeOutput:
        depth_map = _as_depth_map(depth, quantity)
        if method == "near/far":
            metric = with_near_far(depth_map, near, far, unit)
        else:
            metric = with_known_distances(depth_map, (a_x, a_y, a_distance), (b_x, b_y, b_distance), unit)
        return io.NodeOutput(metric, metric.values[:, 0])


class DepthToNormals(LotusNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="LotusDepth_DepthToNormals",
            display_name="Lotus Depth to Normals",
            description="Surface normals from depth or disparity, for a pinhole camera of a given field of view"
                        " or an orthographic one (a height map), as a normal map in the chosen convention.",
            inputs=[
                _depth_input(),
                _quantity_input(),
                io.Combo.Input("camera", options=list(CAMERAS), default="pinhole",
                               tooltip="pinhole: a photo's perspective (fov, near/far). orthographic: parallel"
                                       " rays, the map is a height field `relief` image widths deep."),
                io.Float.Input("fov_degrees", default=60.0, min=1.0, max=179.0, step=0.5,
                               tooltip="pinhole: horizontal field of view (about 60-70 for phone photos)."),
                io.Float.Input("near", default=1.0, min=0.001, max=BIG, step=0.01,
                               tooltip="pinhole, non-metric depth: distance of the nearest value (only far/near"
                                       " matters)."),
                io.Float.Input("far", default=10.0, min=0.001, max=BIG, step=0.01,
                               tooltip="pinhole, non-metric depth: distance of the farthest value."),
                io.Float.Input("relief", default=0.25, min=0.001, max=100.0, step=0.01,
                               tooltip="orthographic: depth from nearest to farthest, in image widths."),
                io.Combo.Input("convention", options=list(NORMAL_CONVENTIONS), default="lotus",
                               tooltip="RGB axes. lotus: R = left, G = up, B = towards viewer (as Lotus Normals)."
                                       " opengl (Blender, Unity): R = right, G = up. directx (Unreal): R = right,"
                                       " G = down. omnidata: all three of lotus inverted."),
            ],
            outputs=[io.Image.Output(display_name="normal_map", tooltip="Unit normals as RGB = (n + 1) / 2.")],
        )

    @classmethod
    def execute(cls, depth, quantity, camera, fov_degrees, near, far, relief, convention) -> io.NodeOutput:
        normals = normals_from_depth(_as_depth_map(depth, quantity), camera=camera, fov_degrees=fov_degrees,
                                     near=near, far=far, relief=relief)
        return io.NodeOutput(encode_normals(normals, convention).movedim(1, -1).contiguous())


class ConvertNormals(LotusNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="LotusDepth_ConvertNormals",
            display_name="Lotus Convert Normal Map",
            description="Re-encodes a normal map between axis conventions (Lotus/DSINE, OpenGL, DirectX, Omnidata).",
            inputs=[
                io.Image.Input("normal_map", tooltip="A normal map, RGB = (n + 1) / 2."),
                io.Combo.Input("source", options=list(NORMAL_CONVENTIONS), default="lotus",
                               tooltip="The map's convention. lotus: what Lotus Normals outputs (R = left, G = up,"
                                       " B = towards viewer)."),
                io.Combo.Input("target", options=list(NORMAL_CONVENTIONS), default="opengl",
                               tooltip="opengl: Blender/Unity (R = right, G = up). directx: Unreal (G = down)."
                                       " omnidata: Omnidata/Metric3D (all of lotus inverted)."),
            ],
            outputs=[io.Image.Output(display_name="normal_map", tooltip="The map in the target convention.")],
        )

    @classmethod
    def execute(cls, normal_map, source, target) -> io.NodeOutput:
        converted = convert_normal_map(normal_map[..., :3].movedim(-1, 1), source, target)
        return io.NodeOutput(converted.movedim(1, -1).contiguous())


class SavePointCloud(LotusNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="LotusDepth_SavePointCloud",
            display_name="Lotus Save Point Cloud (PLY)",
            description="Saves each frame's image + depth as a coloured PLY point cloud or mesh (pinhole camera of"
                        " the given field of view) into ComfyUI's output folder.",
            inputs=[
                io.Image.Input("image", tooltip="Colours, the same size as the depth (a single image serves every"
                                                " frame)."),
                _depth_input(" Best: metric depth from Lotus Metric Depth."),
                _quantity_input(),
                io.Float.Input("fov_degrees", default=60.0, min=1.0, max=179.0, step=0.5,
                               tooltip="Horizontal field of view of the camera that took the image."),
                io.Float.Input("near", default=1.0, min=0.001, max=BIG, step=0.01,
                               tooltip="Non-metric depth only: distance of the nearest value."),
                io.Float.Input("far", default=10.0, min=0.001, max=BIG, step=0.01,
                               tooltip="Non-metric depth only: distance of the farthest value."),
                io.Boolean.Input("mesh", default=False,
                                 tooltip="Also join neighbouring pixels into triangles (cut at depth edges)."),
                io.Float.Input("edge_threshold", default=0.05, min=0.0, max=100.0, step=0.01,
                               tooltip="mesh: leave out triangles whose far/near corner ratio exceeds 1 + this."),
                io.Int.Input("step", default=1, min=1, max=64,
                             tooltip="Keep every step-th pixel in both directions (2 = a quarter of the points)."),
                io.Combo.Input("axes", options=list(AXES), default="opengl",
                               tooltip="opengl: x right, y up, camera looking along -z (Blender, three.js)."
                                       " opencv: x right, y down, z forward (Open3D, COLMAP)."),
                io.Boolean.Input("binary", default=True, tooltip="Binary PLY (compact) or ASCII (readable)."),
                io.String.Input("filename_prefix", default="lotus_pointcloud",
                                tooltip="File name prefix (may contain a subfolder); a counter is appended."),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, image, depth, quantity, fov_degrees, near, far, mesh, edge_threshold, step, axes, binary,
                filename_prefix) -> io.NodeOutput:
        metric = with_near_far(_as_depth_map(depth, quantity), near, far)
        batch = metric.values.shape[0]
        if image.shape[0] not in (1, batch):
            raise ValueError(f"image has {image.shape[0]} frames and depth {batch}: give one image or one per frame")
        colors = image[..., :3].movedim(-1, 1).float().cpu()
        results = []
        for frame, (path, result) in enumerate(_output_files(filename_prefix, metric.values, ".ply")):
            save_point_cloud(path, metric, colors[min(frame, colors.shape[0] - 1)][None],
                             frame=frame, fov_degrees=fov_degrees, step=step, mesh=mesh,
                             edge_threshold=edge_threshold, axes=axes, binary=binary)
            results.append(result)
        return io.NodeOutput(ui={"files": results})


NODES = [ColorizeDepth, RemapDepth, SaveDepth, MetricDepth, DepthToNormals, ConvertNormals, SavePointCloud]
