"""The depth-output nodes (save, colour, remap, normals, metric depth, PLY) in a real ComfyUI server.

Talks HTTP only; files are read from the server's output folder. Expected values come from
``lotus_core`` run in this process on the same tiny checkpoints: node == core.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from comfy_server import ComfyServer, history_error, history_status
from PIL import Image, ImageOps
from plyfile import PlyData
from tiny import save_unet_file, save_vae_file, tiny_unet, tiny_vae

import lotus_core

POST_NODES = ("LotusDepth_Colorize", "LotusDepth_Remap", "LotusDepth_SaveDepth", "LotusDepth_MetricDepth",
              "LotusDepth_DepthToNormals", "LotusDepth_ConvertNormals", "LotusDepth_SavePointCloud")
VAE = "vae-ft-mse-840000-ema-pruned.safetensors"
DEPTH = "lotus-depth-g-v1-0.safetensors"
DISPARITY = "lotus-depth-d-v2-0-disparity.safetensors"
RESOLUTION, SEED = 64, 7


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ComfyServer(tmp_path_factory.mktemp("comfy_outputs"), require_nodes=("LotusDepth_Depth", *POST_NODES))
    srv.prepare()
    save_unet_file(tiny_unet(True, seed=21), srv.lotus_dir / DEPTH)
    save_unet_file(tiny_unet(False, seed=22), srv.lotus_dir / DISPARITY)
    save_vae_file(tiny_vae(seed=23), srv.vae_dir / VAE)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(srv.input_dir / "photo.png")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def core(server):
    """The core's predictions for the graphs below: {checkpoint: (image [1,3,H,W], prediction of 2 frames)}."""
    image = ImageOps.exif_transpose(Image.open(server.input_dir / "photo.png")).convert("RGB")
    image = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    found = {}
    for checkpoint in (DEPTH, DISPARITY):
        model = lotus_core.load_model(server.lotus_dir / checkpoint, server.vae_dir / VAE)
        found[checkpoint] = image, lotus_core.predict(model, image.repeat(2, 1, 1, 1),
                                                      processing_resolution=RESOLUTION, seed=SEED)
    return found


def depth_graph(checkpoint=DEPTH, seed=SEED, **nodes) -> dict:
    """LoadImage (1) -> x2 batch (9) -> Lotus Depth (3), plus ``nodes`` (id -> (class_type, inputs))."""
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
        "9": {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": 2}},
        "2": {"class_type": "LotusDepth_LoadModel",
              "inputs": {"checkpoint": checkpoint, "vae": VAE, "precision": "fp32", "quantity": "auto"}},
        "3": {"class_type": "LotusDepth_Depth",
              "inputs": {"lotus_model": ["2", 0], "image": ["9", 0], "processing_resolution": RESOLUTION,
                         "seed": seed, "noise": "per image", "chunk_size": 2}},
    }
    for node_id, (class_type, inputs) in nodes.items():
        prompt[node_id] = {"class_type": class_type, "inputs": inputs}
    return prompt


def save_image(source) -> tuple[str, dict]:
    return "SaveImage", {"images": source, "filename_prefix": "check"}


def run_ok(server, prompt) -> dict:
    entry = server.run(prompt)
    assert history_status(entry) == "success", (history_error(entry) or {}).get("exception_message")
    return entry


def saved_pixels(server, entry, node_id) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in server.output_images(entry, node_id)])


def as_uint8(image: torch.Tensor) -> np.ndarray:
    """What SaveImage writes for a core [B, 3, H, W] image."""
    return np.clip(255.0 * image.movedim(1, -1).numpy(), 0, 255).astype(np.uint8)


def assert_mostly_equal(actual: np.ndarray, expected: np.ndarray, share=0.01) -> None:
    # Same maths in two processes: allow one 8-bit step (or a neighbouring colour-table entry) on a few pixels.
    assert actual.shape == expected.shape
    differs = (np.abs(actual.astype(int) - expected.astype(int)) > 1).any(axis=-1)
    assert differs.mean() <= share, differs.mean()


def test_schema_ids_categories_tooltips_and_the_new_depth_output(server):
    depth = server.object_info("LotusDepth_Depth")
    assert depth["output"] == ["IMAGE", "MASK", "MASK", "LOTUSDEPTH_DEPTH"]
    assert depth["output_name"] == ["depth_image", "depth_mask", "native", "lotus_depth"]
    for node_id in POST_NODES:
        info = server.object_info(node_id)
        assert info["category"] == "image/depth/lotus" and info["description"], node_id
        inputs = info["input"]["required"]
        assert all(spec[1].get("tooltip") for spec in inputs.values()), node_id
        assert all(info["output_tooltips"]), node_id
        if "depth" in inputs:
            assert inputs["depth"][0] == "LOTUSDEPTH_DEPTH,MASK,IMAGE", node_id
    assert server.object_info("LotusDepth_SaveDepth")["output_node"] is True
    assert server.object_info("LotusDepth_SaveDepth")["input"]["required"]["format"][1]["options"] == \
        ["png16", "exr", "npy", "control", "color"]
    assert server.object_info("LotusDepth_Colorize")["input"]["required"]["colormap"][1]["options"] == \
        ["spectral", "inferno", "magma", "turbo", "viridis", "gray"]


# Ordered so the depth node's result stays cached between tests (ComfyUI keeps the last prompt's outputs).
@pytest.mark.parametrize("checkpoint, fmt", [(DISPARITY, "npy"), (DEPTH, "exr"), (DEPTH, "png16")])
def test_save_depth_writes_every_frame_with_metadata(server, core, checkpoint, fmt):
    prefix = f"lotus/{checkpoint[:13]}_{fmt}"
    save = ("LotusDepth_SaveDepth", {"depth": ["3", 3], "quantity": "auto", "format": fmt, "filename_prefix": prefix})
    entry = run_ok(server, depth_graph(checkpoint, **{"5": save}))
    paths = server.output_images(entry, "5", "images" if fmt == "png16" else "files")
    suffix = {"png16": ".png", "exr": ".exr", "npy": ".npy"}[fmt]
    assert [p.name for p in paths] == [f"{checkpoint[:13]}_{fmt}_0000{i}_{suffix}" for i in (1, 2)]
    assert all(p.parent == server.output_dir / "lotus" and p.is_file() for p in paths)

    _, prediction = core[checkpoint]
    quantity = "depth" if checkpoint == DEPTH else "disparity"
    for frame, path in enumerate(paths):
        values, meta = lotus_core.read_depth_file(path)
        np.testing.assert_allclose(values, prediction.values[frame, 0].numpy(), atol=1e-4, rtol=0)
        assert meta["lotus_model"] == checkpoint.removesuffix(".safetensors")
        assert meta["lotus_quantity"] == quantity and meta["lotus_frame"] == frame
        assert meta["lotus_polarity"] == ("near = low" if quantity == "depth" else "near = high")
        assert meta["lotus_processing_resolution"] == RESOLUTION
        assert meta["lotus_value_min"] == pytest.approx(values.min(), abs=1e-4)
    assert not np.array_equal(lotus_core.read_depth_file(paths[0])[0], lotus_core.read_depth_file(paths[1])[0])
    if fmt == "png16":  # the workflow travels in the PNG, as with Save Image
        assert "prompt" in Image.open(paths[0]).text
    if fmt == "npy":
        assert all(p.with_name(p.name + ".json").is_file() for p in paths)



def test_colorize_remap_and_normal_nodes_equal_core(server, core):
    nodes = {
        "10": ("LotusDepth_Colorize", {"depth": ["3", 3], "quantity": "auto", "colormap": "spectral",
                                       "stretch": "per image", "low_percentile": 0.0, "high_percentile": 100.0,
                                       "reverse": False}),
        "11": save_image(["10", 0]),
        # the ControlNet image (near = white, a plain IMAGE: read as disparity) gives the same colours
        "12": ("LotusDepth_Colorize", {"depth": ["3", 0], "quantity": "auto", "colormap": "spectral",
                                       "stretch": "per image", "low_percentile": 0.0, "high_percentile": 100.0,
                                       "reverse": False}),
        "13": save_image(["12", 0]),
        "14": ("LotusDepth_Remap", {"depth": ["3", 2], "input_range": "per image", "in_low": 0.0, "in_high": 1.0,
                                    "low_percentile": 2.0, "high_percentile": 98.0, "gamma": 0.5, "invert": True,
                                    "clip": True, "out_low": 0.0, "out_high": 1.0}),
        "15": save_image(["14", 0]),
        "16": ("LotusDepth_DepthToNormals", {"depth": ["3", 3], "quantity": "auto", "camera": "pinhole",
                                             "fov_degrees": 55.0, "near": 1.0, "far": 4.0, "relief": 0.25,
                                             "convention": "lotus"}),
        "17": ("LotusDepth_ConvertNormals", {"normal_map": ["16", 0], "source": "lotus", "target": "directx"}),
        "18": save_image(["17", 0]),
    }
    entry = run_ok(server, depth_graph(**nodes))
    _, prediction = core[DEPTH]
    depth = lotus_core.DepthMap.from_prediction(prediction)
    colours = as_uint8(lotus_core.colorize(depth, "spectral"))
    assert_mostly_equal(saved_pixels(server, entry, "11"), colours)
    assert_mostly_equal(saved_pixels(server, entry, "13"), colours)
    lo, hi = lotus_core.percentile_range(prediction.values, 2, 98)
    remapped = lotus_core.remap(prediction.values, lo, hi, gamma=0.5, invert=True).expand(-1, 3, -1, -1)
    assert_mostly_equal(saved_pixels(server, entry, "15"), as_uint8(remapped))
    normals = lotus_core.normals_from_depth(depth, fov_degrees=55.0, near=1.0, far=4.0)
    assert_mostly_equal(saved_pixels(server, entry, "18"), as_uint8(lotus_core.encode_normals(normals, "directx")))


def test_metric_depth_and_point_cloud_nodes_write_plys(server, core):
    _, prediction = core[DEPTH]
    values = prediction.values[:, 0]  # [2,H,W]
    # A: low (near) in both frames, B: high (far) in both, so one pair of distances suits both frames
    a_y, a_x = np.unravel_index(values.amax(0).argmin().item(), (40, 56))
    b_y, b_x = np.unravel_index(values.amin(0).argmax().item(), (40, 56))
    assert (values[:, b_y, b_x] - values[:, a_y, a_x]).min() > 1e-3
    nodes = {
        "20": ("LotusDepth_MetricDepth", {"depth": ["3", 3], "quantity": "auto", "method": "two known distances",
                                          "near": 1.0, "far": 10.0, "a_x": int(a_x), "a_y": int(a_y),
                                          "a_distance": 2.0, "b_x": int(b_x), "b_y": int(b_y), "b_distance": 3.0,
                                          "unit": "m"}),
        "21": ("LotusDepth_SaveDepth", {"depth": ["20", 0], "quantity": "auto", "format": "exr",
                                        "filename_prefix": "metric"}),
        "22": ("LotusDepth_SavePointCloud", {"image": ["1", 0], "depth": ["3", 3], "quantity": "auto",
                                             "fov_degrees": 60.0, "near": 1.0, "far": 5.0, "mesh": True,
                                             "edge_threshold": 0.05, "step": 1, "axes": "opengl", "binary": True,
                                             "filename_prefix": "cloud"}),
    }
    entry = run_ok(server, depth_graph(**nodes))

    metric_files = server.output_images(entry, "21", "files")
    assert len(metric_files) == 2
    metric, meta = lotus_core.read_depth_file(metric_files[0])
    assert meta["lotus_quantity"] == "metric depth" and meta["lotus_unit"] == "m"
    assert metric[a_y, a_x] == pytest.approx(2.0, rel=1e-3) and metric[b_y, b_x] == pytest.approx(3.0, rel=1e-3)

    plys = server.output_images(entry, "22", "files")
    assert [p.name for p in plys] == ["cloud_00001_.ply", "cloud_00002_.ply"]
    ply = PlyData.read(str(plys[0]))
    assert ply["vertex"].count == 40 * 56 and ply["face"].count > 0
    z = -np.asarray(ply["vertex"]["z"])
    expected_z = lotus_core.with_near_far(lotus_core.DepthMap.from_prediction(prediction), 1.0, 5.0).values[0, 0]
    np.testing.assert_allclose(z.reshape(40, 56), expected_z.numpy(), atol=1e-3, rtol=1e-4)
    image, _ = core[DEPTH]
    pixel = np.round(image[0, :, 17, 23].numpy() * 255).astype(np.uint8)
    np.testing.assert_array_equal([ply["vertex"][c][17 * 56 + 23] for c in ("red", "green", "blue")], pixel)


@pytest.mark.parametrize("node, message", [
    (("LotusDepth_Colorize", {"depth": ["3", 3], "quantity": "auto", "colormap": "gray", "stretch": "per image",
                              "low_percentile": 90.0, "high_percentile": 10.0, "reverse": False}),
     "must satisfy 0 <= low < high <= 100"),
    (("LotusDepth_SavePointCloud", {"image": ["30", 0], "depth": ["3", 3], "quantity": "auto",
                                    "fov_degrees": 60.0, "near": 1.0, "far": 5.0, "mesh": False,
                                    "edge_threshold": 0.05, "step": 1, "axes": "opengl", "binary": True,
                                    "filename_prefix": "bad"}), "differ in size"),
    (("LotusDepth_MetricDepth", {"depth": ["3", 3], "quantity": "auto", "method": "near/far", "near": 5.0,
                                 "far": 1.0, "a_x": 0, "a_y": 0, "a_distance": 1.0, "b_x": 0, "b_y": 0,
                                 "b_distance": 2.0, "unit": "m"}), "0 < near < far"),
], ids=["percentiles", "image-size", "near-beyond-far"])
def test_errors_name_the_problem(server, node, message):
    crop = ("ImageCrop", {"image": ["1", 0], "width": 30, "height": 20, "x": 0, "y": 0})
    class_type, inputs = node
    prompt = depth_graph(**{"30": crop, "31": (class_type, inputs)})
    if class_type != "LotusDepth_SavePointCloud":
        prompt["32"] = {"class_type": "PreviewImage" if class_type == "LotusDepth_Colorize" else "MaskToImage",
                        "inputs": {"images": ["31", 0]} if class_type == "LotusDepth_Colorize"
                        else {"mask": ["31", 1]}}
        if class_type != "LotusDepth_Colorize":
            prompt["33"] = {"class_type": "PreviewImage", "inputs": {"images": ["32", 0]}}
    entry = server.run(prompt)
    assert history_status(entry) == "error"
    assert message in history_error(entry)["exception_message"], json.dumps(history_error(entry))[:2000]


def test_the_file_counter_goes_on_like_save_image(server):
    save = ("LotusDepth_SaveDepth", {"depth": ["3", 3], "quantity": "auto", "format": "png16",
                                     "filename_prefix": "counted/depth"})
    first = run_ok(server, depth_graph(**{"5": save}))
    again = run_ok(server, depth_graph(seed=SEED + 1, **{"5": save}))
    names = [p.name for entry in (first, again) for p in server.output_images(entry, "5")]
    assert names == [f"depth_0000{i}_.png" for i in (1, 2, 3, 4)]
