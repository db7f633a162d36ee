"""Parameters and weights: initializers, Constant-node weights and ai.onnx.ml attribute parameters."""

from __future__ import annotations

import onnx
from onnx import TensorProto

from ._util import prod
from .walk import iter_graphs, subgraph_reads


def constant_value_shape(node: onnx.NodeProto) -> tuple[int, ...] | None:
    """Shape of the tensor a Constant node makes (any of its value attributes); None for other nodes."""
    if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
        return None
    for a in node.attribute:
        if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
            return tuple(int(d) for d in a.t.dims)
        if a.name == "sparse_value":
            return tuple(int(d) for d in a.sparse_tensor.dims)
        if a.name in ("value_floats", "value_ints", "value_strings"):
            return (len(a.floats or a.ints or a.strings),)
        if a.name in ("value_float", "value_int", "value_string"):
            return ()
    return None


# Element types of Constant-node tensors that count as weights (parameters); int64/int32/bool constants are
# shape arithmetic, and scalars are op arguments (an epsilon, a Gelu's 0.5), not learned values.
_WEIGHT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE,
                 TensorProto.INT8, TensorProto.UINT8, *(getattr(TensorProto, n) for n in (
                     "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ") if hasattr(TensorProto, n))}


def constant_params(node: onnx.NodeProto) -> int:
    """Elements of a Constant node's tensor when it is a weight (a non-scalar float or 8-bit tensor), else 0."""
    shape = constant_value_shape(node)
    if shape is None or prod(shape) < 2:
        return 0
    for a in node.attribute:
        if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
            return prod(shape) if a.t.data_type in _WEIGHT_TYPES else 0
        if a.name == "sparse_value":
            return prod(shape) if a.sparse_tensor.values.data_type in _WEIGHT_TYPES else 0
        if a.name == "value_floats":
            return prod(shape)
    return 0


_ML_DOMAIN = "ai.onnx.ml"


_FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}


def attribute_params(node: onnx.NodeProto) -> int:
    """Parameters an ai.onnx.ml node carries as attributes: the elements of its float lists and float tensors
    (LinearClassifier/Regressor coefficients and intercepts, Scaler offset/scale, SVM coefficients and
    support vectors, TreeEnsemble thresholds and leaf weights); 0 for every other domain's node."""
    if node.domain != _ML_DOMAIN:
        return 0
    total = 0
    for a in node.attribute:
        if a.type == onnx.AttributeProto.FLOATS:
            total += len(a.floats)
        elif a.type == onnx.AttributeProto.TENSOR and a.t.data_type in _FLOAT_TYPES:
            total += prod(a.t.dims)
    return total


def constant_weights(model: onnx.ModelProto, *, initializers: bool = False) -> dict[str, list[tuple[str, tuple[int, ...]]]]:
    """``{node: [(tensor, shape)]}``: the Constant-node tensors each main-graph node reads (as Netron draws a
    weight inside the node that uses it); with ``initializers`` also the initializers it reads.

    A tensor that subgraphs of a node read counts for that node (an If reading an outer Constant). Constant
    nodes themselves are not keys. PaddlePaddle and TensorFlow exports keep their weights this way.
    """
    g = model.graph
    shapes: dict[str, tuple[int, ...]] = {}
    for n in g.node:
        shape = constant_value_shape(n)
        if shape is not None and n.output and n.output[0]:
            shapes[n.output[0]] = shape
    if initializers:
        for t in g.initializer:
            shapes.setdefault(t.name, tuple(int(d) for d in t.dims))
    out: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
    for n in g.node:
        if n.op_type == "Constant":
            continue
        reads = [i for i in n.input if i] + sorted(subgraph_reads(n) - set(n.input))
        found = [(t, shapes[t]) for t in dict.fromkeys(reads) if t in shapes]
        if found:
            out[n.name] = found
    return out


def param_count(model: onnx.ModelProto) -> int:
    """Elements of every initializer, Constant-node weight and ai.onnx.ml attribute parameter (coefficients,
    intercepts, tree values: :func:`attribute_params`), in the main graph and every subgraph."""
    total = 0
    for g in iter_graphs(model.graph):
        total += sum(prod(t.dims) for t in g.initializer)
        total += sum(map(constant_params, g.node))
        total += sum(map(attribute_params, g.node))
    return total
