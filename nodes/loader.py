"""The "Load Lotus Model" node."""

from __future__ import annotations

import comfy.model_management as mm
import comfy.utils
import folder_paths
from comfy_api.latest import io

from ..lotus_core import BACKENDS, PRECISIONS, LotusError, Quantity, choose_dtypes, load_model
from .base import LotusNode, schema
from .comfy_model import ComfyLotusModel
from .model_files import FROM_CHECKPOINT_FOLDER, checkpoint_choices, checkpoint_path, checkpoints_on_disk, vae_choices

LotusModelType = io.Custom("LOTUSDEPTH_MODEL")
QUANTITIES = ("auto", *(q.value for q in Quantity))
DEFAULT_RELEASE = "lotus-depth-g-v2-1-disparity/"  # the Lotus authors' recommended depth model


class LoadLotusModel(LotusNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="LotusDepth_LoadModel",
            display_name="Load Lotus Model",
            category="loaders",
            description="Loads a Lotus depth/normal checkpoint (Lotus-G or Lotus-D) and an SD VAE.",
            inputs=[
                io.Combo.Input("checkpoint", options=checkpoint_choices(),
                               default=(checkpoints_on_disk() or [DEFAULT_RELEASE])[0],
                               tooltip="Lotus UNet file or diffusers folder, from models/lotus or "
                                       "models/diffusion_models. Only files holding a Lotus UNet are listed. "
                                       "Every published release is offered as <name>/: one not on disk yet is "
                                       "downloaded from Hugging Face on first run into models/lotus/<name>/ "
                                       "(about 3.7 GB, verified; progress bar; Cancel stops it)."),
                io.Combo.Input("vae", options=vae_choices(), default=FROM_CHECKPOINT_FOLDER,
                               tooltip="An SD1.x/SD2 VAE from models/vae (e.g. vae-ft-mse-840000-ema-pruned)."
                                       " Single-file checkpoints need one; diffusers folders bring their own."),
                io.Combo.Input("precision", options=list(PRECISIONS), default="auto",
                               tooltip="UNet weights precision. auto: fp16 or bf16 where the device runs them"
                                       " well, else fp32. fp16 needs a GPU (on a CPU it is refused: hundreds of"
                                       " times slower). The VAE never runs in fp16 (it overflows)."),
                io.Combo.Input("quantity", options=list(QUANTITIES), default="auto",
                               tooltip="What the checkpoint predicts. auto: known Lotus releases by name."
                                       " Set it for renamed or unknown files."),
                # last, and optional: saved workflows keep their widget order, older prompts still run
                io.Combo.Input("backend", options=list(BACKENDS), default="auto", optional=True,
                               tooltip="What runs the networks when ComfyUI computes on the CPU. openvino: about"
                                       " 1.4x faster than torch in fp32 and in bf16 (pip install"
                                       " 'lotus-depth[cpu-fast]'); converted once per checkpoint and cached on"
                                       " disk, each new size compiled on first use. eager: torch. auto: openvino"
                                       " where installed, else eager. On a GPU it is always eager."),
            ],
            outputs=[LotusModelType.Output(display_name="lotus_model",
                                           tooltip="The loaded model, for the Lotus Depth / Lotus Normals nodes.")],
        )

    @classmethod
    def validate_inputs(cls, checkpoint: str, vae: str) -> bool | str:
        # Naming these inputs here turns off ComfyUI's own check that they are among the options.
        if checkpoint not in checkpoint_choices():
            return (f"checkpoint {checkpoint!r} is not a Lotus checkpoint in models/lotus or models/diffusion_models,"
                    " nor a known Lotus release")
        if vae not in vae_choices():
            return f"vae {vae!r} is not a .safetensors file in models/vae"
        if vae == FROM_CHECKPOINT_FOLDER and not checkpoint.endswith("/"):
            return (f"checkpoint {checkpoint!r} holds only the UNet: choose an SD1.x/SD2 VAE in 'vae'"
                    " (e.g. vae-ft-mse-840000-ema-pruned.safetensors in models/vae)")
        return True

    @classmethod
    def execute(cls, checkpoint: str, vae: str, precision: str, quantity: str, backend: str = "auto") -> io.NodeOutput:
        compute_device = mm.get_torch_device()
        unet_dtype, vae_dtype = choose_dtypes(precision, compute_device)  # for where it will run
        if compute_device.type != "cpu" and backend != "eager":
            # the model is loaded to the offload device (the CPU) and runs where ComfyUI moves it
            if backend == "openvino":
                raise LotusError(f"backend='openvino' runs on the CPU, and ComfyUI computes on {compute_device};"
                                 " choose 'auto' or 'eager'")
            backend = "eager"
        vae_path = None if vae == FROM_CHECKPOINT_FOLDER else folder_paths.get_full_path_or_raise("vae", vae)
        progress = comfy.utils.ProgressBar(1)

        def on_download(done: int, total: int) -> None:
            mm.throw_exception_if_processing_interrupted()
            progress.update_absolute(done, total)

        core = load_model(
            checkpoint_path(checkpoint, on_download),
            vae_path,
            quantity=None if quantity == "auto" else quantity,
            device=mm.unet_offload_device(),
            dtype=unet_dtype,
            vae_dtype=vae_dtype,
            backend=backend,
        )
        return io.NodeOutput(ComfyLotusModel.wrap(core))
