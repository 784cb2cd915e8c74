"""ComfyUI nodes for Lotus depth and normals: thin adapters over ``lotus_core``."""

from comfy_api.latest import ComfyExtension, io

from .loader import LoadLotusModel
from .model_files import register_lotus_folder
from .predict import LotusDepth, LotusNormals

NODES = [LoadLotusModel, LotusDepth, LotusNormals]
from .post import NODES as POST_NODES  # noqa: E402  (depth outputs: colour, levels, files, normals, PLY)

NODES += POST_NODES


class LotusDepthExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return NODES


async def comfy_entrypoint() -> LotusDepthExtension:
    register_lotus_folder()
    return LotusDepthExtension()
