"""Walk and rewrite graphs with their If/Loop/Scan bodies: subgraphs, reads, renames, topological order, pruning."""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping

import onnx


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The bodies of ``node`` (If branches, Loop/Scan bodies), in attribute order; [] for ordinary nodes."""
    out: list[onnx.GraphProto] = []
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            out.append(a.g)
        elif a.type == onnx.AttributeProto.GRAPHS:
            out.extend(a.graphs)
    return out


def iter_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every subgraph nested in it (If/Loop/Scan bodies at any depth), depth first."""
    yield graph
    for node in graph.node:
        for sub in subgraphs(node):
            yield from iter_graphs(sub)


def all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph`` and of its subgraphs, depth first (a node before its bodies' nodes)."""
    for node in graph.node:
        yield node
        for sub in subgraphs(node):
            yield from all_nodes(sub)


def subgraph_reads(node: onnx.NodeProto) -> set[str]:
    """Names read by the bodies of ``node``'s subgraphs (If/Loop/Scan), outer-scope tensors included."""
    names: set[str] = set()
    for g in subgraphs(node):
        for n in g.node:
            names.update(i for i in n.input if i)
            names |= subgraph_reads(n)
        names.update(o.name for o in g.output)  # a body may return an outer-scope tensor as is
    return names


def rename_reads(graph: onnx.GraphProto, mapping: Mapping[str, str]) -> int:
    """Make every reader of tensor ``old`` read ``mapping[old]``, in place: node inputs of ``graph`` and of every
    If/Loop/Scan body (outer-scope references), and body outputs that pass an outer tensor through. Producers
    and graph outputs are left alone. Returns how many references changed."""
    if not mapping:
        return 0
    changed = 0
    for g in iter_graphs(graph):
        for n in g.node:
            for k, t in enumerate(n.input):
                if t in mapping:
                    n.input[k] = mapping[t]
                    changed += 1
        if g is not graph:
            made = {o for n in g.node for o in n.output} | {i.name for i in g.input} | {i.name for i in g.initializer}
            for o in g.output:
                if o.name in mapping and o.name not in made:
                    o.name = mapping[o.name]
                    changed += 1
    return changed


def _node_reads(node: onnx.NodeProto) -> set[str]:
    return {i for i in node.input if i} | subgraph_reads(node)


def sort_nodes(graph: onnx.GraphProto) -> bool:
    """Put the nodes of ``graph`` and of every subgraph in topological order, in place; True when any moved.

    A node's dependencies are its inputs and the outer-scope tensors its bodies read. Nodes already in order
    keep it (a stable sort: among ready nodes the earliest first). A cycle leaves that graph as it was (the
    checker then names it).
    """
    moved = False
    for g in iter_graphs(graph):
        moved |= _sort_one(g)
    return moved


def _sort_one(graph: onnx.GraphProto) -> bool:
    nodes = list(graph.node)
    producer: dict[str, int] = {}
    for k, n in enumerate(nodes):
        for o in n.output:
            if o:
                producer.setdefault(o, k)
    deps = [{producer[t] for t in _node_reads(n) if t in producer and producer[t] != k} for k, n in enumerate(nodes)]
    if all(all(d < k for d in ds) for k, ds in enumerate(deps)):
        return False
    users: list[list[int]] = [[] for _ in nodes]
    waiting = [len(ds) for ds in deps]
    for k, ds in enumerate(deps):
        for d in ds:
            users[d].append(k)
    ready = [k for k, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        k = heapq.heappop(ready)
        order.append(k)
        for u in users[k]:
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(nodes):  # a cycle: not ours to fix
        return False
    copies = [onnx.NodeProto.FromString(nodes[k].SerializeToString()) for k in order]
    del graph.node[:]
    graph.node.extend(copies)
    return True


def prune_unused(graph: onnx.GraphProto, *, keep: set[str] | None = None, inputs: bool = False) -> None:
    """Drop, in place, the nodes no kept output depends on, then unused initializers (and, with ``inputs``,
    unused graph inputs). ``keep`` defaults to the graph outputs; other outputs are removed. One backward
    pass over the topologically ordered nodes; tensors read inside subgraphs count as used."""
    if keep is not None:
        for o in [o for o in graph.output if o.name not in keep]:
            graph.output.remove(o)
    needed = {o.name for o in graph.output} if keep is None else set(keep)
    alive = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output if o):
            alive.append(node)
            needed.update(i for i in node.input if i)
            needed |= subgraph_reads(node)
    if len(alive) != len(graph.node):
        kept = [onnx.NodeProto.FromString(n.SerializeToString()) for n in reversed(alive)]
        del graph.node[:]
        graph.node.extend(kept)
    for init in [i for i in graph.initializer if i.name not in needed]:
        graph.initializer.remove(init)
    if inputs:
        for i in [i for i in graph.input if i.name not in needed]:
            graph.input.remove(i)
