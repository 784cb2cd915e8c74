"""Lotus-2 in lotus_core against an independent re-statement of the official pipeline, on tiny random weights.

The re-statement (``official_steps`` below) follows shared/reference/lotus2_reference.md with plain
diffusers and peft calls, as the official infer.py and FluxPipeline-derived pipeline make them: a
LoraConfig over the official target modules with ``convert_unet_state_dict_to_peft`` and
``set_peft_model_state_dict``, FluxPipeline's own pack/unpack/ids helpers, ``calculate_shift``, and
``FlowMatchEulerDiscreteScheduler`` (FLUX.1-dev's config with num_train_timesteps=10) stepping.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline
from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps
from diffusers.utils import convert_unet_state_dict_to_peft
from lotus2_tiny import (
    TARGET_MODULES,
    random_lora,
    tiny_conditioning,
    tiny_flux_transformer,
    tiny_flux_vae,
    write_release,
)
from peft import LoraConfig, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from lotus_core import DepthMap, LotusError, Quantity
from lotus_core.lotus2 import (
    Lotus2Files,
    build_lotus2,
    file_names,
    lotus2_processing_size,
    predict_lotus2,
    read_lora,
)

pytestmark = pytest.mark.core
TOLERANCE = 1e-5
FLUX_DEV_SCHEDULER = {"base_image_seq_len": 256, "base_shift": 0.5, "max_image_seq_len": 4096, "max_shift": 1.15,
                      "shift": 3.0, "use_dynamic_shifting": True}


class OfficialLCM(torch.nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.lcm = torch.nn.Sequential(torch.nn.Conv2d(channels, channels * 2, 3, padding=1), torch.nn.GELU(),
                                       torch.nn.Conv2d(channels * 2, channels, 3, padding=1))

    def forward(self, x):
        return x + self.lcm(x)


def official_adapter(transformer, path, name, rank):
    transformer.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                       target_modules=list(TARGET_MODULES)), adapter_name=name)
    state_dict = {k.replace("transformer.", ""): v for k, v in load_file(str(path)).items()
                  if k.startswith("transformer.")}
    set_peft_model_state_dict(transformer, convert_unet_state_dict_to_peft(state_dict), adapter_name=name)


def official_model(transformer, files: Lotus2Files, rank):
    """infer.py's load_lora_and_lcm_weights: the two adapters and the LCM."""
    official_adapter(transformer, files.core_predictor, "core_predictor", rank)
    official_adapter(transformer, files.detail_sharpener, "detail_sharpener", rank)
    lcm = OfficialLCM(transformer.config.in_channels // 4)
    lcm.load_state_dict(load_file(str(files.lcm)))
    return transformer, lcm


def official_steps(transformer, lcm, vae, conditioning, rgb01, *, steps, seed, task, process_res=1024):
    """The official inference of one image, re-stated step by step (reference sections 1-8)."""
    rgb = rgb01 * 2 - 1
    height, width = rgb.shape[-2:]
    # 1. processing size: cap the long edge, then multiples of 16
    if max(height, width) > process_res:
        scale = process_res / max(height, width)
        rgb = F.interpolate(rgb, size=(int(height * scale), int(width * scale)), mode="bilinear", align_corners=False)
    h, w = rgb.shape[-2:]
    scale = (min(h, w) // 16) * 16 / min(h, w)
    rgb = F.interpolate(rgb, size=(int(h * scale) // 16 * 16, int(w * scale) // 16 * 16), mode="bilinear",
                        align_corners=False)
    batch, (ph, pw) = rgb.shape[0], rgb.shape[-2:]
    # 2. empty prompt
    prompt_embeds = conditioning.prompt_embeds.repeat(batch, 1, 1)
    pooled = conditioning.pooled_prompt_embeds.repeat(batch, 1)
    text_ids = torch.zeros(prompt_embeds.shape[1], 3)
    # 3. encode (posterior sample), shift and scale, pack
    z = vae.encode(rgb).latent_dist.sample(generator=torch.Generator().manual_seed(seed))
    z = (z - vae.config.shift_factor) * vae.config.scaling_factor
    channels, lh, lw = z.shape[1:]
    latents = FluxPipeline._pack_latents(z, batch, channels, lh, lw)
    image_ids = FluxPipeline._prepare_latent_image_ids(batch, lh // 2, lw // 2, "cpu", torch.float32)
    guidance = torch.full([1], 3.5, dtype=torch.float32).expand(batch)  # 4.

    def call(x, t):
        return transformer(hidden_states=x, timestep=t, guidance=guidance, pooled_projections=pooled,
                           encoder_hidden_states=prompt_embeds, txt_ids=text_ids, img_ids=image_ids,
                           return_dict=False)[0]

    # 5. core predictor at timestep 1/1000, unpack, LCM
    transformer.set_adapter("core_predictor")
    core = call(latents, torch.full([batch], 1.0) / 1000)
    core = lcm(FluxPipeline._unpack_latents(core, ph, pw, 8))
    latents = FluxPipeline._pack_latents(core, batch, channels, lh, lw)
    # 6. detail sharpener: Euler steps from the core prediction, no noise
    if steps:
        transformer.set_adapter("detail_sharpener")
        scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=10, **FLUX_DEV_SCHEDULER)
        mu = calculate_shift(latents.shape[1], 256, 4096, 0.5, 1.15)
        timesteps, _ = retrieve_timesteps(scheduler, steps, "cpu", sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
        for t in timesteps:
            velocity = call(latents, t.expand(batch).to(latents.dtype) / 1000)
            latents = scheduler.step(velocity, t, latents, return_dict=False)[0]
    # 7. decode, postprocess, resize back
    z = FluxPipeline._unpack_latents(latents, ph, pw, 8) / vae.config.scaling_factor + vae.config.shift_factor
    image = (vae.decode(z, return_dict=False)[0] / 2 + 0.5).clamp(0, 1)
    image = F.interpolate(image, size=(height, width), mode="bilinear", align_corners=False)
    # 8. depth = channel mean; normals = the three channels
    return image.mean(dim=1, keepdim=True) if task == "depth" else image


@pytest.fixture(scope="module")
def parts():
    transformer = tiny_flux_transformer()
    return transformer, tiny_flux_vae(), tiny_conditioning(transformer)


def _images(height, width, batch=1, seed=0):
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("task, steps, size, batch, cap", [
    ("depth", 3, (40, 56), 2, 1024),  # edges not multiples of 16: the resize in and out
    ("depth", 0, (32, 48), 1, 1024),  # core predictor and LCM only
    ("depth", 1, (40, 88), 1, 64),  # the long edge capped first
    ("normal", 2, (48, 32), 1, 1024),
])
@torch.no_grad()
def test_matches_official_steps(tmp_path, parts, task, steps, size, batch, cap):
    transformer, vae, conditioning = parts
    files = write_release(tmp_path, transformer, task)
    model = build_lotus2(copy.deepcopy(transformer), vae, files, conditioning, task)
    images = _images(*size, batch)

    ours = predict_lotus2(model, images, sharpener_steps=steps, seed=7, processing_resolution=cap)
    official_transformer, lcm = official_model(copy.deepcopy(transformer), files, read_lora(files.core_predictor).rank)
    official = torch.cat([official_steps(official_transformer, lcm, vae, conditioning, images[i:i + 1], steps=steps,
                                         seed=7, task=task, process_res=cap) for i in range(batch)])

    assert isinstance(ours, DepthMap) and ours.values.shape[-2:] == size
    processed = (lotus2_processing_size(*size, cap) or [size])[-1]  # no resize: the image's own size
    assert ours.processing_resolution == max(processed)  # the long edge the model saw
    if task == "depth":
        assert ours.quantity is Quantity.DISPARITY
        difference = (ours.values - official).abs().max().item()
    else:
        assert ours.quantity is Quantity.NORMAL
        # DepthMap holds unit vectors, normalize(2x - 1): normalizing divides by lengths down to ~0.04 on random
        # weights, so compare in the official output's own units (our directions at the official lengths).
        vectors = official * 2 - 1
        difference = (ours.values * vectors.norm(dim=1, keepdim=True) - vectors).abs().max().item()
    assert difference <= TOLERANCE, f"max abs difference {difference:.3g}"


@torch.no_grad()
def test_adapters_and_sharpener_matter(tmp_path, parts):
    """Guards against a comparison that passes because a stage does nothing."""
    transformer, vae, conditioning = parts
    model = build_lotus2(copy.deepcopy(transformer), vae, write_release(tmp_path, transformer), conditioning, "depth")
    images = _images(32, 32)
    core_only = predict_lotus2(model, images, sharpener_steps=0).values
    sharpened = predict_lotus2(model, images, sharpener_steps=2).values
    other_seed = predict_lotus2(model, images, sharpener_steps=0, seed=1).values
    assert (core_only - sharpened).abs().max() > 1e-4
    assert (core_only - other_seed).abs().max() > 1e-6  # the posterior is sampled, as the official pipeline does
    other_release = write_release(tmp_path / "other", transformer, seed=5)
    other = build_lotus2(copy.deepcopy(transformer), vae, other_release, conditioning, "depth")
    assert (core_only - predict_lotus2(other, images, sharpener_steps=0).values).abs().max() > 1e-4


@torch.no_grad()
def test_an_image_gives_the_same_prediction_in_any_batch(tmp_path, parts):
    transformer, vae, conditioning = parts
    model = build_lotus2(copy.deepcopy(transformer), vae, write_release(tmp_path, transformer), conditioning, "depth")
    images = _images(32, 48, batch=2)
    together = predict_lotus2(model, images, sharpener_steps=1, seed=3).values
    alone = predict_lotus2(model, images[1:], sharpener_steps=1, seed=3).values
    torch.testing.assert_close(together[1:], alone, rtol=0, atol=1e-6)


def test_processing_size_rule():
    assert lotus2_processing_size(480, 640) == []  # multiples of 16 under the cap: processed as they are
    assert lotus2_processing_size(500, 700) == [(496, 688)]  # short edge down to 496, long edge scaled and truncated
    assert lotus2_processing_size(40, 56) == [(32, 32)]
    assert lotus2_processing_size(1536, 2048) == [(768, 1024)]  # long edge capped at 1024, never upscaled
    assert lotus2_processing_size(2000, 3000, max_edge=0) == [(2000, 2992)]
    with pytest.raises(LotusError, match="16 px"):
        lotus2_processing_size(12, 64)


def test_progress_and_cancel(tmp_path, parts):
    transformer, vae, conditioning = parts
    model = build_lotus2(copy.deepcopy(transformer), vae, write_release(tmp_path, transformer), conditioning, "depth")
    seen = []
    predict_lotus2(model, _images(32, 32, batch=2), sharpener_steps=2,
                   callback=lambda done, total: seen.append((done, total)))
    assert seen == [(done, 6) for done in range(1, 7)]  # per transformer pass, over the batch

    class Cancelled(Exception):
        pass

    def cancel():
        raise Cancelled

    with pytest.raises(Cancelled):
        predict_lotus2(model, _images(32, 32), check_interrupt=cancel)


def test_normal_lora_where_depth_is_asked(tmp_path, parts):
    transformer, vae, conditioning = parts
    files = write_release(tmp_path, transformer, "normal")
    depth_names = Lotus2Files(*(tmp_path / name for name in file_names("depth")))
    for normal, depth in zip((files.core_predictor, files.detail_sharpener, files.lcm),
                             (depth_names.core_predictor, depth_names.detail_sharpener, depth_names.lcm)):
        normal.rename(depth)  # a normal LoRA under the depth name: its rank still tells it apart
    with pytest.raises(LotusError, match=r"normal LoRA \(rank 256\) but depth was asked"):
        build_lotus2(copy.deepcopy(transformer), vae, depth_names, conditioning, "depth")


@torch.no_grad()
def test_older_diffusers_lora_names_and_alpha_tensors_are_read_as_the_official_loader_reads_them(tmp_path, parts):
    transformer, vae, conditioning = parts
    files = write_release(tmp_path / "a", transformer)
    images = _images(32, 32)
    expected = predict_lotus2(build_lotus2(copy.deepcopy(transformer), vae, files, conditioning, "depth"), images,
                              sharpener_steps=1).values
    for path in (files.core_predictor, files.detail_sharpener):
        renamed = {k.replace(".lora_A.", ".lora.down.").replace(".lora_B.", ".lora.up."): v
                   for k, v in load_file(str(path)).items()}
        renamed.update({k.split(".lora.")[0] + ".alpha": torch.tensor(3.0) for k in renamed})  # ignored, as infer.py
        save_file(renamed, str(path))
    model = build_lotus2(copy.deepcopy(transformer), vae, files, conditioning, "depth")
    torch.testing.assert_close(predict_lotus2(model, images, sharpener_steps=1).values, expected, rtol=0, atol=0)


def test_missing_files(tmp_path, parts):
    transformer, vae, conditioning = parts
    files = write_release(tmp_path, transformer)
    files.lcm.unlink()
    with pytest.raises(LotusError, match="lotus-2_lcm_depth.safetensors"):
        build_lotus2(copy.deepcopy(transformer), vae, files, conditioning, "depth")


def test_lora_for_another_network(tmp_path, parts):
    transformer, vae, conditioning = parts
    files = write_release(tmp_path, transformer)
    wider = tiny_flux_transformer(num_attention_heads=3)
    save_file(random_lora(wider, 128, 0), str(files.core_predictor))
    with pytest.raises(LotusError, match="does not fit this transformer"):
        build_lotus2(copy.deepcopy(transformer), vae, files, conditioning, "depth")
    save_file({"lora_unet_down.weight": torch.zeros(2, 2)}, str(files.core_predictor))  # an SD LoRA (kohya keys)
    with pytest.raises(LotusError, match="not a Lotus-2 LoRA"):
        build_lotus2(copy.deepcopy(transformer), vae, files, conditioning, "depth")


@torch.no_grad()
def test_bad_images_and_options(tmp_path, parts):
    transformer, vae, conditioning = parts
    model = build_lotus2(copy.deepcopy(transformer), vae, write_release(tmp_path, transformer), conditioning, "depth")
    with pytest.raises(LotusError, match=r"\[B, 3, H, W\]"):
        predict_lotus2(model, torch.rand(1, 32, 32))
    with pytest.raises(LotusError, match="sharpener_steps=-1"):
        predict_lotus2(model, _images(32, 32), sharpener_steps=-1)
    with pytest.raises(LotusError, match="the conditioning"):
        build_lotus2(copy.deepcopy(transformer), vae, write_release(tmp_path / "b", transformer),
                     type(conditioning)(torch.zeros(1, 4, 7), torch.zeros(1, 24)), "depth")
