"""Lotus depth and normals for ComfyUI. ComfyUI imports this file; the nodes live in nodes/."""


async def comfy_entrypoint():
    # Imported here, not at the top, so that this folder stays importable without ComfyUI (it is
    # also the repository root, which pytest imports as a package when collecting the tests).
    from .nodes import comfy_entrypoint as nodes_entrypoint

    return await nodes_entrypoint()
