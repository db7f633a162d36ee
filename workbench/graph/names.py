"""Stable node names: unnamed (or duplicately named) nodes get ``{op}_{index}`` so recipes can refer to them."""

from __future__ import annotations

from collections import Counter

import onnx


def name_nodes(model: onnx.ModelProto) -> int:
    """Give every unnamed (or duplicately named) node a stable name ``{op}_{index}``; return how many.

    Nodes inside If/Loop/Scan bodies get ``{parent}/{attribute}/{op}_{index}`` the same way.
    """
    return _name_graph(model.graph, "")


def unique_name(base: str, used: set[str]) -> str:
    """``base``, or ``base_1``, ``base_2``... whichever is not in ``used`` (and add it)."""
    name, k = base, 1
    while name in used:
        name, k = f"{base}_{k}", k + 1
    used.add(name)
    return name


def _name_graph(graph: onnx.GraphProto, prefix: str) -> int:
    used = Counter(n.name for n in graph.node if n.name)
    seen: set[str] = set()
    renamed = 0
    for i, node in enumerate(graph.node):
        if node.name and (used[node.name] == 1 or node.name not in seen):
            seen.add(node.name)
        else:
            base = node.name or f"{prefix}{node.op_type}_{i}"
            name, k = base, 1
            while name in seen or (name != node.name and used.get(name)):
                name, k = f"{base}_{k}", k + 1
            node.name = name
            seen.add(name)
            renamed += 1
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                renamed += _name_graph(attr.g, f"{node.name}/{attr.name}/")
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for j, sub in enumerate(attr.graphs):
                    renamed += _name_graph(sub, f"{node.name}/{attr.name}{j}/")
    return renamed
