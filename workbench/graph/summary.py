"""The model summary: inputs, outputs, node and op counts, params, opset and FLOPs (:class:`ModelSummary`)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import onnx

from ..result import Result, jsonable
from ..table import Table
from .flops import flops_at, total_flops
from .shapes import TensorInfo, graph_inputs, tensor_info
from .weights import param_count

__all__ = ["ModelSummary", "count_text", "summary"]


def count_text(n: int | None, unit: str = "") -> str:
    """``1234567`` -> ``1.23 M`` (with ``unit`` after the prefix); None -> ``<unit> unknown``."""
    if n is None:
        return f"{unit} unknown".strip()
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {suffix}{unit}"
    return f"{n} {unit}".strip()


@dataclass(frozen=True)
class ModelSummary(Result):
    """What ``workbench inspect`` prints: the CLI contract keys (inputs, outputs, nodes, ops, params, opset, flops)
    and more. ``flops`` is None when shapes are dynamic; ``flops_per_sample`` then gives it at batch 1 when only the
    batch is dynamic. ``flops_shapes``: the input shapes FLOPs were computed at (given ones only); ``layers``: the
    layer table, when asked for (:func:`workbench.workflows.model.inspect`)."""

    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    nodes: int
    ops: Mapping[str, int]
    params: int
    opset: int | None
    flops: int | None
    flops_per_sample: int | None
    ir_version: int
    producer: str
    flops_shapes: Mapping[str, tuple[int, ...]] | None = None
    layers: Table | None = None

    def line(self) -> str:
        """One line: nodes, op types, params, opset, FLOPs (per sample for a dynamic batch), inputs/outputs."""
        return (f"{self.nodes} nodes · {len(self.ops)} op types · {count_text(self.params)} params · "
                f"opset {self.opset} · {self.flops_text()} · "
                f"{len(self.inputs)} input(s), {len(self.outputs)} output(s)")

    def flops_text(self) -> str:
        """FLOPs in words ("1.2 MFLOPs", "3 kFLOPs per sample", "FLOPs unknown")."""
        if self.flops is None and self.flops_per_sample is not None:
            return f"{count_text(self.flops_per_sample, 'FLOPs')} per sample"
        return count_text(self.flops, "FLOPs")

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``workbench inspect`` (``flops_shapes`` and ``layers`` only when there are some)."""
        out = {f.name: jsonable(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "layers"}
        if self.flops_shapes is None:
            del out["flops_shapes"]
        if self.layers is not None:
            out["layers"] = jsonable(self.layers.records())
        return out


def summary(model: onnx.ModelProto, *, shapes: Mapping[str, Sequence[int]] | None = None) -> ModelSummary:
    """The model's :class:`ModelSummary` (``to_dict()`` for JSON); ``flops`` None when unknown.

    With ``shapes`` ({input: dims}), ``flops`` is computed at those input shapes (see :func:`flops_at`) and
    ``flops_shapes`` records them; inputs and outputs still show the declared shapes. When ``flops`` is unknown
    only because the leading (batch) dim of the inputs is dynamic, ``flops_per_sample`` gives it at batch 1.
    """
    g = model.graph
    inputs = tuple(tensor_info(i) for i in graph_inputs(model))
    flops = total_flops(model) if not shapes else flops_at(model, shapes)
    return ModelSummary(
        inputs=inputs,
        outputs=tuple(tensor_info(o) for o in g.output),
        nodes=len(g.node),
        ops=dict(sorted(Counter(n.op_type for n in g.node).items())),
        params=param_count(model),
        opset=next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
        flops=flops,
        flops_per_sample=_flops_per_sample(model, inputs) if flops is None and not shapes else None,
        ir_version=model.ir_version,
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        flops_shapes={name: tuple(int(d) for d in dims) for name, dims in shapes.items()} if shapes else None,
    )


def _flops_per_sample(model: onnx.ModelProto, inputs: Sequence[TensorInfo]) -> int | None:
    """FLOPs at batch 1 when every input is static but for its leading dim; else None."""
    batch1: dict[str, list[int]] = {}
    for t in inputs:
        dims = t.shape
        if not dims or any(not isinstance(d, int) or d <= 0 for d in dims[1:]):
            return None
        batch1[t.name] = [1, *(int(d) for d in dims[1:] if isinstance(d, int))]
    if all(t.shape and isinstance(t.shape[0], int) and t.shape[0] > 0 for t in inputs):
        return None
    return flops_at(model, batch1)
