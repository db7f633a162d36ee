"""Whole-graph clean-ups on an onnx-graphsurgeon graph (mutated in place; callers pass a fresh import)."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import EditError
from ._gs import unique_name

__all__ = ["fold_constants", "fuse_batchnorm", "remove_identity", "remove_dead_nodes", "fold_constant_if"]

_FUSABLE = ("Conv", "ConvTranspose", "Gemm")


_FOLD_ROUNDS = 8


def fold_constants(graph: gs.Graph) -> None:
    """Fold constant subgraphs with onnx-graphsurgeon (evaluated by ONNX Runtime), then drop dead nodes; repeated
    until nothing changes, with shapes re-inferred between rounds.

    ``Shape`` of a tensor whose shape is static becomes a constant (graphsurgeon's ``fold_shapes``), but a shape is
    often known only once the computation before it is folded (a Reshape or Pad whose sizes are computed from
    other shapes), so each round re-infers the shapes and folds again; a main-graph ``If`` whose condition became
    constant is flattened (:func:`fold_constant_if`), which may expose more. With static input shapes
    (``set_shapes``), conditions computed from tensor shapes (silero VAD's decoder) fold away this way.

    If/Loop/Scan bodies are folded too but never flattened by graphsurgeon: its flattening of an If with a
    constant condition nested in another body left the body reading tensors nothing produced (silero VAD).
    """
    for _ in range(_FOLD_ROUNDS):
        before = len(graph.nodes)
        graph.toposort()
        _fold_static_sizes(graph)
        graph.fold_constants(error_ok=True, flatten_subgraphs=False)
        graph.cleanup().toposort()
        flattened = fold_constant_if(graph)
        if not flattened and len(graph.nodes) == before:
            return
        if not any(n.op in ("Shape", "Size", "If") for n in graph.nodes):
            if not flattened:
                return
            continue
        _infer_shapes(graph)


def _fold_static_sizes(graph: gs.Graph) -> None:
    """``Size`` of a tensor whose shape is static becomes a constant (graphsurgeon folds ``Shape`` only)."""
    used = set(graph.tensors())
    for node in graph.nodes:
        if node.op != "Size" or not node.inputs or not node.outputs:
            continue
        shape = node.inputs[0].shape
        if shape is None or not all(isinstance(d, int) and d >= 0 for d in shape):
            continue
        out = node.outputs[0]
        const = gs.Constant(unique_name(f"{out.name}_static", used), np.array(int(np.prod(shape)), dtype=np.int64))
        _rebind(graph, out, const)


def _infer_shapes(graph: gs.Graph) -> None:
    """Re-infer the shapes of ``graph``'s tensors (onnx shape inference with data propagation, on a weightless
    skeleton) and set the static ones on its variables, so the next folding round sees them."""
    import onnx

    from ..graph import weightless_skeleton

    model = gs.export_onnx(graph, do_type_check=False)
    try:
        inferred = onnx.shape_inference.infer_shapes(weightless_skeleton(model, "fold_constants"), strict_mode=False,
                                                     data_prop=True)
    except Exception:  # a graph inference cannot read: fold with what is known
        return
    tensors = graph.tensors()
    for vi in inferred.graph.value_info:
        t = tensors.get(vi.name)
        tt = vi.type.tensor_type
        if not isinstance(t, gs.Variable) or not vi.type.HasField("tensor_type") or not tt.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]
        if t.shape is None or any(not isinstance(d, int) for d in t.shape):
            t.shape = dims


def remove_dead_nodes(graph: gs.Graph) -> None:
    """Remove nodes and initializers that no graph output depends on."""
    graph.cleanup()


def _const(tensor: gs.Tensor | None) -> np.ndarray | None:
    """The value of an initializer or of a Constant node's output (PaddlePaddle/TensorFlow weights), else None."""
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    if tensor is not None and len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant":
        value = tensor.inputs[0].attrs.get("value")
        if isinstance(value, gs.Constant):
            return np.asarray(value.values)
    return None


def fuse_batchnorm(graph: gs.Graph) -> int:
    """Fold each inference BatchNormalization into the Conv/ConvTranspose/Gemm feeding it; return how many.

    The producer keeps its node name and takes over the BatchNormalization's output tensor (names stay
    stable for everything downstream). A BatchNormalization whose input is used elsewhere, or whose
    parameters are not constant, is left alone.
    """
    used = set(graph.tensors())
    fused = 0
    gone: set[int] = set()
    for bn in list(graph.nodes):
        if bn.op != "BatchNormalization" or bn.attrs.get("training_mode", 0):
            continue
        if any(o.outputs or o in graph.outputs for o in bn.outputs[1:]):
            continue
        params = [p for p in map(_const, bn.inputs[1:5]) if p is not None]
        x = bn.inputs[0]
        if len(params) != 4 or len(x.inputs) != 1:
            continue
        prod = x.inputs[0]
        if prod.op not in _FUSABLE or len(x.outputs) != 1 or x in graph.outputs or prod.outputs[0] is not x:
            continue
        w = _const(prod.inputs[1]) if len(prod.inputs) > 1 else None
        b_in = prod.inputs[2] if len(prod.inputs) > 2 else None
        b = _const(b_in) if b_in is not None and b_in.name else None
        if w is None or (b_in is not None and b_in.name and b is None):
            continue
        scale, beta, mean, var = (p.astype(np.float64) for p in params)
        s = scale / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
        shift = beta - mean * s
        w64 = w.astype(np.float64)
        if prod.op == "Conv":
            m = w.shape[0]
            new_w = w64 * s.reshape((m,) + (1,) * (w.ndim - 1))
            bias = (b.astype(np.float64) if b is not None else np.zeros(m)) * s + shift
        elif prod.op == "ConvTranspose":
            g = int(prod.attrs.get("group", 1))
            c, mg = w.shape[0], w.shape[1]
            grouped = w64.reshape((g, c // g, mg) + w.shape[2:])
            new_w = (grouped * s.reshape((g, 1, mg) + (1,) * (w.ndim - 2))).reshape(w.shape)
            bias = (b.astype(np.float64) if b is not None else np.zeros(g * mg)) * s + shift
        else:  # Gemm: scale the output columns of op(B); fold beta*C into the new bias
            if w.ndim != 2 or (b is not None and b.ndim > 1 and b.shape[-1] not in (1, s.shape[0])):
                continue
            new_w = w64 * (s[:, None] if prod.attrs.get("transB", 0) else s[None, :])
            gemm_beta = float(prod.attrs.get("beta", 1.0))
            bias = (gemm_beta * b.astype(np.float64) if b is not None else np.zeros(s.shape[0])) * s + shift
            prod.attrs["beta"] = 1.0
        dtype = w.dtype
        prod.inputs[1] = gs.Constant(unique_name(f"{prod.name}_W_bn", used), new_w.astype(dtype))
        bias_c = gs.Constant(unique_name(f"{prod.name}_B_bn", used), np.asarray(bias, dtype=dtype))
        if len(prod.inputs) > 2:
            prod.inputs[2] = bias_c
        else:
            prod.inputs.append(bias_c)
        out = bn.outputs[0]
        bn.inputs.clear()
        bn.outputs.clear()
        gone.add(id(bn))
        prod.outputs[0] = out
        fused += 1
    if fused:  # drop the fused BatchNormalizations and their parameters (graph.cleanup: with any other dead node)
        graph.nodes = [n for n in graph.nodes if id(n) not in gone]
        graph.cleanup()
    return fused


def _rebind(graph: gs.Graph, old: gs.Tensor, new: gs.Tensor) -> None:
    """Make every consumer of ``old`` (in this graph and its subgraphs) read ``new``."""
    for consumer in list(old.outputs):
        for i, t in enumerate(consumer.inputs):
            if t is old:
                consumer.inputs[i] = new
    graph.outputs = [new if t is old else t for t in graph.outputs]


def remove_identity(graph: gs.Graph) -> int:
    """Remove Identity nodes and inference Dropout; a graph output keeps its name. Return how many."""
    outputs = graph.outputs
    inputs = set(map(id, graph.inputs))
    removed = 0
    gone: set[int] = set()
    for node in list(graph.nodes):
        if node.op not in ("Identity", "Dropout") or not node.inputs or not node.outputs:
            continue
        if node.op == "Dropout":
            if len(node.outputs) > 1 and (node.outputs[1].outputs or node.outputs[1] in outputs):
                continue
            if len(node.inputs) > 2 and node.inputs[2].name:
                mode = _const(node.inputs[2])
                if mode is None or bool(mode):
                    continue
        x, y = node.inputs[0], node.outputs[0]
        if y in outputs:
            # keep the output's name: x's producer now writes y
            if isinstance(x, gs.Constant) or not x.inputs or id(x) in inputs or x in outputs:
                continue
            prod = x.inputs[0]
            node.inputs.clear()
            node.outputs.clear()
            idx = next(i for i, t in enumerate(prod.outputs) if t is x)
            for consumer in list(x.outputs):
                for i, t in enumerate(consumer.inputs):
                    if t is x:
                        consumer.inputs[i] = y
            prod.outputs[idx] = y
        else:
            node.inputs.clear()
            node.outputs.clear()
            _rebind(graph, y, x)
        gone.add(id(node))
        removed += 1
    graph.nodes = [n for n in graph.nodes if id(n) not in gone]
    return removed


def _scalar(tensor: gs.Tensor) -> bool | None:
    value = _const(tensor)
    if value is None or value.size != 1:
        return None
    return bool(value.reshape(()).item())


def fold_constant_if(graph: gs.Graph) -> int:
    """Replace ``If`` nodes whose condition is constant by the nodes of the branch taken; return how many.

    Branch tensors and nodes keep their names unless they clash with the outer graph (then they get the
    If node's name as a prefix); the If's output tensors keep their names.
    """
    used_t = set(graph.tensors())
    used_n = {n.name for n in graph.nodes}
    folded = 0
    index = 0
    while index < len(graph.nodes):
        node = graph.nodes[index]
        cond = _scalar(node.inputs[0]) if node.op == "If" and node.inputs else None
        if cond is None:
            index += 1
            continue
        branch = node.attrs["then_branch" if cond else "else_branch"]
        if len(branch.outputs) != len(node.outputs):
            raise EditError(f"fold_constant_if: If node '{node.name}' has {len(node.outputs)} outputs but its "
                            f"branch has {len(branch.outputs)}", hint="the model is malformed; export it again")
        for tensor in branch._local_tensors().values():
            if tensor.name in used_t and tensor not in branch.outputs:
                tensor.name = unique_name(f"{node.name}/{tensor.name}", used_t)
            else:
                used_t.add(tensor.name)
        new_nodes = list(branch.nodes)
        for i, bnode in enumerate(new_nodes):
            bnode.name = unique_name(bnode.name or f"{node.name}/{bnode.op}_{i}", used_n)
        node_outs = list(node.outputs)
        node.inputs.clear()
        node.outputs.clear()
        for node_out, sub_out in zip(node_outs, branch.outputs):
            mine = {id(n) for n in new_nodes}
            producers = [p for p in sub_out.inputs if id(p) in mine]
            if producers:
                p = producers[0]
                for k, t in enumerate(p.outputs):
                    if t is sub_out:
                        p.outputs[k] = node_out
                for consumer in list(sub_out.outputs):
                    for k, t in enumerate(consumer.inputs):
                        if t is sub_out:
                            consumer.inputs[k] = node_out
            else:  # the branch returns an outer or constant tensor: pass it through
                name = unique_name(f"{node.name}/passthrough", used_n)
                new_nodes.append(gs.Node("Identity", name=name, inputs=[sub_out], outputs=[node_out]))
        graph.nodes[index:index + 1] = new_nodes
        index += len(new_nodes)
        folded += 1
    if folded:
        graph.cleanup().toposort()
    return folded
