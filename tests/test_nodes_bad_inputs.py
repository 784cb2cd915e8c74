"""A battery of bad inputs against a real ComfyUI server: each gets a clear message naming the
argument, the value and the rule, and the server runs the next valid prompt as if nothing happened.

Prompts are built from the server's own /object_info (defaults for every widget), so each case
changes exactly one input of an otherwise valid graph.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from comfy_server import ComfyServer, history_error, history_status
from PIL import Image
from tiny import save_unet_file, save_vae_file, tiny_unet, tiny_vae

pytestmark = pytest.mark.comfy

VAE = "vae-ft-mse-840000-ema-pruned.safetensors"
DEPTH = "lotus-depth-g-v1-0.safetensors"
NORMAL = "lotus-normal-d-v1-0.safetensors"
NODES = ("LotusDepth_LoadModel", "LotusDepth_Depth", "LotusDepth_Normals", "LotusDepth_DepthEnsemble",
         "LotusDepth_DepthTiled", "LotusDepth_DepthVideo", "LotusDepth_Colorize", "LotusDepth_Remap",
         "LotusDepth_SaveDepth", "LotusDepth_MetricDepth", "LotusDepth_DepthToNormals", "LotusDepth_ConvertNormals",
         "LotusDepth_SavePointCloud")
# What each socket type is wired to in the test graph: LoadImage (1), Load Lotus Model (2), Lotus Depth (3).
SOCKETS = {"IMAGE": ["1", 0], "LOTUSDEPTH_MODEL": ["2", 0], "LOTUSDEPTH_DEPTH": ["3", 3], "MASK": ["3", 1]}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ComfyServer(tmp_path_factory.mktemp("comfy_bad_inputs"), require_nodes=NODES)
    srv.prepare()
    save_unet_file(tiny_unet(True, seed=31), srv.lotus_dir / DEPTH)
    save_unet_file(tiny_unet(False, seed=32), srv.lotus_dir / NORMAL)
    save_vae_file(tiny_vae(seed=33), srv.vae_dir / VAE)
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(srv.input_dir / "photo.png")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def schemas(server):
    return {node: server.object_info(node) for node in NODES}


def node_inputs(schema: dict, **changes) -> dict:
    """Every required input of a node: a link for a socket, the default for a widget; then ``changes``."""
    inputs = {}
    for name, spec in schema["input"]["required"].items():
        kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
        if kind == "COMBO":
            inputs[name] = options.get("default", options["options"][0])
        elif kind.split(",")[0] in SOCKETS:
            inputs[name] = SOCKETS[kind.split(",")[0]]
        else:
            inputs[name] = options["default"]
    return inputs | changes


def graph(schemas, node: str, checkpoint: str | None = None, **changes) -> dict:
    """LoadImage (1) -> Load Lotus Model (2) -> Lotus Depth (3) -> ``node`` (4), one input changed, and
    a preview of ``node``'s first output. The checkpoint: a normal one for Lotus Normals, else depth."""
    checkpoint = checkpoint or (NORMAL if node == "LotusDepth_Normals" else DEPTH)
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
        "2": {"class_type": "LotusDepth_LoadModel", "inputs": node_inputs(
            schemas["LotusDepth_LoadModel"], checkpoint=checkpoint, vae=VAE, precision="fp32")},
        "3": {"class_type": "LotusDepth_Depth",
              "inputs": node_inputs(schemas["LotusDepth_Depth"], processing_resolution=64)},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }
    if node == "LotusDepth_LoadModel":
        prompt["2"]["inputs"].update(changes)
    elif node == "LotusDepth_Depth":
        prompt["3"]["inputs"].update(changes)
    else:
        widgets = schemas[node]["input"]["required"]
        small = {"processing_resolution": 64} if "processing_resolution" in widgets else {}
        prompt["4"] = {"class_type": node, "inputs": node_inputs(schemas[node], **small, **changes)}
        outputs = schemas[node]["output"]
        if outputs and outputs[0] == "IMAGE":
            prompt["5"] = {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}}
        elif "MASK" in outputs:
            prompt["6"] = {"class_type": "MaskToImage", "inputs": {"mask": ["4", outputs.index("MASK")]}}
            prompt["5"] = {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}}
        if checkpoint == NORMAL:  # a normal model cannot feed Lotus Depth
            del prompt["3"]
    return prompt


def choices(*values: str) -> str:
    return ", ".join(map(repr, values))


# (node, changed inputs, the message's words). Each a mistake ComfyUI 0.3.75 lets through to execute.
EXECUTION_ERRORS = {
    "precision-int8": ("LotusDepth_LoadModel", {"precision": "int8"},
                       f"precision='int8' is not one of {choices('auto', 'fp32', 'fp16', 'bf16')}"),
    "loader-quantity": ("LotusDepth_LoadModel", {"quantity": "height"}, "quantity='height' is not one of"),
    "noise-bogus": ("LotusDepth_Depth", {"noise": "bogus"},
                    f"noise='bogus' is not one of {choices('per image', 'shared across batch')}"),
    "image-as-string": ("LotusDepth_Depth", {"image": "photo.png"},
                        "image='photo.png' is not an IMAGE batch [B, H, W, C]: connect the right output"),
    "image-as-number": ("LotusDepth_Depth", {"image": 3}, "image=3 is not an IMAGE batch"),
    "model-as-string": ("LotusDepth_Depth", {"lotus_model": "lotus-depth-g-v1-0"},
                        "lotus_model='lotus-depth-g-v1-0' is not a model from Load Lotus Model"),
    "normals-image-as-string": ("LotusDepth_Normals", {"image": "x"}, "image='x' is not an IMAGE batch"),
    "ensemble-reduction": ("LotusDepth_DepthEnsemble", {"reduction": "max"}, "reduction='max' is not one of"),
    "ensemble-flip-of-one": ("LotusDepth_DepthEnsemble", {"ensemble_size": 1, "flip": True},
                             "flip=True needs ensemble_size >= 2"),
    "tiled-overlap": ("LotusDepth_DepthTiled", {"tile_size": 64, "overlap": 40},
                      "overlap=40 must be an integer in [0, tile_size / 2)"),
    "video-align": ("LotusDepth_DepthVideo", {"align": "next"}, "align='next' is not one of"),
    "video-chunks-with-blend": ("LotusDepth_DepthVideo", {"chunk_size": 2, "latent_blend": 0.1},
                                "chunk_size=2 with latent_blend=0.1: blended frames depend on the frame before"),
    "colorize-colormap": ("LotusDepth_Colorize", {"colormap": "jet"}, "colormap='jet' is not one of"),
    "colorize-stretch": ("LotusDepth_Colorize", {"stretch": "bogus"},
                         f"stretch='bogus' is not one of {choices('per image', 'whole batch', 'none')}"),
    "colorize-quantity": ("LotusDepth_Colorize", {"quantity": "bogus"}, "quantity='bogus' is not one of"),
    "colorize-depth-as-string": ("LotusDepth_Colorize", {"depth": "x"},
                                 "depth='x' is not lotus_depth from a Lotus depth node or a MASK [B, H, W] or"
                                 " an IMAGE batch"),
    "remap-input-range": ("LotusDepth_Remap", {"input_range": "bogus"},
                          f"input_range='bogus' is not one of {choices('fixed', 'per image', 'whole batch')}"),
    "remap-empty-range": ("LotusDepth_Remap", {"in_low": 0.5, "in_high": 0.5}, "input range is empty"),
    "save-format": ("LotusDepth_SaveDepth", {"format": "bogus"}, "format='bogus' is not one of"),
    "save-outside-output": ("LotusDepth_SaveDepth", {"filename_prefix": "../../escape"}, "outside the output folder"),
    "metric-method": ("LotusDepth_MetricDepth", {"method": "bogus"},
                      f"method='bogus' is not one of {choices('near/far', 'two known distances')}"),
    "metric-pixel-outside": ("LotusDepth_MetricDepth", {"method": "two known distances", "a_x": 500},
                             "first point (500, 0) is outside the 56x40 image"),
    "metric-same-pixel": ("LotusDepth_MetricDepth", {"method": "two known distances"},
                          "same value at both points"),
    "normals-camera": ("LotusDepth_DepthToNormals", {"camera": "fisheye"}, "camera='fisheye' is not one of"),
    "normals-convention": ("LotusDepth_DepthToNormals", {"convention": "bogus"}, "convention='bogus' is not one of"),
    "convert-source": ("LotusDepth_ConvertNormals", {"source": "bogus"}, "source='bogus' is not one of"),
    "convert-map-as-string": ("LotusDepth_ConvertNormals", {"normal_map": "x"}, "normal_map='x' is not an IMAGE"),
    "pointcloud-axes": ("LotusDepth_SavePointCloud", {"axes": "bogus"}, "axes='bogus' is not one of"),
    "pointcloud-image-as-string": ("LotusDepth_SavePointCloud", {"image": "x"}, "image='x' is not an IMAGE"),
}


@pytest.mark.parametrize("case", EXECUTION_ERRORS)
def test_a_bad_input_gets_a_clear_message_and_the_server_keeps_serving(server, schemas, case):
    node, changes, message = EXECUTION_ERRORS[case]
    entry = server.run(graph(schemas, node, **changes))
    assert history_status(entry) == "error"
    error = history_error(entry)
    assert message in error["exception_message"]
    assert "/" not in error["exception_type"]  # no server path in the exception's name
    assert history_status(server.run(graph(schemas, node))) == "success"


def test_a_depth_checkpoint_wired_into_normals_names_the_right_node(server, schemas):
    entry = server.run(graph(schemas, "LotusDepth_Normals", checkpoint=DEPTH))
    assert "the Lotus Normals node needs a normal checkpoint. Use the Lotus Depth node" in \
        history_error(entry)["exception_message"]
    assert history_status(server.run(graph(schemas, "LotusDepth_Normals", checkpoint=NORMAL))) == "success"


# Mistakes ComfyUI's own validation catches: HTTP 400 before anything runs.
REJECTED = {
    "resolution-above-widget-max": ("LotusDepth_Depth", {"processing_resolution": 8192}, "bigger than max"),
    "negative-chunk-size": ("LotusDepth_Depth", {"chunk_size": -1}, "smaller than min"),
    "unknown-vae": ("LotusDepth_LoadModel", {"vae": "missing.safetensors"},
                    "is not a .safetensors file in models/vae"),
}


@pytest.mark.parametrize("case", REJECTED)
def test_a_bad_widget_value_is_rejected_before_running(server, schemas, case):
    node, changes, message = REJECTED[case]
    status, body = server.queue(graph(schemas, node, **changes))
    assert status == 400 and message in json.dumps(body["node_errors"])
    assert history_status(server.run(graph(schemas, node))) == "success"


def test_a_bicubic_upscale_with_overshoot_is_accepted_and_clamped(server, schemas):
    prompt = graph(schemas, "LotusDepth_Depth", image=["7", 0])
    prompt["7"] = {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "bicubic",
                                                          "width": 112, "height": 80, "crop": "disabled"}}
    entry = server.run(prompt)
    assert history_status(entry) == "success", history_error(entry)
    assert "resampling overshoot) clamped to [0, 1]" in server.log_text()


def test_the_log_names_the_networks_readably(server, schemas):
    assert history_status(server.run(graph(schemas, "LotusDepth_Depth", seed=5))) == "success"
    assert "Requested to load LotusUNet" in server.log_text()
    assert "_Held" not in server.log_text()
