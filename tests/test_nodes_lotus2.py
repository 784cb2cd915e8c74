"""Lotus-2 in a real ComfyUI server: the user's FLUX MODEL and VAE through ComfyUI's loaders and LoRA patching.

The FLUX model has FLUX.1's width (ComfyUI's detection fixes it) with one block of each kind; the VAE
has the FLUX VAE's layout; both random. The release files (random LoRAs of the official ranks and
key format, a random LCM) and a random empty-prompt conditioning (standing for one stored by an
earlier run) lie in models/lotus/Lotus-2. Expected values come from lotus_core's diffusers + peft
path run in this process on the same files: node == core within ``TOLERANCE``.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
from comfy_server import ComfyServer, PromptRejected, history_error, history_status
from diffusers import FluxTransformer2DModel
from lotus2_tiny import (
    COMFY_FLUX_CONFIG,
    comfy_clip_l,
    comfy_flux_transformer,
    comfy_flux_vae,
    tiny_conditioning,
    tiny_sd3_transformer,
    write_release,
)
from PIL import Image
from safetensors.torch import load_file, save_file

import lotus_core
from lotus_core.lotus2 import build_lotus2, files_in, load_conditioning, save_conditioning

NODE_IDS = ("LotusDepth_LoadLotus2", "LotusDepth_Lotus2Depth", "LotusDepth_Lotus2Normals")
FLUX_FILE, VAE_FILE, SD3_FILE = "tiny-flux-dev.safetensors", "flux-ae.safetensors", "tiny-sd3.safetensors"
CLIP_FILE = "clip_l.safetensors"
STORED_CONDITIONING = "flux_empty_prompt.safetensors"  # in models/lotus/Lotus-2
# ComfyUI's FLUX (fused qkv, its own attention and rope, LoRA merged into the weights) against diffusers + peft
# in fp32: the same maths in another order (measured: 1.4e-6 at most).
TOLERANCE = 1e-5
SIZE = (40, 56)  # processed at 32 x 32: the resize to multiples of 16 and back is in both paths


@pytest.fixture(scope="module")
def flux_files(tmp_path_factory):
    """The FLUX weights, written once: [diffusers state dict of the transformer, the VAE]."""
    folder = tmp_path_factory.mktemp("flux")
    transformer = comfy_flux_transformer(seed=3)
    save_file({k: v.contiguous() for k, v in transformer.state_dict().items()}, str(folder / FLUX_FILE))
    conditioning = tiny_conditioning(transformer, seed=4)
    for task in ("depth", "normal"):
        write_release(folder / "Lotus-2", transformer, task, seed=10 if task == "depth" else 20)
    del transformer
    gc.collect()
    vae = comfy_flux_vae(seed=5)
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(folder / VAE_FILE))
    save_conditioning(conditioning, folder / "Lotus-2" / STORED_CONDITIONING)  # as if stored by an earlier run
    return folder, vae, conditioning


@pytest.fixture(scope="module")
def server(tmp_path_factory, flux_files):
    folder, _, _ = flux_files
    srv = ComfyServer(tmp_path_factory.mktemp("comfy"), require_nodes=NODE_IDS)
    srv.prepare()
    for name in (FLUX_FILE, VAE_FILE):
        target = srv.diffusion_models_dir / name if name == FLUX_FILE else srv.vae_dir / name
        target.symlink_to(folder / name)
    (srv.lotus_dir / "Lotus-2").symlink_to(folder / "Lotus-2", target_is_directory=True)
    save_file(dict(tiny_sd3_transformer(seed=6).state_dict()), str(srv.diffusion_models_dir / SD3_FILE))
    (srv.models_dir / "text_encoders").mkdir(exist_ok=True)
    save_file(comfy_clip_l(seed=7), str(srv.models_dir / "text_encoders" / CLIP_FILE))
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)).save(srv.input_dir / "photo.png")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def input_image(server) -> torch.Tensor:
    """photo.png as LoadImage reads it, as a core batch [1, 3, H, W]."""
    image = np.asarray(Image.open(server.input_dir / "photo.png").convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(image).permute(2, 0, 1)[None]


@torch.no_grad()
def core_prediction(flux_files, server, task: str, steps: int, seed: int,
                    conditioning: lotus_core.EmptyPromptConditioning | None = None) -> lotus_core.DepthMap:
    """lotus_core's Lotus-2 (diffusers + peft) on the files the server loads."""
    folder, vae, stored = flux_files
    conditioning = conditioning or stored
    with torch.device("meta"):
        transformer = FluxTransformer2DModel(**COMFY_FLUX_CONFIG)
    transformer.load_state_dict(load_file(str(folder / FLUX_FILE)), assign=True)
    model = build_lotus2(transformer.eval(), vae, files_in(folder / "Lotus-2", task), conditioning, task)
    prediction = lotus_core.predict_lotus2(model, input_image(server), sharpener_steps=steps, seed=seed)
    del model, transformer
    gc.collect()
    return prediction


def graph(node="LotusDepth_Lotus2Depth", task="depth", model=FLUX_FILE, steps=2, seed=3, vae=VAE_FILE):
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
        "2": {"class_type": "UNETLoader", "inputs": {"unet_name": model, "weight_dtype": "default"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": vae}},
        "4": {"class_type": "LotusDepth_LoadLotus2", "inputs": {"model": ["2", 0], "vae": ["3", 0], "task": task}},
        "5": {"class_type": node, "inputs": {"lotus2_model": ["4", 0], "image": ["1", 0],
                                             "processing_resolution": 1024, "sharpener_steps": steps, "seed": seed}},
    }
    if node == "LotusDepth_Lotus2Depth":
        prompt["6"] = {"class_type": "LotusDepth_SaveDepth", "inputs": {
            "depth": ["5", 3], "quantity": "auto", "format": "npy", "filename_prefix": f"lotus2_{steps}_{seed}"}}
        prompt["7"] = {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "lotus2_control"}}
    else:
        prompt["6"] = {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "lotus2_normals"}}
    return prompt


def run_ok(server, prompt) -> dict:
    entry = server.run(prompt, timeout=300)
    assert history_status(entry) == "success", history_error(entry)
    return entry


def run_error(server, prompt) -> dict:
    entry = server.run(prompt, timeout=300)
    assert history_status(entry) == "error"
    return history_error(entry)


@pytest.mark.parametrize("steps, seed", [(2, 3), (0, 5)])
def test_depth_matches_core(server, flux_files, steps, seed):
    entry, events = server.run_with_events(graph(steps=steps, seed=seed), timeout=300)
    assert history_status(entry) == "success", history_error(entry)
    [path] = server.output_images(entry, "6", "files")
    values, meta = lotus_core.read_depth_file(path)

    expected = core_prediction(flux_files, server, "depth", steps, seed)
    difference = np.abs(values - expected.values[0, 0].numpy()).max()
    assert difference <= TOLERANCE, difference
    assert values.shape == SIZE and values.std() > 1e-3  # a map, not a constant
    assert meta["lotus_quantity"] == "disparity" and meta["lotus_model"] == "lotus-2-depth"
    assert meta["lotus_processing_resolution"] == 32  # 40 x 56 px processed at 32 x 32 (multiples of 16)
    progress = [e["data"] for e in events if e["type"] == "progress" and e["data"]["node"] == "5"]
    assert [(p["value"], p["max"]) for p in progress] == [(i, 1 + steps) for i in range(1, 2 + steps)]
    control = np.asarray(Image.open(server.output_images(entry, "7")[0]))
    assert control.shape == (*SIZE, 3) and control.max() == 255 and control.min() == 0  # near = white, stretched


def test_a_batch_is_predicted_image_by_image(server, flux_files):
    prompt = graph(steps=0, seed=8)
    prompt["10"] = {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": 2}}
    prompt["5"]["inputs"]["image"] = ["10", 0]
    entry, events = server.run_with_events(prompt, timeout=300)
    assert history_status(entry) == "success", history_error(entry)
    frames = [lotus_core.read_depth_file(path)[0] for path in server.output_images(entry, "6", "files")]

    expected = core_prediction(flux_files, server, "depth", 0, 8).values[0, 0].numpy()
    assert len(frames) == 2 and all(np.abs(frame - expected).max() <= TOLERANCE for frame in frames)
    progress = [(e["data"]["value"], e["data"]["max"]) for e in events
                if e["type"] == "progress" and e["data"]["node"] == "5"]
    assert progress == [(1, 2), (2, 2)]


def test_normals_match_core(server, flux_files):
    entry = run_ok(server, graph("LotusDepth_Lotus2Normals", task="normal", steps=1, seed=2))
    saved = np.asarray(Image.open(server.output_images(entry, "6")[0])).astype(int)

    expected = core_prediction(flux_files, server, "normal", 1, 2)
    as_png = np.clip(255.0 * lotus_core.normals_to_image(expected)[0].permute(1, 2, 0).numpy(), 0, 255)
    difference = np.abs(saved - as_png.astype(np.uint8).astype(int))
    assert difference.max() <= 1 and (difference > 0).mean() < 0.01, difference.max()


def test_bad_inputs_give_clear_errors_and_the_server_survives(server):
    error = run_error(server, graph(model=SD3_FILE))
    assert error["node_type"] == "LotusDepth_LoadLotus2"
    assert "model is a SD3 model; Lotus-2 LoRAs are made for FLUX.1-dev" in error["exception_message"]

    error = run_error(server, graph(task="normal"))  # normal files on the depth node
    assert error["node_type"] == "LotusDepth_Lotus2Depth"
    assert "loaded for normal" in error["exception_message"] and "Lotus-2 Normals" in error["exception_message"]

    no_vae = graph()
    del no_vae["4"]["inputs"]["vae"]
    with pytest.raises(PromptRejected) as rejected:
        server.submit(no_vae)
    assert "vae" in str(rejected.value.body["node_errors"]["4"])

    sd_vae = graph()
    sd_vae["3"] = {"class_type": "VAELoader", "inputs": {"vae_name": "pixel_space"}}
    error = run_error(server, sd_vae)
    assert "vae must be the FLUX VAE" in error["exception_message"]

    run_ok(server, graph(steps=0, seed=9))


def test_cancel_stops_between_steps(server):
    steps = 30
    with server.events() as events:
        prompt_id = server.submit(graph(steps=steps, seed=11), events.client_id)
        events.wait_for(lambda m: m["type"] == "progress" and m["data"]["node"] == "5", timeout=300)
        server.interrupt()
        entry = server.wait(prompt_id, timeout=300)
        progress = [m["data"]["value"] for m in events.snapshot() if m["type"] == "progress"
                    and m["data"]["node"] == "5"]
    assert history_error(entry)["type"] == "execution_interrupted"
    assert max(progress) < 1 + steps
    run_ok(server, graph(steps=1, seed=12))  # the next prompt runs


def test_a_connected_empty_prompt_is_stored_and_used(server, flux_files):
    """Last in the module: it replaces the stored conditioning the other tests use."""
    prompt = graph(steps=1, seed=21)
    prompt["8"] = {"class_type": "CLIPLoader", "inputs": {"clip_name": CLIP_FILE, "type": "stable_diffusion"}}
    prompt["9"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["8", 0]}}
    prompt["4"]["inputs"]["empty_prompt"] = ["9", 0]
    entry = run_ok(server, prompt)

    stored = load_conditioning(server.lotus_dir / "Lotus-2" / STORED_CONDITIONING)
    assert stored.prompt_embeds.shape == (1, 77, 768) and stored.pooled_prompt_embeds.shape == (1, 768)
    assert "empty_prompt input of Load Lotus-2" in stored.provenance["source"]
    [path] = server.output_images(entry, "6", "files")
    values, _ = lotus_core.read_depth_file(path)
    expected = core_prediction(flux_files, server, "depth", 1, 21, conditioning=stored)
    assert np.abs(values - expected.values[0, 0].numpy()).max() <= TOLERANCE
    without = core_prediction(flux_files, server, "depth", 1, 21)  # the conditioning matters
    assert np.abs(values - without.values[0, 0].numpy()).max() > 100 * TOLERANCE
