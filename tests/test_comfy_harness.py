"""Self-test of the ComfyUI test harness (tests/comfy_server.py), with core ComfyUI nodes only."""

from __future__ import annotations

import json

import numpy as np
import pytest
from comfy_server import (
    REPO_ROOT,
    ComfyServer,
    PromptRejected,
    history_error,
    history_messages,
    history_status,
)
from PIL import Image


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ComfyServer(tmp_path_factory.mktemp("comfy_harness"))
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()
        assert not srv.is_running()


def _image(seed: int, size=(24, 16)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def _invert_prompt(image_name: str, prefix: str = "harness") -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image_name}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def test_layout_and_object_info(server: ComfyServer):
    assert server.is_running()
    for d in (server.lotus_dir, server.diffusion_models_dir, server.vae_dir, server.input_dir,
              server.output_dir, server.user_dir, server.custom_nodes_dir):
        assert d.is_dir(), d
    assert server.pack_link.is_symlink() and server.pack_link.resolve() == REPO_ROOT
    info = server.object_info()
    assert "LoadImage" in info and "SaveImage" in info and "ImageInvert" in info
    assert server.object_info("LoadImage")["input"]["required"]["image"]
    assert server.object_info("NoSuchNodeAnywhere") is None
    # the yaml registered the `lotus` model folder under the base dir; files appear without a restart
    assert "lotus" in server.models()
    (server.lotus_dir / "probe.safetensors").write_bytes(b"")
    assert "probe.safetensors" in server.models("lotus")
    assert "Starting server" in server.log_text() or "To see the GUI" in server.log_text()


def test_invert_roundtrip(server: ComfyServer):
    src = _image(1)
    name = server.write_input("harness_invert.png", src)
    entry = server.run(_invert_prompt(name, "harness_invert"), timeout=60)
    assert history_status(entry) == "success", history_error(entry)
    paths = server.output_images(entry, "3")
    assert len(paths) == 1 and paths[0].is_file() and paths[0].parent == server.output_dir
    out = np.asarray(Image.open(paths[0]).convert("RGB"), dtype=np.int16)
    expected = 255 - np.asarray(src, dtype=np.int16)
    assert out.shape == expected.shape
    assert np.abs(out - expected).max() <= 1
    # the same bytes through /view, and an uploaded image works the same way
    assert server.view(paths[0].name) == paths[0].read_bytes()
    uploaded = server.upload_image(_image(2), "harness_upload.png")
    assert uploaded["name"] == "harness_upload.png" and (server.input_dir / "harness_upload.png").is_file()


def test_validation_error_is_http_400(server: ComfyServer):
    status, body = server.queue(_invert_prompt("does_not_exist.png"))
    assert status == 400
    assert "1" in body["node_errors"], json.dumps(body)
    assert body["node_errors"]["1"]["class_type"] == "LoadImage"
    assert body["node_errors"]["1"]["errors"]
    with pytest.raises(PromptRejected) as exc:
        server.run(_invert_prompt("does_not_exist.png"))
    assert exc.value.status == 400


def test_runtime_error_then_keeps_serving(server: ComfyServer):
    # exists (passes validation) but is no image: LoadImage raises while executing
    server.write_input("harness_corrupt.png", b"definitely not a png")
    entry = server.run(_invert_prompt("harness_corrupt.png", "harness_corrupt"), timeout=60)
    assert history_status(entry) == "error"
    err = history_error(entry)
    assert err and err["type"] == "execution_error" and err["node_id"] == "1" and err["node_type"] == "LoadImage"
    assert err["exception_type"]
    assert [k for k, _ in history_messages(entry)][-1] == "execution_error"
    # the server goes on
    name = server.write_input("harness_after_error.png", _image(3))
    entry = server.run(_invert_prompt(name, "harness_after_error"), timeout=60)
    assert history_status(entry) == "success"
    assert server.output_images(entry, "3")[0].is_file()


def test_websocket_events(server: ComfyServer):
    name = server.write_input("harness_ws.png", _image(4))
    with server.events() as ev:
        status, body = server.queue(_invert_prompt(name, "harness_ws"), client_id=ev.client_id)
        assert status == 200, body
        prompt_id = body["prompt_id"]
        messages = ev.wait_done(prompt_id, timeout=60)
    types = [m["type"] for m in messages]
    assert types[0] == "status"
    for t in ("execution_start", "executing", "executed", "execution_success"):
        assert t in types, types
    assert types.index("execution_start") < types.index("execution_success")
    executed_nodes = [m["data"]["node"] for m in messages if m["type"] == "executing"]
    assert {"1", "2", "3"} <= set(executed_nodes) and executed_nodes[-1] is None
    saved = [m for m in messages if m["type"] == "executed" and m["data"]["node"] == "3"]
    assert saved and saved[0]["data"]["output"]["images"][0]["filename"].startswith("harness_ws")
    assert all(m["data"].get("prompt_id") == prompt_id for m in messages
               if m["type"] in ("execution_start", "execution_success"))

    # an error over /ws, then a success over /ws through the convenience wrapper
    with server.events() as ev:
        prompt_id = server.submit(_invert_prompt("harness_corrupt.png", "harness_ws_err"), ev.client_id)
        err = ev.wait_for("execution_error", timeout=60, prompt_id=prompt_id)
    assert err["data"]["node_type"] == "LoadImage"
    server.write_input("harness_ws2.png", _image(5))
    entry, messages = server.run_with_events(_invert_prompt("harness_ws2.png", "harness_ws2"), timeout=60)
    assert history_status(entry) == "success"
    assert "execution_success" in [m["type"] for m in messages]


def test_cached_rerun_and_free(server: ComfyServer):
    name = server.write_input("harness_cache.png", _image(6))
    prompt = _invert_prompt(name, "harness_cache")
    assert history_status(server.run(prompt, timeout=60)) == "success"
    again = server.run(prompt, timeout=60)
    cached = dict(history_messages(again))["execution_cached"]["nodes"]
    assert set(cached) == {"1", "2", "3"}
    server.free()
    messages = server.collect_events(prompt, timeout=60)
    cached = [m for m in messages if m["type"] == "execution_cached"][0]["data"]["nodes"]
    assert set(cached) != {"1", "2", "3"}
    server.interrupt()  # nothing running: a no-op that answers 200


def test_stop_and_start_failure(tmp_path):
    srv = ComfyServer(tmp_path / "bad", load_pack=False, extra_args=["--no-such-flag"], start_timeout=30)
    with pytest.raises(Exception) as exc:
        srv.start()
    assert "exited with code" in str(exc.value) and "no-such-flag" in str(exc.value)
    assert not srv.is_running()
