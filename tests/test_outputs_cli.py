"""The command line's depth outputs: --save exr / color, --colormap, metadata in png16 and EXR."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from PIL import Image
from tiny import save_unet_file, save_vae_file, tiny_unet, tiny_vae

import lotus_core
from lotus_core.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_outputs")
    checkpoint = save_unet_file(tiny_unet(False, seed=31), folder / "lotus-depth-d-v2-0-disparity.safetensors")
    normals = save_unet_file(tiny_unet(False, seed=32), folder / "lotus-normal-d-v1-0.safetensors")
    vae = save_vae_file(tiny_vae(seed=33), folder / "vae-ft-mse-840000-ema-pruned.safetensors")
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (36, 52, 3), dtype=np.uint8)).save(folder / "a.png")
    return checkpoint, normals, vae, folder / "a.png"


def test_cli_saves_exr_png16_npy_and_colour_with_metadata(files, tmp_path):
    checkpoint, _, vae, image = files
    assert main([str(checkpoint), str(image), "--vae", str(vae), "-o", str(tmp_path), "--resolution", "48",
                 "--save", "png16", "exr", "npy", "color", "--colormap", "inferno"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a_disparity.exr", "a_disparity.npy", "a_disparity.npy.json", "a_disparity.png", "a_disparity_inferno.png",
        "lotus_job.json"]
    # the CLI writes through the same writer as Save Depth: the .npy carries the same metadata
    assert lotus_core.read_depth_file(tmp_path / "a_disparity.npy")[1]["lotus_quantity"] == "disparity"
    native = np.load(tmp_path / "a_disparity.npy")
    exr, exr_meta = lotus_core.read_depth_file(tmp_path / "a_disparity.exr")
    np.testing.assert_array_equal(exr, native)
    png, png_meta = lotus_core.read_depth_file(tmp_path / "a_disparity.png")
    np.testing.assert_allclose(png, native, atol=0.5 / 65535 + 1e-7, rtol=0)
    for meta in (exr_meta, png_meta):
        assert meta["lotus_model"] == "lotus-depth-d-v2-0-disparity"
        assert meta["lotus_quantity"] == "disparity" and meta["lotus_polarity"] == "near = high"
        assert meta["lotus_processing_resolution"] == 48
    # disparity: near = 1 is inferno's bright end; min..max stretched, truncated to 8 bits
    stretched = (native - native.min()) / (native.max() - native.min())
    expected = matplotlib.colormaps["inferno"](stretched)[..., :3]
    colour = np.asarray(Image.open(tmp_path / "a_disparity_inferno.png")).astype(np.float64) / 255
    assert np.abs(colour - expected).max() <= 1 / 255 + 1e-6


def test_cli_normals_as_float_exr(files, tmp_path):
    _, normals, vae, image = files
    assert main([str(normals), str(image), "--vae", str(vae), "-o", str(tmp_path), "--resolution", "0",
                 "--save", "exr", "npy"]) == 0
    vectors, _ = lotus_core.read_depth_file(tmp_path / "a_normal.exr")
    np.testing.assert_array_equal(vectors, np.load(tmp_path / "a_normal.npy"))
    assert vectors.shape == (36, 52, 3)


def test_cli_refuses_an_unknown_colormap(files, capsys):
    checkpoint, _, vae, image = files
    with pytest.raises(SystemExit):
        main([str(checkpoint), str(image), "--vae", str(vae), "--save", "color", "--colormap", "jet"])
    assert "invalid choice: 'jet'" in capsys.readouterr().err
