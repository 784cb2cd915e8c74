"""``lotus_core.lotus2.command.main`` (the ``lotus-depth lotus2`` command) on a tiny diffusers FLUX folder:
the empty-prompt conditioning computed with the folder's (tiny) text encoders, the files as the Lotus 1
command writes them, the values as predict_lotus2 gives them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lotus2_tiny import tiny_flux_transformer, tiny_flux_vae, write_release, write_text_encoders
from PIL import Image

import lotus_core
from lotus_core.batch.seeds import image_seed
from lotus_core.lotus2 import build_lotus2, cached_empty_prompt, files_in, predict_lotus2
from lotus_core.lotus2.command import main

pytestmark = pytest.mark.core


@pytest.fixture(scope="module")
def flux_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flux") / "FLUX.1-dev"
    transformer = tiny_flux_transformer(seed=1)
    transformer.save_pretrained(folder / "transformer")
    tiny_flux_vae(seed=2).save_pretrained(folder / "vae")
    write_text_encoders(folder)
    write_release(folder.parent / "Lotus-2", transformer, "depth", seed=3)
    return folder


def test_depth_files_match_predict(tmp_path, flux_folder, capsys):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    cache = tmp_path / "cache"

    command = [str(flux_folder), str(tmp_path / "photo.png"), "-o", str(tmp_path / "out"), "--lotus2-dir",
               str(flux_folder.parent / "Lotus-2"), "--conditioning-cache", str(cache), "--sharpener-steps", "2",
               "--seed", "4", "--save", "npy", "control", "--device", "cpu"]
    code = main(command)

    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "lotus_job.json", "photo_control.png", "photo_disparity.npy", "photo_disparity.npy.json"]
    values, meta = lotus_core.read_depth_file(tmp_path / "out" / "photo_disparity.npy")
    assert meta["lotus_model"] == "lotus-2-depth" and meta["lotus_quantity"] == "disparity"

    from diffusers import AutoencoderKL, FluxTransformer2DModel

    conditioning = cached_empty_prompt(flux_folder, cache)  # computed by the command: read back, not recomputed
    assert conditioning.prompt_embeds.shape == (1, 512, 32)
    model = build_lotus2(FluxTransformer2DModel.from_pretrained(flux_folder / "transformer"),
                         AutoencoderKL.from_pretrained(flux_folder / "vae"),
                         files_in(flux_folder.parent / "Lotus-2", "depth"), conditioning, "depth")
    image = torch.from_numpy(np.asarray(Image.open(tmp_path / "photo.png"), dtype=np.float32) / 255)
    # the dataset job's seed for this image: from the run's seed and the image's name
    expected = predict_lotus2(model, image.permute(2, 0, 1)[None], sharpener_steps=2, seed=image_seed(4, "photo.png"))
    assert np.array_equal(values, expected.values[0, 0].numpy())
    assert "1 done, 0 skipped" in capsys.readouterr().out
    assert main(command) == 0 and "0 done, 1 skipped" in capsys.readouterr().out  # resumed: nothing again


def test_errors_are_one_line(tmp_path, flux_folder, capsys):
    code = main([str(tmp_path / "no-such-folder"), str(tmp_path), "--lotus2-dir", str(tmp_path)])
    assert code == 2
    assert "is not a diffusers FLUX folder" in capsys.readouterr().err
    code = main([str(flux_folder), str(tmp_path), "--lotus2-dir", str(tmp_path), "--task", "normal"])
    assert code == 2
    assert "lotus-2_core_predictor_normal.safetensors" in capsys.readouterr().err
