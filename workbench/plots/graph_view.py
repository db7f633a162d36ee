"""Readable text of node attributes for the node details (the graph itself is drawn by
:class:`workbench.ui.graph_widget.GraphWidget` from :func:`workbench.plots.graph_data.graph_json`)."""

from __future__ import annotations

import onnx
from onnx import helper

__all__ = ["attribute_text"]


def attribute_text(attr: onnx.AttributeProto, limit: int = 60) -> str:
    """A short readable value of a node attribute (floats to 6 significant digits, tensors by shape)."""
    if attr.type in (onnx.AttributeProto.TENSOR, onnx.AttributeProto.SPARSE_TENSOR):
        return f"tensor{list(attr.t.dims)}"
    if attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
        return "subgraph"
    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    elif isinstance(value, float):
        value = float(f"{value:.6g}")
    elif isinstance(value, list):
        value = [v.decode("utf-8", "replace") if isinstance(v, bytes) else float(f"{v:.6g}")
                 if isinstance(v, float) else v for v in value]
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
