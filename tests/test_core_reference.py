"""The core against an independent re-statement of the official Lotus inference path.

`reference_predict` below restates the official pipeline (github.com/EnVision-Research/Lotus,
``pipeline.py`` LotusGPipeline / LotusDPipeline and ``infer.py``, as of commit 87fdca3, which added the
processing resolution) as a plain diffusers forward pass with its own text encoder (a tiny random
CLIPTextModel behind a real CLIPTokenizer): uint8 image -> [-1, 1] -> resize_max_res (long edge to the
processing resolution, sizes truncated, bilinear with antialias) -> VAE posterior x 0.18215 ->
[image latent, noise] (Lotus-G; Lotus-D: the image latent alone) -> UNet at t = 999 with the
annotation task switch [sin 1, sin 0, cos 1, cos 0] -> x0 -> VAE decode -> [0, 1] -> nearest-exact
back to the input size. It shares no code with lotus_core.

The core is then run on the same networks, with the reference's prompt embedding, and must agree to
1e-5 in fp32. The measured differences are recorded as test properties (``--junitxml`` shows them).
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from tiny import synthetic_rgb
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

import lotus_core

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def text_encoding(tmp_path_factory):
    """The reference's own empty-prompt conditioning: tokenizer("") -> CLIP last hidden state."""
    folder = tmp_path_factory.mktemp("clip_tokenizer")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a": 2, "b": 3, "a</w>": 4, "b</w>": 5, "ab</w>": 6}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\na b</w>\n")
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    torch.manual_seed(11)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=1024, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )).eval()
    ids = tokenizer("", padding="do_not_pad", max_length=77, truncation=True, return_tensors="pt").input_ids
    assert ids.tolist() == [[tokenizer.bos_token_id, tokenizer.eos_token_id]] == [[0, 1]]
    with torch.no_grad():
        embeds = text_encoder(ids)[0]
    assert embeds.shape == (1, 2, 1024)
    return embeds


def resize_max_res(x: torch.Tensor, max_edge: int) -> torch.Tensor:
    """The official resize_max_res: long edge to max_edge (up or down), truncated, bilinear + antialias."""
    height, width = x.shape[-2:]
    f = min(max_edge / width, max_edge / height)
    new_height, new_width = int(height * f), int(width * f)
    return F.interpolate(x, (new_height, new_width), mode="bilinear", align_corners=False, antialias=True)


@torch.no_grad()
def reference_predict(unet, vae, rgb_uint8, prompt_embeds, processing_res, noise=None, posterior_eps=None):
    """Official single-step Lotus-G / Lotus-D for one uint8 [H, W, 3] image -> depth [1, 1, H, W] in
    [0, 1]: the decoded image's channel mean, as the official pipeline reads depth off it."""
    return reference_image(unet, vae, rgb_uint8, prompt_embeds, processing_res, noise, posterior_eps).mean(
        dim=1, keepdim=True)


def reference_image(unet, vae, rgb_uint8, prompt_embeds, processing_res, noise=None, posterior_eps=None):
    """The official pipeline's decoded output [1, 3, H, W] in [0, 1] (for normal checkpoints: (n + 1) / 2)."""
    x = rgb_uint8.permute(2, 0, 1)[None].float() / 127.5 - 1.0  # [1, 3, H, W] in [-1, 1]
    height, width = x.shape[-2:]
    if processing_res > 0:
        x = resize_max_res(x, processing_res)
    task = torch.tensor([1, 0]).float()[None]
    task_emb = torch.cat([torch.sin(task), torch.cos(task)], dim=-1)  # [sin1, 0, cos1, 1]
    t = torch.tensor([999]).long()[0]
    posterior = vae.encode(x).latent_dist
    if posterior_eps is None:
        latent = posterior.mode()
    else:  # latent_dist.sample() with the standard normal draw made explicit
        latent = posterior.mean + posterior.std * posterior_eps
    latent = latent * vae.config.scaling_factor
    if unet.config.in_channels == 8:  # Lotus-G: image latent first, noise second
        assert noise.shape == latent.shape
        unet_input = torch.cat([latent, noise], dim=1)
    else:  # Lotus-D: the image latent alone
        assert noise is None
        unet_input = latent
    x0 = unet(unet_input, t, encoder_hidden_states=prompt_embeds, class_labels=task_emb).sample
    image = vae.decode(x0 / vae.config.scaling_factor).sample
    image = (image / 2 + 0.5).clamp(0, 1)
    return F.interpolate(image, (height, width), mode="nearest-exact")


def latent_shape(height, width, processing_res):
    if processing_res > 0:
        f = min(processing_res / width, processing_res / height)
        height, width = int(height * f), int(width * f)
    return (1, 4, height // 8, width // 8)


def core_input(rgb_uint8):
    return rgb_uint8.permute(2, 0, 1)[None].float() / 255


CASES = [  # (height, width, processing_resolution)
    pytest.param(40, 56, 0, id="40x56-native"),
    pytest.param(40, 56, 48, id="40x56-down-to-48"),
    pytest.param(45, 67, 0, id="45x67-native-odd"),
    pytest.param(45, 67, 40, id="45x67-down-to-40-odd"),
    pytest.param(61, 29, 52, id="61x29-down-to-52-portrait"),
    pytest.param(21, 30, 64, id="21x30-up-to-64"),
]


@pytest.mark.parametrize("kind", ["G", "D"])
@pytest.mark.parametrize(("height", "width", "res"), CASES)
def test_core_equals_reference_mean_encoding(kind, height, width, res, unet_g, unet_d, vae, text_encoding,
                                             record_property):
    unet = unet_g if kind == "G" else unet_d
    rgb = synthetic_rgb(height, width, seed=height + width)
    noise = torch.randn(latent_shape(height, width, res), generator=torch.Generator().manual_seed(3)) \
        if kind == "G" else None
    expected = reference_predict(unet, vae, rgb, text_encoding, res, noise=noise)

    model = lotus_core.LotusModel(unet, vae, "depth", prompt_embeds=text_encoding)
    got = lotus_core.predict(model, core_input(rgb), geometry="reference",
                             processing_resolution=res, encode="mean", noise=noise)

    assert got.values.shape == expected.shape == (1, 1, height, width)
    diff = (got.values - expected).abs().max().item()
    record_property("max_abs_diff", diff)
    assert diff <= TOLERANCE
    assert expected.std() > 0.05  # the comparison is between non-trivial pictures


@pytest.mark.parametrize("kind", ["G", "D"])
@pytest.mark.parametrize(("height", "width", "res"), [CASES[1], CASES[5]])
def test_core_equals_reference_sampled_posterior(kind, height, width, res, unet_g, unet_d, vae, text_encoding,
                                                 record_property):
    """encode="sample": the core draws the posterior's standard normal from its generator.

    With explicit Lotus-G noise, the seed's generator is used for nothing else, so the reference can
    draw the same eps from a generator with the same seed.
    """
    unet = unet_g if kind == "G" else unet_d
    rgb = synthetic_rgb(height, width, seed=7)
    shape = latent_shape(height, width, res)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(4)) if kind == "G" else None
    eps = torch.randn(shape, generator=torch.Generator().manual_seed(21))
    expected = reference_predict(unet, vae, rgb, text_encoding, res, noise=noise, posterior_eps=eps)
    mode = reference_predict(unet, vae, rgb, text_encoding, res, noise=noise)

    model = lotus_core.LotusModel(unet, vae, "depth", prompt_embeds=text_encoding)
    got = lotus_core.predict(model, core_input(rgb), geometry="reference",
                             processing_resolution=res, encode="sample", seed=21,
                             noise=noise)

    diff = (got.values - expected).abs().max().item()
    record_property("max_abs_diff", diff)
    assert diff <= TOLERANCE
    assert (got.values - mode).abs().max() > 1e-3  # the sample is not the mean


def test_core_lotus_g_draws_noise_then_posterior_from_one_generator(unet_g, vae, text_encoding, record_property):
    """Without explicit noise: the Lotus-G noise comes first from the generator, then the posterior eps
    (the reference's order: prepare_latents consumes the generator before the VAE is sampled)."""
    rgb = synthetic_rgb(40, 56, seed=9)
    generator = torch.Generator().manual_seed(5)
    noise = torch.randn(latent_shape(40, 56, 0), generator=generator)
    eps = torch.randn(latent_shape(40, 56, 0), generator=generator)
    expected = reference_predict(unet_g, vae, rgb, text_encoding, 0, noise=noise, posterior_eps=eps)

    model = lotus_core.LotusModel(unet_g, vae, "depth", prompt_embeds=text_encoding)
    got = lotus_core.predict(model, core_input(rgb), geometry="reference", processing_resolution=0, seed=5)

    diff = (got.values - expected).abs().max().item()
    record_property("max_abs_diff", diff)
    assert diff <= TOLERANCE


def test_core_normals_are_the_reference_rgb_as_unit_vectors(unet_d, vae, text_encoding, record_property):
    rgb = synthetic_rgb(40, 56, seed=11)
    expected = F.normalize(reference_image(unet_d, vae, rgb, text_encoding, 0) * 2 - 1, dim=1)
    model = lotus_core.LotusModel(unet_d, vae, "normal", prompt_embeds=text_encoding)
    got = lotus_core.predict(model, core_input(rgb), geometry="reference", processing_resolution=0, encode="mean")
    diff = (got.values - expected).abs().max().item()
    record_property("max_abs_diff", diff)
    assert diff <= TOLERANCE


def test_core_latent_is_the_reference_x0(unet_g, vae, text_encoding):
    """prediction.latent is the UNet's x0 at the processing size (what the reference's video mode reuses)."""
    rgb = synthetic_rgb(40, 56, seed=2)
    noise = torch.randn(latent_shape(40, 56, 48), generator=torch.Generator().manual_seed(8))
    x = resize_max_res(rgb.permute(2, 0, 1)[None].float() / 127.5 - 1.0, 48)
    task = torch.tensor([1, 0]).float()[None]
    with torch.no_grad():
        latent = vae.encode(x).latent_dist.mode() * vae.config.scaling_factor
        x0 = unet_g(torch.cat([latent, noise], dim=1), torch.tensor(999).long(), encoder_hidden_states=text_encoding,
                    class_labels=torch.cat([torch.sin(task), torch.cos(task)], dim=-1)).sample

    model = lotus_core.LotusModel(unet_g, vae, "depth", prompt_embeds=text_encoding)
    got = lotus_core.predict(model, core_input(rgb), geometry="reference",
                             processing_resolution=48, encode="mean", noise=noise)
    assert got.latent.shape == x0.shape == (1, 4, 34 // 8, 48 // 8)
    torch.testing.assert_close(got.latent, x0, atol=TOLERANCE, rtol=0)


def test_reference_task_switch_timestep_and_prompt_matter(unet_d, vae, text_encoding):
    """Guard on the reference itself: the tiny UNet reacts to the task switch, the timestep and the
    prompt embedding, so agreeing with the reference pins all three (a [0, 1] reconstruction switch,
    t = 0 or another conditioning would be caught)."""
    rgb = synthetic_rgb(40, 56, seed=1)
    x = rgb.permute(2, 0, 1)[None].float() / 127.5 - 1.0
    with torch.no_grad():
        latent = vae.encode(x).latent_dist.mode() * vae.config.scaling_factor

        def run(switch=(1, 0), t=999, embeds=text_encoding):
            task = torch.tensor(switch).float()[None]
            emb = torch.cat([torch.sin(task), torch.cos(task)], dim=-1)
            return unet_d(latent, torch.tensor(t).long(), encoder_hidden_states=embeds, class_labels=emb).sample

        annotation = run()
        assert (annotation - run(switch=(0, 1))).abs().max() > 1e-3
        assert (annotation - run(t=0)).abs().max() > 1e-3
        assert (annotation - run(embeds=lotus_core.loading.model.empty_prompt_embeds())).abs().max() > 1e-3
