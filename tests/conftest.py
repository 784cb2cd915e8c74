"""Core fixtures: seeded tiny Lotus networks (real diffusers classes) and the files they are written to.

Everything is session-scoped and read-only: tests that need a modified network build their own copy.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import lotus_core
from tiny import save_unet_file, save_vae_file, tiny_unet, tiny_vae


@pytest.fixture(autouse=True, scope="module")
def _one_thread_for_tiny_networks(request):
    """The core tests run one intra-op thread: the tiny networks gain nothing from more, and on a busy
    2-core machine spinning OpenMP workers made them 10-20x slower."""
    if not request.path.name.startswith("test_core_"):
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
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
