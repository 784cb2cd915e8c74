"""Lotus depth and normals for ComfyUI. ComfyUI imports this file; the nodes live in nodes/."""

from .nodes import comfy_entrypoint

__all__ = ["comfy_entrypoint"]
