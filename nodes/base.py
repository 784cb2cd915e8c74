"""What every node of the pack shares: its schema fields, and one check of every input's kind.

ComfyUI 0.3.75 does not check V3 combo values, nor the kind of a value typed into an API prompt
where a link belongs (an ``image`` given as a string). Each node's inputs are checked here, against
its own schema, before ``execute`` runs, with the core's message style: the argument, the value, the
rule.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect

import torch
from comfy_api.latest import io

from ..lotus_core import DepthMap, LotusError, check_choice
from .comfy_model import ComfyLotusModel

CATEGORY = "image/depth/lotus"
SEARCH_ALIASES = ("lotus", "depth", "disparity", "normals", "controlnet")
# Newer ComfyUI (upstream 0.38) lets nodes be found under other words; 0.3.75's Schema has no such field.
SCHEMA_HAS_SEARCH_ALIASES = "search_aliases" in {field.name for field in dataclasses.fields(io.Schema)}


def schema(**fields) -> io.Schema:
    """``io.Schema(**fields)``, in the pack's category, findable by the pack's words where ComfyUI can."""
    fields.setdefault("category", CATEGORY)
    if SCHEMA_HAS_SEARCH_ALIASES:
        fields.setdefault("search_aliases", list(SEARCH_ALIASES))
    return io.Schema(**fields)


# What a value of each socket type is, and how to describe it in a message.
KINDS = {
    "IMAGE": (lambda v: isinstance(v, torch.Tensor) and v.ndim == 4, "an IMAGE batch [B, H, W, C]"),
    "MASK": (lambda v: isinstance(v, torch.Tensor) and v.ndim in (2, 3), "a MASK [B, H, W]"),
    "LOTUSDEPTH_MODEL": (lambda v: isinstance(v, ComfyLotusModel), "a model from Load Lotus Model"),
    "LOTUSDEPTH_DEPTH": (lambda v: isinstance(v, DepthMap), "lotus_depth from a Lotus depth node"),
    "INT": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "FLOAT": (lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number"),
    "BOOLEAN": (lambda v: isinstance(v, bool), "true or false"),
    "STRING": (lambda v: isinstance(v, str), "a string"),
}


def check_inputs(node_schema: io.Schema, values: dict, own_checks: set[str] = frozenset()) -> None:
    """Raise a LotusError for the first input whose value is not of its socket's kind, or not one of
    its combo options (except those in ``own_checks``, which the node validates itself)."""
    for spec in node_schema.inputs:
        value = values.get(spec.id)
        if value is None:
            continue  # an optional input left out
        if isinstance(spec, io.Combo.Input):
            if spec.id not in own_checks:
                check_choice(spec.id, value, spec.options)
            continue
        io_types = str(spec.get_io_type()).split(",")
        kinds = [KINDS[t] for t in io_types if t in KINDS]
        if kinds and not any(accepts(value) for accepts, _ in kinds):
            shown = repr(value) if isinstance(value, str | int | float | bool) else type(value).__name__
            raise LotusError(f"{spec.id}={shown} is not {' or '.join(what for _, what in kinds)}:"
                             f" connect the right output to '{spec.id}'")


class LotusNode(io.ComfyNode):
    """Base of the pack's nodes: every input is checked (``check_inputs``) before ``execute`` runs."""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        execute = cls.__dict__.get("execute")
        # ComfyUI runs a clone of each node class, which copies the already wrapped execute.
        if execute is None or getattr(execute.__func__, "checks_inputs", False):
            return
        function = execute.__func__

        def check(node, values: dict) -> None:
            node_schema = node.SCHEMA or node.define_schema()
            own_checks = set()
            if "validate_inputs" in node.__dict__:
                own_checks = set(inspect.signature(node.validate_inputs).parameters)
            check_inputs(node_schema, values, own_checks)

        if inspect.iscoroutinefunction(function):  # ComfyUI awaits async nodes: the wrapper must be one too
            @functools.wraps(function)
            async def checked_execute(node, **values):
                check(node, values)
                return await function(node, **values)
        else:
            @functools.wraps(function)
            def checked_execute(node, **values):
                check(node, values)
                return function(node, **values)

        checked_execute.checks_inputs = True
        cls.execute = classmethod(checked_execute)
