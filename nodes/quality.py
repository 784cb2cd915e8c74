"""Better-than-reference depth nodes: ensembles, seamless high resolution, flicker-free video."""

from __future__ import annotations

from comfy_api.latest import io

from ..lotus_core import (
    ALIGN_MODES,
    DEFAULT_LATENT_BLEND,
    DEFAULT_OVERLAP,
    DEFAULT_TILE_SIZE,
    REDUCTIONS,
    predict_ensemble,
    predict_tiled,
    predict_video,
)
from .base import LotusNode, schema
from .predict import DEPTH_QUANTITIES, core_images, depth_outputs, depth_result, prediction_inputs, prepare, require


class LotusDepthEnsemble(LotusNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="LotusDepth_DepthEnsemble",
            display_name="Lotus Depth (Ensemble)",
            description="Several Lotus predictions per image (noise draws and/or mirrored copies), aligned"
                        " and combined: steadier depth, plus a map of where the model is unsure.",
            inputs=[
                *prediction_inputs(noise=False),
                io.Int.Input("ensemble_size", default=4, min=1, max=64,
                             tooltip="Predictions per image. Lotus-G members differ by their noise; with"
                                     " 'flip', every second member sees the mirrored image."),
                io.Boolean.Input("flip", default=True,
                                 tooltip="Test-time augmentation: half the members see the mirrored image"
                                         " (works for Lotus-D too). Needs ensemble_size >= 2."),
                io.Combo.Input("reduction", options=list(REDUCTIONS), default=REDUCTIONS[0],
                               tooltip="How aligned members are combined: median resists outliers."),
            ],
            outputs=[*depth_outputs(),
                     io.Mask.Output(display_name="uncertainty",
                                    tooltip="Spread (standard deviation) of the aligned members, in the"
                                            " native map's units: 0 where all members agree.")],
        )

    @classmethod
    def execute(cls, lotus_model, image, processing_resolution, seed, chunk_size, ensemble_size, flip,
                reduction) -> io.NodeOutput:
        require(lotus_model, DEPTH_QUANTITIES, cls, "Lotus Normals")
        images = core_images(image)
        options = prepare(lotus_model, images, processing_resolution, chunk_size)
        prediction = predict_ensemble(lotus_model.core, images, ensemble_size=ensemble_size, flip=flip,
                                      reduction=reduction, processing_resolution=processing_resolution, seed=seed,
                                      **options)
        return depth_result(prediction, prediction.uncertainty)


class LotusDepthTiled(LotusNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="LotusDepth_DepthTiled",
            display_name="Lotus Depth (High-Res Tiled)",
            description="Depth at the image's full resolution: a global pass at processing_resolution sets the"
                        " layout, overlapping native-resolution tiles add the detail, aligned to it and blended"
                        " without seams.",
            inputs=[
                *prediction_inputs(noise=False),
                io.Int.Input("tile_size", default=DEFAULT_TILE_SIZE, min=32, max=4096, step=8,
                             tooltip="Tile edge in image pixels, processed at native resolution. Memory grows"
                                     " with it; 768 is what Lotus saw in training."),
                io.Int.Input("overlap", default=DEFAULT_OVERLAP, min=0, max=2040, step=8,
                             tooltip="Minimum overlap between neighbouring tiles, blended smoothly; must be"
                                     " less than half the tile size."),
            ],
            outputs=depth_outputs(),
        )

    @classmethod
    def execute(cls, lotus_model, image, processing_resolution, seed, chunk_size, tile_size,
                overlap) -> io.NodeOutput:
        require(lotus_model, DEPTH_QUANTITIES, cls, "Lotus Normals")
        images = core_images(image)
        options = prepare(lotus_model, images, processing_resolution, chunk_size, tile_size=tile_size)
        prediction = predict_tiled(lotus_model.core, images, tile_size=tile_size, overlap=overlap,
                                   processing_resolution=processing_resolution, seed=seed, **options)
        return depth_result(prediction)


class LotusDepthVideo(LotusNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="LotusDepth_DepthVideo",
            display_name="Lotus Depth (Video)",
            description="Depth for a batch of video frames without flicker: shared noise, the previous frame's"
                        " prediction blended into the next (Lotus-G), frame-to-frame alignment and one"
                        " normalisation for the whole sequence.",
            inputs=[
                *prediction_inputs(noise=False),
                io.Float.Input("latent_blend", default=DEFAULT_LATENT_BLEND, min=0.0, max=0.9, step=0.05,
                               tooltip="Lotus-G: share of the previous frame's prediction in the next frame's"
                                       " noise (0.1 as the official demo; 0 = frames independent, faster)."
                                       " Blended frames run one per pass: chunk_size 0 or 1."),
                io.Combo.Input("align", options=list(ALIGN_MODES), default=ALIGN_MODES[0],
                               tooltip="Fit each frame's scale and shift to the previous frame, to the first"
                                       " frame, or not at all."),
                io.Float.Input("low_percentile", default=0.0, min=0.0, max=49.0, step=0.5,
                               tooltip="Sequence-wide black point of depth_image (percentile of all frames)."),
                io.Float.Input("high_percentile", default=100.0, min=51.0, max=100.0, step=0.5,
                               tooltip="Sequence-wide white point of depth_image (percentile of all frames)."),
            ],
            outputs=depth_outputs(),
        )

    @classmethod
    def execute(cls, lotus_model, image, processing_resolution, seed, chunk_size, latent_blend, align,
                low_percentile, high_percentile) -> io.NodeOutput:
        require(lotus_model, DEPTH_QUANTITIES, cls, "Lotus Normals")
        frames = core_images(image)
        options = prepare(lotus_model, frames, processing_resolution, chunk_size)
        prediction = predict_video(lotus_model.core, frames, latent_blend=latent_blend, align=align,
                                   processing_resolution=processing_resolution, seed=seed, **options)
        return depth_result(prediction, low=low_percentile, high=high_percentile, per_image=False)


NODES = [LotusDepthEnsemble, LotusDepthTiled, LotusDepthVideo]
