"""The "Lotus Depth" and "Lotus Normals" nodes."""

from __future__ import annotations

import comfy.model_management as mm
import comfy.utils
import torch
from comfy_api.latest import io

from ..lotus_core import DepthMap, LotusPrediction, Quantity, normals_to_image, predict, to_controlnet
from .comfy_model import ComfyLotusModel
from .loader import LotusModelType

# The native values plus their meaning (model, depth/disparity, processing resolution): a lotus_core.DepthMap.
LotusDepthMapType = io.Custom("LOTUSDEPTH_DEPTH")
NOISE_MODES = ("per image", "shared across batch")


def _inputs() -> list:
    return [
        LotusModelType.Input("lotus_model", tooltip="From the Load Lotus Model node."),
        io.Image.Input("image", tooltip="Images to analyse; an alpha channel is ignored. The output has"
                                        " exactly their size."),
        io.Int.Input("processing_resolution", default=768, min=0, max=8192, step=8,
                     tooltip="Long edge the model sees (768 as the official Lotus). 0 = the image's own"
                             " size (slow and memory-hungry for large images)."),
        io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                     tooltip="Seed of the noise (Lotus-G) and of the VAE's latent sample."),
        io.Combo.Input("noise", options=list(NOISE_MODES), default=NOISE_MODES[0],
                       tooltip="One random draw (Lotus-G noise, VAE sample) per image, or one shared by the"
                               " whole batch: steadier across video frames."),
        io.Int.Input("chunk_size", default=1, min=1, max=256,
                     tooltip="Images per model pass: higher is faster on a GPU with memory to spare."),
    ]


def _predict(model: ComfyLotusModel, image: torch.Tensor, processing_resolution: int, seed: int,
             noise: str, chunk_size: int) -> LotusPrediction:
    if image.ndim != 4 or image.shape[-1] not in (3, 4):
        raise ValueError(f"image must be an IMAGE batch [B, H, W, 3 or 4], got shape {tuple(image.shape)}")
    images = image[..., :3].movedim(-1, 1)  # [B,3,H,W]; alpha dropped
    batch, _, height, width = images.shape
    model.load(height, width, min(chunk_size, batch))
    progress = comfy.utils.ProgressBar(batch)

    def on_chunk(done: int, total: int) -> None:
        progress.update_absolute(done, total)
        mm.throw_exception_if_processing_interrupted()

    return predict(model.core, images, processing_resolution=processing_resolution, seed=seed,
                   shared_noise=noise == NOISE_MODES[1], chunk_size=chunk_size, callback=on_chunk)


def _require(model: ComfyLotusModel, wanted: set[Quantity], node: str, other: str) -> None:
    if model.core.quantity not in wanted:
        raise ValueError(f"{model.core.name!r} predicts {model.core.quantity.value}; the {node} node needs a"
                         f" {' or '.join(sorted(q.value for q in wanted))} checkpoint. Use the {other} node.")


class LotusDepth(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LotusDepth_Depth",
            display_name="Lotus Depth",
            category="image/depth/lotus",
            description="Single-step Lotus depth. The image output is ControlNet-ready (near = white)"
                        " whichever checkpoint polarity (depth or disparity) the model has.",
            inputs=_inputs(),
            outputs=[
                io.Image.Output(display_name="depth_image",
                                tooltip="ControlNet-ready depth: near = white, each image stretched to 0..1,"
                                        " 3 identical channels."),
                io.Mask.Output(display_name="depth_mask", tooltip="The same map as a MASK (near = 1)."),
                io.Mask.Output(display_name="native",
                               tooltip="The model's own output in 0..1, not stretched: depth (near = 0) for"
                                       " v1 depth checkpoints, disparity (near = 1) for *-disparity ones."),
                LotusDepthMapType.Output(display_name="lotus_depth",
                                         tooltip="The native values with what they mean (model, depth or disparity,"
                                                 " processing resolution), for the Save Depth, Colorize, Depth to"
                                                 " Normals, Metric Depth and Point Cloud nodes."),
            ],
        )

    @classmethod
    def execute(cls, lotus_model, image, processing_resolution, seed, noise, chunk_size) -> io.NodeOutput:
        _require(lotus_model, {Quantity.DEPTH, Quantity.DISPARITY}, "Lotus Depth", "Lotus Normals")
        prediction = _predict(lotus_model, image, processing_resolution, seed, noise, chunk_size)
        control = to_controlnet(prediction)[:, 0].to(mm.intermediate_device())  # [B,H,W]
        native = prediction.values.to(mm.intermediate_device())  # [B,1,H,W]
        depth_map = DepthMap(native, prediction.quantity, lotus_model.core.name, processing_resolution)
        return io.NodeOutput(control[..., None].repeat(1, 1, 1, 3), control, native[:, 0], depth_map)


class LotusNormals(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LotusDepth_Normals",
            display_name="Lotus Normals",
            category="image/depth/lotus",
            description="Single-step Lotus surface normals from a Lotus normal checkpoint.",
            inputs=_inputs(),
            outputs=[io.Image.Output(display_name="normal_map",
                                     tooltip="Unit normals as RGB = (n + 1) / 2: R = left, G = up,"
                                             " B = towards the viewer (the Lotus/DSINE convention).")],
        )

    @classmethod
    def execute(cls, lotus_model, image, processing_resolution, seed, noise, chunk_size) -> io.NodeOutput:
        _require(lotus_model, {Quantity.NORMAL}, "Lotus Normals", "Lotus Depth")
        prediction = _predict(lotus_model, image, processing_resolution, seed, noise, chunk_size)
        normal_map = normals_to_image(prediction).movedim(1, -1).to(mm.intermediate_device())
        return io.NodeOutput(normal_map)
