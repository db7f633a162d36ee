"""What a converted or quantized model runs in, read from its graph: :func:`node_precisions`, :func:`weight_bytes`,
:func:`onnxruntime_only_qdq`."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from ..graph import tensor_infos
from ._common import _consumers, _producers

__all__ = ["PRECISIONS", "node_precisions", "onnxruntime_only_qdq", "weight_bytes"]

PRECISIONS = ("fp32", "fp16", "bf16", "int8", "fp8")
_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1, "fp8": 1}


def node_precisions(model: onnx.ModelProto) -> dict[str, str]:
    """The precision each compute node of a (converted/quantized) model runs in, read from the graph."""
    infos = tensor_infos(model)
    producers = _producers(model)
    out: dict[str, str] = {}
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear", "Cast"):
            continue
        kind = "fp32"
        for i in n.input:
            p = producers.get(i)
            if p is not None and p.op_type == "DequantizeLinear":
                src = infos.get(p.input[0])
                dt = src.dtype if src else ""
                kind = "fp8" if "float8" in dt else "int8"
                break
            info = infos.get(i)
            if info is not None and info.dtype in ("float16", "bfloat16"):
                kind = "fp16" if info.dtype == "float16" else "bf16"
        out[n.name] = kind
    return out


def weight_bytes(model: onnx.ModelProto, plan: Mapping[str, str] | None = None) -> int:
    """Estimated weight memory: each float initializer at the precision of its consumers (``plan``: node ->
    precision; default: as stored)."""
    consumers = _consumers(model)
    total = 0
    for init in model.graph.initializer:
        n = int(np.prod(init.dims, dtype=np.int64))
        if plan is None or init.data_type != TensorProto.FLOAT:
            size = {TensorProto.FLOAT16: 2, TensorProto.BFLOAT16: 2, TensorProto.INT8: 1, TensorProto.UINT8: 1,
                    TensorProto.FLOAT8E4M3FN: 1, TensorProto.INT64: 8, TensorProto.DOUBLE: 8}.get(init.data_type, 4)
            total += n * size
            continue
        precs = [plan.get(u.name, "fp32") for u in consumers.get(init.name, [])] or ["fp32"]
        total += n * max(_BYTES.get(p, 4) for p in precs)
    return total


def onnxruntime_only_qdq(model: onnx.ModelProto) -> dict[str, str]:
    """{node: why} for the Q/DQ nodes TensorRT does not take because they follow ONNX Runtime's CPU placement
    (``quantize_model(target="onnxruntime")`` or ORT's own quantizer): a non-zero zero point (asymmetric uint8
    activations) or an int32 DequantizeLinear input (a bias quantized to int32). TensorRT's Q/DQ are symmetric."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.output:
            for a in n.attribute:
                if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                    inits[n.output[0]] = a.t
    out: dict[str, str] = {}
    for n in g.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        x = inits.get(n.input[0]) if n.input else None
        if n.op_type == "DequantizeLinear" and x is not None and x.data_type == TensorProto.INT32:
            out[n.name] = "dequantizes an int32 tensor (an ONNX Runtime-style quantized bias)"
            continue
        zp = inits.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        if zp is not None and zp.data_type in (TensorProto.UINT8, TensorProto.INT8) and \
                np.any(numpy_helper.to_array(zp) != 0):
            out[n.name] = "has a non-zero zero point (asymmetric quantization)"
    return out
