"""``lotus-depth eval`` end to end: tiny random-weight checkpoints on disk, archives written in the real formats."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from test_core_eval_datasets import eth3d_files, normal_files, nyu_files, png_bytes, split_name, write_dataset
from tiny import save_unet_file, save_vae_file, tiny_unet, tiny_vae

import lotus_core
from lotus_core.batch.seeds import image_seed
from lotus_core.cli import main
from lotus_core.evaluation import evaluate, open_dataset
from lotus_core.evaluation import run as evaluation_run
from lotus_core.evaluation.metrics import depth_metrics
from lotus_core.evaluation.protocol import PROTOCOLS, align, evaluation_mask

pytestmark = pytest.mark.core


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval_checkpoints")
    disparity = save_unet_file(tiny_unet(True, seed=11), folder / "lotus-depth-g-v2-1-disparity.safetensors")
    normals = save_unet_file(tiny_unet(False, seed=12), folder / "lotus-normal-d-v1-0.safetensors")
    vae = save_vae_file(tiny_vae(seed=13), folder / "vae-ft-mse-840000-ema-pruned.safetensors")
    return disparity, normals, vae


@pytest.fixture()
def nyu_archive(tmp_path):
    """Four NYUv2-format images; the last has no valid depth at all (an empty mask)."""
    files, lines, _ = nyu_files(count=4)
    files["test/room_3/depth_0003.png"] = png_bytes(np.zeros((48, 64), np.uint16))
    return write_dataset(tmp_path / "nyu", files, lines, split_name("nyuv2"))


@pytest.fixture()
def count_predictions(monkeypatch):
    """How often the evaluation calls the real ``predict`` (wrapped, still called)."""
    calls = []
    real = evaluation_run.predict

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)
    monkeypatch.setattr(evaluation_run, "predict", counting)
    return calls


def test_eval_end_to_end_then_resume_from_the_cache(checkpoints, nyu_archive, tmp_path, capsys, caplog,
                                                    count_predictions):
    disparity, _, vae = checkpoints
    output = tmp_path / "out"
    command = ["eval", str(disparity), "nyuv2", str(nyu_archive), "-o", str(output), "--vae", str(vae)]
    assert main(command) == 0
    printed = capsys.readouterr()
    assert len(count_predictions) == 4
    assert "nyuv2: 3 of 4 images scored; lotus-depth-g-v2-1-disparity (disparity), resolution native, seed 42" \
        in printed.out
    assert "paper: Lotus-G, Table 1" in printed.out and "not scored: 1 image(s)" in printed.out
    assert "note: the paper's split has 654 images, this run 4" in printed.out
    abs_rel_line = next(line for line in printed.out.splitlines() if line.startswith("AbsRel"))
    assert abs_rel_line.split()[-2] == "5.4"  # the paper's figure beside ours
    assert "test/room_3/rgb_0003.png: not scored: no valid ground-truth pixel" in caplog.text

    results = json.loads((output / "results.json").read_text())
    assert results["settings"]["seed"] == 42 and results["settings"]["processing_resolution"] == 0
    assert results["settings"]["quantity"] == "disparity" and results["predicted_this_run"] == 4
    assert list(results["images_not_scored"]) == ["test/room_3/rgb_0003.png"]
    per_image = {row["name"]: row for row in results["images"]}
    assert results["metrics"]["abs_rel"] == pytest.approx(np.mean([row["abs_rel"] for row in per_image.values()]))
    assert results["metrics_as_in_table"]["delta1"] == pytest.approx(100 * results["metrics"]["delta1"])

    # the cached predictions are the public API's, with each image's seed from the run seed and its name
    model = lotus_core.load_model(disparity, vae)
    data = open_dataset("nyuv2", nyu_archive)
    for index in range(3):
        sample = data.sample(index)
        image = torch.from_numpy(sample.rgb).permute(2, 0, 1)[None].float() / 255
        expected = lotus_core.predict(model, image, processing_resolution=0, seed=image_seed(42, sample.name))
        cached = np.load(output / "predictions" / f"{sample.name}.npy")
        np.testing.assert_allclose(cached, expected.values[0, 0].numpy(), atol=1e-6)
        mask = evaluation_mask(sample, PROTOCOLS["nyuv2"])
        scored = depth_metrics(align(cached, sample.target, mask, lotus_core.Quantity.DISPARITY, PROTOCOLS["nyuv2"]),
                               sample.target, mask)
        assert per_image[sample.name]["abs_rel"] == pytest.approx(scored["abs_rel"], rel=1e-12)
        assert per_image[sample.name]["valid_pixels"] == mask.sum()
    data.close()

    with open(output / "per_image.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [row["name"] for row in rows] == [f"test/room_{i}/rgb_000{i}.png" for i in range(4)]
    assert float(rows[1]["delta1"]) == per_image[rows[1]["name"]]["delta1"]
    assert rows[3]["abs_rel"] == "" and "no valid ground-truth pixel" in rows[3]["not_scored_because"]

    count_predictions.clear()
    assert main(command) == 0
    assert count_predictions == []  # nothing predicted again
    assert "(0 predicted, 4 from the cache)" in capsys.readouterr().out
    again = json.loads((output / "results.json").read_text())
    assert again["metrics"] == results["metrics"] and again["taken_from_cache"] == 4


def test_other_settings_or_a_broken_archive_are_refused_and_the_cache_kept(checkpoints, nyu_archive, tmp_path,
                                                                           capsys):
    disparity, _, vae = checkpoints
    output = tmp_path / "out"
    common = ["eval", str(disparity), "nyuv2", "-o", str(output), "--vae", str(vae), "--limit", "2"]
    assert main([*common[:3], str(nyu_archive), *common[3:]]) == 0
    cached = sorted((output / "predictions").rglob("*.npy"))
    assert len(cached) == 2
    contents = [file.read_bytes() for file in cached]
    capsys.readouterr()

    assert main([*common[:3], str(nyu_archive), *common[3:], "--seed", "1"]) == 2
    assert "were made with other settings (seed 42 -> 1): choose another output folder" in capsys.readouterr().err

    files, lines, _ = nyu_files(count=4)
    del files["test/room_1/rgb_0001.png"]
    broken = write_dataset(tmp_path / "broken", files, lines, split_name("nyuv2"))
    assert main([*common[:3], str(broken), *common[3:]]) == 2
    assert "missing from" in capsys.readouterr().err

    assert main([*common[:3], str(tmp_path / "nowhere.tar"), *common[3:]]) == 2
    assert "nowhere.tar' does not exist" in capsys.readouterr().err
    assert [file.read_bytes() for file in sorted((output / "predictions").rglob("*.npy"))] == contents


def test_normals_benchmark(checkpoints, tmp_path, capsys):
    _, normals, vae = checkpoints
    files, lines, _ = normal_files(count=2)
    archive = write_dataset(tmp_path / "normals", files, lines, split_name("nyuv2-normals"))
    assert main(["eval", str(normals), "nyuv2-normals", str(archive), "-o", str(tmp_path / "out"),
                 "--vae", str(vae)]) == 0
    printed = capsys.readouterr().out
    assert "paper: Lotus-D, Table 2" in printed
    assert next(line for line in printed.splitlines() if line.startswith("mean angle")).split()[-2] == "16.2"
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert 0 < results["metrics"]["mean"] < 180 and 0 <= results["metrics"]["within_30"] <= 1
    assert results["images_scored"] == 2


def test_checkpoint_and_dataset_of_different_tasks(checkpoints, nyu_archive, tmp_path, capsys):
    _, normals, vae = checkpoints
    assert main(["eval", str(normals), "nyuv2", str(nyu_archive), "-o", str(tmp_path), "--vae", str(vae)]) == 2
    assert "dataset='nyuv2' scores depth, but the checkpoint 'lotus-normal-d-v1-0' predicts normal" in \
        capsys.readouterr().err


def test_ensemble_option_reaches_the_prediction(checkpoints, nyu_archive, tmp_path):
    disparity, _, vae = checkpoints
    model = lotus_core.load_model(disparity, vae)
    result = evaluate(model, "nyuv2", nyu_archive, tmp_path, ensemble_size=2, flip=True, seed=7, limit=1)
    assert result.predicted == 1 and result.settings["ensemble_size"] == 2 and result.settings["flip"]
    sample = open_dataset("nyuv2", nyu_archive).sample(0)
    image = torch.from_numpy(sample.rgb).permute(2, 0, 1)[None].float() / 255
    expected = lotus_core.predict_ensemble(model, image, ensemble_size=2, flip=True, processing_resolution=0,
                                           seed=image_seed(7, sample.name))
    np.testing.assert_allclose(np.load(tmp_path / "predictions" / f"{sample.name}.npy"),
                               expected.values[0, 0].numpy(), atol=1e-6)


def test_dataset_default_resolution_and_bilinear_restore(checkpoints, tmp_path):
    # ETH3D: the reference configs process at 768 px and resize the prediction back bilinearly
    disparity, _, vae = checkpoints
    files, lines, _ = eth3d_files()
    archive = write_dataset(tmp_path / "eth3d", files, lines, split_name("eth3d"))
    model = lotus_core.load_model(disparity, vae)
    result = evaluate(model, "eth3d", archive, tmp_path / "out")
    assert result.settings["processing_resolution"] == 768 and result.settings["restore"] == "bilinear"
    sample = open_dataset("eth3d", archive).sample(0)
    image = torch.from_numpy(sample.rgb).permute(2, 0, 1)[None].float() / 255
    expected = lotus_core.predict(model, image, processing_resolution=768, restore="bilinear",
                                  seed=image_seed(42, sample.name))
    np.testing.assert_allclose(np.load(tmp_path / "out" / "predictions" / f"{sample.name}.npy"),
                               expected.values[0, 0].numpy(), atol=1e-6)
    assert result.images[0]["valid_pixels"] == 40 * 60 - 4 * 20  # the inf holes are not scored


def test_an_interrupted_run_resumes_where_it_stopped(checkpoints, nyu_archive, tmp_path, capsys, monkeypatch,
                                                      count_predictions):
    disparity, _, vae = checkpoints
    command = ["eval", str(disparity), "nyuv2", str(nyu_archive), "-o", str(tmp_path), "--vae", str(vae)]
    real = evaluation_run._predict

    def stopped_at_the_third_image(model, sample, options):
        if len(count_predictions) == 2:
            raise KeyboardInterrupt
        return real(model, sample, options)
    monkeypatch.setattr(evaluation_run, "_predict", stopped_at_the_third_image)
    assert main(command) == 130
    assert "interrupted; the predictions made so far are kept" in capsys.readouterr().err
    assert len(list((tmp_path / "predictions").rglob("*.npy"))) == 2 and not (tmp_path / "results.json").exists()

    monkeypatch.setattr(evaluation_run, "_predict", real)
    count_predictions.clear()
    assert main(command) == 0
    assert len(count_predictions) == 2  # only the two images not cached before
    assert "(2 predicted, 2 from the cache)" in capsys.readouterr().out
