"""Tiny random-weight Lotus-2 parts of the real classes, and the release files written in the official format.

A FLUX transformer (diffusers ``FluxTransformer2DModel``, guidance-embedded like FLUX.1-dev) with one
double-stream and one single-stream block, a 16-channel FLUX-style VAE (shift and scale factors of
FLUX.1's), LoRAs of the official ranks over the official target modules under ``transformer.`` keys,
and an LCM state dict under the official names. Core fixture: imports nothing of ComfyUI.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, FluxTransformer2DModel
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5TokenizerFast

from lotus_core.lotus2 import EmptyPromptConditioning, Lotus2Files, file_names
from lotus_core.lotus2.releases import TASK_LORA_RANK

TINY_FLUX_CONFIG = {
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 1,
    "num_single_layers": 1,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": 32,
    "pooled_projection_dim": 24,
    "guidance_embeds": True,
    "axes_dims_rope": (4, 6, 6),
}
FLUX_VAE_FACTORS = {"scaling_factor": 0.3611, "shift_factor": 0.1159}  # FLUX.1's VAE config
TINY_FLUX_VAE_CONFIG = {
    "block_out_channels": (32, 32, 32, 32),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 1,
    "latent_channels": 16,
    "norm_num_groups": 32,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    **FLUX_VAE_FACTORS,
}
# The official LoRA target modules (infer.py), diffusers names; single-stream blocks have only the first three.
TARGET_MODULES = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
                  "attn.add_v_proj", "attn.to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj",
                  "ff_context.net.2")


def randomized(module: torch.nn.Module, seed: int, scale: float = 0.02) -> torch.nn.Module:
    """``module`` with noise on every weight: default inits leave some layers at zero (e.g. norm_out)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)
    return module.eval()


def tiny_flux_transformer(seed: int = 0, **overrides) -> FluxTransformer2DModel:
    torch.manual_seed(seed)
    return randomized(FluxTransformer2DModel(**{**TINY_FLUX_CONFIG, **overrides}), seed)


def tiny_flux_vae(seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(**TINY_FLUX_VAE_CONFIG).eval()


def tiny_conditioning(transformer: FluxTransformer2DModel, tokens: int = 8, seed: int = 0) -> EmptyPromptConditioning:
    """A random stand-in of the empty-prompt conditioning (its computation is tested on its own)."""
    generator = torch.Generator().manual_seed(seed)
    config = transformer.config
    return EmptyPromptConditioning(torch.randn(1, tokens, config.joint_attention_dim, generator=generator),
                                   torch.randn(1, config.pooled_projection_dim, generator=generator),
                                   {"source": "random test conditioning"})


def lora_modules(transformer: torch.nn.Module) -> list[str]:
    """The module names the official LoraConfig adapts in ``transformer``."""
    return [name for name, layer in transformer.named_modules()
            if isinstance(layer, torch.nn.Linear) and any(name.endswith("." + t) for t in TARGET_MODULES)]


def random_lora(transformer: torch.nn.Module, rank: int, seed: int, scale: float = 0.02) -> dict[str, torch.Tensor]:
    """A LoRA state dict as the release stores it: ``transformer.<module>.lora_A/B.weight``."""
    generator = torch.Generator().manual_seed(seed)
    layers = dict(transformer.named_modules())
    state_dict = {}
    for name in lora_modules(transformer):
        layer, key = layers[name], f"transformer.{name}"
        state_dict[f"{key}.lora_A.weight"] = torch.randn(rank, layer.in_features, generator=generator) * scale
        state_dict[f"{key}.lora_B.weight"] = torch.randn(layer.out_features, rank, generator=generator) * scale
    return state_dict


def random_lcm(channels: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shapes = {"lcm.0.weight": (2 * channels, channels, 3, 3), "lcm.0.bias": (2 * channels,),
              "lcm.2.weight": (channels, 2 * channels, 3, 3), "lcm.2.bias": (channels,)}
    return {key: torch.randn(shape, generator=generator) * 0.05 for key, shape in shapes.items()}


def write_release(folder: Path, transformer: torch.nn.Module, task: str = "depth", seed: int = 0,
                  rank: int | None = None) -> Lotus2Files:
    """The three release files of ``task`` in ``folder``, under their release names."""
    folder.mkdir(parents=True, exist_ok=True)
    rank = TASK_LORA_RANK[task] if rank is None else rank
    core, sharpener, lcm = (folder / name for name in file_names(task))
    save_file(random_lora(transformer, rank, seed), str(core))
    save_file(random_lora(transformer, rank, seed + 1), str(sharpener))
    save_file(random_lcm(transformer.config.in_channels // 4, seed + 2), str(lcm))
    return Lotus2Files(core, sharpener, lcm)


# ComfyUI's FLUX detection fixes 24 heads of width 128 (hidden size 3072) and the rope axes, and its VAE
# loader the FLUX VAE's layout; block counts and text widths it reads from the weights. So the
# ComfyUI-loadable model is FLUX.1's width with one block of each kind (0.53 B parameters, 2.1 GB in fp32).
# Its text widths are CLIP-L's (768), so that a CLIP-L that ComfyUI loads (comfy_clip_l) can encode its prompt.
COMFY_FLUX_CONFIG = {**TINY_FLUX_CONFIG, "attention_head_dim": 128, "num_attention_heads": 24,
                     "axes_dims_rope": (16, 56, 56), "joint_attention_dim": 768, "pooled_projection_dim": 768}
COMFY_FLUX_VAE_CONFIG = {**TINY_FLUX_VAE_CONFIG, "block_out_channels": (128, 256, 512, 512), "layers_per_block": 2}


def comfy_flux_transformer(seed: int = 0) -> FluxTransformer2DModel:
    torch.manual_seed(seed)
    return randomized(FluxTransformer2DModel(**COMFY_FLUX_CONFIG), seed, scale=0.01)


def comfy_flux_vae(seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(**COMFY_FLUX_VAE_CONFIG).eval()


def comfy_clip_l(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random CLIP-L text encoder (SD1.5's) as ComfyUI's CLIPLoader reads it: transformers' CLIPTextModel
    under ``text_model.`` keys (the file layout; transformers 5 names its modules without that prefix)."""
    torch.manual_seed(seed)
    encoder = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                           num_attention_heads=12, max_position_embeddings=77, vocab_size=49408))
    return {key if key.startswith("text_model.") else f"text_model.{key}": value.contiguous()
            for key, value in encoder.state_dict().items()}


def tiny_sd3_transformer(seed: int = 0) -> torch.nn.Module:
    """A model ComfyUI loads that is not FLUX (SD3's MMDiT; its detection reads the width from the weights)."""
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    return SD3Transformer2DModel(sample_size=32, patch_size=2, in_channels=16, out_channels=16, num_layers=2,
                                 attention_head_dim=64, num_attention_heads=2, joint_attention_dim=32,
                                 caption_projection_dim=128, pooled_projection_dim=24, pos_embed_max_size=32).eval()


# Tiny FLUX text encoders whose widths fit TINY_FLUX_CONFIG (T5: 32 = joint_attention_dim, CLIP pooled:
# 24 = pooled_projection_dim), with tokenizers built here: the real vocabularies cannot be downloaded,
# and the empty prompt uses only the special tokens anyway.
def clip_parts(folder):
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "b</w>": 3}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="<|endoftext|>",
                              model_max_length=77)
    torch.manual_seed(0)
    encoder = CLIPTextModel(CLIPTextConfig(vocab_size=4, hidden_size=24, intermediate_size=32, num_hidden_layers=1,
                                           num_attention_heads=2, projection_dim=24, bos_token_id=0, eos_token_id=1,
                                           pad_token_id=1)).eval()
    return tokenizer, encoder


def t5_parts(folder):
    folder.mkdir(parents=True, exist_ok=True)
    core = Tokenizer(models.Unigram([("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -1.0), ("a", -2.0)], 2))
    core.pre_tokenizer = pre_tokenizers.Metaspace()
    core.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    core.save(str(folder / "tokenizer.json"))
    tokenizer = T5TokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), eos_token="</s>", unk_token="<unk>",
                                pad_token="<pad>", extra_ids=0)
    torch.manual_seed(1)
    encoder = T5EncoderModel(T5Config(vocab_size=5, d_model=32, d_kv=8, d_ff=40, num_layers=1, num_heads=2,
                                      pad_token_id=0, eos_token_id=1)).eval()
    return tokenizer, encoder


def write_text_encoders(flux_folder: Path) -> Path:
    """The two tokenizers and encoders into a diffusers FLUX folder's tokenizer*/ and text_encoder*/."""
    sources = flux_folder.parent / f"{flux_folder.name}_tokenizer_sources"
    for sub, (tokenizer, encoder) in {"": clip_parts(sources / "clip"), "_2": t5_parts(sources / "t5")}.items():
        tokenizer.save_pretrained(flux_folder / f"tokenizer{sub}")
        encoder.save_pretrained(flux_folder / f"text_encoder{sub}")
    return flux_folder
