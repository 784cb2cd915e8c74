"""The Lotus-2 release files known by name and fetched like the Lotus 1 releases, from a stand-in Hub
(``fake_hub.FakeHub``: the real huggingface_hub client, unmodified, against a loopback server)."""

from __future__ import annotations

import pytest
from fake_hub import FakeHub
from huggingface_hub import constants
from lotus2_tiny import tiny_flux_transformer, write_release

from lotus_core import LotusError, fetch_lotus2
from lotus_core.lotus2 import file_names, read_lora, release

pytestmark = pytest.mark.core


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """jingheya/Lotus-2 with both tasks' files (tiny) and a file a download must not fetch."""
    folder = tmp_path_factory.mktemp("Lotus-2")
    transformer = tiny_flux_transformer()
    write_release(folder, transformer, "depth")
    write_release(folder, transformer, "normal")
    with FakeHub() as server:
        server.add_folder("jingheya/Lotus-2", folder, {"README.md": b"# Lotus-2\n"})
        yield server


@pytest.fixture
def hf(hub, tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    hub.requests.clear()
    return hub


def test_the_release_names_the_official_files():
    assert release("depth").repo == "jingheya/Lotus-2"
    assert sorted(f.path for f in release("normal").download) == [
        "lotus-2_core_predictor_normal.safetensors", "lotus-2_detail_sharpener_normal.safetensors",
        "lotus-2_lcm_normal.safetensors"]
    with pytest.raises(LotusError, match="task='metric'"):
        file_names("metric")


def test_fetches_one_tasks_files_once_then_offline(hf, tmp_path, monkeypatch):
    target = tmp_path / "models" / "lotus" / "Lotus-2"
    files = fetch_lotus2("depth", local_dir=target)

    assert sorted(p.name for p in target.iterdir() if p.is_file()) == sorted(file_names("depth"))
    fetched = sorted(r.path.rsplit("/", 1)[1] for r in hf.gets())
    assert fetched == sorted(file_names("depth"))  # nothing of the normal task, no README
    assert read_lora(files.core_predictor).task == "depth"

    hf.requests.clear()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert fetch_lotus2("depth", local_dir=target) == files  # complete on disk: no network at all
    assert hf.requests == []
    with pytest.raises(LotusError, match="downloads are turned off"):
        fetch_lotus2("normal", local_dir=target)


def test_into_the_hugging_face_cache(hf):
    files = fetch_lotus2("normal")
    assert files.lcm.is_file() and files.lcm.parent == files.core_predictor.parent
    assert read_lora(files.detail_sharpener).task == "normal"
