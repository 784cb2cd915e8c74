"""Lotus-2 on the user's FLUX.1-dev: "Load Lotus-2", "Lotus-2 Depth" and "Lotus-2 Normals".

The FLUX MODEL and VAE come from ComfyUI's own loaders (any format ComfyUI or a loader pack reads:
fp16/bf16/fp8 safetensors, GGUF). The release's two LoRAs become two clones of that MODEL, patched
through ComfyUI's LoRA key mapping, so ComfyUI loads, patches and offloads the weights; the steps
between the passes (resizing, posterior sample, LCM, the sharpener's Euler steps) are lotus_core's.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

import comfy.lora
import comfy.model_base
import comfy.model_management as mm
import comfy.model_patcher
import comfy.sd
import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io

from ..lotus_core import (
    LOTUS2_CORE_ADAPTER,
    LOTUS2_GUIDANCE,
    LOTUS2_MAX_EDGE,
    LOTUS2_SHARPENER_STEPS,
    LOTUS2_TASK_QUANTITY,
    LOTUS2_TASKS,
    DepthMap,
    EmptyPromptConditioning,
    LotusError,
    Quantity,
    fetch_lotus2,
    load_conditioning,
    lotus2_flow,
    lotus2_resize,
    lotus2_values,
    normals_to_image,
    posterior_sample,
    read_lcm,
    read_lora,
    save_conditioning,
)
from .base import LotusNode, schema
from .model_files import LOTUS_FOLDER
from .predict import core_images, depth_outputs, depth_result

Lotus2ModelType = io.Custom("LOTUSDEPTH_LOTUS2")
RELEASE_FOLDER = "Lotus-2"  # models/lotus/Lotus-2: the release files, and the cached conditioning
CONDITIONING_FILE = "flux_empty_prompt.safetensors"
MAX_SHARPENER_STEPS = 50


@dataclass(frozen=True)
class ComfyLotus2:
    """What Load Lotus-2 hands to the prediction nodes: the two patched clones and the rest."""

    task: str
    core: comfy.model_patcher.ModelPatcher  # the FLUX MODEL + the core predictor LoRA
    sharpener: comfy.model_patcher.ModelPatcher  # the FLUX MODEL + the detail sharpener LoRA
    vae: comfy.sd.VAE
    lcm: torch.nn.Module
    conditioning: EmptyPromptConditioning

    @property
    def quantity(self) -> Quantity:
        return LOTUS2_TASK_QUANTITY[self.task]

    @property
    def name(self) -> str:
        return f"lotus-2-{self.task}"


def release_folder() -> Path:
    return Path(folder_paths.get_folder_paths(LOTUS_FOLDER)[0]) / RELEASE_FOLDER


class LoadLotus2(LotusNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="LotusDepth_LoadLotus2",
            display_name="Load Lotus-2",
            category="loaders",
            description="Lotus-2 (FLUX-based depth and normals) on your FLUX.1-dev: the release's core predictor"
                        " and detail sharpener LoRAs are applied to the MODEL through ComfyUI's LoRA patching.",
            inputs=[
                io.Model.Input("model", tooltip="FLUX.1-dev, from Load Diffusion Model (fp16, bf16, fp8) or a"
                                                " GGUF loader."),
                io.Vae.Input("vae", tooltip="The FLUX VAE (ae.safetensors), from Load VAE."),
                io.Combo.Input("task", options=list(LOTUS2_TASKS), default="depth",
                               tooltip="Which release files to use. Missing files are downloaded from"
                                       " jingheya/Lotus-2 into models/lotus/Lotus-2 on first run."),
                io.Conditioning.Input("empty_prompt", optional=True,
                                      tooltip="CLIP Text Encode of an EMPTY text with FLUX's text encoders"
                                              " (DualCLIPLoader: t5xxl + clip_l, type flux). Connect it once: it"
                                              " is stored in models/lotus/Lotus-2 and used when left out."),
            ],
            outputs=[Lotus2ModelType.Output(display_name="lotus2_model",
                                            tooltip="For the Lotus-2 Depth and Lotus-2 Normals nodes.")],
        )

    @classmethod
    def execute(cls, model, vae, task, empty_prompt=None) -> io.NodeOutput:
        _require_flux(model)
        _require_flux_vae(vae)
        config = model.model.model_config.unet_config
        conditioning = _conditioning(empty_prompt, (config["context_in_dim"], config.get("vec_in_dim")))
        progress = comfy.utils.ProgressBar(1)
        files = fetch_lotus2(task, local_dir=release_folder(),
                             progress=lambda done, total: progress.update_absolute(done, max(total, 1)))
        core, sharpener = (_patched(model, read_lora(path), task)
                           for path in (files.core_predictor, files.detail_sharpener))
        lcm = read_lcm(files.lcm, config["in_channels"])
        return io.NodeOutput(ComfyLotus2(task, core, sharpener, vae, lcm, conditioning))


def _require_flux(model) -> None:
    inner = getattr(model, "model", None)
    config = getattr(getattr(inner, "model_config", None), "unet_config", {}) or {}
    if type(inner) is not comfy.model_base.Flux or config.get("image_model") != "flux":
        kind = type(inner).__name__ if inner is not None else type(model).__name__
        raise LotusError(f"model is a {kind} model; Lotus-2 LoRAs are made for FLUX.1-dev: load it with Load"
                         " Diffusion Model (or a GGUF loader) and connect that MODEL")
    if not config.get("guidance_embed"):
        raise LotusError("model is a FLUX model without a guidance input (FLUX.1-schnell?); Lotus-2 is made for"
                         " FLUX.1-dev")


def _require_flux_vae(vae) -> None:
    if not isinstance(vae, comfy.sd.VAE) or vae.latent_channels != 16 or not hasattr(vae.first_stage_model, "encoder"):
        channels = getattr(vae, "latent_channels", None)
        raise LotusError(f"vae must be the FLUX VAE (16 latent channels, ae.safetensors), got one with {channels}"
                         " latent channels")


def _patched(model, lora, task: str) -> comfy.model_patcher.ModelPatcher:
    """A clone of ``model`` carrying ``lora`` at strength 1, every tensor of it mapped by ComfyUI."""
    lora.require_task(task)
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    unmapped = [m for m in lora.modules if f"transformer.{m}" not in key_map]
    if unmapped:
        raise LotusError(f"{lora.source}: ComfyUI maps {len(unmapped)} of its {len(lora.modules)} layers to no"
                         f" weight of this model (e.g. {unmapped[0]!r}); Lotus-2 LoRAs are made for FLUX.1-dev")
    patches = comfy.lora.load_lora(lora.state_dict, {f"transformer.{m}": key_map[f"transformer.{m}"]
                                                     for m in lora.modules})
    clone = model.clone()
    applied = clone.add_patches(patches, 1.0)
    if len(applied) != len(patches):
        raise LotusError(f"{lora.source}: only {len(applied)} of {len(patches)} patches fit this model's weights")
    return clone


def _conditioning(empty_prompt, widths: tuple[int, int]) -> EmptyPromptConditioning:
    """The connected conditioning (stored for later runs), else the stored one; checked against the
    model's text ``widths`` (T5, CLIP pooled)."""
    path = release_folder() / CONDITIONING_FILE
    if empty_prompt is None:
        if not path.is_file():
            raise LotusError(
                "Lotus-2 needs FLUX's encoding of the empty prompt once: connect CLIP Text Encode with an empty text"
                " (DualCLIPLoader: t5xxl + clip_l, type flux) to 'empty_prompt'. It is then stored in"
                f" {path} and the text encoders are not needed again."
            )
        conditioning = load_conditioning(path)
    else:
        if not empty_prompt or "pooled_output" not in empty_prompt[0][1]:
            raise LotusError("empty_prompt has no pooled output: encode it with FLUX's text encoders (type flux)")
        conditioning = EmptyPromptConditioning(
            empty_prompt[0][0][:1].float().cpu(), empty_prompt[0][1]["pooled_output"][:1].float().cpu(),
            {"source": "the empty_prompt input of Load Lotus-2 (ComfyUI CONDITIONING from the user's text encoders)",
             "stored_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
    found = conditioning.prompt_embeds.shape[-1], conditioning.pooled_prompt_embeds.shape[-1]
    if found != widths:
        where = "empty_prompt" if empty_prompt is not None else str(path)
        raise LotusError(f"{where} has text widths {found} (T5, CLIP pooled) but this FLUX model takes {widths}:"
                         " encode the empty text with FLUX's text encoders (DualCLIPLoader: t5xxl + clip_l,"
                         " type flux)")
    if empty_prompt is not None:
        os.makedirs(path.parent, exist_ok=True)
        save_conditioning(conditioning, path)
    return conditioning


def prediction_inputs() -> list:
    return [
        Lotus2ModelType.Input("lotus2_model", tooltip="From the Load Lotus-2 node."),
        io.Image.Input("image", tooltip="Images to analyse; an alpha channel is ignored. The output has exactly"
                                        " their size."),
        io.Int.Input("processing_resolution", default=LOTUS2_MAX_EDGE, min=0, max=4096, step=16,
                     tooltip="Cap on the long edge the model sees (1024 as the official script; smaller images are"
                             " not upscaled). Edges are then truncated to multiples of 16. 0 = no cap."),
        io.Int.Input("sharpener_steps", default=LOTUS2_SHARPENER_STEPS, min=0, max=MAX_SHARPENER_STEPS,
                     tooltip="Detail sharpener steps after the core prediction (10 as the official script;"
                             " 0 = core predictor only, the fastest). Each costs one FLUX pass."),
        io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                     tooltip="Seed of the VAE's latent sample."),
    ]


def predict_comfy(lotus2: ComfyLotus2, image: torch.Tensor, processing_resolution: int, sharpener_steps: int,
                  seed: int) -> DepthMap:
    """The official steps with ComfyUI's VAE and patched FLUX clones (lotus_core does the rest)."""
    images = core_images(image)
    batch, height, width = images.shape[0], *images.shape[-2:]
    progress = comfy.utils.ProgressBar(batch * (1 + sharpener_steps))
    values = []
    for index in range(batch):  # one image at a time, as the official script: FLUX passes are large
        def step_done(done: int, total: int, index=index) -> None:
            progress.update_absolute(index * total + done, batch * total)
            mm.throw_exception_if_processing_interrupted()

        pixels = lotus2_resize(images[index:index + 1].float() * 2 - 1, processing_resolution)
        mean, std = _posterior(lotus2.vae, pixels)
        latent = lotus2.core.model.process_latent_in(posterior_sample(mean, std, seed))
        velocity = _Velocity(lotus2, 1)
        latent = lotus2_flow(velocity, lotus2.lcm.to(velocity.device, velocity.dtype), latent.to(velocity.device),
                             sharpener_steps, step_done)
        decoded = lotus2.vae.decode(lotus2.core.model.process_latent_out(latent.float())).movedim(-1, 1)
        values.append(lotus2_values(decoded.to(images.device), (height, width), lotus2.quantity))
    return DepthMap(torch.cat(values), lotus2.quantity, model=lotus2.name,
                    processing_resolution=max(pixels.shape[-2:]))


def _posterior(vae: comfy.sd.VAE, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of the VAE's posterior for ``pixels`` in [-1, 1] (ComfyUI's own
    encode returns the mean only; Lotus-2 samples, as the official pipeline)."""
    mm.load_models_gpu([vae.patcher])
    engine = vae.first_stage_model
    with torch.no_grad():
        moments = engine.encoder(pixels.to(vae.device, vae.vae_dtype))
        if getattr(engine, "quant_conv", None) is not None:
            moments = engine.quant_conv(moments)
    mean, logvar = moments.float().cpu().chunk(2, dim=1)
    return mean, torch.exp(0.5 * logvar.clamp(-30.0, 20.0))


class _Velocity:
    """One pass of the patched clone of an adapter, loaded by ComfyUI (which swaps the LoRA patches)."""

    def __init__(self, lotus2: ComfyLotus2, batch: int) -> None:
        base = lotus2.core.model
        self.lotus2, self.batch = lotus2, batch
        self.device, self.dtype = lotus2.core.load_device, base.manual_cast_dtype or base.get_dtype()
        conditioning = lotus2.conditioning
        self.context = conditioning.prompt_embeds.to(self.device, self.dtype).expand(batch, -1, -1)
        self.pooled = conditioning.pooled_prompt_embeds.to(self.device, self.dtype).expand(batch, -1)
        self.guidance = torch.full((batch,), LOTUS2_GUIDANCE, device=self.device, dtype=self.dtype)

    def __call__(self, latent: torch.Tensor, adapter: str, timestep: float) -> torch.Tensor:
        mm.throw_exception_if_processing_interrupted()
        patcher = self.lotus2.core if adapter == LOTUS2_CORE_ADAPTER else self.lotus2.sharpener
        mm.load_models_gpu([patcher])
        timesteps = torch.full((self.batch,), timestep, device=self.device, dtype=self.dtype)
        with torch.no_grad():
            return patcher.model.diffusion_model(latent.to(self.device, self.dtype), timesteps, self.context,
                                                 y=self.pooled, guidance=self.guidance, transformer_options={})


def _require_task(lotus2: ComfyLotus2, task: str, node: str, other: str) -> None:
    if lotus2.task != task:
        raise LotusError(f"lotus2_model was loaded for {lotus2.task}; the {node} node needs one loaded with"
                         f" task={task}. Use the {other} node, or set task={task} in Load Lotus-2.")


class Lotus2Depth(LotusNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="LotusDepth_Lotus2Depth",
            display_name="Lotus-2 Depth",
            description="Lotus-2 depth (disparity-like: near = high). The image output is ControlNet-ready"
                        " (near = white).",
            inputs=prediction_inputs(),
            outputs=depth_outputs(),
        )

    @classmethod
    def execute(cls, lotus2_model, image, processing_resolution, sharpener_steps, seed) -> io.NodeOutput:
        _require_task(lotus2_model, "depth", "Lotus-2 Depth", "Lotus-2 Normals")
        return depth_result(predict_comfy(lotus2_model, image, processing_resolution, sharpener_steps, seed))


class Lotus2Normals(LotusNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="LotusDepth_Lotus2Normals",
            display_name="Lotus-2 Normals",
            description="Lotus-2 surface normals.",
            inputs=prediction_inputs(),
            outputs=[io.Image.Output(display_name="normal_map",
                                     tooltip="Unit normals as RGB = (n + 1) / 2 (the Lotus convention:"
                                             " R = left, G = up, B = towards the viewer).")],
        )

    @classmethod
    def execute(cls, lotus2_model, image, processing_resolution, sharpener_steps, seed) -> io.NodeOutput:
        _require_task(lotus2_model, "normal", "Lotus-2 Normals", "Lotus-2 Depth")
        prediction = predict_comfy(lotus2_model, image, processing_resolution, sharpener_steps, seed)
        return io.NodeOutput(normals_to_image(prediction).movedim(1, -1).to(mm.intermediate_device()))


NODES = [LoadLotus2, Lotus2Depth, Lotus2Normals]
