"""Shared by tests/test_workflows.py and tests/test_workflows_browser.py: the shipped workflows, an
honest UI-format -> API-format converter, and a ComfyUI server prepared to run them on tiny models.

UI format ("workflow" JSON, version 0.4, what the frontend saves and loads): ``nodes`` with
``inputs`` (name, type, link and, for a widget that also has a socket, ``widget.name``), ``outputs``
and positional ``widgets_values``; ``links`` as ``[id, from_node, from_slot, to_node, to_slot, type]``.
API format (what POST /prompt takes): ``{node_id: {"class_type", "inputs": {name: value | [node_id, slot]}}}``.

The converter maps ``widgets_values`` by the node's input order in the server's /object_info, the way
the frontend builds its widgets: one value per widget input (INT, FLOAT, STRING, BOOLEAN, COMBO),
plus one extra value after an input with ``control_after_generate`` (the "fixed/randomize" widget)
and after a combo with ``image_upload``/``video_upload`` (the upload button's value); neither is sent.
An optional widget past the saved values (added to the node later) gets its default, as in the frontend.
Frontend-only nodes (Note, MarkdownNote, PrimitiveNode, Reroute) are dropped. The browser test checks
this converter against the frontend's own ``app.graphToPrompt()``.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from comfy_server import ComfyServer
from PIL import Image
from tiny import save_diffusers_folder, tiny_unet, tiny_vae

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS_DIR = REPO_ROOT / "workflows"
# The files the workflows load (LoadImage example.png, LoadVideo lotus_video_input.mp4), drawn by
# scripts/make_example_inputs.py; scripts/try_comfyui.sh copies them into ComfyUI's input folder.
EXAMPLE_INPUTS_DIR = WORKFLOWS_DIR / "input"
INPUT_LOADERS = ("LoadImage", "LoadVideo")  # nodes that load a file of the input folder (first widget)
# The workflows' file names (workflows/<name>.json and its thumbnail <name>.jpg). They are what the
# template browser shows: this frontend titles a pack's template card by its file name (see
# test_workflows_browser.py), hence readable names with spaces (served URL-encoded, %20) and no '.'.
BASIC = "Lotus Depth - image to depth map"
CONTROLNET_SD15 = "Lotus Depth - ControlNet SD15"
CONTROLNET_SDXL = "Lotus Depth - ControlNet SDXL"
CONTROLNET_FLUX = "Lotus Depth - ControlNet FLUX"
VIDEO = "Lotus Depth - video frames"
NORMALS = "Lotus Normals - image to surface normals"
HIGHRES = "Lotus Depth - high resolution tiles"
LOTUS2_CONTROLNET_FLUX = "Lotus-2 Depth - ControlNet FLUX"
LOTUS2_NORMALS = "Lotus-2 Normals - image to surface normals"
WORKFLOW_NAMES = (BASIC, CONTROLNET_SD15, CONTROLNET_SDXL, CONTROLNET_FLUX, VIDEO, NORMALS, HIGHRES,
                  LOTUS2_CONTROLNET_FLUX, LOTUS2_NORMALS)
CONTROLNET_WORKFLOWS = (CONTROLNET_SD15, CONTROLNET_SDXL, CONTROLNET_FLUX)
# Lotus-2 runs on the user's FLUX.1-dev (UNETLoader, VAELoader; DualCLIPLoader for the empty prompt): every
# node of these workflows depends on a third-party loader.
LOTUS2_WORKFLOWS = (LOTUS2_CONTROLNET_FLUX, LOTUS2_NORMALS)
PACK_NODES = ("LotusDepth_LoadModel", "LotusDepth_Depth", "LotusDepth_Normals",
              "LotusDepth_LoadLotus2", "LotusDepth_Lotus2Depth", "LotusDepth_Lotus2Normals")
FRONTEND_ONLY_NODES = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}

# What the workflows name. The Lotus loader names published releases ("<name>/"), which it downloads
# on first run into models/lotus/<name>/; here those folders hold tiny random networks of the real
# classes (a complete folder is used as is, without network: the server runs with HF_HUB_OFFLINE=1).
# The third-party files (SD1.5/SDXL/Flux checkpoints, ControlNets, text encoders, the Flux VAE) get
# tiny placeholder .safetensors files: enough for /prompt's validation, not for running. The Lotus-2
# workflows name the same FLUX.1-dev files (Load Lotus-2 downloads its own LoRAs into models/lotus/Lotus-2).
LOTUS_DEPTH = "lotus-depth-g-v2-1-disparity/"
LOTUS_NORMAL = "lotus-normal-g-v1-1/"
LOTUS_VAE = "(from checkpoint folder)"
INPUT_IMAGE = "example.png"  # ComfyUI's own checkout ships one too; the tests write a small one
INPUT_VIDEO = "lotus_video_input.mp4"
THIRD_PARTY_MODELS = {
    "checkpoints": ("v1-5-pruned-emaonly-fp16.safetensors", "sd_xl_base_1.0.safetensors"),
    "controlnet": ("control_v11f1p_sd15_depth_fp16.safetensors", "diffusers_xl_depth_full.safetensors",
                   "FLUX.1-dev-ControlNet-Union-Pro-2.0.safetensors"),
    "diffusion_models": ("flux1-dev.safetensors",),
    "text_encoders": ("clip_l.safetensors", "t5xxl_fp16.safetensors"),
    "vae": ("ae.safetensors",),
}
# Nodes that load those third-party models: in the execution test the graph is cut at them.
THIRD_PARTY_LOADERS = {"CheckpointLoaderSimple", "ControlNetLoader", "UNETLoader", "DualCLIPLoader", "VAELoader"}


def workflow_info(name: str) -> dict:
    """The workflow's title and description (``extra.info``): the title is the file name (what the
    template browser's card shows), the description what the README says of it."""
    return load_workflow(name)["extra"]["info"]


def input_files(workflow: dict) -> set[str]:
    """The input-folder files the workflow's LoadImage / LoadVideo nodes name (the first widget)."""
    return {n["widgets_values"][0] for n in workflow["nodes"] if n["type"] in INPUT_LOADERS}


def workflow_path(name: str) -> Path:
    return WORKFLOWS_DIR / f"{name}.json"


def load_workflow(name: str) -> dict:
    return json.loads(workflow_path(name).read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------------
# UI format -> API format


def input_specs(info: dict) -> list[tuple[str, str, dict]]:
    """A node's inputs from /object_info as (name, type, options), in the frontend's order."""
    order = info.get("input_order") or {k: list(v) for k, v in info["input"].items()}
    specs = []
    for section in ("required", "optional"):
        for name in order.get(section, []):
            spec = info["input"][section][name]
            kind = "COMBO" if isinstance(spec[0], list) else spec[0]
            specs.append((name, kind, spec[1] if len(spec) > 1 else {}))
    return specs


def is_widget(kind: str, options: dict) -> bool:
    return kind in WIDGET_TYPES and not options.get("forceInput")


def widget_values(node: dict, info: dict) -> dict[str, Any]:
    """{widget name: value} for a UI node, from its positional widgets_values."""
    values = node.get("widgets_values") or []
    if isinstance(values, dict):  # some frontends save {name: value}
        return dict(values)
    result, position = {}, 0
    for name, kind, options in input_specs(info):
        if not is_widget(kind, options):
            continue
        if position >= len(values):
            if name in info["input"].get("optional", {}) and "default" in options:
                # an optional widget added to the node after the file was saved (e.g. Load Lotus Model's
                # backend): the frontend gives it its default, and sends that
                result[name] = options["default"]
                continue
            raise ValueError(f"node {node['id']} ({node['type']}): no widget value for {name!r}")
        result[name] = values[position]
        position += 1
        if options.get("control_after_generate"):
            position += 1  # "fixed" / "randomize" / ...: a frontend widget, never sent
        if options.get("image_upload") or options.get("video_upload"):
            position += 1  # the upload button's value
    if position != len(values):
        raise ValueError(f"node {node['id']} ({node['type']}): {len(values)} widget values, expected {position}")
    return result


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """The API prompt the workflow stands for (see the module docstring)."""
    links = {link[0]: link for link in workflow["links"]}
    nodes = {node["id"]: node for node in workflow["nodes"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY_NODES or node.get("mode", 0) == 2:  # 2 = muted
            continue
        if node.get("mode", 0) != 0:
            raise NotImplementedError(f"node {node['id']}: mode {node['mode']} (bypass) is not converted")
        info = object_info[node["type"]]
        inputs: dict[str, Any] = widget_values(node, info)
        for slot in node.get("inputs", []):
            if slot.get("link") is None:
                continue
            _, origin, origin_slot, *_ = links[slot["link"]]
            if nodes[origin]["type"] in FRONTEND_ONLY_NODES:
                raise NotImplementedError(f"node {node['id']}: input from a {nodes[origin]['type']}")
            name = (slot.get("widget") or {}).get("name", slot["name"])
            inputs[name] = [str(origin), origin_slot]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def downstream_of(prompt: dict, roots: set[str]) -> set[str]:
    """The nodes of an API prompt that depend on any of `roots` (roots included)."""
    found = set(roots)
    changed = True
    while changed:
        changed = False
        for node_id, node in prompt.items():
            if node_id in found:
                continue
            if any(isinstance(v, list) and v[0] in found for v in node["inputs"].values()):
                found.add(node_id)
                changed = True
    return found


def without_third_party(prompt: dict) -> tuple[dict, set[str]]:
    """The prompt cut at the third-party model loaders: those loaders and everything that depends on
    them are removed. Returns (the rest, the removed node ids)."""
    loaders = {i for i, n in prompt.items() if n["class_type"] in THIRD_PARTY_LOADERS}
    removed = downstream_of(prompt, loaders)
    return {i: n for i, n in prompt.items() if i not in removed}, removed


# --------------------------------------------------------------------------------------------------
# the server's files


def write_input_image(path: Path, width: int = 56, height: int = 40, seed: int = 0) -> None:
    """A small structured picture (gradients + texture), like the one every ComfyUI install ships."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    rng = np.random.default_rng(seed)
    rgb = np.stack([0.5 + 0.4 * np.sin(6 * x + 3 * y), 0.5 + 0.4 * np.cos(5 * x * y + 1), 0.2 + 0.6 * x], -1)
    rgb = np.clip(rgb + rng.uniform(-0.1, 0.1, rgb.shape), 0, 1)
    Image.fromarray((rgb * 255).astype(np.uint8)).save(path)


def write_input_video(path: Path, frames: int = 5, width: int = 48, height: int = 32, fps: int = 8) -> None:
    """A tiny H.264 clip (PyAV, as ComfyUI's LoadVideo reads it): a gradient moving right."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps, 1))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            y, x = np.mgrid[0:height, 0:width]
            rgb = np.stack([(x * 5 + i * 6) % 256, (y * 7) % 256, np.full_like(x, 40 * i % 256)], -1)
            frame = av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def write_placeholder(path: Path) -> None:
    """A valid but tiny .safetensors file (one tensor): stands in for a multi-GB third-party model."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"placeholder": torch.zeros(1)}, path, metadata={"lotus_tests": "placeholder, not a model"})


def write_lotus_models(lotus_dir: Path) -> None:
    """Tiny random networks in the release folders the workflows name (models/lotus/<release>/)."""
    save_diffusers_folder(tiny_unet(True, seed=21), tiny_vae(seed=22), lotus_dir / LOTUS_DEPTH.rstrip("/"),
                          pipeline="DirectDiffusionY0Pipeline")
    save_diffusers_folder(tiny_unet(True, seed=23), tiny_vae(seed=24), lotus_dir / LOTUS_NORMAL.rstrip("/"))


def prepare_server(server: ComfyServer, *, third_party_placeholders: bool) -> None:
    """Write what the workflows name into the server's folders (call after prepare(), before start())."""
    write_lotus_models(server.lotus_dir)
    write_input_image(server.input_dir / INPUT_IMAGE)
    write_input_video(server.input_dir / INPUT_VIDEO)
    if third_party_placeholders:
        for folder, names in THIRD_PARTY_MODELS.items():
            for name in names:
                write_placeholder(server.models_dir / folder / name)
