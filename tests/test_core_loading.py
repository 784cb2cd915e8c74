"""load_model on every checkpoint format, written to disk from the tiny networks and read back."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny import (
    as_batch,
    ldm_unet_key_map,
    save_diffusers_folder,
    save_unet_file,
    save_vae_file,
    synthetic_rgb,
    tiny_unet,
    tiny_vae,
)

import lotus_core
from lotus_core import LotusError, LotusModel, Quantity, load_model, predict
from lotus_core.loading.model import empty_prompt_embeds


def assert_same_weights(loaded: torch.nn.Module, original: torch.nn.Module, dtype: torch.dtype) -> None:
    """Same keys, every tensor in `dtype` and equal to the original rounded to `dtype`."""
    got, want = loaded.state_dict(), original.state_dict()
    assert sorted(got) == sorted(want)
    assert {v.dtype for v in got.values()} == {dtype}
    unequal = [k for k, v in want.items() if not torch.equal(got[k], v.to(dtype))]
    assert unequal == []


@pytest.fixture(scope="module")
def files(tmp_path_factory, unet_g, unet_d, vae) -> dict[str, Path]:
    """Every single-file layout, with names that say nothing about the quantity unless intended."""
    folder = tmp_path_factory.mktemp("formats")
    written = {
        "g-fp16": save_unet_file(unet_g, folder / "g-fp16.safetensors", dtype=torch.float16),
        "g-ldm": save_unet_file(unet_g, folder / "g-ldm.safetensors", ldm_keys=True),
        "d-ldm": save_unet_file(unet_d, folder / "d-ldm.safetensors", ldm_keys=True),
        "vae-original": save_vae_file(vae, folder / "vae-original.safetensors", original_keys=True),
    }
    # a full-checkpoint-style file: LDM keys under "model.diffusion_model." (plus an unrelated tensor)
    ldm = load_file(written["g-ldm"])
    prefixed = {"model.diffusion_model." + k: v for k, v in ldm.items()}
    prefixed["cond_stage_model.unrelated.weight"] = torch.zeros(2)
    save_file(prefixed, folder / "g-ldm-prefixed.safetensors")
    written["g-ldm-prefixed"] = folder / "g-ldm-prefixed.safetensors"
    # an original-keyed VAE inside a full checkpoint
    original = load_file(written["vae-original"])
    save_file({"first_stage_model." + k: v for k, v in original.items()}, folder / "vae-in-checkpoint.safetensors")
    written["vae-in-checkpoint"] = folder / "vae-in-checkpoint.safetensors"
    return written


# --- single files ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("unet_file", "kind", "requested", "expected_dtype", "stored_dtype"),
    [
        pytest.param("g", "G", "fp32", torch.float32, torch.float32, id="diffusers-keys-fp32"),
        pytest.param("g", "G", torch.float32, torch.float32, torch.float32, id="diffusers-keys-torch-dtype"),
        pytest.param("g-fp16", "G", "fp16", torch.float16, torch.float16, id="diffusers-keys-fp16-file-as-fp16"),
        pytest.param("g-fp16", "G", "fp32", torch.float32, torch.float16, id="diffusers-keys-fp16-file-as-fp32"),
        pytest.param("g", "G", "bf16", torch.bfloat16, torch.float32, id="diffusers-keys-fp32-file-as-bf16"),
        pytest.param("g", "G", torch.float16, torch.float16, torch.float32, id="diffusers-keys-fp32-file-as-fp16"),
        pytest.param("g-ldm", "G", "fp32", torch.float32, torch.float32, id="ldm-keys-G"),
        pytest.param("d-ldm", "D", "fp32", torch.float32, torch.float32, id="ldm-keys-D"),
        pytest.param("g-ldm-prefixed", "G", "fp32", torch.float32, torch.float32, id="ldm-keys-model-prefix"),
        pytest.param("d", "D", "fp16", torch.float16, torch.float32, id="diffusers-keys-D-fp16"),
    ],
)
def test_single_file_unet_loads_exactly(unet_file, kind, requested, expected_dtype, stored_dtype, files, checkpoints,
                                       unet_g, unet_d, vae):
    path = {**files, **checkpoints}[unet_file]
    model = load_model(path, checkpoints["vae"], quantity="depth", dtype=requested)
    original = copy.deepcopy(unet_g if kind == "G" else unet_d).to(stored_dtype)
    assert_same_weights(model.unet, original, expected_dtype)
    # vae_dtype defaults to dtype, but never fp16 (the SD VAE overflows in it): fp32 on a CPU
    assert_same_weights(model.vae, vae, torch.float32 if expected_dtype == torch.float16 else expected_dtype)
    assert model.generative is (kind == "G")
    assert model.unet.config.in_channels == (8 if kind == "G" else 4)
    assert model.device == torch.device("cpu")
    assert not model.unet.training and not model.vae.training
    assert not any(p.requires_grad for p in [*model.unet.parameters(), *model.vae.parameters()])


@pytest.mark.parametrize("vae_file", ["vae", "vae-original", "vae-in-checkpoint"],
                         ids=["diffusers-keys", "original-keys", "original-keys-first_stage_model-prefix"])
def test_single_file_vae_loads_exactly(vae_file, files, checkpoints, vae):
    model = load_model(checkpoints["d"], {**files, **checkpoints}[vae_file])
    assert_same_weights(model.vae, vae, torch.float32)
    assert model.vae.config.scaling_factor == 0.18215


def test_vae_dtype_is_separate(checkpoints, unet_g, vae):
    model = load_model(checkpoints["g"], checkpoints["vae"], dtype="bf16", vae_dtype="fp32")
    assert_same_weights(model.unet, unet_g, torch.bfloat16)
    assert_same_weights(model.vae, vae, torch.float32)


def test_loaded_model_predicts_like_the_networks_it_was_written_from(checkpoints, files, model_g):
    images = as_batch(synthetic_rgb(24, 40, seed=1))
    expected = predict(model_g, images, processing_resolution=0, seed=2)
    for path in (checkpoints["g"], files["g-ldm"]):
        loaded = load_model(path, files["vae-original"], quantity="depth")
        got = predict(loaded, images, processing_resolution=0, seed=2)
        torch.testing.assert_close(got.image, expected.image, atol=1e-5, rtol=0)


def test_vae_is_channels_last_unless_asked_for_the_reference_layout(checkpoints, model_g):
    images = as_batch(synthetic_rgb(48, 64, seed=1))
    expected = predict(model_g, images, processing_resolution=0, seed=2)
    fast = load_model(checkpoints["g"], checkpoints["vae"])
    exact = load_model(checkpoints["g"], checkpoints["vae"], channels_last=False)
    conv = "decoder.conv_in.weight"
    assert fast.vae.get_parameter(conv).is_contiguous(memory_format=torch.channels_last)
    assert not exact.vae.get_parameter(conv).is_contiguous(memory_format=torch.channels_last)
    assert not fast.unet.get_parameter("conv_in.weight").is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(predict(exact, images, processing_resolution=0, seed=2).image, expected.image,
                               atol=1e-5, rtol=0)  # as loading always is (see the test above)
    torch.testing.assert_close(predict(fast, images, processing_resolution=0, seed=2).image, expected.image,
                               atol=1e-4, rtol=0)


def test_half_precision_model_predicts_close_to_fp32(checkpoints, model_g):
    images = as_batch(synthetic_rgb(24, 40, seed=1))
    expected = predict(model_g, images, processing_resolution=0, seed=2, encode="mean")
    loaded = load_model(checkpoints["g"], checkpoints["vae"], dtype="bf16")
    got = predict(loaded, images, processing_resolution=0, seed=2, encode="mean")
    assert got.image.dtype == torch.float32 and got.latent.dtype == torch.float32
    assert (got.image - expected.image).abs().mean() < 0.05


# --- diffusers folders ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folders(tmp_path_factory, unet_g, unet_d, vae) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("folders")
    g_variant = tiny_unet(True, seed=9).half()  # a *different* fp16 variant, to see which file was read
    vae_variant = tiny_vae(seed=10).half()
    both = save_diffusers_folder(unet_g, vae, root / "lotus-depth-g-v1-0")
    g_variant.save_pretrained(both / "unet", variant="fp16")
    vae_variant.save_pretrained(both / "vae", variant="fp16")
    only_fp16 = save_diffusers_folder(copy.deepcopy(unet_g).half(), copy.deepcopy(vae).half(),
                                      root / "lotus-normal-g-v1-0", variant="fp16")
    return {
        "both": both,
        "only-fp16": only_fp16,
        "g-disparity": save_diffusers_folder(unet_g, vae, root / "lotus-depth-g-v2-1-disparity",
                                             pipeline="DirectDiffusionY0Pipeline"),
        "hf-cache": save_diffusers_folder(unet_d, vae, root / "models--jingheya--lotus-normal-d-v1-1" / "snapshots"
                                          / "abc", pipeline="LotusDPipeline"),
        "y0-unknown-name": save_diffusers_folder(unet_g, vae, root / "my-model-g",
                                                 pipeline="DirectDiffusionY0Pipeline"),
        "regression-unknown-name": save_diffusers_folder(unet_d, vae, root / "my-model-d",
                                                         pipeline="DirectRegressionPipeline"),
        "variants": (g_variant, vae_variant),
    }


def test_diffusers_folder_loads_exactly(folders, unet_g, vae):
    assert (folders["both"] / "model_index.json").is_file() and (folders["both"] / "unet").is_dir()
    model = load_model(folders["both"])
    assert_same_weights(model.unet, unet_g, torch.float32)
    assert_same_weights(model.vae, vae, torch.float32)
    assert model.quantity is Quantity.DEPTH and model.generative


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_half_dtypes_prefer_the_fp16_variant(dtype, folders, vae):
    g_variant, vae_variant = folders["variants"]
    model = load_model(folders["both"], dtype=dtype)
    assert_same_weights(model.unet, g_variant, getattr(torch, {"fp16": "float16", "bf16": "bfloat16"}[dtype]))
    if dtype == "bf16":
        assert_same_weights(model.vae, vae_variant, torch.bfloat16)
    else:  # an fp16 UNet gets an fp32 VAE on a CPU (fp16 overflows in it), read from the full-precision file
        assert_same_weights(model.vae, vae, torch.float32)


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_fp16_only_folder(dtype, folders, unet_g, vae):
    model = load_model(folders["only-fp16"], dtype=dtype)
    expected = {"fp32": torch.float32, "fp16": torch.float16}[dtype]
    assert_same_weights(model.unet, copy.deepcopy(unet_g).half(), expected)
    assert_same_weights(model.vae, copy.deepcopy(vae).half(), torch.float32)  # fp16 file, never an fp16 VAE
    assert model.quantity is Quantity.NORMAL


def test_vae_folder_next_to_a_single_file(folders, checkpoints, vae, tmp_path):
    vae.save_pretrained(tmp_path / "vae")
    config = json.loads((tmp_path / "vae" / "config.json").read_text())
    (tmp_path / "vae" / "config.json").write_text(json.dumps({**config, "scaling_factor": 0.13025}))
    model = load_model(checkpoints["g"], tmp_path / "vae")
    assert_same_weights(model.vae, vae, torch.float32)
    assert model.vae.config.scaling_factor == 0.13025  # the folder's config wins over the SD default


def test_pickled_diffusers_folder_needs_allow_pickle(unet_d, vae, tmp_path):
    folder = tmp_path / "lotus-depth-d-v1-0"
    unet_d.save_pretrained(folder / "unet", safe_serialization=False)
    vae.save_pretrained(folder / "vae", safe_serialization=False)
    assert (folder / "unet" / "diffusion_pytorch_model.bin").is_file()
    with pytest.raises(LotusError, match="no weights in"):
        load_model(folder)
    model = load_model(folder, allow_pickle=True)
    assert_same_weights(model.unet, unet_d, torch.float32)
    assert_same_weights(model.vae, vae, torch.float32)


# --- what the checkpoint predicts -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind", "expected"),
    [
        pytest.param("lotus-depth-g-v1-0.safetensors", "G", Quantity.DEPTH, id="file-depth-g-v1-0"),
        pytest.param("lotus-depth-g-v1-0-fp16.safetensors", "G", Quantity.DEPTH, id="file-depth-g-v1-0-fp16"),
        pytest.param("lotus-depth-d-v-1-1-fp16.safetensors", "D", Quantity.DEPTH, id="file-kijai-depth-d-v1-1"),
        pytest.param("lotus-normal-d-v1-0.safetensors", "D", Quantity.NORMAL, id="file-normal-d-v1-0"),
        pytest.param("Lotus-Normal-G-v1-0.safetensors", "G", Quantity.NORMAL, id="file-name-case-insensitive"),
        pytest.param("lotus-depth-g-v2-1-disparity.safetensors", "G", Quantity.DISPARITY,
                     id="file-disparity-repo-name"),
        pytest.param("lotus-depth-d-v2-0-disparity/unet.safetensors", "D", Quantity.DISPARITY, id="repo-folder-above"),
    ],
)
def test_quantity_from_a_known_file_name(name, kind, expected, unet_g, unet_d, checkpoints, tmp_path):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    save_unet_file(unet_g if kind == "G" else unet_d, path)
    model = load_model(path, checkpoints["vae"])
    assert model.quantity is expected
    assert model.generative is (kind == "G")


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        pytest.param("both", Quantity.DEPTH, id="lotus-depth-g-v1-0"),
        pytest.param("g-disparity", Quantity.DISPARITY, id="lotus-depth-g-v2-1-disparity"),
        pytest.param("hf-cache", Quantity.NORMAL, id="hf-cache-lotus-normal-d-v1-1-snapshot"),
        pytest.param("y0-unknown-name", Quantity.DISPARITY, id="model_index-DirectDiffusionY0Pipeline"),
        pytest.param("regression-unknown-name", Quantity.DISPARITY, id="model_index-DirectRegressionPipeline"),
    ],
)
def test_quantity_of_a_folder(folder, expected, folders):
    assert load_model(folders[folder]).quantity is expected


@pytest.mark.parametrize("override", ["normal", Quantity.NORMAL, "disparity"])
def test_explicit_quantity_overrides_the_name(override, checkpoints, folders):
    assert load_model(checkpoints["g"], checkpoints["vae"], quantity=override).quantity is Quantity(override)
    assert load_model(folders["g-disparity"], quantity=override).quantity is Quantity(override)


def test_explicit_quantity_for_an_unknown_name(files, checkpoints):
    model = load_model(files["d-ldm"], checkpoints["vae"], quantity="disparity")
    assert model.quantity is Quantity.DISPARITY and model.name == "d-ldm"


def test_known_checkpoint_table_matches_the_releases():
    table = {k.name: (k.quantity, k.generative) for k in lotus_core.KNOWN_CHECKPOINTS}
    assert table == {  # the releases at https://huggingface.co/jingheya (in_channels 8 = Lotus-G, 4 = Lotus-D)
        "lotus-depth-g-v1-0": (Quantity.DEPTH, True),
        "lotus-depth-d-v1-0": (Quantity.DEPTH, False),
        "lotus-depth-d-v1-1": (Quantity.DEPTH, False),
        "lotus-depth-g-v2-0-disparity": (Quantity.DISPARITY, True),
        "lotus-depth-g-v2-1-disparity": (Quantity.DISPARITY, True),
        "lotus-depth-d-v2-0-disparity": (Quantity.DISPARITY, False),
        "lotus-normal-g-v1-0": (Quantity.NORMAL, True),
        "lotus-normal-d-v1-0": (Quantity.NORMAL, False),
        "lotus-normal-g-v1-1": (Quantity.NORMAL, True),
        "lotus-normal-d-v1-1": (Quantity.NORMAL, False),
    }
    assert Quantity.DISPARITY.near_is_high and not Quantity.DEPTH.near_is_high


# --- pickles --------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth"])
def test_pickle_is_refused_by_default(suffix, unet_g, checkpoints, tmp_path):
    path = tmp_path / f"lotus-depth-g-v1-0{suffix}"
    torch.save(unet_g.state_dict(), path)
    with pytest.raises(LotusError, match=r"pickle.*allow_pickle=True"):
        load_model(path, checkpoints["vae"])


@pytest.mark.parametrize("wrapped", [False, True], ids=["plain-state-dict", "state_dict-key-ldm-names"])
def test_pickle_loads_with_allow_pickle(wrapped, unet_g, vae, tmp_path):
    if wrapped:  # an original-SD style .ckpt: {"state_dict": {"model.diffusion_model.<ldm key>": ...}}
        key_map = ldm_unet_key_map()
        content = {"state_dict": {"model.diffusion_model." + key_map[k]: v for k, v in unet_g.state_dict().items()}}
    else:
        content = unet_g.state_dict()
    path = tmp_path / "lotus-depth-g-v1-0.ckpt"
    torch.save(content, path)
    torch.save(vae.state_dict(), tmp_path / "vae.pt")
    model = load_model(path, tmp_path / "vae.pt", quantity="depth", allow_pickle=True)
    assert_same_weights(model.unet, unet_g, torch.float32)
    assert_same_weights(model.vae, vae, torch.float32)


class _RunsCode:
    def __reduce__(self):
        return (Path.touch, (Path(_RunsCode.marker),))


def test_pickle_with_code_is_refused_even_when_allowed(checkpoints, tmp_path):
    """allow_pickle still loads with weights_only: a pickle that would run code is an error, not a run."""
    _RunsCode.marker = str(tmp_path / "code-ran")
    path = tmp_path / "evil.ckpt"
    torch.save({"conv_in.weight": _RunsCode()}, path)
    with pytest.raises(LotusError, match="evil.ckpt"):
        load_model(path, checkpoints["vae"], quantity="depth", allow_pickle=True)
    assert not (tmp_path / "code-ran").exists()


# --- wrapping modules built elsewhere -------------------------------------------------------------


def test_wrapping_built_modules(unet_g, unet_d, vae):
    model = LotusModel(unet_g, vae, "depth")
    assert model.unet is unet_g and model.vae is vae  # wrapped, not copied
    assert model.quantity is Quantity.DEPTH
    assert model.generative and not LotusModel(unet_d, vae, Quantity.NORMAL).generative
    assert torch.equal(model.prompt_embeds, empty_prompt_embeds())
    assert model.device == torch.device("cpu")


def test_model_to_moves_both_networks(unet_d, vae):
    model = LotusModel(copy.deepcopy(unet_d), copy.deepcopy(vae), "depth")
    assert model.to(dtype=torch.bfloat16, vae_dtype=torch.float32) is model
    assert model.unet.dtype == torch.bfloat16 and model.vae.dtype == torch.float32
    model.to(dtype=torch.float16)
    assert model.unet.dtype == torch.float16 and model.vae.dtype == torch.float16
