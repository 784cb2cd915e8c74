"""The empty-prompt FLUX conditioning that Lotus-2 always uses, computed once and cached with its provenance.

Lotus-2 encodes "" with FLUX's two text encoders, as diffusers' ``FluxPipeline.encode_prompt`` does:
CLIP's pooled output (77 tokens, padded) and T5's last hidden state (``max_sequence_length`` tokens,
padded; 512 in the official pipeline). The result is a constant per encoder pair, so it is computed
once from the user's own encoders and stored; no value is shipped that was not computed here.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import LotusError

T5_SEQUENCE_LENGTH = 512  # the official pipeline's max_sequence_length
CLIP_SEQUENCE_LENGTH = 77
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmptyPromptConditioning:
    """FLUX's encoding of "": T5 ``prompt_embeds`` [1, L, D] and CLIP ``pooled_prompt_embeds`` [1, P]."""

    prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor
    provenance: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.prompt_embeds.ndim != 3 or self.prompt_embeds.shape[0] != 1:
            raise LotusError(f"prompt_embeds must be [1, L, D], got {tuple(self.prompt_embeds.shape)}")
        if self.pooled_prompt_embeds.ndim != 2 or self.pooled_prompt_embeds.shape[0] != 1:
            raise LotusError(f"pooled_prompt_embeds must be [1, P], got {tuple(self.pooled_prompt_embeds.shape)}")


@torch.no_grad()
def encode_empty_prompt(clip_tokenizer, clip_encoder, t5_tokenizer, t5_encoder, *,
                        max_sequence_length: int = T5_SEQUENCE_LENGTH,
                        provenance: Mapping[str, str] | None = None) -> EmptyPromptConditioning:
    """Encode "" with a transformers CLIP text model and T5 encoder (and their tokenizers)."""
    clip_length = getattr(clip_tokenizer, "model_max_length", CLIP_SEQUENCE_LENGTH)
    clip_ids = clip_tokenizer("", padding="max_length", max_length=clip_length, truncation=True,
                              return_tensors="pt").input_ids
    pooled = clip_encoder(clip_ids.to(clip_encoder.device), output_hidden_states=False).pooler_output
    t5_ids = t5_tokenizer("", padding="max_length", max_length=max_sequence_length, truncation=True,
                          return_tensors="pt").input_ids
    embeds = t5_encoder(t5_ids.to(t5_encoder.device), output_hidden_states=False)[0]
    record = {"prompt": "", "t5_sequence_length": str(max_sequence_length),
              "clip_encoder": type(clip_encoder).__name__, "t5_encoder": type(t5_encoder).__name__,
              "computed_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              **(provenance or {})}
    return EmptyPromptConditioning(embeds.float().cpu(), pooled.float().cpu(), record)


def save_conditioning(conditioning: EmptyPromptConditioning, path: str | Path) -> None:
    """Write the two tensors to a safetensors file whose metadata holds the provenance."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tensors = {"prompt_embeds": conditioning.prompt_embeds.contiguous(),
               "pooled_prompt_embeds": conditioning.pooled_prompt_embeds.contiguous()}
    save_file(tensors, str(path), metadata={"provenance": json.dumps(dict(conditioning.provenance))})


def load_conditioning(path: str | Path) -> EmptyPromptConditioning:
    """A conditioning written by ``save_conditioning``."""
    path = Path(path)
    if not path.is_file():
        raise LotusError(f"conditioning file {str(path)!r} does not exist")
    from safetensors import safe_open

    with safe_open(str(path), "pt") as file:
        provenance = json.loads((file.metadata() or {}).get("provenance", "{}"))
    tensors = load_file(str(path))
    missing = {"prompt_embeds", "pooled_prompt_embeds"} - tensors.keys()
    if missing:
        raise LotusError(f"{str(path)!r} is not a Lotus-2 conditioning file: it lacks {sorted(missing)}")
    return EmptyPromptConditioning(tensors["prompt_embeds"], tensors["pooled_prompt_embeds"], provenance)


def cached_empty_prompt(flux_folder: str | Path, cache_dir: str | Path, *,
                        max_sequence_length: int = T5_SEQUENCE_LENGTH) -> EmptyPromptConditioning:
    """The empty-prompt conditioning of a diffusers FLUX folder's text encoders: read from ``cache_dir``
    when these encoders made it before, else computed (loading both encoders once) and stored there."""
    flux_folder = Path(flux_folder)
    fingerprint = _encoder_fingerprint(flux_folder, max_sequence_length)
    path = Path(cache_dir) / f"flux_empty_prompt_{fingerprint}.safetensors"
    if path.is_file():
        return load_conditioning(path)
    from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

    log.info("Lotus-2: encoding the empty prompt with the text encoders of %s (once)", flux_folder)
    conditioning = encode_empty_prompt(
        CLIPTokenizer.from_pretrained(flux_folder / "tokenizer"),
        CLIPTextModel.from_pretrained(flux_folder / "text_encoder"),
        T5TokenizerFast.from_pretrained(flux_folder / "tokenizer_2"),
        T5EncoderModel.from_pretrained(flux_folder / "text_encoder_2"),
        max_sequence_length=max_sequence_length,
        provenance={"flux_folder": str(flux_folder.absolute()), "encoder_fingerprint": fingerprint},
    )
    save_conditioning(conditioning, path)
    return conditioning


def _encoder_fingerprint(flux_folder: Path, max_sequence_length: int) -> str:
    """Names and sizes of the encoder and tokenizer files: a changed encoder gets a new cache entry."""
    parts = [str(max_sequence_length)]
    for sub in ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"):
        folder = flux_folder / sub
        if not folder.is_dir():
            raise LotusError(f"{str(flux_folder)!r} is not a diffusers FLUX folder: it has no {sub}/ folder")
        parts += [f"{sub}/{f.name}:{f.stat().st_size}" for f in sorted(folder.iterdir()) if f.is_file()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
