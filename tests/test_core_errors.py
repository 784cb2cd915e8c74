"""Every mistake a caller can make gets a LotusError whose message names the argument, value or rule."""

from __future__ import annotations

import copy
import os
import re

import pytest
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file, save_file
from tiny import (
    TINY_UNET_CONFIG,
    ldm_unet_key_map,
    save_diffusers_folder,
    save_unet_file,
    save_vae_file,
    tiny_unet,
    tiny_vae,
)

import lotus_core
from lotus_core import LotusError, LotusModel, load_model, predict

GOOD = torch.full((1, 3, 16, 24), 0.5)


def image(shape=(1, 3, 16, 24), fill=0.5, dtype=torch.float32):
    return torch.full(shape, fill, dtype=dtype)


def with_value(value):
    bad = image()
    bad[0, 1, 3, 4] = value
    return bad


# --- predict: images ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("images", "message"),
    [
        pytest.param(image((1, 4, 16, 24)), r"shape \[B, 3, H, W\].*got \(1, 4, 16, 24\)", id="4-channels-rgba"),
        pytest.param(image((1, 1, 16, 24)), r"shape \[B, 3, H, W\].*got \(1, 1, 16, 24\)", id="1-channel-grey"),
        pytest.param(image((3, 16, 24)), r"shape \[B, 3, H, W\].*got \(3, 16, 24\)", id="3-d-tensor"),
        pytest.param(image((1, 16, 24, 3)), r"channels first.*got \(1, 16, 24, 3\)", id="channels-last"),
        pytest.param(image().numpy(), r"must be a torch.Tensor.*got ndarray", id="numpy-array"),
        pytest.param(with_value(float("nan")), r"NaN or Inf", id="nan"),
        pytest.param(with_value(float("inf")), r"NaN or Inf", id="inf"),
        pytest.param(image(fill=200.0), r"values must lie in \[0, 1\], got min 200 and max 200", id="0-255-range"),
        pytest.param(with_value(-0.6), r"\[0, 1\], got min -0.6.*look like -1..1", id="negative"),
        pytest.param(image(fill=128, dtype=torch.uint8), r"floating point in \[0, 1\], got dtype torch.uint8",
                     id="uint8"),
        pytest.param(image(fill=1, dtype=torch.int64), r"floating point.*torch.int64", id="int64"),
        pytest.param(image((0, 3, 16, 24)), r"empty batch", id="empty-batch"),
        pytest.param(image((1, 3, 7, 20)), r"20x7 px are too small: both edges must be >= 8 px", id="7x20"),
        pytest.param(image((1, 3, 20, 5)), r"5x20 px are too small", id="20x5"),
    ],
)
def test_bad_images(images, message, model_g):
    with pytest.raises(LotusError, match=message):
        predict(model_g, images, processing_resolution=0)


def test_image_too_small_after_resize(model_g):
    with pytest.raises(LotusError, match=r"2000x8 px at processing_resolution=768 becomes 768x3 px.*>= 8 px"):
        predict(model_g, image((1, 3, 8, 2000)), processing_resolution=768)
    # the same image at native size is fine
    assert predict(model_g, image((1, 3, 8, 48)), processing_resolution=0, seed=0).values.shape == (1, 1, 8, 48)


# --- predict: arguments ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"processing_resolution": -1}, r"processing_resolution=-1 must be an integer >= 0", id="res-neg"),
        pytest.param({"processing_resolution": 512.0}, r"processing_resolution=512.0 must be an integer",
                     id="res-float"),
        pytest.param({"encode": "mode"}, r"encode='mode' is not one of 'sample', 'mean'", id="encode"),
        pytest.param({"resample": "lanczos"},
                     r"resample='lanczos' is not one of 'bilinear', 'bicubic', 'nearest-exact'",
                     id="resample"),
        pytest.param({"restore": "nearest"}, r"restore='nearest' is not one of", id="restore"),
        pytest.param({"geometry": "padded"}, r"geometry='padded' is not one of 'exact', 'reference'", id="geometry"),
        pytest.param({"latent_blend": 1.0}, r"latent_blend=1.0 must be a number in \[0, 1\)", id="blend-1"),
        pytest.param({"chunk_size": 0}, r"chunk_size=0 must be an integer >= 1", id="chunk-0"),
        pytest.param({"chunk_size": 1.5}, r"chunk_size=1.5 must be an integer >= 1", id="chunk-float"),
        pytest.param({"seed": 1, "generator": torch.Generator()}, r"either seed or generator, not both",
                     id="seed-and-generator"),
        pytest.param({"noise": torch.zeros(1, 4, 4, 4)},
                     r"noise must have shape \[1 or 2, 4, 2, 3\].*got \(1, 4, 4, 4\)",
                     id="noise-spatial"),
        pytest.param({"noise": torch.zeros(3, 4, 2, 3)},
                     r"noise must have shape \[1 or 2, 4, 2, 3\].*got \(3, 4, 2, 3\)",
                     id="noise-batch"),
        pytest.param({"noise": torch.zeros(4, 2, 3)}, r"noise must have shape.*got \(4, 2, 3\)", id="noise-3d"),
        pytest.param({"noise": torch.full((1, 4, 2, 3), float("nan"))}, r"noise contains NaN or Inf", id="noise-nan"),
        pytest.param({"noise": torch.zeros(1, 4, 4, 6), "processing_resolution": 24},
                     r"noise must have shape \[1 or 2, 4, 2, 3\]", id="noise-at-input-not-processing-size"),
    ],
)
def test_bad_arguments(kwargs, message, model_g):
    with pytest.raises(LotusError, match=message):
        predict(model_g, image((2, 3, 16, 24)), **{"processing_resolution": 0, **kwargs})


def test_noise_for_lotus_d(model_d):
    with pytest.raises(LotusError, match=r"noise was given, but Lotus-D checkpoints take no noise"):
        predict(model_d, GOOD, processing_resolution=0, noise=torch.zeros(1, 4, 2, 3))


# --- LotusModel -----------------------------------------------------------------------------------


def test_wrapping_bad_modules(unet_g, unet_d, vae):
    with pytest.raises(LotusError, match=r"quantity='height' is not one of 'depth', 'disparity', 'normal'"):
        LotusModel(unet_g, vae, "height")
    with pytest.raises(LotusError, match=r"unet must be a diffusers UNet2DConditionModel, got AutoencoderKL"):
        LotusModel(vae, vae, "depth")
    with pytest.raises(LotusError, match=r"vae must be a diffusers AutoencoderKL, got UNet2DConditionModel"):
        LotusModel(unet_g, unet_d, "depth")
    with pytest.raises(LotusError,
                       match=r"prompt_embeds of shape \(1, 77, 768\) do not fit.*cross_attention_dim 1024"):
        LotusModel(unet_g, vae, "depth", prompt_embeds=torch.zeros(1, 77, 768))
    with pytest.raises(LotusError, match=r"vae has 16 latent channels; Lotus needs 4"):
        LotusModel(unet_g, tiny_vae(latent_channels=16), "depth")
    with pytest.raises(LotusError, match=r"class_embed_type='projection'"):
        LotusModel(plain_sd_unet(), vae, "depth")


# --- load_model: files ----------------------------------------------------------------------------


def plain_sd_unet() -> UNet2DConditionModel:
    """A tiny Stable Diffusion UNet: the Lotus layout without the task-switch class embedding."""
    config = {k: v for k, v in TINY_UNET_CONFIG.items()
              if k not in ("class_embed_type", "projection_class_embeddings_input_dim")}
    torch.manual_seed(0)
    return UNet2DConditionModel(in_channels=4, **config).eval()


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, checkpoints):
    folder = tmp_path_factory.mktemp("bad_files")
    good = checkpoints["g"].read_bytes()
    (folder / "truncated.safetensors").write_bytes(good[: len(good) // 2])
    (folder / "header-only.safetensors").write_bytes(good[:5])
    (folder / "random.safetensors").write_bytes(os.urandom(4096))
    (folder / "empty.safetensors").write_bytes(b"")
    (folder / "depth.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    plain = plain_sd_unet()
    save_unet_file(plain, folder / "sd-unet.safetensors")
    key_map = ldm_unet_key_map()
    save_file({key_map[k]: v.contiguous() for k, v in plain.state_dict().items()}, folder / "sd-unet-ldm.safetensors")
    save_unet_file(tiny_unet(False, seed=3), folder / "lotus-depth-g-v1-0.safetensors")  # a D UNet named G
    save_unet_file(tiny_unet(True, seed=3), folder / "lotus-normal-d-v1-0.safetensors")  # a G UNet named D
    save_vae_file(tiny_vae(latent_channels=16), folder / "flux-style-vae.safetensors")
    sd = load_file(checkpoints["d"])
    del sd["down_blocks.0.attentions.0.proj_out.bias"]
    sd["bogus.weight"] = torch.zeros(3)
    save_file(sd, folder / "edited.safetensors")
    sd = load_file(checkpoints["d"])
    sd["time_embedding.linear_2.weight"] = torch.zeros(5, 5)
    save_file(sd, folder / "reshaped.safetensors")
    sd = load_file(checkpoints["vae"])
    del sd["decoder.mid_block.attentions.0.to_q.weight"]
    save_file(sd, folder / "vae-missing-key.safetensors")
    (folder / "empty-folder").mkdir()
    (folder / "no-weights" / "unet").mkdir(parents=True)
    (folder / "no-weights" / "unet" / "config.json").write_text("{}")
    save_diffusers_folder(tiny_unet(True), tiny_vae(), folder / "my-finetune")  # unknown name, LotusGPipeline
    return folder


@pytest.mark.parametrize(
    ("name", "message"),
    [
        pytest.param("truncated.safetensors", r"truncated.safetensors' is not a readable safetensors file "
                     r"\(corrupt or truncated download\?\)", id="truncated"),
        pytest.param("header-only.safetensors", r"not a readable safetensors file", id="first-5-bytes"),
        pytest.param("random.safetensors", r"random.safetensors' is not a readable safetensors file",
                     id="random-bytes"),
        pytest.param("empty.safetensors", r"not a readable safetensors file", id="empty-file"),
        pytest.param("depth.png", r"'depth.png': unsupported checkpoint type '.png'; expected .safetensors",
                     id="png"),
        pytest.param("missing.safetensors", r"missing.safetensors' does not exist", id="nonexistent"),
        pytest.param("sd-unet.safetensors", r"not a Lotus checkpoint: it has no task-switch embedding",
                     id="plain-sd-unet"),
        pytest.param("sd-unet-ldm.safetensors", r"not a Lotus checkpoint: it has no task-switch embedding",
                     id="plain-sd-unet-ldm-keys"),
        pytest.param("flux-style-vae.safetensors", r"not a Lotus checkpoint: it has no UNet weights",
                     id="vae-given-as-checkpoint"),
        pytest.param("edited.safetensors",
                     r"weights do not fit a UNet2DConditionModel: missing keys: "
                     r"down_blocks.0.attentions.0.proj_out.bias; unexpected keys: bogus.weight", id="edited-keys"),
        pytest.param("reshaped.safetensors",
                     r"wrong shape keys: time_embedding.linear_2.weight \(5, 5\) != \(256, 256\)", id="wrong-shape"),
        pytest.param("empty-folder",
                     r"no weights in '.*empty-folder/unet'.*diffusion_pytorch_model\[.fp16\].safetensors",
                     id="empty-folder"),
        pytest.param("no-weights", r"no weights in '.*no-weights/unet'", id="folder-without-weights"),
    ],
)
def test_bad_checkpoint(name, message, bad_files, checkpoints):
    with pytest.raises(LotusError, match=message):
        load_model(bad_files / name, checkpoints["vae"], quantity="depth")


@pytest.mark.parametrize(
    ("vae_name", "message"),
    [
        pytest.param("unet-as-vae", r"vae 'lotus-depth-g-v1-0.safetensors': not a Stable Diffusion 1.x/2.x VAE "
                     r"\(AutoencoderKL\): missing 'encoder.conv_in.weight'", id="unet-file-as-vae"),
        pytest.param("flux-style-vae.safetensors",
                     r"VAE with 16 latent channels: Lotus needs a 4-channel SD1.x/SD2 VAE",
                     id="16-latent-channels"),
        pytest.param("vae-missing-key.safetensors", r"do not fit a AutoencoderKL: missing keys: "
                     r"decoder.mid_block.attentions.0.to_q.weight", id="vae-missing-key"),
        pytest.param("random.safetensors", r"not a readable safetensors file", id="corrupt-vae"),
        pytest.param("missing-vae.safetensors", r"does not exist", id="nonexistent-vae"),
    ],
)
def test_bad_vae(vae_name, message, bad_files, checkpoints):
    vae_path = checkpoints["g"] if vae_name == "unet-as-vae" else bad_files / vae_name
    with pytest.raises(LotusError, match=message):
        load_model(checkpoints["d"], vae_path)


def test_single_file_without_vae(checkpoints):
    with pytest.raises(LotusError, match=r"'lotus-depth-g-v1-0.safetensors' holds only the UNet: pass vae="):
        load_model(checkpoints["g"])


def test_unknown_name_needs_quantity(bad_files, checkpoints, unet_d, tmp_path):
    path = save_unet_file(unet_d, tmp_path / "my-depth-model.safetensors")
    with pytest.raises(LotusError, match=r"cannot tell whether 'my-depth-model.safetensors' predicts depth, "
                                         r"disparity or normals.*Pass quantity="):
        load_model(path, checkpoints["vae"])
    with pytest.raises(LotusError, match=r"'my-finetune' predicts depth, disparity or normals.*quantity="):
        load_model(bad_files / "my-finetune")  # a folder whose model_index says nothing either


@pytest.mark.parametrize(
    ("name", "message"),
    [
        pytest.param("lotus-depth-g-v1-0.safetensors",
                     r"'lotus-depth-g-v1-0.safetensors' is named like lotus-depth-g-v1-0 \(Lotus-G\) but its UNet "
                     r"is Lotus-D; if the file was renamed, pass quantity= explicitly", id="D-unet-named-G"),
        pytest.param("lotus-normal-d-v1-0.safetensors", r"named like lotus-normal-d-v1-0 \(Lotus-D\) but its UNet is "
                     r"Lotus-G", id="G-unet-named-D"),
    ],
)
def test_name_contradicts_the_weights(name, message, bad_files, checkpoints):
    with pytest.raises(LotusError, match=message):
        load_model(bad_files / name, checkpoints["vae"])
    # the explicit override is the way out
    assert load_model(bad_files / name, checkpoints["vae"], quantity="depth").quantity.value == "depth"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"quantity": "height"}, r"quantity='height' is not one of 'depth', 'disparity', 'normal'",
                     id="quantity"),
        pytest.param({"dtype": "fp8"}, r"dtype='fp8' is not one of 'auto', 'fp32', 'fp16', 'bf16'", id="dtype"),
        pytest.param({"dtype": torch.float64}, r"dtype=torch.float64 is not one of torch.float32, torch.float16",
                     id="dtype-float64"),
        pytest.param({"vae_dtype": "half"}, r"vae_dtype='half' is not one of", id="vae-dtype"),
    ],
)
def test_bad_load_arguments(kwargs, message, checkpoints):
    with pytest.raises(LotusError, match=message):
        load_model(checkpoints["g"], checkpoints["vae"], **kwargs)


def test_errors_are_value_errors(model_d):
    """Callers that catch ValueError (argument checking) also catch the core's errors."""
    assert issubclass(LotusError, ValueError)
    with pytest.raises(ValueError, match=re.escape("chunk_size=-2")):
        predict(model_d, GOOD, chunk_size=-2)


def test_errors_leave_the_model_usable(model_d):
    before = copy.deepcopy(model_d.unet.state_dict())
    with pytest.raises(LotusError):
        predict(model_d, with_value(float("nan")))
    after = model_d.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert predict(model_d, GOOD, processing_resolution=0, encode="mean").values.shape == (1, 1, 16, 24)


def test_normals_are_refused_where_depth_is_needed():
    normals = lotus_core.DepthMap(torch.nn.functional.normalize(torch.rand(1, 3, 6, 8), dim=1), "normal")
    for name, call in [("with_near_far", lambda: lotus_core.with_near_far(normals, 1.0, 10.0)),
                       ("with_known_distances",
                        lambda: lotus_core.with_known_distances(normals, (0, 0, 1), (1, 1, 2))),
                       ("normals_from_depth", lambda: lotus_core.normals_from_depth(normals)),
                       ("to_controlnet", lambda: lotus_core.to_controlnet(normals))]:
        with pytest.raises(LotusError, match=f"{name} needs depth or disparity, got normals"):
            call()


def test_unstretched_nearness_refuses_distances():
    metric = lotus_core.DepthMap(torch.full((1, 1, 4, 4), 3.0), "depth", unit="m")
    with pytest.raises(LotusError, match="a metric map holds distances"):
        lotus_core.colorize(metric, stretch=False)


def test_a_tile_that_cannot_fit_is_refused_in_terms_of_tile_size(model_d):
    image = torch.rand(1, 3, 48, 64)
    with pytest.raises(LotusError, match=r"tile_size=48: one 48x48 px tile needs about .* use a smaller tile_size"):
        lotus_core.predict_tiled(model_d, image, tile_size=48, overlap=8, processing_resolution=32, memory_limit=1000)


@pytest.mark.parametrize(("function", "option", "message"), [
    (lotus_core.predict_tiled, {"restore": "nearest-exact"}, "leave out restore"),
    (lotus_core.predict_video, {"shared_noise": False}, "leave out shared_noise"),
])
def test_options_a_quality_mode_sets_itself_are_refused(model_d, function, option, message):
    with pytest.raises(LotusError, match=message):
        function(model_d, torch.rand(2, 3, 16, 16), processing_resolution=0, **option)


def test_a_check_interrupt_that_returns_a_value_changes_nothing(model_d):
    image = torch.rand(1, 3, 16, 16)
    plain = lotus_core.predict(model_d, image, processing_resolution=0, seed=0).values
    checked = lotus_core.predict(model_d, image, processing_resolution=0, seed=0,
                                 check_interrupt=lambda: False).values
    assert torch.equal(plain, checked)
