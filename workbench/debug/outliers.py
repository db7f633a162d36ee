"""A model that breaks in INT8, honestly: one outlier channel, the FP32 function unchanged."""

from __future__ import annotations

from collections.abc import Mapping

import onnx
from onnx import numpy_helper

from ..errors import EditError
from .restore import copy_model

__all__ = ["outlier_channel_model"]


def outlier_channel_model(model: onnx.ModelProto, pairs: Mapping[str, str], *, channel: int = 0,
                          factor: float = 64.0) -> onnx.ModelProto:
    """Scale one channel by ``factor`` between a BatchNormalization (``pairs`` key) and the weighted node that
    reads it after a ReLU/pool (value), compensated in that node's weights: the FP32 function is unchanged
    (ReLU and max-pooling commute with a positive scale), but the activation now has one outlier channel,
    as real networks do, and per-tensor INT8 quantization of it loses the other channels."""
    out = copy_model(model)
    inits = {i.name: i for i in out.graph.initializer}
    nodes = {n.name: n for n in out.graph.node}

    def scale(name: str, axis: int, by: float) -> None:
        arr = numpy_helper.to_array(inits[name]).copy()
        index: list[int | slice] = [slice(None)] * arr.ndim
        index[axis] = channel
        arr[tuple(index)] *= by
        inits[name].CopyFrom(numpy_helper.from_array(arr, name))

    for bn_name, consumer in pairs.items():
        bn, node = nodes.get(bn_name), nodes.get(consumer)
        if bn is None or node is None or bn.op_type != "BatchNormalization":
            raise EditError(f"'{bn_name}' must be a BatchNormalization and '{consumer}' a node of the model",
                            hint="name a BatchNormalization followed (via Relu/MaxPool) by a Conv or Gemm")
        if node.op_type == "Conv":
            axis = 1
        elif node.op_type == "Gemm":
            axis = 1 if next((a.i for a in node.attribute if a.name == "transB"), 0) else 0
        else:
            raise EditError(f"'{consumer}' is a {node.op_type}; outlier_channel_model handles Conv and Gemm",
                            hint="pick a Conv or Gemm consumer")
        scale(bn.input[1], 0, factor)  # gamma
        scale(bn.input[2], 0, factor)  # beta
        scale(node.input[1], axis, 1.0 / factor)
    return out
