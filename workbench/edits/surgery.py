"""Surgical edits on an onnx-graphsurgeon graph (mutated in place; callers pass a fresh import)."""

from __future__ import annotations

from collections.abc import Sequence

import onnx_graphsurgeon as gs

from ..errors import EditError
from ._gs import node_by_name, tensor_by_name

__all__ = [
    "remove_node",
    "extract",
]


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
