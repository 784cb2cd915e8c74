"""The command line and the README's Python example, on tiny checkpoints written to disk."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import save_unet_file, save_vae_file, tiny_unet, tiny_vae

import lotus_core
from lotus_core.batch.seeds import image_seed
from lotus_core.cli import main

pytestmark = pytest.mark.core  # no ComfyUI (layers: tests/conftest.py)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    checkpoint = save_unet_file(tiny_unet(True, seed=5), folder / "lotus-depth-g-v1-0.safetensors")
    normals = save_unet_file(tiny_unet(False, seed=6), folder / "lotus-normal-d-v1-0.safetensors")
    vae = save_vae_file(tiny_vae(seed=7), folder / "vae-ft-mse-840000-ema-pruned.safetensors")
    images = folder / "images"
    (images / "nested").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(images / "a.png")
    Image.fromarray(rng.integers(0, 256, (33, 47, 3), dtype=np.uint8)).save(images / "nested" / "b.jpg")
    return checkpoint, normals, vae, images


def test_python_dash_m_runs_the_cli(files, tmp_path):
    checkpoint, _, vae, images = files
    args = [str(checkpoint), str(images / "a.png"), "--vae", str(vae), "-o", str(tmp_path), "--resolution", "16"]
    done = subprocess.run([sys.executable, "-m", "lotus_core", *args], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "a_depth.png").is_file()


def test_cli_writes_what_the_core_predicts(files, tmp_path, capsys):
    checkpoint, _, vae, images = files
    assert main([str(checkpoint), str(images), "--vae", str(vae), "-o", str(tmp_path), "--resolution", "64",
                 "--seed", "3", "--save", "png16", "npy", "control"]) == 0
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "a_control.png", "a_depth.npy", "a_depth.npy.json", "a_depth.png", "lotus_job.json", "nested",
        "nested/b_control.png", "nested/b_depth.npy", "nested/b_depth.npy.json", "nested/b_depth.png"]

    model = lotus_core.load_model(checkpoint, vae)
    rgb = np.asarray(Image.open(images / "a.png").convert("RGB"), dtype=np.float32) / 255
    image = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    # Each image's seed comes from the run's and its name; the job resizes while decoding (on Ray: in CPU
    # tasks), in predict's own arithmetic, so the numbers are predict's bit for bit.
    prediction = lotus_core.predict(model, image, processing_resolution=64, seed=image_seed(3, "a.png"))
    expected = prediction.values[0, 0].numpy()
    assert np.array_equal(np.load(tmp_path / "a_depth.npy"), expected)
    png16 = np.asarray(Image.open(tmp_path / "a_depth.png"), dtype=np.float64) / 65535
    assert png16.shape == (40, 56)
    np.testing.assert_allclose(png16, expected, atol=0.5 / 65535 + 1e-7)
    control = np.asarray(Image.open(tmp_path / "a_control.png"), dtype=np.float64) / 255
    np.testing.assert_allclose(control, lotus_core.to_controlnet(prediction)[0, 0].numpy(), atol=0.5 / 255 + 1e-7)
    assert "2 done, 0 skipped" in capsys.readouterr().out  # a summary, however small the run


def test_cli_vae_tiles_explicit_or_from_a_memory_limit(files, tmp_path):
    checkpoint, _, vae, images = files
    common = [str(checkpoint), str(images / "a.png"), "--vae", str(vae), "--resolution", "384", "--save", "npy"]
    assert main([*common, "-o", str(tmp_path / "tiles"), "--vae-tile", "256"]) == 0
    # 0.45 GB: the whole 384x274 image needs 0.53 GB, 256 px tiles 0.35 GB (lotus_core.prediction.memory.working_bytes)
    assert main([*common, "-o", str(tmp_path / "limit"), "--memory-limit", "0.45"]) == 0

    model = lotus_core.load_model(checkpoint, vae)
    rgb = np.asarray(Image.open(images / "a.png").convert("RGB"), dtype=np.float32) / 255
    image = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    seed = image_seed(0, "a.png")
    tiled = lotus_core.predict(model, image, processing_resolution=384, seed=seed, vae_tile_size=256).values[0, 0]
    whole = lotus_core.predict(model, image, processing_resolution=384, seed=seed, vae_tile_size=0).values[0, 0]
    assert not torch.equal(tiled, whole)
    assert np.array_equal(np.load(tmp_path / "tiles" / "a_depth.npy"), tiled.numpy())
    assert np.array_equal(np.load(tmp_path / "limit" / "a_depth.npy"), tiled.numpy())


@pytest.mark.parametrize("value", ["0", "-1", "lots"])
def test_cli_refuses_a_memory_limit_that_is_not_positive(files, value, capsys):
    checkpoint, _, vae, images = files
    with pytest.raises(SystemExit) as stopped:
        main([str(checkpoint), str(images / "a.png"), "--vae", str(vae), "--memory-limit", value])
    assert stopped.value.code == 2
    assert f"--memory-limit: {value!r} is not a number of GB > 0" in capsys.readouterr().err


def test_cli_channels_last_is_the_cpu_default_and_can_be_turned_off(files, tmp_path):
    checkpoint, _, vae, images = files
    common = [str(checkpoint), str(images / "a.png"), "--vae", str(vae), "--resolution", "64", "--save", "npy"]
    assert main([*common, "-o", str(tmp_path / "default")]) == 0
    assert main([*common, "-o", str(tmp_path / "exact"), "--no-channels-last"]) == 0
    rgb = np.asarray(Image.open(images / "a.png").convert("RGB"), dtype=np.float32) / 255
    image = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    for folder, channels_last in (("default", True), ("exact", False)):
        model = lotus_core.load_model(checkpoint, vae, channels_last=channels_last)
        expected = lotus_core.predict(model, image, processing_resolution=64, seed=image_seed(0, "a.png"))
        assert np.array_equal(np.load(tmp_path / folder / "a_depth.npy"), expected.values[0, 0].numpy())


def test_cli_compile_compiles_the_model(files, tmp_path, monkeypatch):
    """A spy stands in for LotusModel.compile: the real one spends minutes compiling C++ here (the
    compiled model itself is tested in test_core_memory.py and timed by the benchmark)."""
    compiled = []
    monkeypatch.setattr(lotus_core.LotusModel, "compile", lambda model, **options: compiled.append(model) or model)
    checkpoint, _, vae, images = files
    common = [str(checkpoint), str(images / "a.png"), "--vae", str(vae), "--resolution", "16", "--save", "npy"]
    assert main([*common, "-o", str(tmp_path / "plain")]) == 0
    assert compiled == []
    assert main([*common, "-o", str(tmp_path / "compiled"), "--compile"]) == 0
    assert len(compiled) == 1 and isinstance(compiled[0], lotus_core.LotusModel)


def test_cli_normals(files, tmp_path):
    _, normals, vae, images = files
    assert main([str(normals), str(images / "a.png"), "--vae", str(vae), "-o", str(tmp_path),
                 "--resolution", "0"]) == 0
    vectors = np.load(tmp_path / "a_normal.npy")
    assert vectors.shape == (40, 56, 3)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=-1), 1, atol=1e-5)
    assert np.asarray(Image.open(tmp_path / "a_normal.png")).shape == (40, 56, 3)


@pytest.mark.parametrize("args, message", [
    (["missing.safetensors", "{images}"], "does not exist"),
    (["{checkpoint}", "no-such-folder"], "input 'no-such-folder' does not exist"),
    (["{checkpoint}", "{images}"], "holds only the UNet: pass vae="),
    (["{checkpoint}", "{images}/a.png", "--vae", "{vae}", "--vae-tile", "100"], "vae_tile_size=100 must be"),
], ids=["missing-checkpoint", "missing-input", "no-vae", "bad-vae-tile"])
def test_cli_errors_exit_2_with_a_message_not_a_traceback(files, args, message, capsys):
    checkpoint, _, vae, images = files
    assert main([a.format(checkpoint=checkpoint, images=images, vae=vae) for a in args]) == 2
    error = capsys.readouterr().err
    assert error.startswith("lotus-depth: error: ") and message in error and "Traceback" not in error


def test_readme_python_example_runs(files, capsys):
    """The README's API example, with its file names pointed at tiny checkpoints."""
    checkpoint, _, vae, _ = files
    readme = (REPO / "README.md").read_text()
    code = re.search(r"## Python API\n\n```python\n(.*?)```", readme, re.S).group(1)
    code = code.replace('"lotus-depth-g-v1-0.safetensors"', repr(str(checkpoint)))
    code = code.replace('"vae-ft-mse-840000-ema-pruned.safetensors"', repr(str(vae)))
    exec(compile(code, "README.md", "exec"), {})
    assert "Quantity.DEPTH torch.Size([2, 1, 480, 640]) torch.Size([2, 1, 480, 640])" in capsys.readouterr().out


def test_readme_models_table_is_generated_from_the_table():
    from lotus_core.loading.variants import models_markdown

    assert models_markdown() in (REPO / "README.md").read_text(), "paste lotus_core.loading.variants.models_markdown()"


def test_cli_quality_modes_write_what_the_core_computes(files, tmp_path):
    checkpoint, _, vae, images = files
    image = images / "a.png"
    common = [str(checkpoint), str(image), "--vae", str(vae), "--resolution", "32", "--seed", "2"]
    model = lotus_core.load_model(checkpoint, vae)
    rgb = np.asarray(Image.open(image).convert("RGB"), dtype=np.float32) / 255
    batch = torch.from_numpy(rgb).permute(2, 0, 1)[None]

    assert main([*common, "-o", str(tmp_path / "e"), "--ensemble", "3", "--flip", "--save", "npy"]) == 0
    seed = image_seed(2, "a.png")
    ensemble = lotus_core.predict_ensemble(model, batch, ensemble_size=3, flip=True, processing_resolution=32,
                                           seed=seed)
    # Not bit for bit: the job mirrors the resized image, predict_ensemble mirrors it before resizing.
    np.testing.assert_allclose(np.load(tmp_path / "e" / "a_depth.npy"), ensemble.values[0, 0].numpy(), atol=1e-6)
    np.testing.assert_allclose(np.load(tmp_path / "e" / "a_uncertainty.npy"), ensemble.uncertainty[0, 0].numpy(),
                               atol=1e-6)

    assert main([*common, "-o", str(tmp_path / "t"), "--tile", "32", "--overlap", "8", "--save", "npy"]) == 0
    tiled = lotus_core.predict_tiled(model, batch, tile_size=32, overlap=8, processing_resolution=32, seed=seed)
    np.testing.assert_allclose(np.load(tmp_path / "t" / "a_depth.npy"), tiled.values[0, 0].numpy(), atol=1e-6)


def test_cli_video_mode_normalises_the_sequence_as_one(files, tmp_path):
    checkpoint, _, vae, images = files
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    rng = np.random.default_rng(1)
    for index in range(3):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(frames_dir / f"f{index}.png")
    assert main([str(checkpoint), str(frames_dir), "--vae", str(vae), "-o", str(tmp_path / "out"), "--video",
                 "--resolution", "32", "--save", "npy", "control"]) == 0
    frames = torch.cat([torch.from_numpy(np.asarray(Image.open(frames_dir / f"f{i}.png"), dtype=np.float32) / 255)
                        .permute(2, 0, 1)[None] for i in range(3)])
    model = lotus_core.load_model(checkpoint, vae)
    expected = lotus_core.predict_video(model, frames, processing_resolution=32, seed=0)
    control = lotus_core.to_controlnet(expected, per_image=False)
    for index in range(3):
        np.testing.assert_allclose(np.load(tmp_path / "out" / f"f{index}_depth.npy"),
                                   expected.values[index, 0].numpy(), atol=1e-6)
        written = np.asarray(Image.open(tmp_path / "out" / f"f{index}_control.png"), dtype=np.float64) / 255
        np.testing.assert_allclose(written, control[index, 0].numpy(), atol=0.5 / 255 + 1e-7)


def test_cli_refuses_combined_modes_and_mixed_frame_sizes(files, tmp_path, capsys):
    checkpoint, _, vae, images = files
    with pytest.raises(SystemExit):
        main([str(checkpoint), str(images), "--ensemble", "2", "--video"])
    assert "cannot be combined" in capsys.readouterr().err
    assert main([str(checkpoint), str(images), "--vae", str(vae), "-o", str(tmp_path), "--video"]) == 2
    assert "--video needs frames of one size" in capsys.readouterr().err


def test_cli_follows_the_one_precision_policy(files, tmp_path):
    checkpoint, _, vae, images = files
    with pytest.raises(SystemExit):  # argparse: not a choice
        main([str(checkpoint), str(images / "a.png"), "--vae", str(vae), "--dtype", "fp8"])
    assert main([str(checkpoint), str(images / "a.png"), "--vae", str(vae), "-o", str(tmp_path),
                 "--device", "cpu", "--dtype", "fp16"]) == 2  # refused on a CPU, as the loader node refuses it


def test_cli_geometry_reference_reproduces_the_official_pipeline(files, tmp_path):
    checkpoint, _, vae, images = files
    for geometry in ("exact", "reference"):
        assert main([str(checkpoint), str(images / "a.png"), "--vae", str(vae), "-o", str(tmp_path / geometry),
                     "--resolution", "60", "--save", "npy", "--geometry", geometry]) == 0
    model = lotus_core.load_model(checkpoint, vae)
    rgb = np.asarray(Image.open(images / "a.png").convert("RGB"), dtype=np.float32) / 255
    image = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    for geometry in ("exact", "reference"):
        expected = lotus_core.predict(model, image, processing_resolution=60, seed=image_seed(0, "a.png"),
                                      geometry=geometry).values
        assert np.array_equal(np.load(tmp_path / geometry / "a_depth.npy"), expected[0, 0].numpy())
    assert not np.array_equal(np.load(tmp_path / "exact" / "a_depth.npy"),
                              np.load(tmp_path / "reference" / "a_depth.npy"))  # 60 px: not a multiple of 8


@pytest.mark.parametrize(("args", "message"), [
    (["--flip"], "--flip needs --ensemble"),
    (["--overlap", "16"], "--overlap needs --tile"),
])
def test_cli_options_that_need_another_are_refused(files, args, message, capsys):
    checkpoint, _, vae, images = files
    with pytest.raises(SystemExit):
        main([str(checkpoint), str(images / "a.png"), "--vae", str(vae), *args])
    assert message in capsys.readouterr().err


def test_cli_tile_overlap_defaults_to_less_than_half_a_small_tile(files, tmp_path):
    checkpoint, _, vae, images = files
    assert main([str(checkpoint), str(images / "a.png"), "--vae", str(vae), "-o", str(tmp_path), "--resolution", "32",
                 "--tile", "40", "--save", "npy"]) == 0  # the default 128 would be refused for 40 px tiles
