"""Which precisions each node may take, decided once for every front end (the Precision tab, notebooks).

A node may go to fp16/bf16 where the conversion plan (:func:`~workbench.precision.plan_conversion`, guards off)
would convert it, to int8/fp8 where Q/DQ can be placed on it (:func:`~workbench.precision.quantizable_nodes`), and
always stays free to keep the precision it runs in now. Guarded nodes (overflow-prone ops) are allowed fp16/bf16 but
carry the guard's reason, so a bulk change can leave them fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from ..errors import EditError
from .convert import plan_conversion, precision_guards
from .qdq import quantizable_nodes
from .summary import node_precisions

__all__ = ["NodeChoices", "allowed_precisions"]


@dataclass(frozen=True)
class NodeChoices:
    """Per node that can change precision (graph order): its allowed precisions, guard reason ("" when none), current
    precision and op type."""

    options: dict[str, tuple[str, ...]]
    guards: dict[str, str]
    current: dict[str, str]  # every compute node (Cast/Q/DQ excluded), not only those in ``options``
    ops: dict[str, str]  # every node

    def allows(self, node: str, precision: str) -> bool:
        """True when ``node`` may run in ``precision``."""
        return precision in self.options.get(node, ())


def allowed_precisions(model: onnx.ModelProto) -> NodeChoices:
    """The precision choices of every node of ``model`` whose precision can change (one analysis per call, whatever
    the model's size)."""
    plan = plan_conversion(model, "fp16", guard=False)
    guards = {g["node"]: g["reason"] for g in precision_guards(model)}
    try:
        quantizable = set(quantizable_nodes(model))
    except EditError:  # nothing to quantize (every weighted op inside If/Loop bodies): int8/fp8 are not offered,
        quantizable = set()  # fp16/bf16 still are; quantizing says why, with the flatten command
    current = node_precisions(model)
    options: dict[str, tuple[str, ...]] = {}
    reasons: dict[str, str] = {}
    for node in model.graph.node:
        name = node.name
        eligible = plan.get(name, {}).get("precision") == "fp16"
        now = current.get(name, "fp32")
        if not eligible and name not in quantizable and now == "fp32":
            continue
        allowed = ["fp32"] + (["fp16", "bf16"] if eligible else []) + (["int8", "fp8"] if name in quantizable else [])
        if now not in allowed:
            allowed.append(now)
        options[name] = tuple(allowed)
        reasons[name] = guards.get(name, "")
    return NodeChoices(options, reasons, current, {n.name: n.op_type for n in model.graph.node})
