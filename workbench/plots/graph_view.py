"""The model graph as a plotly figure: a layered DAG layout, edges as lines, nodes as markers.

Layout (pure, no plotly): longest-path layers top to bottom, then barycentric ordering sweeps to
reduce crossings, then nodes placed near the mean x of their neighbours (chains stay straight).
The figure uses WebGL traces (one trace for all edges, ``None``-separated) so ~5,000 nodes stay
responsive. Trace names are stable so a FigureWidget can update them in place:
``edges``, ``nodes`` (``customdata`` = node name), ``io`` (graph inputs/outputs), ``highlight``,
``selected``.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import plotly.colors as pc
import plotly.graph_objects as go
from onnx import helper

from ..graph import layer_table

__all__ = ["GraphLayout", "layered_layout", "graph_layout", "graph_figure", "points", "op_colors", "attribute_text"]

_PALETTE = pc.qualitative.Plotly + pc.qualitative.Dark24 + pc.qualitative.Alphabet
_MISSING = "#c8c8c8"


def layered_layout(
    nodes: Sequence[str], edges: Iterable[tuple[str, str]], *, sweeps: int = 4
) -> dict[str, tuple[float, int]]:
    """``{node: (x, layer)}`` for a DAG given as node names (in graph order) and (src, dst) edges.

    Layer = longest path from a source; a source node then moves down to just above its first consumer
    (so Constants sit beside the node that uses them). Within a layer, nodes are ordered by the barycentre of their
    neighbours (alternating down/up sweeps), then placed at x >= previous + 1, as close as possible to
    the barycentre of their predecessors. Edges closing a cycle (not a DAG) are ignored.
    """
    index = {n: i for i, n in enumerate(nodes)}
    preds: list[list[int]] = [[] for _ in nodes]
    succs: list[list[int]] = [[] for _ in nodes]
    for s, d in edges:
        i, j = index.get(s), index.get(d)
        if i is None or j is None or i == j:
            continue
        preds[j].append(i)
        succs[i].append(j)
    # Kahn's algorithm in graph order; nodes left on a cycle are appended in graph order
    indeg = [len(p) for p in preds]
    order = [i for i in range(len(nodes)) if indeg[i] == 0]
    head = 0
    while head < len(order):
        for j in succs[order[head]]:
            indeg[j] -= 1
            if indeg[j] == 0:
                order.append(j)
        head += 1
    if len(order) < len(nodes):
        placed = set(order)
        order += [i for i in range(len(nodes)) if i not in placed]
    rank = {v: k for k, v in enumerate(order)}
    layer = [0] * len(nodes)
    for v in order:
        layer[v] = max((layer[p] + 1 for p in preds[v] if rank[p] < rank[v]), default=0)
    preds = [[p for p in ps if layer[p] < layer[v]] for v, ps in enumerate(preds)]
    for v in order:  # sources (Constant, Shape of an input, ...) sit just above their first consumer
        if not preds[v]:
            below = [layer[s] for s in succs[v] if rank[s] > rank[v]]
            if below:
                layer[v] = min(below) - 1
    succs = [[s for s in ss if layer[s] > layer[v]] for v, ss in enumerate(succs)]
    layers: list[list[int]] = [[] for _ in range(max(layer, default=-1) + 1)]
    for v in order:
        layers[layer[v]].append(v)

    x = [0.0] * len(nodes)

    def centre(row: list[int]) -> None:
        half = (len(row) - 1) / 2
        for k, v in enumerate(row):
            x[v] = k - half

    def bary(v: int, nbrs: list[list[int]]) -> float:
        ns = nbrs[v]
        return sum(x[n] for n in ns) / len(ns) if ns else x[v]

    for row in layers:
        centre(row)
    for sweep in range(sweeps):
        down = sweep % 2 == 0
        rows = layers[1:] if down else layers[-2::-1]
        for row in rows:
            row.sort(key=lambda v: bary(v, preds if down else succs))
            centre(row)
    # final placement: near the predecessors' barycentre, keep order and unit spacing
    for row in layers:
        row.sort(key=lambda v: bary(v, preds))
        want = [bary(v, preds) for v in row]
        pos: list[float] = []
        for w in want:
            pos.append(w if not pos else max(w, pos[-1] + 1.0))
        shift = (sum(want) - sum(pos)) / len(pos) if pos else 0.0
        # shifting left may not break the order; the spacing is preserved by a uniform shift
        for v, p in zip(row, pos):
            x[v] = p + shift
    return {nodes[v]: (x[v], layer[v]) for v in range(len(nodes))}


@dataclass(frozen=True)
class GraphLayout:
    """Positions and hover text of a model's nodes, graph inputs/outputs and edges."""

    names: tuple[str, ...]
    ops: tuple[str, ...]
    x: tuple[float, ...]
    y: tuple[float, ...]
    hover: tuple[str, ...]
    edge_x: tuple[float | None, ...]
    edge_y: tuple[float | None, ...]
    io_names: tuple[str, ...]
    io_x: tuple[float, ...]
    io_y: tuple[float, ...]
    io_hover: tuple[str, ...]

    def index(self, name: str) -> int:
        return self.names.index(name)


def attribute_text(attr: onnx.AttributeProto, limit: int = 60) -> str:
    """A short readable value of a node attribute (floats to 6 significant digits, tensors by shape)."""
    if attr.type in (onnx.AttributeProto.TENSOR, onnx.AttributeProto.SPARSE_TENSOR):
        return f"tensor{list(attr.t.dims)}"
    if attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
        return "subgraph"
    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    elif isinstance(value, float):
        value = float(f"{value:.6g}")
    elif isinstance(value, list):
        value = [v.decode("utf-8", "replace") if isinstance(v, bytes) else float(f"{v:.6g}")
                 if isinstance(v, float) else v for v in value]
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def graph_layout(model: onnx.ModelProto, *, sweeps: int = 4) -> GraphLayout:
    """Lay out ``model``'s main graph: one point per node plus one per graph input and output."""
    g = model.graph
    table = layer_table(model, constant_rows=True)  # one row per node, zipped with g.node below
    recs = table.records()
    inits = {i.name for i in g.initializer}
    inputs = [i.name for i in g.input if i.name not in inits]
    outputs = [o.name for o in g.output]
    io_ids = [f"in:{n}" for n in inputs] + [f"out:{n}" for n in outputs]
    producer: dict[str, str] = {n: f"in:{n}" for n in inputs}
    for node in g.node:
        for o in node.output:
            if o:
                producer[o] = node.name
    edges: list[tuple[str, str]] = []
    for node in g.node:
        for i in node.input:
            if i in producer:
                edges.append((producer[i], node.name))
    for o in outputs:
        if o in producer:
            edges.append((producer[o], f"out:{o}"))
    names = [n.name for n in g.node]
    pos = layered_layout(io_ids[: len(inputs)] + names + io_ids[len(inputs):], edges, sweeps=sweeps)

    hover = []
    for node, rec in zip(g.node, recs):
        attrs = "<br>".join(f"&nbsp;&nbsp;{html.escape(a.name)} = {html.escape(attribute_text(a))}" for a in node.attribute)
        hover.append(
            f"<b>{html.escape(node.name)}</b><br>op: {html.escape(node.op_type)}"
            f"<br>in: {html.escape(', '.join(rec['input_shapes']) or '-')}"
            f"<br>out: {html.escape(', '.join(rec['output_shapes']))} ({html.escape(str(rec['dtype']))})"
            + (f"<br>params: {rec['params']:,}" if rec["params"] else "")
            + (f"<br>attributes:<br>{attrs}" if attrs else "")
        )
    from ..graph import tensor_infos

    infos = tensor_infos(model)

    def io_text(kind: str, name: str) -> str:
        info = infos.get(name)
        shape = "?" if info is None or info.shape is None else "x".join(str(d) for d in info.shape)
        dtype = info.dtype if info else "?"
        return f"<b>{html.escape(name)}</b><br>graph {kind}: {html.escape(shape)} ({html.escape(dtype)})"

    io_hover = [io_text("input", n) for n in inputs] + [io_text("output", n) for n in outputs]
    ex: list[float | None] = []
    ey: list[float | None] = []
    for s, d in edges:
        (x0, l0), (x1, l1) = pos[s], pos[d]
        if l1 - l0 > 1:  # a long edge bends around the nodes of the layers it skips
            xb = max(x0, x1) + 0.5
            ex += [x0, xb, xb, x1, None]
            ey += [-float(l0), -float(l0) - 1, -float(l1) + 1, -float(l1), None]
        else:
            ex += [x0, x1, None]
            ey += [-float(l0), -float(l1), None]
    return GraphLayout(
        names=tuple(names),
        ops=tuple(n.op_type for n in g.node),
        x=tuple(pos[n][0] for n in names),
        y=tuple(-float(pos[n][1]) for n in names),
        hover=tuple(hover),
        edge_x=tuple(ex),
        edge_y=tuple(ey),
        io_names=tuple(inputs + outputs),
        io_x=tuple(pos[i][0] for i in io_ids),
        io_y=tuple(-float(pos[i][1]) for i in io_ids),
        io_hover=tuple(io_hover),
    )


def op_colors(ops: Iterable[str]) -> dict[str, str]:
    """A stable colour per op type (sorted op names over a fixed qualitative palette)."""
    return {op: _PALETTE[k % len(_PALETTE)] for k, op in enumerate(sorted(set(ops)))}


def points(layout: GraphLayout, names: Iterable[str]) -> tuple[list[float], list[float]]:
    """x and y of the named nodes (names not in the layout are skipped)."""
    index = {n: i for i, n in enumerate(layout.names)}
    idx = [index[n] for n in names if n in index]
    return [layout.x[i] for i in idx], [layout.y[i] for i in idx]


def _finite_or_none(value: Any) -> Any:
    """NaN and infinite numbers count as "no value" (grey), like a missing node."""
    if isinstance(value, (float, np.floating)) and not np.isfinite(value):
        return None
    return value


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in values)


def graph_figure(
    model: onnx.ModelProto | GraphLayout,
    *,
    color_by: Mapping[str, Any] | None = None,
    color_title: str = "",
    highlight: Iterable[str] = (),
    selected: str | None = None,
    labels: bool | None = None,
    height: int | None = None,
    title: str | None = None,
    window: int = 60,
) -> go.Figure:
    """The model graph as a figure.

    ``color_by`` maps node names to a value (per-node time, error, precision, ...): numbers use a
    continuous colour scale with a colour bar, other values one colour per distinct value; nodes
    without a value are grey. Without it, nodes are coloured by op type. ``highlight`` rings the
    given nodes; ``selected`` marks one node. ``labels`` writes op types on the nodes (default: on
    for graphs up to 80 nodes). Graphs deeper than ``2 * window`` layers open on their first ``window``
    layers.
    """
    lay = model if isinstance(model, GraphLayout) else graph_layout(model)
    n = len(lay.names)
    legend: list[go.Scatter] = []
    hover = list(lay.hover)
    if color_by:
        vals = [_finite_or_none(color_by.get(name)) for name in lay.names]
        present = [v for v in vals if v is not None]
        if present and _numeric(present):
            lo, hi = float(min(present)), float(max(present))
            span = (hi - lo) or 1.0
            scale = "Viridis"
            colors = [
                _MISSING if v is None else pc.sample_colorscale(scale, [(float(v) - lo) / span])[0] for v in vals
            ]
            legend.append(go.Scatter(
                x=[None], y=[None], mode="markers", name=color_title or "value", showlegend=False, hoverinfo="skip",
                marker=dict(color=[lo, hi], cmin=lo, cmax=hi, colorscale=scale, showscale=True,
                            colorbar=dict(title=dict(text=color_title), thickness=12)),
            ))
            fmt = "{:.4g}"
        else:
            cmap = op_colors(str(v) for v in present)
            colors = [_MISSING if v is None else cmap[str(v)] for v in vals]
            legend += [go.Scatter(x=[None], y=[None], mode="markers", name=k, marker=dict(color=c, size=9),
                                  legendgroup="values", legendgrouptitle_text=color_title or None)
                       for k, c in cmap.items()][:30]
            fmt = "{}"
        hover = [h + (f"<br>{html.escape(color_title or 'value')}: {html.escape(fmt.format(v))}" if v is not None else "")
                 for h, v in zip(hover, vals)]
    else:
        cmap = op_colors(lay.ops)
        colors = [cmap[op] for op in lay.ops]
        if len(cmap) <= 30:
            legend += [go.Scatter(x=[None], y=[None], mode="markers", name=op, marker=dict(color=c, size=9))
                       for op, c in cmap.items()]
    show_labels = n <= 80 if labels is None else labels
    size = 14 if n <= 200 else 9 if n <= 2000 else 6
    hx, hy = points(lay, highlight)
    sx, sy = points(lay, [selected] if selected else [])
    traces: list[Any] = [
        go.Scattergl(x=lay.edge_x, y=lay.edge_y, mode="lines", name="edges", hoverinfo="skip", showlegend=False,
                     line=dict(color="#9e9e9e", width=1)),
        go.Scattergl(
            x=lay.x, y=lay.y, mode="markers+text" if show_labels else "markers", name="nodes", showlegend=False,
            text=list(lay.ops) if show_labels else None, textposition="middle right", textfont=dict(size=10),
            customdata=list(lay.names), hovertext=hover, hoverinfo="text",
            marker=dict(color=colors, size=size, line=dict(color="#333", width=0.5)),
        ),
        go.Scattergl(x=lay.io_x, y=lay.io_y, mode="markers+text" if show_labels else "markers", name="io",
                     showlegend=False, text=list(lay.io_names) if show_labels else None, textposition="middle right",
                     textfont=dict(size=10), customdata=list(lay.io_names), hovertext=list(lay.io_hover),
                     hoverinfo="text", marker=dict(symbol="diamond", color="#424242", size=size)),
        go.Scattergl(x=hx, y=hy, mode="markers", name="highlight", showlegend=False, hoverinfo="skip",
                     marker=dict(symbol="circle-open", color="#d50000", size=size + 10, line=dict(width=3))),
        go.Scattergl(x=sx, y=sy, mode="markers", name="selected", showlegend=False, hoverinfo="skip",
                     marker=dict(symbol="circle-open", color="#000000", size=size + 14, line=dict(width=3))),
    ]
    xs = list(lay.x) + list(lay.io_x) + [x for x in lay.edge_x if x is not None]
    xmin, xmax = min(xs, default=0.0), max(xs, default=0.0)
    layers = -min(min(lay.y, default=0.0), min(lay.io_y, default=0.0)) + 1
    fig = go.Figure(data=traces + legend)
    fig.update_layout(
        title=title,
        height=height or int(min(900, max(380, 40 * layers))),
        margin=dict(l=10, r=10, t=(40 if title else 10) + (30 if legend else 0), b=10),
        hovermode="closest",
        clickmode="event",
        dragmode="pan",
        plot_bgcolor="white",
        modebar=dict(orientation="v"),  # keeps the toolbar off the legend above the plot
        legend=dict(itemsizing="constant", font=dict(size=10), orientation="h", x=0, xanchor="left", y=1,
                    yanchor="bottom"),
        xaxis=dict(visible=False, range=[xmin - 0.6, xmax + (2.5 if show_labels else 0.8)]),
        # a tall graph opens on its first `window` layers (pan or zoom out for the rest)
        yaxis=dict(visible=False, range=[-window + 0.5, 0.8] if layers > 2 * window else None),
    )
    return fig
