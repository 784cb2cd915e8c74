"""A loaded Lotus model: the two networks plus what their output means."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import load_file

from ..errors import LotusError
from ..runtime.networks import ConvertedUNet
from .architecture import LATENT_CHANNELS, TASK_SWITCH_DIM
from .variants import Quantity, coerce_quantity

# lotus_core, wherever it is imported from (inside ComfyUI it is <pack folder>.lotus_core).
CORE_PACKAGE = __name__.rsplit(".", 2)[0]


@lru_cache(maxsize=1)
def empty_prompt_embeds() -> torch.Tensor:
    """SD2's text encoding of the empty prompt, [1, 2, 1024]: Lotus' constant conditioning.

    Lotus froze the SD2 text encoder and always feeds it "" without padding (BOS + EOS), so its
    output is a constant and no CLIP model needs to be loaded. Provenance: assets/README.md.
    """
    path = resources.files(CORE_PACKAGE) / "assets" / "empty_prompt_embeds_sd2.safetensors"
    with resources.as_file(path) as file:
        return load_file(file)["prompt_embeds"]


@dataclass
class LotusModel:
    """A Lotus UNet, an SD VAE, and the quantity the pair predicts.

    Any diffusers ``UNet2DConditionModel`` / ``AutoencoderKL`` of the Lotus layout can be wrapped
    directly, e.g. ``LotusModel(unet, vae, "depth")``. ``prompt_embeds`` defaults to the shipped
    SD2 empty-prompt embedding; pass another only for UNets with a different text width.
    ``backend`` says what runs the networks: "eager" (torch) or "openvino" (``use_backend``).
    """

    unet: UNet2DConditionModel | ConvertedUNet
    vae: AutoencoderKL
    quantity: Quantity
    prompt_embeds: torch.Tensor = field(default_factory=empty_prompt_embeds)
    name: str = "lotus"
    backend: str = field(default="eager", init=False)

    def __post_init__(self) -> None:
        self.quantity = coerce_quantity(self.quantity)
        if not isinstance(self.unet, UNet2DConditionModel | ConvertedUNet):
            raise LotusError(f"unet must be a diffusers UNet2DConditionModel, got {type(self.unet).__name__}")
        if not isinstance(self.vae, AutoencoderKL):
            raise LotusError(f"vae must be a diffusers AutoencoderKL, got {type(self.vae).__name__}")
        if isinstance(self.unet, ConvertedUNet):  # networks taken from a converted model
            self.backend = self.unet.backend
        config = self.unet.config
        if config.class_embed_type != "projection" or config.projection_class_embeddings_input_dim != TASK_SWITCH_DIM:
            raise LotusError("unet is not a Lotus UNet: it needs class_embed_type='projection' with input dim 4")
        if config.in_channels not in (LATENT_CHANNELS, 2 * LATENT_CHANNELS) or config.out_channels != LATENT_CHANNELS:
            raise LotusError(f"unet has {config.in_channels} input channels; Lotus-D has 4, Lotus-G 8")
        if self.vae.config.latent_channels != LATENT_CHANNELS:
            raise LotusError(f"vae has {self.vae.config.latent_channels} latent channels; Lotus needs 4")
        width = self.prompt_embeds.shape[-1]
        if self.prompt_embeds.ndim != 3 or width != config.cross_attention_dim:
            raise LotusError(
                f"prompt_embeds of shape {tuple(self.prompt_embeds.shape)} do not fit a UNet with"
                f" cross_attention_dim {config.cross_attention_dim};"
                f" expected [1, tokens, {config.cross_attention_dim}]"
            )

    @property
    def generative(self) -> bool:
        """Lotus-G (image latent + noise latent in) rather than Lotus-D (image latent only)."""
        return self.unet.config.in_channels == 2 * LATENT_CHANNELS

    @property
    def device(self) -> torch.device:
        return self.unet.device

    def compile(self, **options) -> LotusModel:
        """Compile the UNet and the VAE's encoder and decoder with ``torch.compile`` (opt-in), in place.

        The first prediction at each new size pays the compilation (minutes on a CPU); later ones
        run the fused kernels. Inductor keeps its kernels in a cache on disk
        (``TORCHINDUCTOR_CACHE_DIR``, by default under /tmp), so a warm cache makes the next process
        start much faster: keep that folder between runs. ``options`` go to ``torch.compile``.
        """
        self._refuse_if_converted("compile()")
        for module in (self.unet, self.vae.encoder, self.vae.decoder):
            module.compile(**options)
        return self

    def to(self, device=None, dtype=None, vae_dtype=None) -> LotusModel:
        """Move both networks (in place) and return self."""
        if self.backend != "eager" and (device is not None and torch.device(device).type != "cpu"
                                        or dtype is not None or vae_dtype is not None):
            self._refuse_if_converted(f"to(device={device!r}, dtype={dtype!r}, vae_dtype={vae_dtype!r})")
        self.unet.to(device=device, dtype=dtype)
        self.vae.to(device=device, dtype=vae_dtype or dtype)
        return self

    def use_backend(self, backend: str = "auto") -> LotusModel:
        """Run the networks on ``backend`` from now on (in place) and return self.

        "openvino" (the optional extra ``lotus-depth[cpu-fast]``) converts the UNet and the VAE's
        encoder and decoder once for these weights, keeps them in a cache on disk
        (``$LOTUS_RUNTIME_CACHE``, by default ~/.cache/lotus-depth/runtime) for later processes, compiles
        each new processing size on first use, and drops the torch copies. It runs on a CPU, in the
        weights' precision (fp32, or bf16 on CPUs that compute it natively). "auto" takes it where it
        can run, else stays "eager" (torch); the choice is logged, and a failed conversion stays eager
        with one warning. ``self.backend`` then names what runs the networks.
        """
        from ..runtime.backend import use_backend

        self.backend = use_backend(self, backend)
        return self

    def _refuse_if_converted(self, call: str) -> None:
        if self.backend != "eager":
            raise LotusError(f"{call}: this model's networks run on the {self.backend} backend (converted for the"
                             " CPU in their precision); load it again with backend='eager' to compile, move or"
                             " recast it")
