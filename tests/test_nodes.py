"""The pack's nodes inside a real ComfyUI server, over HTTP and WebSocket only.

One server for the module (start-up ≈ 5 s); tiny random Lotus checkpoints of the real classes are
written into its model folders in every format people use. Expected values always come from
``lotus_core`` run in this process on the same files: node == core.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from comfy_server import ComfyServer, history_error, history_messages, history_status
from PIL import Image, ImageOps
from tiny import save_diffusers_folder, save_unet_file, save_vae_file, tiny_unet, tiny_vae

import lotus_core

NODE_IDS = ("LotusDepth_LoadModel", "LotusDepth_Depth", "LotusDepth_Normals")
VAE = "vae-ft-mse-840000-ema-pruned.safetensors"
RESOLUTION = 64


class LotusTestServer(ComfyServer):
    """The harness' server plus one more `lotus` folder from extra_model_paths.yaml."""

    def prepare(self) -> None:
        super().prepare()
        self.extra_lotus_dir = self.base / "elsewhere" / "lotus_models"
        self.extra_lotus_dir.mkdir(parents=True, exist_ok=True)
        with self.model_paths_yaml.open("a") as yaml:
            yaml.write(f"more_lotus:\n    base_path: {json.dumps(str(self.base / 'elsewhere'))}\n"
                       "    lotus: lotus_models\n")


def serve_tiny_checkpoints(tmp_path_factory):
    """A started server with tiny checkpoints in every format and a few input images (a fixture's body:
    other modules' ``server`` fixtures ``yield from`` it)."""
    srv = LotusTestServer(tmp_path_factory.mktemp("comfy"), require_nodes=NODE_IDS)
    srv.prepare()
    save_unet_file(tiny_unet(True, seed=11), srv.lotus_dir / "lotus-depth-g-v1-0.safetensors")
    save_unet_file(tiny_unet(False, seed=12), srv.lotus_dir / "lotus-depth-d-v2-0-disparity.safetensors")
    save_unet_file(tiny_unet(False, seed=13), srv.lotus_dir / "my-finetune.safetensors")
    save_diffusers_folder(tiny_unet(True, seed=14), tiny_vae(seed=15), srv.lotus_dir / "lotus-depth-g-v2-1-disparity")
    save_unet_file(tiny_unet(True, seed=16), srv.diffusion_models_dir / "lotus-normal-g-v1-0.safetensors",
                   ldm_keys=True)
    save_unet_file(tiny_unet(False, seed=17), srv.extra_lotus_dir / "lotus-normal-d-v1-1.safetensors")
    plain_sd = tiny_unet(False, seed=18)
    plain_sd.class_embedding = None  # a plain SD UNet: no task switch, must not be listed
    save_unet_file(plain_sd, srv.diffusion_models_dir / "sd2-unet.safetensors")
    save_vae_file(tiny_vae(seed=19), srv.vae_dir / VAE, original_keys=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(srv.input_dir / "photo.png")
    Image.fromarray(rng.integers(0, 256, (36, 44, 4), dtype=np.uint8)).save(srv.input_dir / "rgba.png")
    Image.fromarray(rng.integers(0, 256, (40, 1, 3), dtype=np.uint8)).save(srv.input_dir / "thin.png")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from serve_tiny_checkpoints(tmp_path_factory)


def load_image(server, name: str) -> torch.Tensor:
    """The input as LoadImage reads it, as a core batch [1, 3, H, W]."""
    image = ImageOps.exif_transpose(Image.open(server.input_dir / name)).convert("RGB")
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]


def saved(server, entry, node_id: str) -> np.ndarray:
    """A SaveImage node's files as uint8 [N, H, W, 3]."""
    return np.stack([np.asarray(Image.open(p)) for p in server.output_images(entry, node_id)])


def as_png(values: torch.Tensor) -> np.ndarray:
    """What SaveImage writes for an IMAGE [B, H, W, C] or MASK [B, H, W] in [0, 1]."""
    if values.ndim == 3:
        values = values[..., None].expand(-1, -1, -1, 3)
    return np.clip(255.0 * values.numpy(), 0, 255).astype(np.uint8)


def assert_pixels_equal(actual: np.ndarray, expected: np.ndarray) -> None:
    # Same maths in two processes: allow one 8-bit step where a value sits on a rounding boundary.
    assert actual.shape == expected.shape
    difference = np.abs(actual.astype(int) - expected.astype(int))
    assert difference.max() <= 1 and (difference > 0).mean() < 0.01, difference.max()


def graph(checkpoint="lotus-depth-g-v1-0.safetensors", vae=VAE, node="LotusDepth_Depth", image="photo.png",
          seed=1, noise="per image", chunk_size=1, resolution=RESOLUTION, quantity="auto", source=None,
          precision="auto"):
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "LotusDepth_LoadModel",
              "inputs": {"checkpoint": checkpoint, "vae": vae, "precision": precision, "quantity": quantity}},
        "3": {"class_type": node, "inputs": {"lotus_model": ["2", 0], "image": source or ["1", 0],
                                             "processing_resolution": resolution, "seed": seed, "noise": noise,
                                             "chunk_size": chunk_size}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "lotus"}},
    }
    if node == "LotusDepth_Depth":
        for node_id, output in (("5", 1), ("7", 2)):
            prompt[node_id] = {"class_type": "MaskToImage", "inputs": {"mask": ["3", output]}}
            prompt[str(int(node_id) + 1)] = {"class_type": "SaveImage",
                                             "inputs": {"images": [node_id, 0], "filename_prefix": "lotus"}}
    return prompt


def run_ok(server, prompt) -> dict:
    entry = server.run(prompt)
    assert history_status(entry) == "success", history_error(entry)
    return entry


def test_object_info_lists_the_nodes_with_their_schema(server):
    info = {node: server.object_info(node) for node in NODE_IDS}
    loader = info["LotusDepth_LoadModel"]
    assert loader["display_name"] == "Load Lotus Model" and loader["category"] == "loaders"
    assert loader["output"] == ["LOTUSDEPTH_MODEL"]
    options = loader["input"]["required"]["checkpoint"][1]["options"]
    on_disk = ["lotus-depth-d-v2-0-disparity.safetensors", "lotus-depth-g-v1-0.safetensors",
               "lotus-depth-g-v2-1-disparity/", "lotus-normal-d-v1-1.safetensors",
               "lotus-normal-g-v1-0.safetensors", "my-finetune.safetensors"]
    releases = [f"{k.name}/" for k in lotus_core.KNOWN_CHECKPOINTS]  # downloaded on first run (test_nodes_download)
    assert sorted(options) == sorted(set(on_disk + releases))
    assert loader["input"]["required"]["vae"][1]["options"] == ["(from checkpoint folder)", VAE]
    assert loader["input"]["required"]["precision"][1]["options"] == ["auto", "fp32", "fp16", "bf16"]
    assert loader["input"]["optional"]["backend"][1]["options"] == ["auto", "eager", "openvino"]
    assert loader["input"]["required"]["quantity"][1]["options"] == ["auto", "depth", "disparity", "normal"]

    depth = info["LotusDepth_Depth"]
    assert depth["display_name"] == "Lotus Depth" and depth["category"] == "image/depth/lotus"
    assert depth["output"] == ["IMAGE", "MASK", "MASK", "LOTUSDEPTH_DEPTH"]
    assert depth["output_name"] == ["depth_image", "depth_mask", "native", "lotus_depth"]
    assert info["LotusDepth_Normals"]["output"] == ["IMAGE"]
    required = depth["input"]["required"]
    assert list(required) == ["lotus_model", "image", "processing_resolution", "seed", "noise", "chunk_size"]
    assert required["processing_resolution"][1].items() >= {"default": 768, "min": 0, "max": 4096}.items()
    assert required["seed"][1].items() >= {"default": 0, "min": 0, "control_after_generate": True}.items()
    assert required["chunk_size"][1].items() >= {"default": 0, "min": 0}.items()  # 0 = sized from free memory
    assert required["noise"][1]["options"] == ["per image", "shared across batch"]
    for node in info.values():
        assert node["description"]
        assert all(spec[1].get("tooltip") for spec in node["input"]["required"].values())
        assert all(node["output_tooltips"])


@pytest.mark.parametrize("checkpoint, vae, quantity", [
    ("lotus-depth-g-v1-0.safetensors", VAE, lotus_core.Quantity.DEPTH),
    ("lotus-depth-d-v2-0-disparity.safetensors", VAE, lotus_core.Quantity.DISPARITY),
    ("lotus-depth-g-v2-1-disparity/", "(from checkpoint folder)", lotus_core.Quantity.DISPARITY),
], ids=["G-depth-file", "D-disparity-file", "G-disparity-folder"])
def test_depth_node_equals_core(server, checkpoint, vae, quantity):
    entry = run_ok(server, graph(checkpoint, vae, seed=7))
    control, mask, native = (saved(server, entry, n)[0] for n in ("4", "6", "8"))

    path = server.lotus_dir / checkpoint
    model = lotus_core.load_model(path, None if vae.startswith("(") else server.vae_dir / vae)
    assert model.quantity is quantity
    prediction = lotus_core.predict(model, load_image(server, "photo.png"), processing_resolution=RESOLUTION, seed=7)
    expected_control = lotus_core.to_controlnet(prediction)[:, 0]
    assert_pixels_equal(control, as_png(expected_control)[0])
    assert_pixels_equal(mask, as_png(expected_control)[0])
    assert_pixels_equal(native, as_png(prediction.values[:, 0])[0])
    # Polarity: near = white in the control map; v1 depth (near = 0) is inverted, disparity is not.
    correlation = np.corrcoef(control[..., 0].ravel(), native[..., 0].ravel())[0, 1]
    assert correlation < -0.99 if quantity is lotus_core.Quantity.DEPTH else correlation > 0.99


@pytest.mark.parametrize("checkpoint, folder", [
    ("lotus-normal-g-v1-0.safetensors", "diffusion_models_dir"),  # ComfyUI/LDM key names
    ("lotus-normal-d-v1-1.safetensors", "extra_lotus_dir"),  # found through extra_model_paths.yaml
], ids=["G-ldm-keys", "D-extra-path"])
def test_normals_node_equals_core(server, checkpoint, folder):
    entry = run_ok(server, graph(checkpoint, node="LotusDepth_Normals", seed=3))
    model = lotus_core.load_model(getattr(server, folder) / checkpoint, server.vae_dir / VAE)
    prediction = lotus_core.predict(model, load_image(server, "photo.png"), processing_resolution=RESOLUTION, seed=3)
    expected = lotus_core.normals_to_image(prediction).movedim(1, -1)
    assert_pixels_equal(saved(server, entry, "4")[0], as_png(expected)[0])


def test_loaded_model_is_reused_by_the_next_prompt(server):
    run_ok(server, graph(seed=100))
    entry = run_ok(server, graph(seed=101))
    cached = next(data["nodes"] for kind, data in history_messages(entry) if kind == "execution_cached")
    assert "2" in cached and "3" not in cached


def test_alpha_channel_is_ignored(server):
    with_alpha = {"9": {"class_type": "JoinImageWithAlpha", "inputs": {"image": ["1", 0], "alpha": ["1", 1]}}}
    rgba = run_ok(server, graph(image="rgba.png", seed=5, source=["9", 0]) | with_alpha)
    rgb = run_ok(server, graph(image="rgba.png", seed=5))
    np.testing.assert_array_equal(saved(server, rgba, "4"), saved(server, rgb, "4"))


def test_cropped_view_input_equals_core_on_the_crop(server):
    crop = {"9": {"class_type": "ImageCrop",
                  "inputs": {"image": ["1", 0], "width": 30, "height": 20, "x": 5, "y": 3}}}
    entry = run_ok(server, graph(seed=9, source=["9", 0]) | crop)
    model = lotus_core.load_model(server.lotus_dir / "lotus-depth-g-v1-0.safetensors", server.vae_dir / VAE)
    image = load_image(server, "photo.png")[:, :, 3:23, 5:35]
    prediction = lotus_core.predict(model, image, processing_resolution=RESOLUTION, seed=9)
    assert_pixels_equal(saved(server, entry, "4")[0], as_png(lotus_core.to_controlnet(prediction)[:, 0])[0])


@pytest.mark.parametrize("noise, identical", [("shared across batch", True), ("per image", False)])
def test_batches_with_shared_or_per_image_noise(server, noise, identical):
    batch = {"9": {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": 3}}}
    entry = run_ok(server, graph(seed=4, noise=noise, chunk_size=2, source=["9", 0]) | batch)
    frames = saved(server, entry, "8")  # the native output: not stretched per image
    assert frames.shape == (3, 40, 56, 3)
    assert all(np.array_equal(frames[0], f) for f in frames[1:]) == identical


def progress_of(events, node="3") -> list[tuple[int, int]]:
    return [(e["data"]["value"], e["data"]["max"]) for e in events
            if e["type"] == "progress" and e["data"]["node"] == node]


def assert_moving(progress: list[tuple[int, int]], total: int) -> None:
    """Progress that moves forward to ``total`` steps. Newer ComfyUI throttles updates (100 ms / 0.5 %),
    so which intermediate events arrive may differ: only their order and range are asserted."""
    values = [value for value, _ in progress]
    assert {most for _, most in progress} == {total}
    assert values == sorted(values) and len(set(values)) >= 2 and 1 <= values[0] and values[-1] <= total


def test_progress_moves_within_one_image(server):
    entry, events = server.run_with_events(graph(seed=11))
    assert history_status(entry) == "success"
    assert_moving(progress_of(events), total=3)  # VAE encode, UNet, VAE decode


def test_progress_events_arrive_per_step_of_every_chunk(server):
    batch = {"9": {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": 3}}}
    entry, events = server.run_with_events(graph(seed=12, source=["9", 0]) | batch)
    assert history_status(entry) == "success"
    assert_moving(progress_of(events), total=3 * 3)


def test_automatic_chunk_size_runs_one_image_per_pass_on_a_cpu(server):
    batch = {"9": {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": 2}}}
    entry, events = server.run_with_events(graph(seed=13, chunk_size=0, source=["9", 0]) | batch)
    assert history_status(entry) == "success"
    assert_moving(progress_of(events), total=2 * 3)  # two chunks: one image per pass
    model = lotus_core.load_model(server.lotus_dir / "lotus-depth-g-v1-0.safetensors", server.vae_dir / VAE)
    images = load_image(server, "photo.png").repeat(2, 1, 1, 1)
    prediction = lotus_core.predict(model, images, processing_resolution=RESOLUTION, seed=13, chunk_size=1)
    assert_pixels_equal(saved(server, entry, "4"), as_png(lotus_core.to_controlnet(prediction)[:, 0]))


@pytest.mark.parametrize("change, message", [
    ({"2": {"vae": "(from checkpoint folder)"}}, "holds only the UNet: choose an SD1.x/SD2 VAE"),
    ({"3": {"processing_resolution": -8}}, "processing_resolution"),
    ({"2": {"checkpoint": "nothing.safetensors"}}, "nothing.safetensors"),
], ids=["file-without-vae", "negative-resolution", "unknown-checkpoint"])
def test_invalid_prompts_are_rejected_with_400(server, change, message):
    prompt = graph()
    for node_id, inputs in change.items():
        prompt[node_id]["inputs"].update(inputs)
    status, body = server.queue(prompt)
    assert status == 400
    assert message in json.dumps(body["node_errors"])


@pytest.mark.parametrize("kwargs, message", [
    ({"checkpoint": "lotus-normal-g-v1-0.safetensors"}, "predicts normal; the Lotus Depth node needs"),
    ({"node": "LotusDepth_Normals"}, "predicts depth; the Lotus Normals node needs a normal checkpoint"),
    ({"image": "thin.png"}, "too small: both edges must be >= 8 px"),
    ({"checkpoint": "my-finetune.safetensors"}, "Pass quantity='depth', 'disparity' or 'normal'"),
    ({"precision": "fp16"}, "precision='fp16' on a CPU runs hundreds of times slower"),
], ids=["normal-into-depth", "depth-into-normals", "one-pixel-wide", "unknown-quantity", "fp16-on-cpu"])
def test_execution_errors_name_the_problem_and_the_server_keeps_serving(server, kwargs, message):
    entry = server.run(graph(**kwargs))
    assert history_status(entry) == "error"
    assert message in history_error(entry)["exception_message"]
    run_ok(server, graph(seed=77))


def test_quantity_override_makes_an_unknown_file_usable(server):
    entry = run_ok(server, graph("my-finetune.safetensors", quantity="disparity", seed=2))
    model = lotus_core.load_model(server.lotus_dir / "my-finetune.safetensors", server.vae_dir / VAE,
                                  quantity="disparity")
    prediction = lotus_core.predict(model, load_image(server, "photo.png"), processing_resolution=RESOLUTION, seed=2)
    assert_pixels_equal(saved(server, entry, "4")[0], as_png(lotus_core.to_controlnet(prediction)[:, 0])[0])


def cancel_after_first_progress(server, prompt: dict) -> list[int]:
    """Queue ``prompt``, press Cancel at the Lotus node's first progress event; its progress values,
    once ComfyUI reports the run interrupted."""
    with server.events() as events:
        prompt_id = server.submit(prompt, events.client_id)
        events.wait_for(lambda m: m["type"] == "progress" and m["data"]["node"] == "3", timeout=120)
        server.interrupt()
        events.wait_done(prompt_id)
        assert events.of_type("execution_interrupted", prompt_id)
        return [e["data"]["value"] for e in events.of_type("progress", prompt_id) if e["data"]["node"] == "3"]


def test_interrupt_stops_a_batch_between_chunks(server):
    batch = {"9": {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": 64}}}
    assert max(cancel_after_first_progress(server, graph(seed=55, resolution=128, source=["9", 0]) | batch)) < 64 * 3
    run_ok(server, graph(seed=56))


def test_interrupt_stops_inside_one_large_image(server):
    """At native size a 1600 px image keeps the tiny VAE busy for seconds: Cancel after the encoder's
    step must stop before the decoder's ends."""
    big = {"9": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "bilinear",
                                                        "width": 1600, "height": 1200, "crop": "disabled"}}}
    assert max(cancel_after_first_progress(server, graph(seed=57, resolution=0, source=["9", 0]) | big)) < 3
    run_ok(server, graph(seed=58))
