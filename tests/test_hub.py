"""Known releases by name: download, cache, resume, verification, offline use and failure messages.

Why a local server stands in for the Hugging Face Hub: CI has no network (and must not download
3.7 GB checkpoints), yet what matters here is how the REAL ``huggingface_hub`` client behaves (its
cache, resume, offline mode, errors). So the real client runs unmodified against ``fake_hub.FakeHub``,
a Hub-compatible file server on 127.0.0.1 serving tiny random Lotus folders written by ``tiny.py``.
The client is pointed at it as ``HF_ENDPOINT`` / ``HF_HOME`` / ``HF_HUB_OFFLINE`` would do: the
library reads those variables once, at import, into ``huggingface_hub.constants``, so the in-process
tests set those constants (the CLI test passes the real environment variables to a subprocess).
``DOWNLOAD_CHUNK_SIZE`` is lowered from 10 MB so that the 15 MB tiny UNet streams in several chunks,
as a 3.5 GB one does. The one mock is ``shutil.disk_usage`` in the disk-space test.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_hub import FakeHub
from huggingface_hub import constants, try_to_load_from_cache
from PIL import Image
from tiny import save_diffusers_folder, tiny_unet, tiny_vae

import lotus_core
from lotus_core.loading.hub import fetch, find_local, missing_files
from lotus_core.loading.variants import KNOWN_CHECKPOINTS, Quantity, known_checkpoint, models_markdown

pytestmark = pytest.mark.core  # no ComfyUI (layers: tests/conftest.py)

REPO = Path(__file__).resolve().parents[1]
NAME = "lotus-depth-g-v2-1-disparity"
KNOWN = known_checkpoint(NAME)
FILES = [f.path for f in KNOWN.download]
UNET = "unet/diffusion_pytorch_model.safetensors"
CHUNK = 256 * 1024


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Tiny diffusers folders laid out like the jingheya repos (G and D)."""
    root = tmp_path_factory.mktemp("releases")
    return {
        NAME: save_diffusers_folder(tiny_unet(True, seed=31), tiny_vae(seed=32), root / NAME,
                                    pipeline="DirectDiffusionY0Pipeline"),
        "lotus-depth-d-v2-0-disparity": save_diffusers_folder(
            tiny_unet(False, seed=33), tiny_vae(seed=34), root / "d", pipeline="DirectRegressionPipeline"),
    }


@pytest.fixture(scope="module")
def hub(sources):
    # The repos also hold files a download must not fetch (the text encoder, the model card).
    extra = {"text_encoder/model.safetensors": b"\0" * 4096, "README.md": b"# Lotus\n"}
    with FakeHub() as server:
        for name, folder in sources.items():
            server.add_folder(f"jingheya/{name}", folder, extra)
        yield server


@pytest.fixture
def hf(hub, tmp_path, monkeypatch):
    """huggingface_hub pointed at the fake Hub, with an empty cache, online; the hub's log cleared."""
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", CHUNK)
    hub.requests.clear()
    yield hub
    hub.drop_once.clear()
    hub.corrupt.clear()


def resolve_requests(hub) -> list:
    return [r for r in hub.requests if "/resolve/" in r.path]


def transferred(hub) -> list[str]:
    return [r.path.split("/resolve/main/", 1)[1] for r in hub.gets()]


def predict(model) -> torch.Tensor:
    image = torch.rand(1, 3, 24, 32, generator=torch.Generator().manual_seed(0))
    return lotus_core.predict(model, image, processing_resolution=32, seed=1).values


def test_the_table_describes_every_published_release():
    assert [k.name for k in KNOWN_CHECKPOINTS] == [
        "lotus-depth-g-v1-0", "lotus-depth-d-v1-0", "lotus-depth-d-v1-1", "lotus-depth-g-v2-0-disparity",
        "lotus-depth-g-v2-1-disparity", "lotus-depth-d-v2-0-disparity", "lotus-normal-g-v1-0",
        "lotus-normal-d-v1-0", "lotus-normal-g-v1-1", "lotus-normal-d-v1-1"]
    for known in KNOWN_CHECKPOINTS:
        assert known.generative == ("-g-" in known.name)
        assert known.quantity is (Quantity.NORMAL if "normal" in known.name else
                                  Quantity.DISPARITY if known.name.endswith("disparity") else Quantity.DEPTH)
        assert known.repo == f"jingheya/{known.name}" and known.revision is None  # no commit is pinned
        # A self-contained diffusers folder (no text encoder), model_index.json last: it marks a finished download.
        assert [f.path for f in known.download] == ["unet/config.json", "vae/config.json", UNET,
                                                    "vae/diffusion_pytorch_model.safetensors", "model_index.json"]
        assert 3.6e9 < known.download_size < 3.9e9
        for single in known.single_files:
            assert single.sha256 is None or len(single.sha256) == 8
        assert known_checkpoint(known.name.upper()) is known_checkpoint(f"jingheya/{known.name}/") is known
    prefixes = {f.filename: f.sha256 for k in KNOWN_CHECKPOINTS for f in k.single_files if f.sha256}
    assert prefixes == {"lotus-depth-g-v1-0.safetensors": "41a8d50a",
                        "lotus-depth-g-v1-0-fp16.safetensors": "e8454c55",
                        "lotus-depth-d-v-1-1-fp16.safetensors": "dc139421"}
    assert models_markdown().count("\n| `lotus-") == len(KNOWN_CHECKPOINTS)


def test_a_missing_file_named_like_a_release_says_where_it_comes_from(tmp_path):
    with pytest.raises(lotus_core.LotusError, match="does not exist. It is a ComfyUI single file") as error:
        lotus_core.load_model(tmp_path / "lotus-depth-d-v1-1.safetensors")
    assert "https://huggingface.co/Comfy-Org/lotus/resolve/main/lotus-depth-d-v1-1.safetensors" in str(error.value)
    with pytest.raises(lotus_core.LotusError, match="known releases, downloaded on first use: lotus-depth-g-v1-0"):
        lotus_core.load_model(tmp_path / "lotus-depth-g-v9.safetensors")


def test_a_known_name_is_downloaded_verified_and_loaded(hf, sources, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_lotus_test_token")
    seen = []
    model = lotus_core.load_model(NAME, download_progress=lambda done, total: seen.append((done, total)))
    assert model.name == NAME and model.quantity is Quantity.DISPARITY

    folder = find_local(KNOWN)
    assert folder is not None and folder.is_relative_to(constants.HF_HUB_CACHE)
    for path in FILES:
        assert (folder / path).read_bytes() == (sources[NAME] / path).read_bytes()
    # Only the five files, each fetched once, model_index.json last; nothing but /resolve/ was asked (no Xet).
    assert transferred(hf) == FILES
    assert [r.path for r in hf.unexpected() if r.path != "/api/agent-harnesses"] == []
    assert all(r.headers.get("Authorization") == "Bearer hf_lotus_test_token" for r in resolve_requests(hf))
    total = sum((sources[NAME] / p).stat().st_size for p in FILES)
    assert seen[-1] == (total, total) and len(seen) > 10
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)

    reference = lotus_core.load_model(sources[NAME], quantity="disparity")
    torch.testing.assert_close(predict(model), predict(reference), rtol=0, atol=0)


def test_a_cached_release_is_used_without_any_request(hf):
    first = fetch(NAME)
    hf.requests.clear()
    assert fetch(NAME) == first
    lotus_core.load_model(NAME)
    assert hf.requests == []


def test_download_into_a_model_folder(hf, sources, tmp_path):
    """ComfyUI's case: the files go to models/lotus/<name>/, not to the Hugging Face cache."""
    destination = tmp_path / "models" / "lotus" / NAME
    assert missing_files(KNOWN, destination) == FILES
    assert fetch(NAME, local_dir=destination) == destination
    assert missing_files(KNOWN, destination) == []
    assert (destination / UNET).read_bytes() == (sources[NAME] / UNET).read_bytes()
    assert not Path(constants.HF_HUB_CACHE, f"models--jingheya--{NAME}").exists()
    hf.requests.clear()
    assert fetch(NAME, local_dir=destination) == destination and hf.requests == []


def test_a_dropped_connection_is_resumed_not_restarted(hf, sources):
    size = (sources[NAME] / UNET).stat().st_size
    hf.drop_once[(f"jingheya/{NAME}", UNET)] = size // 2
    folder = fetch(NAME)
    first, second = hf.gets(UNET)
    assert "Range" not in first.headers
    resumed_at = int(second.headers["Range"].removeprefix("bytes=").removesuffix("-"))
    assert 0 < resumed_at <= size // 2 and resumed_at % CHUNK == 0  # from the last complete chunk
    assert (folder / UNET).read_bytes() == (sources[NAME] / UNET).read_bytes()
    assert not list(Path(constants.HF_HUB_CACHE).rglob("*.incomplete"))


@pytest.mark.parametrize("wrong", ["table", "served"])
def test_a_wrong_sha256_is_refused_and_the_file_deleted(hf, sources, wrong):
    served = (sources[NAME] / UNET).read_bytes()
    if wrong == "table":  # the table pins a hash the served file does not have
        release = dataclasses.replace(KNOWN, download=tuple(
            dataclasses.replace(f, sha256="0123abcd" * 8) if f.path == UNET else f for f in KNOWN.download))
        expected = "0123abcd" * 8
    else:  # the bytes arrive altered while the Hub's LFS sha256 (ETag) is the real one
        release = KNOWN
        hf.corrupt.add((f"jingheya/{NAME}", UNET))
        expected = hashlib.sha256(served).hexdigest()
        served = bytes([served[0] ^ 0xFF]) + served[1:]
    with pytest.raises(lotus_core.LotusError) as error:
        fetch(release)
    message = str(error.value)
    assert f"expected {expected}" in message and f"got {hashlib.sha256(served).hexdigest()}" in message
    assert "deleted and not used" in message
    assert not isinstance(try_to_load_from_cache(KNOWN.repo, UNET), str)
    blobs = Path(constants.HF_HUB_CACHE, f"models--jingheya--{NAME}", "blobs")
    assert all(p.read_bytes() != served for p in blobs.iterdir())
    assert find_local(KNOWN) is None

    hf.corrupt.clear()
    assert fetch(KNOWN) == find_local(KNOWN)  # the next run downloads it anew


def test_offline_mode_serves_the_cache(hf, monkeypatch, tmp_path):
    fetch(NAME)
    fetch(NAME, local_dir=tmp_path / "lotus" / NAME)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hf.requests.clear()
    assert lotus_core.load_model(NAME).quantity is Quantity.DISPARITY
    assert lotus_core.load_model(tmp_path / "lotus" / NAME).quantity is Quantity.DISPARITY
    assert hf.requests == []


@pytest.mark.parametrize("local", [False, True], ids=["cache", "model-folder"])
def test_offline_mode_without_the_files_says_what_to_do(hf, monkeypatch, tmp_path, local):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    destination = tmp_path / "models" / "lotus" / NAME
    with pytest.raises(lotus_core.LotusError) as error:
        fetch(NAME, local_dir=destination) if local else lotus_core.load_model(NAME)
    message = str(error.value)
    assert "downloads are turned off (HF_HUB_OFFLINE is set)" in message
    for path in FILES:
        assert f"{hf.url}/jingheya/{NAME}/resolve/main/{path}\n" in message + "\n"
    assert f"into {destination if local else Path.cwd() / NAME}{os.sep} keeping their sub-folders" in message
    assert f"hf download jingheya/{NAME} {' '.join(FILES)} --local-dir" in message
    assert hf.requests == [] and not destination.exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("problem", ["unreachable", "not-on-the-mirror"])
def test_a_failed_download_says_what_to_do(hf, monkeypatch, tmp_path, problem):
    name = NAME
    if problem == "unreachable":
        url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        monkeypatch.setattr(constants, "ENDPOINT", url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
        reason = f"could not download from {url} (set by HF_ENDPOINT): ConnectError"
    else:
        url, name = hf.url, "lotus-normal-g-v1-0"  # the fake hub does not have it
        reason = f"jingheya/{name} was not found at {url} (set by HF_ENDPOINT); if it needs a login, set HF_TOKEN"
    destination = tmp_path / "lotus" / name
    with pytest.raises(lotus_core.LotusError) as error:
        fetch(name, local_dir=destination)
    message = str(error.value)
    assert message.startswith(f"cannot download {name}: {reason}")
    assert f"{url}/jingheya/{name}/resolve/main/unet/diffusion_pytorch_model.safetensors" in message
    assert f"into {destination}{os.sep}" in message
    assert missing_files(known_checkpoint(name), destination) == FILES


def test_not_enough_disk_space_is_refused_before_any_transfer(hf, monkeypatch):
    # The one mock of these tests: a full disk cannot be made here, so the disk reports 1 MB free.
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**12, 10**12 - 10**6, 10**6))
    with pytest.raises(lotus_core.LotusError, match=r"not enough disk space to download lotus-depth-g-v2-1-disparity:"
                                                    r" it needs 0\.02 GB in .*hub, which has 0\.00 GB free") as error:
        fetch(NAME)
    assert "set HF_HUB_CACHE (or HF_HOME) to a folder on a larger disk" in str(error.value)
    assert hf.gets() == [] and find_local(KNOWN) is None


def test_the_cli_downloads_a_known_name_through_the_environment(hub, tmp_path):
    """HF_ENDPOINT, HF_HOME and HF_TOKEN as a user sets them, in a fresh process."""
    Image.fromarray(np.full((20, 28, 3), 128, np.uint8)).save(tmp_path / "photo.png")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="0", HF_TOKEN="hf_cli_token")
    hub.requests.clear()
    name = "lotus-depth-d-v2-0-disparity"
    done = subprocess.run([sys.executable, "-m", "lotus_core", name, str(tmp_path / "photo.png"),
                           "-o", str(tmp_path / "out"), "--resolution", "32"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "photo_disparity.png").is_file()
    snapshot, = (tmp_path / "hf_home" / "hub" / f"models--jingheya--{name}" / "snapshots").iterdir()
    assert sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()) == sorted(FILES)
    assert [r.path.split("/resolve/main/")[1] for r in hub.gets()] == FILES
    assert all(r.headers.get("Authorization") == "Bearer hf_cli_token" for r in resolve_requests(hub))
