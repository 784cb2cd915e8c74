"""The ensemble, tiled and video depth nodes in the real ComfyUI server: node == core.

Shares the server set-up and helpers of test_nodes.py (same tiny checkpoints)."""

from __future__ import annotations

import pytest
from test_nodes import VAE, as_png, assert_pixels_equal, load_image, run_ok, saved, serve_tiny_checkpoints

import lotus_core
from lotus_core import predict_ensemble, predict_tiled, predict_video

QUALITY_NODES = ("LotusDepth_DepthEnsemble", "LotusDepth_DepthTiled", "LotusDepth_DepthVideo")
CHECKPOINT = "lotus-depth-g-v1-0.safetensors"


def quality_graph(node: str, frames: int = 1, **inputs) -> dict:
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
        "2": {"class_type": "LotusDepth_LoadModel",
              "inputs": {"checkpoint": CHECKPOINT, "vae": VAE, "precision": "auto", "quantity": "auto"}},
        "9": {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": frames}},
        "3": {"class_type": node, "inputs": {"lotus_model": ["2", 0], "image": ["9", 0], "seed": 6,
                                             "chunk_size": 2, **inputs}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "quality"}},
    }
    if node == "LotusDepth_DepthEnsemble":
        prompt["5"] = {"class_type": "MaskToImage", "inputs": {"mask": ["3", 4]}}
        prompt["6"] = {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "quality"}}
    return prompt


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from serve_tiny_checkpoints(tmp_path_factory)


@pytest.fixture(scope="module")
def core_model(server):
    return lotus_core.load_model(server.lotus_dir / CHECKPOINT, server.vae_dir / VAE)


def test_quality_nodes_are_listed_with_their_options(server):
    ensemble, tiled, video = (server.object_info(node) for node in QUALITY_NODES)
    assert ensemble["display_name"] == "Lotus Depth (Ensemble)"
    assert ensemble["output_name"] == ["depth_image", "depth_mask", "native", "lotus_depth", "uncertainty"]
    assert list(ensemble["input"]["required"])[-3:] == ["ensemble_size", "flip", "reduction"]
    assert tiled["input"]["required"]["tile_size"][1]["default"] == 768
    assert tiled["input"]["required"]["overlap"][1]["default"] == 128
    assert video["input"]["required"]["align"][1]["options"] == ["previous", "first", "none"]
    for node in (ensemble, tiled, video):
        assert "noise" not in node["input"]["required"]
        assert node["category"] == "image/depth/lotus"
        assert all(spec[1].get("tooltip") for spec in node["input"]["required"].values())


def test_ensemble_node_equals_core(server, core_model):
    entry = run_ok(server, quality_graph("LotusDepth_DepthEnsemble", processing_resolution=48, ensemble_size=3,
                                         flip=True, reduction="median"))
    expected = predict_ensemble(core_model, load_image(server, "photo.png"), ensemble_size=3, flip=True,
                                reduction="median", processing_resolution=48, seed=6, chunk_size=2)
    assert_pixels_equal(saved(server, entry, "4")[0], as_png(lotus_core.to_controlnet(expected)[:, 0])[0])
    assert_pixels_equal(saved(server, entry, "6")[0], as_png(expected.uncertainty[:, 0])[0])


def test_tiled_node_equals_core(server, core_model):
    entry = run_ok(server, quality_graph("LotusDepth_DepthTiled", processing_resolution=32, tile_size=32, overlap=8))
    expected = predict_tiled(core_model, load_image(server, "photo.png"), tile_size=32, overlap=8,
                             processing_resolution=32, seed=6, chunk_size=2)
    assert_pixels_equal(saved(server, entry, "4")[0], as_png(lotus_core.to_controlnet(expected)[:, 0])[0])


def test_video_node_equals_core_with_one_normalisation_for_the_sequence(server, core_model):
    entry = run_ok(server, quality_graph("LotusDepth_DepthVideo", frames=3, processing_resolution=32,
                                         latent_blend=0.1, align="previous", low_percentile=2.0,
                                         high_percentile=98.0, chunk_size=1))  # blended frames: one per pass
    frames = load_image(server, "photo.png").repeat(3, 1, 1, 1)
    expected = predict_video(core_model, frames, latent_blend=0.1, align="previous", processing_resolution=32,
                             seed=6, chunk_size=1)
    control = lotus_core.to_controlnet(expected, low=2.0, high=98.0, per_image=False)[:, 0]
    images = saved(server, entry, "4")
    assert images.shape[0] == 3
    for actual, wanted in zip(images, as_png(control)):
        assert_pixels_equal(actual, wanted)
