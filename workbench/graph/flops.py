"""Multiply-accumulate FLOPs of Conv, ConvTranspose, Gemm and MatMul, at declared or given input shapes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import onnx
from onnx import helper

from ._util import prod
from .shapes import TensorInfo, skeleton_at, tensor_infos


def _concrete(shape: tuple[int | str | None, ...] | None) -> tuple[int, ...] | None:
    """The shape when every dim is a known positive int, else None."""
    if shape is None:
        return None
    dims = tuple(d for d in shape if isinstance(d, int) and d > 0)
    return dims if len(dims) == len(shape) else None


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            try:
                return helper.get_attribute_value(a)
            except Exception:  # a malformed attribute: treat as absent
                return default
    return default


def node_flops(node: onnx.NodeProto, infos: Mapping[str, TensorInfo]) -> int | None:
    """Multiply-accumulate FLOPs (2 per MAC) of Conv, ConvTranspose, Gemm and MatMul; None when unknown."""
    op = node.op_type
    if op not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
        return None

    def shape(i: int, outputs: bool = False) -> tuple[int, ...] | None:
        names = node.output if outputs else node.input
        info = infos.get(names[i]) if i < len(names) else None
        return None if info is None else _concrete(info.shape)

    if op == "Conv":
        w, y = shape(1), shape(0, outputs=True)
        if w is None or y is None or len(w) < 3 or len(y) != len(w):
            return None
        # y: N, Cout, *spatial; w: Cout, Cin/group, *kernel
        return 2 * prod(y) * prod(w[1:])
    if op == "ConvTranspose":
        x, w = shape(0), shape(1)
        if x is None or w is None or len(w) < 3 or len(x) != len(w):
            return None
        # every input element is multiplied by Cout/group * kernel weights
        return 2 * prod(x) * prod(w[1:])
    a, b = shape(0), shape(1)
    if a is None or b is None:
        return None
    if op == "Gemm":
        if len(a) != 2 or len(b) != 2:
            return None
        m, k = (a[1], a[0]) if _attr(node, "transA", 0) else (a[0], a[1])
        n = b[0] if _attr(node, "transB", 0) else b[1]
        return 2 * m * n * k
    y = shape(0, outputs=True)
    if y is None or len(a) < 1:
        return None
    return 2 * prod(y) * int(a[-1])  # every output element sums K = a's last dim products


_FLOP_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def total_flops(model: onnx.ModelProto) -> int | None:
    """Total FLOPs of the main graph's Conv/ConvTranspose/Gemm/MatMul; None when there are none or one is unknown."""
    nodes = [n for n in model.graph.node if n.op_type in _FLOP_OPS]
    infos = tensor_infos(model, {t for n in nodes for t in (*n.input, *n.output)})
    flops = [node_flops(n, infos) for n in nodes]
    known = [f for f in flops if f is not None]
    return None if not flops or len(known) != len(flops) else sum(known)


def flops_at(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]], *, where: str = "the model") -> int | None:
    """Total FLOPs of Conv/ConvTranspose/Gemm/MatMul with the given inputs fixed to concrete shapes.

    Shape inference is re-run on a weightless skeleton (the model is not copied or changed). Inputs not in
    ``shapes`` keep their declared shapes; None when some shape stays unknown.
    """
    return total_flops(skeleton_at(model, shapes, where))
