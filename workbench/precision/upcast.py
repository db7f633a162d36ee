"""An fp16-computing model made to compute in float32 for the ONNX Runtime INT8 placement (:func:`float32_compute`).

ONNX Runtime's CPU provider fuses ``DQ -> Conv/Gemm/MatMul -> Q`` into its integer kernels (QLinearConv, QGemm,
QLinearMatMul) only for float32 activations: with float16 Q/DQ it runs every QuantizeLinear, DequantizeLinear and the
float Conv between them (x86 has no float16 Conv: Casts around a float32 one). Measured on a 7-conv fp16 CNN at
256x256, one thread: the fp16 model 269 ms, its float16-Q/DQ INT8 511 ms, the float32 INT8 of the same net 94 ms.
So the onnxruntime placement quantizes such a model in float32: float16 weights and constants are widened (exactly:
every float16 value is a float32 value), Casts to float16 become Casts to float32, and declared float16 graph inputs
and outputs keep their type through a Cast at the boundary. The float ops left between the quantized ones then run
in float32, as ONNX Runtime's CPU provider runs most float16 ops anyway (through Casts it inserts).

Tensor names stay, except at float16 graph inputs and outputs: the float32 side of input ``X`` is ``X__fp32`` and
the node that wrote output ``Y`` writes ``Y__fp32`` (Cast to ``Y``). :attr:`Float32Model.aliases` maps those back to
the names calibration captures on the original model; :func:`with_aliases` gives the scales the new names too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..graph import iter_graphs
from ._common import _float16_reader
from .scales import ScaleCache

__all__ = ["Float32Model", "float32_compute", "with_aliases"]

_DTYPE_ATTRS = {"Cast": "to", "RandomNormal": "dtype", "RandomUniform": "dtype", "RandomNormalLike": "dtype",
                "RandomUniformLike": "dtype", "EyeLike": "dtype", "Bernoulli": "dtype", "Multinomial": "dtype"}


@dataclass(frozen=True)
class Float32Model:
    """:func:`float32_compute`'s result: the model, ``{new tensor name: original name}`` at float16 graph inputs and
    outputs, and the note to tell the user (empty when the model was returned as is)."""

    model: onnx.ModelProto
    aliases: dict[str, str]
    note: str = ""


def _widen_tensor(t: TensorProto) -> None:
    if t.data_type == TensorProto.FLOAT16:
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name))


def _widen_type(tp: onnx.TypeProto) -> None:
    if tp.HasField("tensor_type") and tp.tensor_type.elem_type == TensorProto.FLOAT16:
        tp.tensor_type.elem_type = TensorProto.FLOAT
    for inner in (tp.sequence_type.elem_type if tp.HasField("sequence_type") else None,
                  tp.optional_type.elem_type if tp.HasField("optional_type") else None):
        if inner is not None:
            _widen_type(inner)


def _widen_graph(g: onnx.GraphProto, main: bool) -> None:
    for init in g.initializer:
        _widen_tensor(init)
    for n in g.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                _widen_tensor(a.t)
            elif a.name == _DTYPE_ATTRS.get(n.op_type) and a.i == TensorProto.FLOAT16:
                a.i = TensorProto.FLOAT
    for vi in list(g.value_info) + ([] if main else list(g.input) + list(g.output)):
        _widen_type(vi.type)


def _rename_reads(g: onnx.GraphProto, old: str, new: str) -> None:
    """Every node (bodies included: outer-scope references) reading ``old`` reads ``new``."""
    for sub in iter_graphs(g):
        for n in sub.node:
            for k, i in enumerate(n.input):
                if i == old:
                    n.input[k] = new


def float32_compute(model: onnx.ModelProto) -> Float32Model:
    """``model`` computing in float32 where it computes in float16 (module docstring); a model whose
    Conv/ConvTranspose/Gemm/MatMul read no float16 tensor is returned as is."""
    reader = _float16_reader(model)
    if reader is None:
        return Float32Model(model, {})
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    for sub in iter_graphs(g):
        _widen_graph(sub, sub is g)
    aliases: dict[str, str] = {}
    front: list[onnx.NodeProto] = []
    inits = {i.name for i in g.initializer}
    for vi in g.input:
        if vi.name in inits or vi.type.tensor_type.elem_type != TensorProto.FLOAT16:
            continue
        wide = f"{vi.name}__fp32"
        _rename_reads(g, vi.name, wide)
        front.append(helper.make_node("Cast", [vi.name], [wide], name=f"{vi.name}__cast_fp32", to=TensorProto.FLOAT))
        aliases[wide] = vi.name
    back: list[onnx.NodeProto] = []
    inputs = {vi.name for vi in g.input}
    for vi in g.output:
        if vi.type.tensor_type.elem_type != TensorProto.FLOAT16 or vi.name in inputs:
            continue  # an input passed straight through keeps its float16 value
        wide = f"{vi.name}__fp32"
        producer = next((n for n in g.node if vi.name in n.output), None)
        if producer is not None:
            producer.output[list(producer.output).index(vi.name)] = wide
            aliases[wide] = vi.name
        else:  # an initializer (widened above) passed straight through
            next(i for i in g.initializer if i.name == vi.name).name = wide
        _rename_reads(g, vi.name, wide)
        back.append(helper.make_node("Cast", [wide], [vi.name], name=f"{vi.name}__cast_fp16", to=TensorProto.FLOAT16))
    nodes = front + list(g.node) + back
    del g.node[:]
    g.node.extend(nodes)
    node, tensor = reader
    return Float32Model(out, aliases, (
        f"quantize_model: node '{node}' computes in float16 (it reads '{tensor}'); ONNX Runtime's CPU provider runs "
        "INT8 Q/DQ as integer kernels only in float32, so the model is quantized in float32: its float16 weights and "
        "Casts widened (exactly), its float ops left in float32 (as ONNX Runtime runs most float16 ops on a CPU)"))


def with_aliases(scales: ScaleCache | Mapping[str, Any], aliases: Mapping[str, str]) -> ScaleCache | dict[str, Any]:
    """``scales`` with each alias (``{new name: original name}``) holding its original's statistics too."""
    if not aliases:
        return scales if isinstance(scales, ScaleCache) else dict(scales)
    if isinstance(scales, ScaleCache):
        extra = {new: scales.tensors[old] for new, old in aliases.items() if old in scales.tensors}
        return replace(scales, tensors={**scales.tensors, **extra})
    out = dict(scales)
    out.update({new: out[old] for new, old in aliases.items() if old in out})
    return out
