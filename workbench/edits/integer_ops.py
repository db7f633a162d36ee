"""ONNX Runtime integer ops back to float ops (filled in below)."""

from __future__ import annotations

import onnx_graphsurgeon as gs

__all__ = ["dequantize_integer_ops"]


def dequantize_integer_ops(graph: gs.Graph) -> int:
    return 0
