"""The empty-prompt FLUX conditioning: computed as diffusers' FluxPipeline computes it, cached with its provenance.

Tiny CLIP and T5 encoders of the real transformers classes with tiny tokenizers (lotus2_tiny.py).
"""

from __future__ import annotations

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline
from lotus2_tiny import clip_parts, t5_parts, write_text_encoders

from lotus_core import LotusError
from lotus_core.lotus2 import cached_empty_prompt, encode_empty_prompt, load_conditioning, save_conditioning

pytestmark = pytest.mark.core
T5_TOKENS = 16  # the official pipeline uses 512; the computation is the same


@torch.no_grad()
def test_matches_flux_pipeline_encode_prompt(tmp_path):
    clip_tokenizer, clip = clip_parts(tmp_path / "clip")
    t5_tokenizer, t5 = t5_parts(tmp_path / "t5")
    pipeline = FluxPipeline(FlowMatchEulerDiscreteScheduler(), None, clip, clip_tokenizer, t5, t5_tokenizer, None)
    embeds, pooled, _ = pipeline.encode_prompt("", prompt_2=None, device="cpu", max_sequence_length=T5_TOKENS)

    ours = encode_empty_prompt(clip_tokenizer, clip, t5_tokenizer, t5, max_sequence_length=T5_TOKENS)

    assert ours.prompt_embeds.shape == (1, T5_TOKENS, 32) and ours.pooled_prompt_embeds.shape == (1, 24)
    torch.testing.assert_close(ours.prompt_embeds, embeds, rtol=0, atol=0)
    torch.testing.assert_close(ours.pooled_prompt_embeds, pooled, rtol=0, atol=0)
    assert ours.provenance["prompt"] == "" and ours.provenance["t5_encoder"] == "T5EncoderModel"


@torch.no_grad()
def test_computed_once_then_read_from_the_cache(tmp_path):
    flux = write_text_encoders(tmp_path / "FLUX.1-dev")
    cache = tmp_path / "cache"

    first = cached_empty_prompt(flux, cache, max_sequence_length=T5_TOKENS)
    stored = list(cache.iterdir())
    assert len(stored) == 1 and first.provenance["flux_folder"] == str(flux.absolute())
    config = flux / "text_encoder_2" / "config.json"
    config.write_text("x" * config.stat().st_size)  # same size, not JSON: a second computation would now fail
    second = cached_empty_prompt(flux, cache, max_sequence_length=T5_TOKENS)
    torch.testing.assert_close(second.prompt_embeds, first.prompt_embeds, rtol=0, atol=0)
    assert second.provenance == first.provenance


def test_save_and_load(tmp_path):
    clip_tokenizer, clip = clip_parts(tmp_path / "clip")
    t5_tokenizer, t5 = t5_parts(tmp_path / "t5")
    conditioning = encode_empty_prompt(clip_tokenizer, clip, t5_tokenizer, t5, max_sequence_length=4,
                                       provenance={"encoders": "tiny test encoders"})
    save_conditioning(conditioning, tmp_path / "c.safetensors")
    loaded = load_conditioning(tmp_path / "c.safetensors")
    assert loaded.provenance == conditioning.provenance and loaded.provenance["encoders"] == "tiny test encoders"
    with pytest.raises(LotusError, match="does not exist"):
        load_conditioning(tmp_path / "missing.safetensors")
    with pytest.raises(LotusError, match="not a diffusers FLUX folder"):
        cached_empty_prompt(tmp_path, tmp_path / "cache")
