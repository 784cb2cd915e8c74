"""The workflows in workflows/: their files, their validity against the real server's schemas, and
their execution in a real ComfyUI server (one for the module, this checkout loaded as a pack).

Static tests read /object_info from that server: node types, widget values (combos, ranges, types),
link types, open sockets, model download metadata (checked against GET /models/<folder>).

Execution: each workflow is converted to an API prompt by tests/workflow_support.py (the browser test
checks that converter against the frontend's own ``graphToPrompt``) and run on tiny random Lotus
networks of the real classes, written under the names the workflows use. Every value is the file's,
except that the Lotus nodes' processing_resolution is lowered from 768 to 64 (768 costs 5-20 s per
image even on the tiny networks on a 2-core CPU) everywhere but in the basic workflow, which runs
exactly as saved. What runs and what is only validated:

* "Lotus Depth - image to depth map" (basic), "Lotus Normals - image to surface normals",
  "Lotus Depth - video frames", "Lotus Depth - high resolution tiles" (high-res): **executed whole**.
  Basic: the 8-bit PNG and the 16-bit one (Lotus Save Depth) equal ``lotus_core`` run on the same
  files; video: a real 5-frame H.264 clip is loaded, every frame saved as PNG and the depth clip
  written at the source frame rate; high-res: with tile_size 32 / overlap 8 instead of 768 / 128, so
  that the 56 x 40 test picture is really cut into tiles.
* "Lotus Depth - ControlNet SD15/SDXL/FLUX": the SD1.5 / SDXL / Flux checkpoints, ControlNets,
  text encoders and Flux VAE are multi-GB third-party files, so that part is **validated, not run**:
  the whole graph goes to POST /prompt with tiny placeholder .safetensors files under the names the
  workflow uses, and the server accepts it (ComfyUI itself checks every input, link type, combo value
  and range); when the queued prompt then runs, the first third-party loader rejects its placeholder
  (asserted) and nothing else fails. The Lotus part is **executed**: the graph cut at those loaders
  (the loaders and everything downstream of them removed) runs, and the test asserts exactly which
  nodes ran: LoadImage, ImageScaleToTotalPixels, Load Lotus Model, Lotus Depth, Preview Image.
  (Get Image Size and the empty latent feed only the sampler: validated, not run.)
* "Lotus-2 Depth - ControlNet FLUX", "Lotus-2 Normals - image to surface normals": Lotus-2 runs on the
  user's FLUX.1-dev. The whole graph, as saved, is **validated** by POST /prompt against the same
  placeholders (no Lotus-2 node and no output runs). In a second server whose flux1-dev.safetensors and
  ae.safetensors are tiny random FLUX models that ComfyUI loads (tests/lotus2_tiny.py), with random
  Lotus-2 release files and a stored empty-prompt conditioning (as Load Lotus-2 keeps it after a first
  run: FLUX's T5 cannot be made tiny for ComfyUI's loader), the graph without the text encoders is
  **executed**: the normals workflow whole otherwise, exactly as saved; the ControlNet one up to its
  depth preview (at processing_resolution 64), the generation part needing the ControlNet.

The try-out: ``scripts/try_comfyui.sh`` copies workflows/input/ (the files the workflows load) into
ComfyUI's input folder without replacing a user's file (checked on a stand-in ComfyUI), and, started
for real with a fresh home, serves the basic workflow, which then runs as saved on the example picture.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.parse

import numpy as np
import pytest
import torch
from comfy_server import ComfyServer, ComfyServerError, free_port, history_error, history_status
from lotus2_tiny import comfy_flux_transformer, comfy_flux_vae, tiny_conditioning, write_release
from PIL import Image
from safetensors.torch import save_file
from workflow_support import (
    BASIC,
    CONTROLNET_FLUX,
    CONTROLNET_WORKFLOWS,
    EXAMPLE_INPUTS_DIR,
    FRONTEND_ONLY_NODES,
    HIGHRES,
    INPUT_IMAGE,
    LOTUS2_CONTROLNET_FLUX,
    LOTUS2_NORMALS,
    LOTUS2_WORKFLOWS,
    LOTUS_DEPTH,
    LOTUS_NORMAL,
    LOTUS_VAE,
    NORMALS,
    PACK_NODES,
    THIRD_PARTY_LOADERS,
    VIDEO,
    WORKFLOW_NAMES,
    WORKFLOWS_DIR,
    downstream_of,
    input_files,
    input_specs,
    is_widget,
    load_workflow,
    prepare_server,
    ui_to_api,
    widget_values,
    without_third_party,
    workflow_info,
    workflow_path,
    write_input_image,
    write_lotus_models,
)

import lotus_core
from lotus_core.loading.variants import known_checkpoint

REPO_ROOT = WORKFLOWS_DIR.parent
TRY_SCRIPT = REPO_ROOT / "scripts" / "try_comfyui.sh"
PREDICTION_NODES = ("LotusDepth_Depth", "LotusDepth_Normals", "LotusDepth_DepthTiled")
LOTUS1_WORKFLOWS = tuple(name for name in WORKFLOW_NAMES if name not in LOTUS2_WORKFLOWS)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ComfyServer(tmp_path_factory.mktemp("comfy_workflows"), require_nodes=PACK_NODES)
    srv.prepare()
    prepare_server(srv, third_party_placeholders=True)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def object_info(server):
    return server.object_info()


def link_table(workflow: dict) -> dict[int, list]:
    return {link[0]: link for link in workflow["links"]}


def types_match(a: str, b: str) -> bool:
    """ComfyUI's rule: "*" matches anything; "A,B" (an input taking several types) matches each of them."""
    return "*" in (a, b) or bool(set(a.split(",")) & set(b.split(",")))


# --------------------------------------------------------------------------------------------------
# static: files and format


def test_the_folder_holds_exactly_the_workflows_their_thumbnails_and_their_inputs():
    files = sorted(p.name for p in WORKFLOWS_DIR.iterdir())
    assert files == sorted([f"{n}.json" for n in WORKFLOW_NAMES] + [f"{n}.jpg" for n in WORKFLOW_NAMES] + ["input"])
    for name in WORKFLOW_NAMES:
        with Image.open(WORKFLOWS_DIR / f"{name}.jpg") as thumbnail:
            assert thumbnail.format == "JPEG" and min(thumbnail.size) >= 256, thumbnail.size


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_file_is_a_consistent_ui_workflow(name):
    workflow = json.loads(workflow_path(name).read_text(encoding="utf-8"))
    assert workflow["version"] == 0.4
    nodes = {n["id"]: n for n in workflow["nodes"]}
    assert len(nodes) == len(workflow["nodes"]), "duplicate node ids"
    assert workflow["last_node_id"] >= max(nodes)
    links = link_table(workflow)
    assert len(links) == len(workflow["links"]), "duplicate link ids"
    assert workflow["last_link_id"] >= max(links)
    for link_id, origin, origin_slot, target, target_slot, kind in workflow["links"]:
        # both ends of every link record it, with a type the link carries
        output, slot = nodes[origin]["outputs"][origin_slot], nodes[target]["inputs"][target_slot]
        assert link_id in (output["links"] or []) and slot["link"] == link_id
        assert types_match(output["type"], kind) and types_match(kind, slot["type"])
    for node in nodes.values():
        for slot in node.get("inputs", []):
            assert slot.get("link") is None or slot["link"] in links
        for output in node.get("outputs", []):
            assert all(links[i][1] == node["id"] for i in output.get("links") or [])


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_one_short_note_explains_the_workflow(name):
    notes = [n for n in load_workflow(name)["nodes"] if n["type"] in ("Note", "MarkdownNote")]
    assert len(notes) == 1
    text = notes[0]["widgets_values"][0]
    assert 200 < len(text) < 1600
    assert "Lotus" in text and "models/" in text


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_workflow_has_a_readable_name_title_and_description(name):
    """The template browser titles a pack's card by the file name and reads nothing from the file (see
    the README's Workflows section and test_workflows_browser.py), so the file name is the readable
    title, and extra.info {title, description} carries the same title and a description with the
    workflow wherever it goes. The README lists each one with a link to its file, URL-encoded (%20).

    The name holds only letters, digits, spaces and '-': the frontend puts it unencoded into the
    template and thumbnail URLs (/api/workflow_templates/<pack>/<name>.json), where the browser
    encodes a space as %20 and the server decodes it (checked in the browser test), but a '#', '?',
    '%' or '+' would change the URL's meaning; and no '.', so that the extension is the only one."""
    workflow = load_workflow(name)
    assert set(workflow["extra"]) == {"info"} and set(workflow["extra"]["info"]) == {"title", "description"}
    assert re.fullmatch(r"Lotus(-2)? [A-Za-z0-9 -]+", name) and "  " not in name and name == name.strip()
    title, description = workflow_info(name)["title"], workflow_info(name)["description"]
    assert title == name and 10 <= len(title) <= 45
    assert 60 <= len(description) <= 180 and description.endswith(".")
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Workflows\n", 1)[1].split("\n## ", 1)[0]
    link = f"(workflows/{urllib.parse.quote(name)}.json)"
    assert f"**{title}**" in section and link in section and " " not in link


def test_workflow_titles_are_distinct():
    titles = [workflow_info(name)["title"] for name in WORKFLOW_NAMES]
    assert len(set(titles)) == len(titles), titles


def test_the_pack_names_its_template_category():
    """The frontend labels a pack's template category by the i18n key
    templateWorkflows.category.<custom_nodes folder>, from the pack's locales/<lang>/main.json."""
    locale = json.loads((REPO_ROOT / "locales" / "en" / "main.json").read_text(encoding="utf-8"))
    # the folder is lotus_depth when scripts/try_comfyui.sh links it, lotus-depth for a git clone
    assert locale == {"templateWorkflows": {"category": {"lotus_depth": "Lotus Depth", "lotus-depth": "Lotus Depth"}}}


def test_the_example_inputs_are_exactly_the_files_the_workflows_load():
    """workflows/input/ (copied into ComfyUI's input folder by scripts/try_comfyui.sh) holds every file a
    workflow's LoadImage / LoadVideo names, and nothing else; small, real pictures."""
    loaded = set().union(*(input_files(load_workflow(name)) for name in WORKFLOW_NAMES))
    assert loaded == {INPUT_IMAGE, "lotus_video_input.mp4"}
    assert sorted(p.name for p in EXAMPLE_INPUTS_DIR.iterdir()) == sorted(loaded)
    image_path = EXAMPLE_INPUTS_DIR / INPUT_IMAGE
    assert image_path.stat().st_size < 300_000
    with Image.open(image_path) as image:
        assert image.format == "PNG" and image.mode == "RGB" and image.size == (768, 512)
        pixels = np.asarray(image, dtype=np.float32) / 255
    assert pixels.std() > 0.1 and np.abs(np.diff(pixels, axis=0)).mean() > 0.005  # a scene, not a flat fill
    video_path = EXAMPLE_INPUTS_DIR / "lotus_video_input.mp4"
    assert video_path.stat().st_size < 300_000
    import av

    with av.open(str(video_path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert stream.codec_context.name == "h264" and float(stream.average_rate) == 12
    assert len(frames) == 24 and frames[0].shape == (320, 480, 3)
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 5  # the camera moves


# --------------------------------------------------------------------------------------------------
# static: against the real server's schemas


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_every_node_type_exists_in_the_server(name, object_info):
    types = {n["type"] for n in load_workflow(name)["nodes"]} - FRONTEND_ONLY_NODES
    assert types <= set(object_info), types - set(object_info)
    used_pack_nodes = {t for t in types if t.startswith("LotusDepth_")}
    assert used_pack_nodes & set(PACK_NODES), "every workflow uses the pack"
    for node_type in used_pack_nodes:
        assert object_info[node_type]["python_module"] == "custom_nodes.lotus_depth"


def model_entries(node: dict) -> dict[str, dict]:
    return {m["name"]: m for m in (node.get("properties") or {}).get("models", [])}


def combo_options(info: dict, name: str) -> list:
    spec = info["input"].get("required", {}).get(name) or info["input"]["optional"][name]
    return spec[0] if isinstance(spec[0], list) else spec[1]["options"]  # V1 list / V3 "COMBO"


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_widget_values_are_valid_for_the_current_schemas(name, object_info):
    for node in load_workflow(name)["nodes"]:
        if node["type"] in FRONTEND_ONLY_NODES:
            continue
        info = object_info[node["type"]]
        values = widget_values(node, info)  # also checks their number
        for input_name, kind, options in input_specs(info):
            if not is_widget(kind, options):
                continue
            value = values[input_name]
            where = f"node {node['id']} ({node['type']}).{input_name} = {value!r}"
            if kind == "COMBO":
                # model files are listed only where they exist: a missing one must be named for download
                assert value in combo_options(info, input_name) or value in model_entries(node), where
            elif kind in ("INT", "FLOAT"):
                assert isinstance(value, (int, float)) and not isinstance(value, bool), where
                assert kind == "FLOAT" or float(value).is_integer(), where
                assert options.get("min", -np.inf) <= value <= options.get("max", np.inf), where
            elif kind == "STRING":
                assert isinstance(value, str), where
            else:
                assert kind == "BOOLEAN" and isinstance(value, bool), where


def input_type(info: dict, name: str) -> str:
    spec = info["input"].get("required", {}).get(name) or info["input"]["optional"][name]
    return "COMBO" if isinstance(spec[0], list) else spec[0]


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_links_connect_matching_types(name, object_info):
    workflow = load_workflow(name)
    nodes = {n["id"]: n for n in workflow["nodes"]}
    for link_id, origin, origin_slot, target, target_slot, kind in workflow["links"]:
        produced = object_info[nodes[origin]["type"]]["output"][origin_slot]
        slot = nodes[target]["inputs"][target_slot]
        wanted = input_type(object_info[nodes[target]["type"]], (slot.get("widget") or {}).get("name", slot["name"]))
        assert types_match(produced, wanted) and types_match(produced, kind) and types_match(kind, wanted), \
            f"link {link_id}: {produced} -> {wanted} (saved as {kind})"
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY_NODES:
            continue
        # saved output slots agree with the schema (a pack may add outputs at the end later)
        schema_outputs = object_info[node["type"]]["output"]
        saved_outputs = [o["type"] for o in node.get("outputs", [])]
        assert saved_outputs == schema_outputs[:len(saved_outputs)], (node["type"], saved_outputs)
        # and no required socket is left open
        required = object_info[node["type"]]["input"].get("required", {})
        linked = {(s.get("widget") or {}).get("name", s["name"]) for s in node.get("inputs", []) if s.get("link")}
        for input_name, kind, options in input_specs(object_info[node["type"]]):
            if input_name in required and not is_widget(kind, options):
                assert input_name in linked, f"node {node['id']} ({node['type']}): {input_name} not connected"


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_every_model_file_has_download_metadata_for_its_folder(name, server, object_info):
    """The frontend offers a download for a missing file from properties.models: name, url (Hugging
    Face, .safetensors) and directory. The directory is checked against the server: GET
    /models/<directory> lists the file that the node loads (tiny stand-ins here)."""
    for node in load_workflow(name)["nodes"]:
        if node["type"] in FRONTEND_ONLY_NODES:
            continue
        values = widget_values(node, object_info[node["type"]])
        model_files = [v for v in values.values() if isinstance(v, str) and v.endswith(".safetensors")]
        entries = model_entries(node)
        assert sorted(entries) == sorted(model_files), node["type"]
        for entry in entries.values():
            assert entry["url"].startswith("https://huggingface.co/") and "/resolve/main/" in entry["url"]
            assert entry["url"].split("?")[0].endswith(".safetensors")
            assert entry["name"] in server.models(entry["directory"]), entry


@pytest.mark.parametrize("name", LOTUS1_WORKFLOWS)
def test_workflow_does_what_its_name_says(name, object_info):
    workflow = load_workflow(name)
    prompt = ui_to_api(workflow, object_info)
    by_type = {}
    for node_id, node in prompt.items():
        by_type.setdefault(node["class_type"], []).append(node_id)

    def consumers(node_id, slot=0):
        return [(i, n["class_type"], k)
                for i, n in prompt.items() for k, v in n["inputs"].items() if v == [node_id, slot]]

    [lotus_node] = [i for t in PREDICTION_NODES for i in by_type.get(t, [])]
    users = {t for _, t, _ in consumers(lotus_node)}
    loader = prompt[by_type["LotusDepth_LoadModel"][0]]["inputs"]
    assert loader["vae"] == LOTUS_VAE
    # published releases, downloaded by the loader on first run (their folders bring the VAE)
    release = known_checkpoint(loader["checkpoint"])
    assert loader["checkpoint"].endswith("/") and release is not None and release.download
    if name == NORMALS:
        assert loader["checkpoint"] == LOTUS_NORMAL and {"PreviewImage", "SaveImage"} <= users
    else:
        assert loader["checkpoint"] == LOTUS_DEPTH
    if name in (BASIC, HIGHRES):
        assert {"PreviewImage", "SaveImage"} <= users
        save_depth = prompt[by_type["LotusDepth_SaveDepth"][0]]["inputs"]
        assert save_depth["depth"] == [lotus_node, 3] and save_depth["format"] == "png16"  # lotus_depth, 16 bit
        assert prompt[lotus_node]["class_type"] == ("LotusDepth_DepthTiled" if name == HIGHRES
                                                    else "LotusDepth_Depth")
    if name == VIDEO:
        depth = prompt[lotus_node]["inputs"]
        assert depth["noise"] == "shared across batch" and depth["chunk_size"] > 1
        assert depth["image"][0] in by_type["GetVideoComponents"] and {"SaveImage", "CreateVideo"} <= users
    if name in CONTROLNET_WORKFLOWS:
        # the near = white map goes straight into Apply ControlNet (no ImageInvert), and is previewed
        assert ("ControlNetApplyAdvanced", "image") in {(t, k) for _, t, k in consumers(lotus_node)}
        assert "ImageInvert" not in by_type and "PreviewImage" in users
        apply = prompt[by_type["ControlNetApplyAdvanced"][0]]["inputs"]
        assert ("vae" in apply) == (name == CONTROLNET_FLUX)  # Flux ControlNets work in latent space
        assert by_type["ControlNetLoader"] and "KSampler" in by_type and "SaveImage" in by_type


@pytest.mark.parametrize("name", LOTUS2_WORKFLOWS)
def test_lotus2_workflow_does_what_its_name_says(name, object_info):
    """Load Lotus-2 on the user's FLUX.1-dev MODEL and VAE, with the empty prompt encoded by FLUX's own text
    encoders; the prediction node as the official script runs (1024, 10 sharpener steps). The ControlNet
    workflow generates with the same, unpatched MODEL and VAE."""
    prompt = ui_to_api(load_workflow(name), object_info)
    by_type = {}
    for node_id, node in prompt.items():
        by_type.setdefault(node["class_type"], []).append(node_id)

    def origin(node_id, input_name):
        source = prompt[node_id]["inputs"][input_name]
        return source[0], prompt[source[0]]

    def consumers(node_id, slot=0):
        return {(n["class_type"], k) for n in prompt.values() for k, v in n["inputs"].items() if v == [node_id, slot]}

    [loader] = by_type["LotusDepth_LoadLotus2"]
    [unet], [vae] = by_type["UNETLoader"], by_type["VAELoader"]
    assert origin(loader, "model")[0] == unet and origin(loader, "vae")[0] == vae
    assert prompt[unet]["inputs"]["unet_name"] == "flux1-dev.safetensors"
    assert prompt[vae]["inputs"]["vae_name"] == "ae.safetensors"
    encode_id, encode = origin(loader, "empty_prompt")
    assert encode["class_type"] == "CLIPTextEncode" and encode["inputs"]["text"] == ""
    assert prompt[origin(encode_id, "clip")[0]]["inputs"]["type"] == "flux"

    node_type = "LotusDepth_Lotus2Normals" if name == LOTUS2_NORMALS else "LotusDepth_Lotus2Depth"
    [lotus_node] = [i for t in ("LotusDepth_Lotus2Depth", "LotusDepth_Lotus2Normals") for i in by_type.get(t, [])]
    predict = prompt[lotus_node]
    assert predict["class_type"] == node_type and origin(lotus_node, "lotus2_model")[0] == loader
    assert predict["inputs"]["processing_resolution"] == lotus_core.LOTUS2_MAX_EDGE
    assert predict["inputs"]["sharpener_steps"] == lotus_core.LOTUS2_SHARPENER_STEPS
    assert prompt[origin(lotus_node, "image")[0]]["class_type"] in ("LoadImage", "ImageScaleToTotalPixels")
    users = consumers(lotus_node)
    if name == LOTUS2_NORMALS:
        assert prompt[loader]["inputs"]["task"] == "normal"
        assert users == {("PreviewImage", "images"), ("SaveImage", "images")}
    else:
        assert name == LOTUS2_CONTROLNET_FLUX and prompt[loader]["inputs"]["task"] == "depth"
        # the near = white map straight into Apply ControlNet (with the VAE: Flux ControlNets), and previewed
        assert users == {("PreviewImage", "images"), ("ControlNetApplyAdvanced", "image")}
        [apply] = by_type["ControlNetApplyAdvanced"]
        assert origin(apply, "vae")[0] == vae and "ImageInvert" not in by_type
        [sampler] = by_type["KSampler"]
        assert origin(sampler, "model")[0] == unet  # the MODEL itself: Load Lotus-2 patches clones of it
        assert origin(sampler, "positive")[0] == apply and by_type["ControlNetLoader"] and by_type["SaveImage"]


def test_the_server_lists_and_serves_the_workflows_as_templates(server):
    """The server lists the readable names with their spaces, and serves each file and its thumbnail
    at its URL-encoded name (spaces as %20, as a browser sends them)."""
    assert sorted(server.get_json("/api/workflow_templates")["lotus_depth"]) == sorted(WORKFLOW_NAMES)
    for name in WORKFLOW_NAMES:
        url = f"/api/workflow_templates/lotus_depth/{urllib.parse.quote(name)}"
        assert "%20" in url and " " not in url
        served = server.get_json(f"{url}.json")
        assert served == load_workflow(name) and served["extra"]["info"]["title"] == workflow_info(name)["title"]
        status, body = server.request("GET", f"{url}.jpg")
        assert status == 200 and body[:3] == b"\xff\xd8\xff"
    # the category's readable name reaches the frontend through the pack's locales
    assert server.get_json("/i18n")["en"]["templateWorkflows"]["category"]["lotus_depth"] == "Lotus Depth"


# --------------------------------------------------------------------------------------------------
# execution


TEST_RESOLUTION = 64
TEST_TILE_SIZE, TEST_TILE_OVERLAP = 32, 8


def at_test_resolution(prompt: dict) -> dict:
    """The prompt with the Lotus nodes' processing_resolution lowered to TEST_RESOLUTION (see the
    module docstring: 768 costs seconds per image even on tiny networks on a 2-core CPU)."""
    prompt = json.loads(json.dumps(prompt))
    for node in prompt.values():
        if node["class_type"] in PREDICTION_NODES:
            assert node["inputs"]["processing_resolution"] == 768
            node["inputs"]["processing_resolution"] = TEST_RESOLUTION
        if node["class_type"] == "LotusDepth_DepthTiled":  # so that the 56 x 40 picture is really tiled
            node["inputs"].update(tile_size=TEST_TILE_SIZE, overlap=TEST_TILE_OVERLAP)
    return prompt


def run_ok(server, prompt, timeout=240) -> tuple[dict, set[str]]:
    """Run a prompt; return its history entry and the ids of the nodes that ran: executed now, or
    taken from ComfyUI's cache of an earlier prompt with the same inputs (the Lotus loader, often)."""
    entry, events = server.run_with_events(prompt, timeout=timeout)
    assert history_status(entry) == "success", history_error(entry)
    ran = {e["data"]["node"] for e in events if e["type"] == "executing" and e["data"].get("node")}
    for event in events:
        if event["type"] == "execution_cached":
            ran |= set(event["data"]["nodes"])
    return entry, ran


def saved_images(server, entry, node_id) -> list[np.ndarray]:
    return [np.asarray(Image.open(p)) for p in server.output_images(entry, node_id)]


def test_basic_workflow_runs_and_saves_the_depth_of_the_input(server, object_info):
    """As saved (768): the 8-bit ControlNet map and the 16-bit native values equal lotus_core's."""
    prompt = ui_to_api(load_workflow(BASIC), object_info)
    entry, ran = run_ok(server, prompt)
    assert ran == set(prompt)
    node_of = {n["class_type"]: i for i, n in prompt.items()}
    [saved] = saved_images(server, entry, node_of["SaveImage"])
    [previewed] = saved_images(server, entry, node_of["PreviewImage"])
    [saved16] = saved_images(server, entry, node_of["LotusDepth_SaveDepth"])
    np.testing.assert_array_equal(saved, previewed)

    depth = prompt[node_of["LotusDepth_Depth"]]["inputs"]
    model = lotus_core.load_model(server.lotus_dir / LOTUS_DEPTH)  # the folder brings its VAE
    image = np.asarray(Image.open(server.input_dir / INPUT_IMAGE).convert("RGB"), dtype=np.float32) / 255
    prediction = lotus_core.predict(model, torch.from_numpy(image).permute(2, 0, 1)[None],
                                    processing_resolution=depth["processing_resolution"], seed=depth["seed"])
    expected = (255 * lotus_core.to_controlnet(prediction)[0, 0].numpy()).clip(0, 255).astype(np.uint8)
    assert saved.shape == (*image.shape[:2], 3)
    difference = np.abs(saved[..., 0].astype(int) - expected.astype(int))
    assert difference.max() <= 1 and (difference > 0).mean() < 0.01
    # the 16-bit file: the model's own disparity values (0..1 -> 0..65535)
    assert saved16.dtype == np.uint16 and saved16.shape == image.shape[:2]
    np.testing.assert_allclose(saved16 / 65535, prediction.values[0, 0].numpy(), atol=1e-4)


def test_normals_workflow_runs(server, object_info):
    prompt = ui_to_api(load_workflow(NORMALS), object_info)
    entry, ran = run_ok(server, at_test_resolution(prompt))
    assert ran == set(prompt)
    save = next(i for i, n in prompt.items() if n["class_type"] == "SaveImage")
    [normals] = saved_images(server, entry, save)
    assert normals.shape == (40, 56, 3) and normals.std() > 0


def test_highres_workflow_runs_tiled_and_saves_8_and_16_bit(server, object_info):
    prompt = ui_to_api(load_workflow(HIGHRES), object_info)
    entry, ran = run_ok(server, at_test_resolution(prompt))
    assert ran == set(prompt)
    node_of = {n["class_type"]: i for i, n in prompt.items()}
    [saved] = saved_images(server, entry, node_of["SaveImage"])
    [saved16] = saved_images(server, entry, node_of["LotusDepth_SaveDepth"])
    assert saved.shape == (40, 56, 3) and saved16.shape == (40, 56) and saved16.dtype == np.uint16
    assert saved.std() > 0 and saved16.std() > 0


def test_video_workflow_runs_on_a_real_clip_and_saves_every_frame(server, object_info):
    prompt = ui_to_api(load_workflow(VIDEO), object_info)
    entry, ran = run_ok(server, at_test_resolution(prompt))
    assert ran == set(prompt)
    save = next(i for i, n in prompt.items() if n["class_type"] == "SaveImage")
    frames = saved_images(server, entry, save)
    assert len(frames) == 5 and all(f.shape == (32, 48, 3) for f in frames)
    save_video = next(i for i, n in prompt.items() if n["class_type"] == "SaveVideo")
    [clip] = server.output_images(entry, save_video)
    import av

    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        assert sum(1 for _ in container.decode(stream)) == 5
        assert float(stream.average_rate) == pytest.approx(8)


@pytest.mark.parametrize("name", CONTROLNET_WORKFLOWS)
def test_controlnet_workflow_is_accepted_whole_and_its_lotus_part_runs(name, server, object_info):
    prompt = ui_to_api(load_workflow(name), object_info)

    # 1. the graph cut at the third-party loaders runs: the Lotus part and its preview
    part, removed = without_third_party(prompt)
    assert {prompt[i]["class_type"] for i in removed} >= {"ControlNetApplyAdvanced", "KSampler", "SaveImage"}
    entry, ran = run_ok(server, at_test_resolution(part))
    assert {prompt[i]["class_type"] for i in ran} == {
        "LoadImage", "ImageScaleToTotalPixels", "LotusDepth_LoadModel", "LotusDepth_Depth", "PreviewImage"}
    preview = next(i for i, n in part.items() if n["class_type"] == "PreviewImage")
    [depth] = saved_images(server, entry, preview)
    megapixels = next(n["inputs"]["megapixels"] for n in part.values() if n["class_type"] == "ImageScaleToTotalPixels")
    assert depth.shape[0] * depth.shape[1] == pytest.approx(megapixels * 1024 * 1024, rel=0.01)

    # 2. the whole graph, third-party models as tiny placeholders: the server validates it ...
    status, body = server.queue(at_test_resolution(prompt))
    assert status == 200 and body["node_errors"] == {}, json.dumps(body)[:3000]
    entry = server.wait(body["prompt_id"], timeout=240)
    # ... and when it runs, the first third-party loader refuses its placeholder; nothing else fails
    assert history_status(entry) == "error"
    error = history_error(entry)
    assert error["node_type"] in THIRD_PARTY_LOADERS and error["node_id"] in removed, error
    assert set(error["executed"]) <= ran  # the Lotus part came from step 1 (cached), nothing more ran


@pytest.mark.parametrize("name", LOTUS2_WORKFLOWS)
def test_lotus2_workflow_is_accepted_whole_with_placeholder_files(name, server, object_info):
    """The whole graph, as saved, with tiny placeholder files under the FLUX.1-dev names it uses: the server
    validates it; when it runs, a FLUX loader refuses its placeholder (ComfyUI's DualCLIPLoader does
    accept one, so the empty prompt's encoding may run) and no Lotus-2 node and no output ran."""
    prompt = ui_to_api(load_workflow(name), object_info)
    status, body = server.queue(prompt)
    assert status == 200 and body["node_errors"] == {}, json.dumps(body)[:3000]
    entry = server.wait(body["prompt_id"], timeout=240)
    assert history_status(entry) == "error"
    error = history_error(entry)
    assert error["node_type"] in THIRD_PARTY_LOADERS, error
    lotus2_and_outputs = {i for i, n in prompt.items() if n["class_type"].startswith("LotusDepth_")
                          or n["class_type"] in ("PreviewImage", "SaveImage")}
    assert lotus2_and_outputs and not set(error["executed"]) & lotus2_and_outputs, error


@pytest.fixture(scope="module")
def flux_server(tmp_path_factory):
    """A server whose FLUX.1-dev files (flux1-dev.safetensors, ae.safetensors) are tiny random FLUX models that
    ComfyUI's UNETLoader / VAELoader load (tests/lotus2_tiny.py: FLUX.1's width, one block of each kind), with
    random Lotus-2 release files of both tasks and a stored empty-prompt conditioning in models/lotus/Lotus-2,
    as Load Lotus-2 leaves them after a first run. FLUX's text encoders (t5xxl: 4.7 B parameters) cannot be
    made tiny for ComfyUI's loader, hence the stored conditioning."""
    srv = ComfyServer(tmp_path_factory.mktemp("comfy_lotus2_workflows"), require_nodes=PACK_NODES)
    srv.prepare()
    write_input_image(srv.input_dir / INPUT_IMAGE)
    transformer = comfy_flux_transformer(seed=31)
    save_file({k: v.contiguous() for k, v in transformer.state_dict().items()},
              str(srv.diffusion_models_dir / "flux1-dev.safetensors"))
    release = srv.lotus_dir / "Lotus-2"
    for seed, task in enumerate(lotus_core.LOTUS2_TASKS):
        write_release(release, transformer, task, seed=40 + 10 * seed)
    lotus_core.save_conditioning(tiny_conditioning(transformer, seed=32), release / "flux_empty_prompt.safetensors")
    del transformer
    save_file({k: v.contiguous() for k, v in comfy_flux_vae(seed=33).state_dict().items()},
              str(srv.vae_dir / "ae.safetensors"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def without_text_encoders(prompt: dict) -> dict:
    """The prompt without the empty prompt's encoding (DualCLIPLoader, CLIP Text Encode) and what else needs
    a text encoder or the ControlNet (the generation part): Load Lotus-2 then uses the stored conditioning."""
    prompt = json.loads(json.dumps(prompt))
    [loader] = [n for n in prompt.values() if n["class_type"] == "LotusDepth_LoadLotus2"]
    encoder = loader["inputs"].pop("empty_prompt")[0]
    assert prompt[encoder]["class_type"] == "CLIPTextEncode"
    cut = downstream_of(prompt, {i for i, n in prompt.items() if n["class_type"] in ("DualCLIPLoader",
                                                                                     "ControlNetLoader")})
    assert encoder in cut
    return {i: n for i, n in prompt.items() if i not in cut}


def test_lotus2_normals_workflow_runs_on_a_tiny_flux(flux_server):
    """As saved (1024 cap, 10 sharpener steps) but for the empty prompt's encoding (see flux_server)."""
    prompt = ui_to_api(load_workflow(LOTUS2_NORMALS), flux_server.object_info())
    part = without_text_encoders(prompt)
    assert {n["class_type"] for i, n in prompt.items() if i not in part} == {"DualCLIPLoader", "CLIPTextEncode"}
    entry, ran = run_ok(flux_server, part, timeout=600)
    assert ran == set(part)
    node_of = {n["class_type"]: i for i, n in part.items()}
    [saved] = saved_images(flux_server, entry, node_of["SaveImage"])
    [previewed] = saved_images(flux_server, entry, node_of["PreviewImage"])
    np.testing.assert_array_equal(saved, previewed)
    assert saved.shape == (40, 56, 3) and saved.std() > 0


def test_lotus2_controlnet_workflow_runs_its_depth_part_on_a_tiny_flux(flux_server):
    """The Lotus-2 part as saved but for the empty prompt's encoding and processing_resolution (1024 -> 64: the
    1-megapixel image at 1024 costs minutes on a 2-core CPU); the generation part needs the ControlNet and the
    text encoders (validated above with placeholders). The preview is the control map at the generation size."""
    prompt = ui_to_api(load_workflow(LOTUS2_CONTROLNET_FLUX), flux_server.object_info())
    part = without_text_encoders(prompt)
    assert "ControlNetApplyAdvanced" not in {n["class_type"] for n in part.values()}
    node_of = {n["class_type"]: i for i, n in part.items()}
    part[node_of["LotusDepth_Lotus2Depth"]]["inputs"]["processing_resolution"] = TEST_RESOLUTION
    entry, ran = run_ok(flux_server, part, timeout=600)
    # Get Image Size and the empty latent feed only the (cut) sampler: validated, not run
    assert ran == set(part) - {node_of["GetImageSize"], node_of["EmptySD3LatentImage"]}
    [depth] = saved_images(flux_server, entry, node_of["PreviewImage"])
    megapixels = part[node_of["ImageScaleToTotalPixels"]]["inputs"]["megapixels"]
    assert depth.shape[0] * depth.shape[1] == pytest.approx(megapixels * 1024 * 1024, rel=0.01)
    assert depth.min() == 0 and depth.max() == 255  # near = white, stretched: a map, not a constant


# --------------------------------------------------------------------------------------------------
# scripts/try_comfyui.sh: the example inputs reach ComfyUI's input folder, and the first Run works


def fake_python(path, log) -> None:
    """An interpreter stand-in for a user's ComfyUI venv: it records its arguments (pip, the CUDA check,
    main.py) and does nothing; exit 0 (so the script sees CUDA and passes no --cpu)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$*" >> "{log}"\n')
    path.chmod(0o755)


def test_try_comfyui_seeds_a_users_comfyui_and_never_replaces_its_files(tmp_path):
    comfy = tmp_path / "ComfyUI"
    (comfy / "custom_nodes").mkdir(parents=True)
    (comfy / "main.py").write_text("")
    log = tmp_path / "python.log"
    fake_python(comfy / "venv" / "bin" / "python", log)
    shipped = {p.name: p.read_bytes() for p in EXAMPLE_INPUTS_DIR.iterdir()}

    def try_comfyui() -> str:
        result = subprocess.run([str(TRY_SCRIPT), str(comfy)], capture_output=True, text=True, timeout=60,
                                env={**os.environ, "PORT": "8765"}, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    # a ComfyUI without an input folder: it gets one, with every file the workflows load
    try_comfyui()
    assert {p.name: p.read_bytes() for p in (comfy / "input").iterdir()} == shipped
    # a file of the same name is the user's (ComfyUI's checkout ships an example.png): kept; the rest copied
    (comfy / "input" / INPUT_IMAGE).write_bytes(b"the user's own picture")
    (comfy / "input" / "lotus_video_input.mp4").unlink()
    out = try_comfyui()
    assert (comfy / "input" / INPUT_IMAGE).read_bytes() == b"the user's own picture"
    assert (comfy / "input" / "lotus_video_input.mp4").read_bytes() == shipped["lotus_video_input.mp4"]
    assert f"input/{INPUT_IMAGE}: kept" in out and "input/lotus_video_input.mp4: copied" in out
    # the rest of the try-out as before: the pack linked, ComfyUI's python gets the pack's dependencies,
    # then ComfyUI starts
    assert (comfy / "custom_nodes" / "lotus_depth").resolve() == REPO_ROOT
    calls = log.read_text().splitlines()
    assert calls[0].startswith("-m pip install") and calls[-1] == "main.py --listen 127.0.0.1 --port 8765"


def test_try_comfyui_runs_the_basic_workflow_on_its_first_run(tmp_path):
    """The try-out as a user starts it, with its own ComfyUI home (a fresh one; SKIP_SETUP=1: the .venv is
    complete). Only the Lotus release is put there beforehand, as tiny networks (Load Lotus Model would
    download it). The script fills the input folder; the basic workflow, exactly as saved, then runs on
    the example picture: LoadImage finds example.png, the depth maps have its size."""
    home = tmp_path / "comfyui-home"
    write_lotus_models(home / "models" / "lotus")
    server = ComfyServer(home)  # a client of the server that the script starts
    server.port = free_port()
    env = {**os.environ, "PORT": str(server.port), "COMFYUI_HOME": str(home), "SKIP_SETUP": "1",
           "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    with open(server.log_path, "wb") as log:
        # the script execs ComfyUI: this process is the server (stopped with SIGTERM by server.stop())
        server.process = subprocess.Popen([str(TRY_SCRIPT)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 180
            while True:
                server._check_alive("starting through scripts/try_comfyui.sh")
                try:
                    if server.object_info("LotusDepth_Depth") is not None:
                        break
                except (urllib.error.URLError, ConnectionError, OSError, ComfyServerError):
                    pass
                assert time.monotonic() < deadline, server.log_tail()
                time.sleep(0.2)
            for path in EXAMPLE_INPUTS_DIR.iterdir():
                assert (home / "input" / path.name).read_bytes() == path.read_bytes()

            workflow = load_workflow(BASIC)
            prompt = ui_to_api(workflow, server.object_info())
            node_of = {n["class_type"]: i for i, n in prompt.items()}
            assert prompt[node_of["LoadImage"]]["inputs"]["image"] == INPUT_IMAGE
            entry = server.run(prompt, timeout=300)
            assert history_status(entry) == "success", history_error(entry)
            [saved] = server.output_images(entry, node_of["SaveImage"])
            [saved16] = server.output_images(entry, node_of["LotusDepth_SaveDepth"])
            with Image.open(saved) as depth, Image.open(saved16) as depth16:
                assert depth.size == depth16.size == Image.open(EXAMPLE_INPUTS_DIR / INPUT_IMAGE).size
        finally:
            server.stop(timeout=15)
