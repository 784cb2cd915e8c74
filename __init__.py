"""Lotus depth and normals for ComfyUI. ComfyUI imports this file; the nodes live in nodes/."""

# ComfyUI's own modules: if one of these is missing, this is not a ComfyUI host (nothing to install).
_COMFY_MODULES = {"comfy", "comfy_api", "comfy_execution", "comfy_extras", "folder_paths", "node_helpers"}


async def comfy_entrypoint():
    # Imported here, not at the top, so that this folder stays importable without ComfyUI (it is
    # also the repository root, which pytest imports as a package when collecting the tests).
    try:
        from .nodes import comfy_entrypoint as nodes_entrypoint
    except ModuleNotFoundError as e:
        # ComfyUI would only log "IMPORT FAILED"; say what is missing and the command that fixes it.
        top = (e.name or "").partition(".")[0]
        if not top or top in _COMFY_MODULES or e.name.startswith(__name__ + "."):
            raise
        import os
        import sys

        def q(s):
            return f'"{s}"' if any(c.isspace() for c in s) else s

        requirements = os.path.join(os.path.dirname(os.path.abspath(__file__)), "requirements.txt")
        raise ModuleNotFoundError(
            f"Lotus Depth needs the Python module '{e.name}', which is not installed. Install the pack's "
            f"requirements with the Python that runs ComfyUI, then restart ComfyUI: "
            f"{q(sys.executable)} -m pip install -r {q(requirements)}",
            name=e.name,
        ) from e

    return await nodes_entrypoint()
