"""The model summary: inputs, outputs, node and op counts, params, opset and FLOPs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import onnx

from .flops import flops_at, total_flops
from .shapes import graph_inputs, tensor_info
from .weights import param_count


def summary(model: onnx.ModelProto, *, shapes: Mapping[str, Sequence[int]] | None = None) -> dict[str, Any]:
    """The contract summary: inputs, outputs, nodes, ops, params, opset, flops (None when unknown).

    With ``shapes`` ({input: dims}), ``flops`` is computed at those input shapes (see :func:`flops_at`) and
    ``flops_shapes`` records them; inputs and outputs still show the declared shapes. When ``flops`` is unknown
    only because the leading (batch) dim of the inputs is dynamic, ``flops_per_sample`` gives it at batch 1.
    """
    g = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    out = {
        "inputs": [tensor_info(i).to_dict() for i in graph_inputs(model)],
        "outputs": [tensor_info(o).to_dict() for o in g.output],
        "nodes": len(g.node),
        "ops": dict(sorted(Counter(n.op_type for n in g.node).items())),
        "params": param_count(model),
        "opset": opset,
        "flops": total_flops(model) if not shapes else flops_at(model, shapes),
        "ir_version": model.ir_version,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
    }
    if shapes:
        out["flops_shapes"] = {name: [int(d) for d in dims] for name, dims in shapes.items()}
    out["flops_per_sample"] = _flops_per_sample(model, out) if out["flops"] is None and not shapes else None
    return out


def _flops_per_sample(model: onnx.ModelProto, info: dict[str, Any]) -> int | None:
    """FLOPs at batch 1 when every input is static but for its leading dim; else None."""
    batch1: dict[str, list[int]] = {}
    for t in info["inputs"]:
        dims = t["shape"]
        if not dims or any(not isinstance(d, int) or d <= 0 for d in dims[1:]):
            return None
        batch1[t["name"]] = [1, *dims[1:]]
    if all(isinstance(t["shape"][0], int) and t["shape"][0] > 0 for t in info["inputs"]):
        return None
    return flops_at(model, batch1)
