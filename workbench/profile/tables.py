"""Analysis of one timing table: totals, per-node times, grouping by op type/type/precision."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import onnx

from ..backends.ort_profile import TIMING_COLUMNS
from ..errors import DataError
from ..table import Table
from .layer_info import is_reformat

__all__ = ["check_table", "total_ms", "node_times", "op_type_of", "layer_op", "group_times", "precision_counts",
           "MAIN_OPS"]


def check_table(table: Table) -> None:
    """Raise DataError unless ``table`` has the timing columns."""
    missing = [c for c in TIMING_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"not a timing table: columns {missing} are missing", hint=f"timing tables have {TIMING_COLUMNS}")


def total_ms(table: Table) -> float:
    """Sum of the layers' median times (ms)."""
    check_table(table)
    return float(sum(table.column("median_ms")))


def node_times(table: Table) -> dict[str, float]:
    """{ONNX node: ms} for colouring a graph view: each layer's median split evenly over its nodes (sums to the total)."""
    check_table(table)
    out: dict[str, float] = {}
    for rec in table.records():
        nodes = rec["onnx_nodes"] or []
        for n in nodes:
            out[n] = out.get(n, 0.0) + rec["median_ms"] / len(nodes)
    return out


MAIN_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Attention", "LSTM", "GRU", "Einsum", "QLinearConv",
             "QLinearMatMul", "ConvInteger", "MatMulInteger")


def op_type_of(node: str, model: onnx.ModelProto | None = None) -> str:
    """ONNX op type of a node: from ``model`` when given, else from its name ("Conv_0", "/layer1/conv/Conv_1")."""
    if model is not None:
        for n in model.graph.node:
            if n.name == node:
                return n.op_type
    last = node.rstrip("/").split("/")[-1]
    return re.sub(r"(_\d+)+$", "", last) or last


def layer_op(rec: Mapping[str, Any], ops: Mapping[str, str] | None = None) -> str:
    """The main ONNX op of a timing-table row ("Conv" for "Conv_5 + Add_6 + Relu_7"; "Reformat" for reformats)."""
    if is_reformat(rec["name"], rec["type"]) or rec["type"] in ("ReorderInput", "ReorderOutput"):
        return "Reformat"
    nodes = rec["onnx_nodes"] or []
    if not nodes:
        return rec["type"] or "other"
    kinds = [ops.get(n, op_type_of(n)) if ops else op_type_of(n) for n in nodes]
    for main in MAIN_OPS:
        if main in kinds:
            return main
    kinds = [k for k in kinds if k not in ("QuantizeLinear", "DequantizeLinear")] or kinds
    return kinds[0]


def group_times(table: Table, by: str = "op_type", *, model: onnx.ModelProto | None = None) -> Table:
    """Total median time per group: ``by`` is "op_type" (the layer's main ONNX op), "type" or "precision".

    Columns: group, median_ms, pct, layers. Sorted by time, largest first.
    """
    check_table(table)
    if by not in ("op_type", "type", "precision"):
        raise DataError(f"cannot group timings by '{by}'", hint="use op_type, type or precision")
    ops = {n.name: n.op_type for n in model.graph.node} if model is not None else None
    sums: dict[str, list[float]] = {}
    for rec in table.records():
        key = layer_op(rec, ops) if by == "op_type" else (rec[by] or "unknown")
        acc = sums.setdefault(key, [0.0, 0])
        acc[0] += rec["median_ms"]
        acc[1] += 1
    total = sum(v[0] for v in sums.values())
    rows = sorted(((k, v[0], 100.0 * v[0] / total if total else 0.0, int(v[1])) for k, v in sums.items()),
                  key=lambda r: -r[1])
    return Table(("group", "median_ms", "pct", "layers"), tuple(rows))


def precision_counts(table: Table) -> dict[str, int]:
    """Number of layers per precision ("unknown" when not known)."""
    check_table(table)
    out: dict[str, int] = {}
    for p in table.column("precision"):
        out[p or "unknown"] = out.get(p or "unknown", 0) + 1
    return out
