"""The loader node offers every published release and downloads it on first run, in a real ComfyUI server.

The server process reaches a Hub-compatible file server on loopback (``fake_hub.FakeHub``; test_hub.py
says why it stands in for the real Hub) through the real environment variables: HF_ENDPOINT,
HF_HUB_OFFLINE=0 and its own HF_HOME / HF_HUB_CACHE. Expected outputs come from ``lotus_core`` run in
this process on the downloaded folder: node == core.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from comfy_server import ComfyServer, history_error, history_status
from fake_hub import FakeHub
from PIL import Image
from tiny import save_diffusers_folder, save_unet_file, tiny_unet, tiny_vae

import lotus_core
from lotus_core.loading.hub import missing_files
from lotus_core.loading.variants import KNOWN_CHECKPOINTS, known_checkpoint

NODE_IDS = ("LotusDepth_LoadModel", "LotusDepth_Depth", "LotusDepth_Normals")
DEPTH = "lotus-depth-d-v2-0-disparity"
NORMAL = "lotus-normal-g-v1-1"
UNET = "unet/diffusion_pytorch_model.safetensors"
FROM_FOLDER = "(from checkpoint folder)"


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    root = tmp_path_factory.mktemp("releases")
    return {DEPTH: save_diffusers_folder(tiny_unet(False, seed=41), tiny_vae(seed=42), root / DEPTH,
                                         pipeline="DirectRegressionPipeline"),
            NORMAL: save_diffusers_folder(tiny_unet(True, seed=43), tiny_vae(seed=44), root / NORMAL)}


@pytest.fixture(scope="module")
def hub(releases):
    with FakeHub() as server:
        for name, folder in releases.items():
            server.add_folder(f"jingheya/{name}", folder)
        yield server


@pytest.fixture(scope="module")
def server(tmp_path_factory, hub):
    base = tmp_path_factory.mktemp("comfy_download")
    hf_home = base / "hf_home"
    srv = ComfyServer(base, require_nodes=NODE_IDS, env={
        "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(hf_home), "HF_HUB_CACHE": str(hf_home / "hub")})
    srv.prepare()
    # An interrupted download of another release: its UNet arrived, model_index.json did not.
    partial = srv.lotus_dir / "lotus-depth-d-v1-0" / "unet"
    partial.mkdir(parents=True)
    save_unet_file(tiny_unet(False, seed=45), partial / "diffusion_pytorch_model.safetensors")
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(srv.input_dir / "photo.png")
    srv.start()
    yield srv
    srv.stop()


def graph(checkpoint: str, node: str = "LotusDepth_Depth", seed: int = 1) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
        "2": {"class_type": "LotusDepth_LoadModel",
              "inputs": {"checkpoint": checkpoint, "vae": FROM_FOLDER, "precision": "auto", "quantity": "auto"}},
        "3": {"class_type": node, "inputs": {"lotus_model": ["2", 0], "image": ["1", 0], "processing_resolution": 64,
                                             "seed": seed, "noise": "per image", "chunk_size": 1}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "download"}},
    }


def transfers(hub, name: str) -> list[str]:
    return [r.path.split("/resolve/main/", 1)[1] for r in hub.gets(f"/jingheya/{name}/")]


def test_every_release_is_offered_before_it_is_downloaded(server):
    loader = server.object_info("LotusDepth_LoadModel")
    checkpoint = loader["input"]["required"]["checkpoint"][1]
    # Nothing complete on disk yet; the half-downloaded folder's UNet is not offered on its own.
    assert checkpoint["options"] == sorted(f"{k.name}/" for k in KNOWN_CHECKPOINTS)
    assert checkpoint["default"] == "lotus-depth-g-v2-1-disparity/"
    assert "downloaded from Hugging Face on first run into models/lotus/<name>/" in checkpoint["tooltip"]


def test_choosing_a_release_downloads_it_with_progress_then_runs(server, hub, releases):
    entry, events = server.run_with_events(graph(DEPTH + "/"), timeout=180)
    assert history_status(entry) == "success", history_error(entry)
    folder = server.lotus_dir / DEPTH
    assert missing_files(known_checkpoint(DEPTH), folder) == []
    for path in (f.path for f in known_checkpoint(DEPTH).download):
        assert (folder / path).read_bytes() == (releases[DEPTH] / path).read_bytes()
    assert transfers(hub, DEPTH) == [f.path for f in known_checkpoint(DEPTH).download]

    total = sum(p.stat().st_size for p in releases[DEPTH].rglob("*") if p.is_file())
    progress = [(e["data"]["value"], e["data"]["max"]) for e in events
                if e["type"] == "progress" and e["data"]["node"] == "2"]
    assert progress and progress[-1] == (total, total)

    saved, = server.output_images(entry, "4")
    model = lotus_core.load_model(folder)
    image = torch.from_numpy(np.asarray(Image.open(server.input_dir / "photo.png"), np.float32) / 255)
    prediction = lotus_core.predict(model, image.permute(2, 0, 1)[None], processing_resolution=64, seed=1)
    expected = np.clip(255.0 * lotus_core.to_controlnet(prediction)[0, 0].numpy(), 0, 255).astype(np.uint8)
    difference = np.abs(np.asarray(Image.open(saved))[..., 0].astype(int) - expected)
    assert difference.max() <= 1 and (difference > 0).mean() < 0.01


def test_cancel_stops_a_download_and_leaves_no_partial_file(server, hub):
    hub.delay[(f"jingheya/{NORMAL}", UNET)] = 0.02  # ≈ 5 s for the 15 MB UNet
    folder = server.lotus_dir / NORMAL
    try:
        with server.events() as events:
            prompt_id = server.submit(graph(NORMAL + "/", node="LotusDepth_Normals"), events.client_id)
            deadline = time.monotonic() + 120
            while not hub.gets(f"/jingheya/{NORMAL}/resolve/main/{UNET}"):
                assert time.monotonic() < deadline, "the UNet transfer did not start"
                time.sleep(0.05)
            server.interrupt()
            events.wait_done(prompt_id, timeout=120)
        assert events.of_type("execution_interrupted", prompt_id)
    finally:
        hub.delay.clear()
    assert not (folder / UNET).exists() and not (folder / "model_index.json").exists()
    assert not [p for p in folder.rglob("*") if p.name.endswith(".incomplete")]

    entry = server.run(graph(NORMAL + "/", node="LotusDepth_Normals"), timeout=180)  # the next run completes it
    assert history_status(entry) == "success", history_error(entry)
    assert missing_files(known_checkpoint(NORMAL), folder) == []
    done = transfers(hub, NORMAL)  # what was complete before the cancel is not fetched again
    assert done.count("unet/config.json") == 1 and done.count(UNET) == 2


def test_a_release_the_hub_cannot_give_fails_with_what_to_do(server, hub):
    name = "lotus-depth-g-v1-0"  # not on the fake hub
    entry = server.run(graph(name + "/"))
    assert history_status(entry) == "error"
    message = history_error(entry)["exception_message"]
    assert f"cannot download {name}: jingheya/{name} was not found at {hub.url} (set by HF_ENDPOINT)" in message
    assert f"{hub.url}/jingheya/{name}/resolve/main/{UNET}" in message
    assert f"into {server.lotus_dir / name}/ keeping their sub-folders" in message
