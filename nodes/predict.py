"""The "Lotus Depth" and "Lotus Normals" nodes, and what every prediction node shares."""

from __future__ import annotations

import comfy.model_management as mm
import comfy.utils
import torch
from comfy_api.latest import io

from ..lotus_core import (
    DEFAULT_PROCESSING_RESOLUTION,
    DepthMap,
    LotusError,
    Quantity,
    activation_bytes,
    normals_to_image,
    predict,
    to_controlnet,
)
from .base import LotusNode, schema
from .comfy_model import ComfyLotusModel
from .loader import LotusModelType

# The native values plus their meaning (model, depth/disparity, processing resolution): a lotus_core.DepthMap.
LotusDepthMapType = io.Custom("LOTUSDEPTH_DEPTH")
NOISE_MODES = ("per image", "shared across batch")
DEPTH_QUANTITIES = {Quantity.DEPTH, Quantity.DISPARITY}
# The widget's largest processing size: one that runs (about 10 GB of activations in fp32); larger
# requests are refused by the core's memory check with the largest size that fits.
MAX_PROCESSING_RESOLUTION = 4096


def prediction_inputs(noise: bool = True) -> list:
    """The inputs every prediction node starts with (``noise`` only where members may differ)."""
    inputs = [
        LotusModelType.Input("lotus_model", tooltip="From the Load Lotus Model node."),
        io.Image.Input("image", tooltip="Images to analyse; an alpha channel is ignored. The output has"
                                        " exactly their size."),
        io.Int.Input("processing_resolution", default=DEFAULT_PROCESSING_RESOLUTION, min=0,
                     max=MAX_PROCESSING_RESOLUTION, step=8,
                     tooltip="Long edge the model sees (768 as the official Lotus). 0 = the image's own"
                             " size (slow and memory-hungry for large images). A size whose working memory"
                             " cannot fit is refused with the largest that does."),
        io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                     tooltip="Seed of the noise (Lotus-G) and of the VAE's latent sample."),
        io.Combo.Input("noise", options=list(NOISE_MODES), default=NOISE_MODES[0],
                       tooltip="One random draw (Lotus-G noise, VAE sample) per image, or one shared by the"
                               " whole batch: steadier across video frames."),
        io.Int.Input("chunk_size", default=0, min=0, max=256,
                     tooltip="Images per model pass: higher is faster on a GPU with memory to spare."
                             " 0 = as many as fit in free memory (one at a time on a CPU)."),
    ]
    return inputs if noise else [i for i in inputs if i.id != "noise"]


def depth_outputs() -> list:
    return [
        io.Image.Output(display_name="depth_image",
                        tooltip="ControlNet-ready depth: near = white, stretched to 0..1, 3 identical channels."),
        io.Mask.Output(display_name="depth_mask", tooltip="The same map as a MASK (near = 1)."),
        io.Mask.Output(display_name="native",
                       tooltip="The model's own output in 0..1, not stretched: depth (near = 0) for v1 depth"
                               " checkpoints, disparity (near = 1) for *-disparity ones."),
        LotusDepthMapType.Output(display_name="lotus_depth",
                                 tooltip="The native values with what they mean (model, depth or disparity,"
                                         " processing resolution), for the Save Depth, Colorize, Depth to"
                                         " Normals, Metric Depth and Point Cloud nodes."),
    ]


def core_images(image: torch.Tensor) -> torch.Tensor:
    """A ComfyUI IMAGE [B, H, W, 3 or 4] as the core's [B, 3, H, W] (alpha dropped)."""
    if image.shape[-1] not in (3, 4):
        raise LotusError(f"image must be an IMAGE batch [B, H, W, 3 or 4], got shape {tuple(image.shape)}")
    return image[..., :3].movedim(-1, 1)  # checked once, by the core's prediction


def prepare(model: ComfyLotusModel, images: torch.Tensor, processing_resolution: int, chunk_size: int,
            tile_size: int | None = None) -> dict:
    """Load the model with room for one chunk (auto, 0: room for one, the core fits the rest); the
    core's options that say how to run: chunks, ComfyUI's memory budget, progress bar and Cancel."""
    per_pass = min(chunk_size or 1, images.shape[0])
    need = activation_bytes(model.core, images.shape[-2:], processing_resolution, per_pass, tile_size=tile_size)
    budget = model.load(need)
    progress = comfy.utils.ProgressBar(1)
    return dict(chunk_size=chunk_size or None, memory_limit=budget,
                callback=progress.update_absolute,
                check_interrupt=mm.throw_exception_if_processing_interrupted)


def require(model: ComfyLotusModel, wanted: set[Quantity], node: type[LotusNode], other: str) -> None:
    """Refuse a checkpoint whose quantity ``node`` cannot use, naming the ``other`` node that can."""
    if model.core.quantity not in wanted:
        name = (node.SCHEMA or node.define_schema()).display_name
        raise LotusError(f"{model.core.name!r} predicts {model.core.quantity.value}; the {name} node needs a"
                         f" {' or '.join(sorted(q.value for q in wanted))} checkpoint. Use the {other} node.")


def depth_result(prediction: DepthMap, *extra: torch.Tensor, **normalisation) -> io.NodeOutput:
    """The depth nodes' outputs (see ``depth_outputs``), then ``extra`` [B, 1, H, W] maps as MASKs."""
    device = mm.intermediate_device()
    control = to_controlnet(prediction, **normalisation)[:, 0].to(device)  # [B,H,W]
    depth = prediction.with_values(prediction.values.to(device))  # [B,1,H,W]
    return io.NodeOutput(control[..., None].repeat(1, 1, 1, 3), control, depth.values[:, 0], depth,
                         *(e[:, 0].to(device) for e in extra))


def _predict(model: ComfyLotusModel, image, processing_resolution, seed, noise, chunk_size) -> DepthMap:
    images = core_images(image)
    options = prepare(model, images, processing_resolution, chunk_size)
    return predict(model.core, images, processing_resolution=processing_resolution, seed=seed,
                   shared_noise=noise == NOISE_MODES[1], **options)


class LotusDepth(LotusNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="LotusDepth_Depth",
            display_name="Lotus Depth",
            description="Single-step Lotus depth. The image output is ControlNet-ready (near = white)"
                        " whichever checkpoint polarity (depth or disparity) the model has.",
            inputs=prediction_inputs(),
            outputs=depth_outputs(),
        )

    @classmethod
    def execute(cls, lotus_model, image, processing_resolution, seed, noise, chunk_size) -> io.NodeOutput:
        require(lotus_model, DEPTH_QUANTITIES, cls, "Lotus Normals")
        prediction = _predict(lotus_model, image, processing_resolution, seed, noise, chunk_size)
        return depth_result(prediction)


class LotusNormals(LotusNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="LotusDepth_Normals",
            display_name="Lotus Normals",
            description="Single-step Lotus surface normals from a Lotus normal checkpoint.",
            inputs=prediction_inputs(),
            outputs=[io.Image.Output(display_name="normal_map",
                                     tooltip="Unit normals as RGB = (n + 1) / 2: R = left, G = up,"
                                             " B = towards the viewer (the Lotus/DSINE convention).")],
        )

    @classmethod
    def execute(cls, lotus_model, image, processing_resolution, seed, noise, chunk_size) -> io.NodeOutput:
        require(lotus_model, {Quantity.NORMAL}, cls, "Lotus Depth")
        prediction = _predict(lotus_model, image, processing_resolution, seed, noise, chunk_size)
        normal_map = normals_to_image(prediction).movedim(1, -1).to(mm.intermediate_device())
        return io.NodeOutput(normal_map)
