"""Which runtime runs a model's networks, and the swap of its torch networks for converted ones."""

from __future__ import annotations

import logging

import torch

from ..errors import LotusError, check_choice
from ..loading.precision import native_bf16
from . import openvino_ir
from .cache import cache_root, fingerprint
from .networks import ConvertedDecoder, ConvertedEncoder, ConvertedUNet, UNetArguments, time_features

log = logging.getLogger(__name__)

BACKENDS = ("auto", "eager", "openvino")
# Tracing sizes: a latent of odd height and width, so every UNet level has an odd size and the
# traced program takes its upsampling sizes from the skip connections, as every input size needs.
TRACE_LATENT = (13, 21)
# Changes when the converted programs' inputs change, so older cached programs are not taken for them
IR_LAYOUT = "unet-time-features-1"


def runtime_unavailable(model) -> str | None:
    """Why OpenVINO cannot run ``model``'s networks here, or None when it can."""
    if not openvino_ir.installed():
        return "needs the optional package openvino: pip install 'lotus-depth[cpu-fast]'"
    if model.device.type != "cpu":
        return f"runs on the CPU, and the model is on {model.device}"
    dtypes = {model.unet.dtype, model.vae.dtype}
    if not dtypes <= {torch.float32, torch.bfloat16}:
        return f"runs in fp32 or bf16, and the model's weights are {', '.join(map(str, sorted(dtypes, key=str)))}"
    if torch.bfloat16 in dtypes and not native_bf16():
        return "runs bf16 only on CPUs that compute it natively (AVX512_BF16 or AMX), and this one does not"
    return None


def use_backend(model, backend: str) -> str:
    """Run ``model``'s UNet and VAE encoder/decoder on ``backend`` from now on (in place); returns the
    backend that runs them: "eager" (torch) or "openvino".

    "auto" takes OpenVINO where it can run (installed, model on the CPU in fp32 or native bf16),
    measured faster than eager on every network (README: Faster on CPUs), else eager; the choice is
    logged. A conversion that fails leaves the torch networks in place, with one warning.
    """
    check_choice("backend", backend, BACKENDS)
    if model.backend == "openvino":
        if backend == "eager":
            raise LotusError("backend='eager': this model's torch networks were dropped when they were converted"
                             " for OpenVINO; load it again with backend='eager'")
        return "openvino"
    if backend == "eager":
        return "eager"
    reason = runtime_unavailable(model)
    if reason is not None:
        if backend == "openvino":
            raise LotusError(f"backend='openvino' {reason}")
        log.info("Lotus: backend auto → eager: OpenVINO %s", reason)
        return "eager"
    try:
        encoder, decoder, unet = _convert(model)
    except Exception as error:  # any converter failure: the torch networks still work
        log.warning("Lotus: converting %s for OpenVINO failed (%s: %s); running it with torch (eager) instead",
                    model.name, type(error).__name__, error)
        return "eager"
    model.vae.encoder, model.vae.decoder, model.unet = encoder, decoder, unet  # the torch copies go
    log.info("Lotus: backend %s → openvino %s (%s), converted networks cached in %s", backend,
             openvino_ir.version(), "bf16" if unet.dtype == torch.bfloat16 else "fp32", cache_root())
    return "openvino"


def _convert(model) -> tuple[ConvertedEncoder, ConvertedDecoder, ConvertedUNet]:
    """The three networks converted (or found in the cache), before anything of the model is replaced."""
    vae, unet = model.vae, model.unet
    height, width = TRACE_LATENT
    latent = torch.zeros(1, vae.config.latent_channels, height, width)
    pixels = torch.zeros(1, vae.config.in_channels, height * 8, width * 8)
    unet_inputs = (torch.zeros(1, unet.config.in_channels, height, width), time_features(unet.time_proj, 999, 1),
                   model.prompt_embeds.float(), torch.zeros(1, unet.config.projection_class_embeddings_input_dim))
    encoder = ConvertedEncoder(_compiled("vae-encoder", vae.encoder, (pixels,), vae.dtype), vae.dtype, "openvino")
    decoder = ConvertedDecoder(_compiled("vae-decoder", vae.decoder, (latent,), vae.dtype), vae.dtype, "openvino")
    converted_unet = ConvertedUNet(_compiled("unet", UNetArguments(unet), unet_inputs, unet.dtype), unet.dtype,
                                   "openvino", unet)
    return encoder, decoder, converted_unet


def _compiled(name: str, module: torch.nn.Module, example_inputs: tuple,
              dtype: torch.dtype) -> openvino_ir.CompiledNetwork:
    """``module`` as an OpenVINO network, converted only when its weights are not in the cache yet."""
    folder = cache_root() / f"{name}-{fingerprint(module, 'openvino', openvino_ir.version(), IR_LAYOUT)}"
    ir_file = folder / openvino_ir.IR_FILE
    if not ir_file.is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        log.info("Lotus: converting the %s for OpenVINO (once for these weights)", name)
        ir_file = openvino_ir.convert(module, example_inputs, folder)
    return openvino_ir.CompiledNetwork(ir_file, dtype)
