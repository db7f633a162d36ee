"""The layer table: one row per node with its tensors, shapes, dtype, params, FLOPs and weights."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import onnx

from ..table import Table
from ._util import prod
from .flops import node_flops
from .shapes import skeleton_at, tensor_infos
from .walk import subgraph_reads
from .weights import attribute_params, constant_params, constant_value_shape

LAYER_COLUMNS = ("name", "op", "inputs", "outputs", "input_shapes", "output_shapes", "dtype", "params", "flops",
                 "weights")


def layer_table(model: onnx.ModelProto, *, shapes: Mapping[str, Sequence[int]] | None = None,
                constant_rows: bool = False) -> Table:
    """One row per node in graph order: name, op, inputs, outputs, shapes, output dtype, params, flops, weights.

    ``weights`` lists the constant tensors a node reads (initializers and Constant-node outputs) as
    ``"name: 3x3x3x8"``; ``params`` counts the elements of those that are weights (initializers, non-scalar
    float or 8-bit Constant tensors; not int64 shape constants) plus an ai.onnx.ml node's float attributes. Constant nodes whose tensors all feed other nodes
    get no row of their own (they appear in their readers' weights, as Netron draws them) unless
    ``constant_rows``. With ``shapes`` ({input: dims}) the shapes and FLOPs are those at these input shapes.
    """
    infos = tensor_infos(skeleton_at(model, shapes, "the model") if shapes else model)
    g = model.graph
    weights = {t.name: tuple(int(d) for d in t.dims) for t in g.initializer}
    params = {t: prod(d) for t, d in weights.items()}
    consts: dict[str, tuple[int, ...]] = {}
    for n in g.node:
        shape = constant_value_shape(n)
        if shape is not None and n.output and n.output[0]:
            consts[n.output[0]] = shape
            params[n.output[0]] = constant_params(n)
    weights.update(consts)
    graph_outputs = {o.name for o in g.output}

    def shp(name: str) -> str:
        info = infos.get(name)
        if info is None or info.shape is None:
            return "?"
        return "x".join(str(d) if d is not None else "?" for d in info.shape) or "scalar"

    rows = []
    for node in g.node:
        if not constant_rows and node.output and node.output[0] in consts and node.output[0] not in graph_outputs:
            continue
        reads = [i for i in node.input if i]
        read_weights = [t for t in dict.fromkeys(reads) if t in weights]
        read_weights += sorted(t for t in subgraph_reads(node) - set(reads) if t in consts)
        out = infos.get(node.output[0]) if node.output else None
        rows.append(
            (
                node.name,
                node.op_type,
                reads,
                list(node.output),
                [shp(i) for i in reads if i not in weights],
                [shp(o) for o in node.output],
                out.dtype if out else "?",
                sum(params[t] for t in read_weights) + attribute_params(node),
                node_flops(node, infos),
                [f"{t}: {'x'.join(map(str, weights[t])) or 'scalar'}" for t in read_weights],
            )
        )
    return Table(LAYER_COLUMNS, tuple(rows))
