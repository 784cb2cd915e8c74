"""ComfyUI nodes for Lotus depth and normals: thin adapters over ``lotus_core``."""

from comfy_api.latest import ComfyExtension, io

from .loader import LoadLotusModel
from .lotus2 import NODES as LOTUS2_NODES
from .model_files import register_lotus_folder
from .post import NODES as OUTPUT_NODES
from .predict import LotusDepth, LotusNormals
from .quality import NODES as QUALITY_NODES

NODES = [LoadLotusModel, LotusDepth, LotusNormals, *QUALITY_NODES, *OUTPUT_NODES, *LOTUS2_NODES]


class LotusDepthExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return NODES


async def comfy_entrypoint() -> LotusDepthExtension:
    register_lotus_folder()
    return LotusDepthExtension()
