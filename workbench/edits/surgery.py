"""Surgical edits on an onnx-graphsurgeon graph (mutated in place; callers pass a fresh import)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import onnx_graphsurgeon as gs

from ..errors import EditError
from ._gs import node_by_name, tensor_by_name, unique_name

__all__ = [
    "remove_node",
    "bypass_node",
    "replace_node",
    "insert_node",
    "rename_node",
    "rename_tensor",
    "extract",
    "set_shapes",
    "add_outputs",
]


def _swap(items: list, old: gs.Tensor, new: gs.Tensor) -> None:
    for i, x in enumerate(list(items)):
        if x is old:
            items[i] = new


def _drop(graph: gs.Graph, nodes: Sequence[gs.Node]) -> None:
    gone = {id(n) for n in nodes}
    for n in nodes:
        n.inputs.clear()
        n.outputs.clear()
    graph.nodes = [n for n in graph.nodes if id(n) not in gone]


def _downstream(node: gs.Node) -> list[gs.Node]:
    seen: dict[int, gs.Node] = {id(node): node}
    stack = [node]
    while stack:
        for out in stack.pop().outputs:
            for consumer in out.outputs:
                if id(consumer) not in seen:
                    seen[id(consumer)] = consumer
                    stack.append(consumer)
    return list(seen.values())


def remove_node(graph: gs.Graph, name: str, *, drop_outputs: bool = False) -> list[str]:
    """Remove a node and every node downstream of it (they cannot run without it); return removed names.

    A graph output downstream would be disconnected: that is an error unless ``drop_outputs``, which
    removes those outputs from the graph (at least one output must remain).
    """
    where = f"remove_node '{name}'"
    node = node_by_name(graph, name, where)
    doomed = _downstream(node)
    produced = {t.name for n in doomed for t in n.outputs}
    lost = [t.name for t in graph.outputs if t.name in produced]
    if lost and not drop_outputs:
        raise EditError(
            f"{where} would disconnect graph output(s) {lost}",
            hint=f"use bypass_node to connect '{name}''s input to its consumers, or set drop_outputs to "
            "remove those outputs too",
        )
    if len(lost) == len(graph.outputs):
        raise EditError(f"{where} would remove every graph output ({lost})",
                        hint="pick a node on a side branch, or use extract to keep part of the graph")
    graph.outputs = [t for t in graph.outputs if t.name not in produced]
    _drop(graph, doomed)
    graph.cleanup()
    return [n.name for n in doomed]


def bypass_node(graph: gs.Graph, name: str, input_index: int = 0) -> None:
    """Remove a node and connect its ``input_index``-th input to the consumers of its first output."""
    where = f"bypass_node '{name}'"
    node = node_by_name(graph, name, where)
    real_inputs = [t for t in node.inputs]
    if not 0 <= input_index < len(real_inputs) or not real_inputs[input_index].name:
        raise EditError(f"{where}: the node has no input {input_index} (it has {len(real_inputs)})",
                        hint=f"choose input_index between 0 and {max(len(real_inputs) - 1, 0)}")
    x = real_inputs[input_index]
    if not node.outputs:
        raise EditError(f"{where}: the node has no outputs to reconnect", hint="use remove_node instead")
    y = node.outputs[0]
    extra = [t.name for t in node.outputs[1:] if t.outputs or t in graph.outputs]
    if extra:
        raise EditError(f"{where}: its other outputs {extra} are used and would be disconnected",
                        hint="bypass only nodes whose single used output is the first one")
    if x.dtype is not None and y.dtype is not None and x.dtype != y.dtype:
        raise EditError(f"{where}: its input '{x.name}' is {x.dtype} but its output '{y.name}' is {y.dtype}",
                        hint="bypassing would change the tensor type downstream; pick another input_index or node")
    is_output = y in graph.outputs
    node.inputs.clear()
    node.outputs.clear()
    graph.nodes = [n for n in graph.nodes if n is not node]
    if is_output:
        inputs = {t.name for t in graph.inputs}
        if isinstance(x, gs.Constant) or not x.inputs or x.name in inputs or x in graph.outputs:
            raise EditError(f"{where}: its output '{y.name}' is a graph output and its input '{x.name}' is "
                            "a graph input, a constant or another output",
                            hint="keep the node, or use extract/add_outputs to choose the graph outputs")
        prod = x.inputs[0]
        for consumer in list(x.outputs):
            for i, t in enumerate(consumer.inputs):
                if t is x:
                    consumer.inputs[i] = y
        idx = next(i for i, t in enumerate(prod.outputs) if t is x)
        prod.outputs[idx] = y
    else:
        for consumer in list(y.outputs):
            for i, t in enumerate(consumer.inputs):
                if t is y:
                    consumer.inputs[i] = x


def _attr_value(key: str, value: Any, where: str) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float, str)):
        return value
    if isinstance(value, (list, tuple)) and value:
        kinds = {type(v) for v in value}
        if kinds <= {int} or kinds <= {float} or kinds <= {str}:
            return list(value)
        if kinds <= {int, float}:
            return [float(v) for v in value]
    raise EditError(f"{where}: attribute '{key}' value {value!r} is not an int, float, string or non-empty list",
                    hint="tensor and graph attributes cannot be set from a recipe; use int/float/str or lists")


def replace_node(graph: gs.Graph, name: str, op: str | None, attributes: Mapping[str, Any]) -> None:
    """Change a node's op type and/or attributes; an attribute set to None is deleted."""
    where = f"replace_node '{name}'"
    node = node_by_name(graph, name, where)
    if op is not None:
        if not op:
            raise EditError(f"{where}: empty op type", hint="give an ONNX operator name such as 'Relu'")
        node.op = op
    for key, value in attributes.items():
        if value is None:
            if key not in node.attrs:
                raise EditError(f"{where}: the node has no attribute '{key}' to delete",
                                hint=f"its attributes are {sorted(node.attrs)}")
            del node.attrs[key]
        else:
            node.attrs[key] = _attr_value(key, value, where)


def insert_node(graph: gs.Graph, tensor: str, op: str, name: str = "",
                attributes: Mapping[str, Any] | None = None) -> str:
    """Insert a one-input, one-output node after ``tensor``; its consumers read the new node's output.

    If ``tensor`` is a graph output, the new node's output takes over its name (the graph interface
    stays the same) and the original tensor becomes ``<tensor>_pre_<name>``. Returns the node name.
    """
    where = f"insert_node after '{tensor}'"
    t = tensor_by_name(graph, tensor, where)
    if not op:
        raise EditError(f"{where}: no op given", hint="give an ONNX operator name such as 'Relu'")
    names = {n.name for n in graph.nodes}
    node_name = name or unique_name(f"{op}_after_{tensor}", set(names))
    if node_name in names:
        raise EditError(f"{where}: a node named '{node_name}' already exists", hint="choose another name")
    used = set(graph.tensors())
    attrs = {k: _attr_value(k, v, where) for k, v in (attributes or {}).items()}
    consumers = list(t.outputs)
    if t in graph.outputs:
        prod_outputs = [p for p in t.inputs]
        pre = gs.Variable(unique_name(f"{t.name}_pre_{node_name}", used), dtype=t.dtype, shape=t.shape)
        for p in prod_outputs:
            _swap(p.outputs, t, pre)
        for c in consumers:
            _swap(c.inputs, t, pre)
        if not prod_outputs:  # a graph input or constant that is also an output
            raise EditError(f"{where}: '{tensor}' is both produced outside the graph and a graph output",
                            hint="insert the node after a tensor computed by a node")
        new = gs.Node(op, name=node_name, attrs=attrs, inputs=[pre], outputs=[t])
        t.dtype, t.shape = None, None
    else:
        out = gs.Variable(unique_name(f"{node_name}_out", used))
        new = gs.Node(op, name=node_name, attrs=attrs, inputs=[t], outputs=[out])
        for c in consumers:
            _swap(c.inputs, t, out)
    graph.nodes.append(new)
    graph.toposort()
    return node_name


def rename_node(graph: gs.Graph, name: str, new_name: str) -> None:
    where = f"rename_node '{name}'"
    node = node_by_name(graph, name, where)
    if not new_name:
        raise EditError(f"{where}: empty new name", hint="give a non-empty, unique node name")
    if any(n.name == new_name for n in graph.nodes if n is not node):
        raise EditError(f"{where}: a node named '{new_name}' already exists", hint="choose a unique name")
    node.name = new_name


def rename_tensor(graph: gs.Graph, name: str, new_name: str) -> None:
    where = f"rename_tensor '{name}'"
    t = tensor_by_name(graph, name, where)
    if not new_name:
        raise EditError(f"{where}: empty new name", hint="give a non-empty, unique tensor name")
    if new_name != name and new_name in graph.tensors():
        raise EditError(f"{where}: a tensor named '{new_name}' already exists", hint="choose a unique name")
    t.name = new_name


def extract(graph: gs.Graph, inputs: Sequence[str], outputs: Sequence[str]) -> None:
    """Keep only the nodes computing ``outputs`` from ``inputs`` (tensor names) and constants."""
    where = f"extract {list(inputs)} -> {list(outputs)}"
    if not outputs:
        raise EditError(f"{where}: no outputs given", hint="name at least one tensor to keep as output")
    ins = [tensor_by_name(graph, n, where) for n in inputs]
    outs = [tensor_by_name(graph, n, where) for n in outputs]
    for t in ins:
        if isinstance(t, gs.Constant):
            raise EditError(f"{where}: input '{t.name}' is a constant", hint="extract inputs must be computed tensors")
        if t.dtype is None:
            raise EditError(f"{where}: the type of input '{t.name}' is unknown",
                            hint="set the graph input shapes first (set_shapes) so the type can be inferred")
    for t in outs:
        if t.dtype is None:
            raise EditError(f"{where}: the type of output '{t.name}' is unknown",
                            hint="set the graph input shapes first so the output type can be inferred")
    for t in ins:
        t.inputs.clear()
    graph.inputs = ins
    graph.outputs = outs
    graph.cleanup(remove_unused_graph_inputs=False)
    known = {t.name for t in ins}
    for node in graph.nodes:
        for t in node.inputs:
            if isinstance(t, gs.Variable) and t.name and not t.inputs and t.name not in known:
                raise EditError(
                    f"{where}: node '{node.name}' needs tensor '{t.name}', which is neither computed in the "
                    "subgraph nor one of its inputs",
                    hint=f"add '{t.name}' to the extract inputs",
                )
    graph.toposort()


def set_shapes(graph: gs.Graph, shapes: Mapping[str, Sequence[int | str | None]]) -> None:
    """Set graph input shapes (int: static, str: symbolic, None: dynamic); inferred shapes are redone."""
    inputs = {t.name: t for t in graph.inputs}
    for name, dims in shapes.items():
        where = f"set_shapes '{name}'"
        if name not in inputs:
            raise EditError(f"{where}: '{name}' is not a graph input", hint=f"graph inputs: {sorted(inputs)}")
        t = inputs[name]
        if t.shape is not None and len(t.shape) != len(dims):
            raise EditError(f"{where}: rank {len(dims)} given but the input has rank {len(t.shape)} {list(t.shape)}",
                            hint="keep the rank; change only the dimension values")
        for d in dims:
            if isinstance(d, bool) or not (d is None or isinstance(d, str) or (isinstance(d, int) and d > 0)):
                raise EditError(f"{where}: dimension {d!r} is not a positive int, a symbol or null",
                                hint="use e.g. [1, 3, 224, 224] or ['N', 3, 'H', 'W'] or [null, 3, 224, 224]")
        t.shape = list(dims)
    for t in graph.tensors().values():
        if isinstance(t, gs.Variable) and t.name not in inputs:
            t.shape = None


def add_outputs(graph: gs.Graph, tensors: Sequence[str]) -> None:
    """Mark tensors as extra graph outputs (already-output tensors are skipped)."""
    for name in tensors:
        where = f"add_outputs '{name}'"
        t = tensor_by_name(graph, name, where)
        if t in graph.outputs:
            continue
        if t.dtype is None:
            raise EditError(f"{where}: the tensor's type is unknown",
                            hint="set the graph input shapes first so its type can be inferred")
        graph.outputs.append(t)
