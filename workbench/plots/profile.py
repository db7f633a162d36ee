"""Figures for per-layer timing tables: pure functions from :class:`~workbench.table.Table` to a plotly Figure.

Every factory takes timing tables in the schema of :mod:`workbench.profile` and computes nothing the
profile module does not already (grouping and comparison come from there).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnx
import plotly.graph_objects as go

from ..fsio import atomic_write
from ..profile import compare_profiles, group_times, layer_op, node_times, profile_summary, total_ms
from ..table import Table
from .graph_data import graph_json, overlay

__all__ = [
    "PRECISION_COLORS",
    "layer_bar",
    "group_bar",
    "time_treemap",
    "compare_totals",
    "compare_layers",
    "precision_mix",
    "timing_graph",
    "write_html",
]

PRECISION_COLORS = {"fp32": "#1f77b4", "fp16": "#2ca02c", "bf16": "#17becf", "int8": "#d62728", "fp8": "#ff7f0e",
                    "int4": "#9467bd", "fp4": "#8c564b", None: "#9e9e9e"}


def _color(precision: str | None) -> str:
    return PRECISION_COLORS.get(precision, "#7f7f7f")


def _short(name: str, limit: int = 48) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def layer_bar(table: Table, *, top: int = 20, title: str | None = None) -> go.Figure:
    """Horizontal bars of the ``top`` slowest layers (median ms), coloured by precision, slowest on top."""
    rows = table.sort_by("median_ms", descending=True).head(top).records()[::-1]
    fig = go.Figure()
    for precision in dict.fromkeys(r["precision"] for r in rows):
        sel = [r for r in rows if r["precision"] == precision]
        fig.add_bar(
            y=[_short(r["name"]) for r in sel], x=[r["median_ms"] for r in sel], orientation="h",
            name=precision or "unknown", marker_color=_color(precision), customdata=[r["name"] for r in sel],
            hovertext=[f"{html.escape(r['name'])}<br>{r['type']} · {r['precision'] or '?'}<br>"
                       f"{r['median_ms']:.4g} ms ({r['pct']:.1f}%)<br>ONNX: {html.escape(', '.join(r['onnx_nodes']))}"
                       for r in sel], hoverinfo="text",
        )
    fig.update_layout(title=title or f"Top {min(top, len(table))} layers of {len(table)} · total {total_ms(table):.4g} ms",
                      xaxis=dict(type="linear", autorange=True, title_text="median ms"), barmode="stack",
                      height=max(300, 22 * len(rows) + 120),
                      yaxis=dict(type="category", autorange=True, title_text="", categoryorder="array",
                                 categoryarray=[_short(r["name"]) for r in rows]),
                      margin=dict(l=10, r=10, t=50, b=40), legend_title_text="precision")
    return fig


def group_bar(table: Table, by: str = "op_type", *, model: onnx.ModelProto | None = None,
              title: str | None = None) -> go.Figure:
    """Total time per ONNX op type ("op_type"), TensorRT/ORT layer type ("type") or precision."""
    groups = group_times(table, by, model=model).records()
    colors = [_color(g["group"]) for g in groups] if by == "precision" else None
    fig = go.Figure(go.Bar(
        x=[g["group"] for g in groups], y=[g["median_ms"] for g in groups], marker_color=colors,
        text=[f"{g['pct']:.1f}%" for g in groups], textposition="outside",
        hovertext=[f"{g['group']}: {g['median_ms']:.4g} ms in {g['layers']} layer(s)" for g in groups],
        hoverinfo="text",
    ))
    # both axes spelled out: a FigureWidget refilled from the "layers" view (numeric x) would keep its x axis
    # linear, and plotly.js then places category bars at NaN (empty axes, "translate(NaN)" in the console)
    fig.update_layout(title=title or f"Time by {by.replace('_', ' ')}", margin=dict(l=10, r=10, t=50, b=40),
                      xaxis=dict(type="category", autorange=True, title_text=by.replace("_", " ")),
                      yaxis=dict(type="linear", autorange=True, title_text="median ms"), height=360,
                      showlegend=False)
    return fig


def time_treemap(table: Table, *, model: onnx.ModelProto | None = None, title: str | None = None) -> go.Figure:
    """Treemap of time: ONNX op type -> layer, areas proportional to median time."""
    groups = group_times(table, "op_type", model=model)

    ops = {n.name: n.op_type for n in model.graph.node} if model is not None else None
    # branchvalues="remainder": parents carry 0 of their own, so float sums never break the hierarchy
    ids, labels, parents, values, ms = ["total"], [f"total {total_ms(table):.4g} ms"], [""], [0.0], [total_ms(table)]
    for g in groups.records():
        ids.append(f"op:{g['group']}")
        labels.append(g["group"])
        parents.append("total")
        values.append(0.0)
        ms.append(g["median_ms"])
    for i, rec in enumerate(table.records()):
        ids.append(f"layer:{i}")
        labels.append(_short(rec["name"], 40))
        parents.append(f"op:{layer_op(rec, ops)}")
        values.append(rec["median_ms"])
        ms.append(rec["median_ms"])
    fig = go.Figure(go.Treemap(ids=ids, labels=labels, parents=parents, values=values, branchvalues="remainder",
                               customdata=ms, hovertemplate="%{label}<br>%{customdata:.4g} ms<extra></extra>"))
    fig.update_layout(title=title or "Where the time goes", margin=dict(l=10, r=10, t=50, b=10), height=480)
    return fig


def compare_totals(profiles: Mapping[str, Table], *, title: str | None = None) -> go.Figure:
    """Total latency (sum of layer medians) per engine/profile, with the speedup over the first."""
    rows = profile_summary(profiles).records()
    fig = go.Figure(go.Bar(
        x=[r["label"] for r in rows], y=[r["total_ms"] for r in rows],
        text=[f"{r['total_ms']:.4g} ms · ×{r['speedup']:.2f}" if r["speedup"] else f"{r['total_ms']:.4g} ms"
              for r in rows], textposition="outside",
    ))
    fig.update_layout(title=title or "Total latency (sum of per-layer medians)", yaxis_title="ms",
                      margin=dict(l=10, r=10, t=50, b=40), height=360)
    return fig


def compare_layers(profiles: Mapping[str, Table], *, top: int = 15, match: str = "auto",
                   title: str | None = None) -> go.Figure:
    """Grouped bars per matched ONNX-node group for the ``top`` groups by their largest time."""
    cmp = compare_profiles(profiles, match=match)
    labels = list(profiles)
    rows = sorted(cmp.records(), key=lambda r: -max(r[f"{lab}_ms"] for lab in labels))[:top][::-1]
    fig = go.Figure()
    for lab in labels:
        fig.add_bar(y=[_short(r["group"]) for r in rows], x=[r[f"{lab}_ms"] for r in rows], orientation="h",
                    name=lab, hovertext=[f"{html.escape(r['group'])}<br>{lab}: {r[f'{lab}_ms']:.4g} ms"
                                         for r in rows], hoverinfo="text")
    fig.update_layout(title=title or "Per-layer time, matched by ONNX node", barmode="group", xaxis_title="median ms",
                      height=max(320, 18 * len(rows) * len(labels) + 120), margin=dict(l=10, r=10, t=50, b=40))
    return fig


def precision_mix(profiles: Mapping[str, Table], *, title: str | None = None) -> go.Figure:
    """Stacked layer counts per precision for each engine/profile."""
    summary = profile_summary(profiles)
    fixed = ("label", "total_ms", "layers", "speedup")
    precisions = [c for c in summary.columns if c not in fixed]
    rows = summary.records()
    fig = go.Figure()
    for p in precisions:
        fig.add_bar(x=[r["label"] for r in rows], y=[r[p] for r in rows], name=p,
                    marker_color=_color(None if p == "unknown" else p))
    fig.update_layout(title=title or "Layers by precision", barmode="stack", yaxis_title="layers",
                      margin=dict(l=10, r=10, t=50, b=40), height=340)
    return fig


def timing_graph(model: onnx.ModelProto, table: Table, *, title: str | None = None) -> dict[str, Any]:
    """The model graph with each ONNX node coloured by its share of layer time (ms): ``{"graph", "overlay"}``
    for the graph widget (``GraphWidget.set_graph(d["graph"]); widget.overlay = d["overlay"]``)."""
    return {"graph": graph_json(model, title=title or ""), "overlay": overlay(node_times(table), "ms")}


def write_html(figures: Mapping[str, go.Figure] | list[go.Figure | str], path: str | Path, *,
               title: str = "Profile", style: str = "") -> Path:
    """Write figures to one standalone HTML file (plotly.js embedded once, with the first figure), atomically.
    A str among ``figures`` is an HTML fragment placed as it is (a report's text and tables); ``style`` is CSS."""
    blocks = list(figures.values()) if isinstance(figures, Mapping) else list(figures)
    parts = [f"<h1>{html.escape(title)}</h1>"]
    first = True
    for block in blocks:
        if isinstance(block, str):
            parts.append(block)
            continue
        parts.append(block.to_html(full_html=False, include_plotlyjs=first))
        first = False
    css = f"<style>{style}</style>" if style else ""
    doc = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>{css}</head><body>"
           + "\n".join(parts) + "</body></html>")
    return atomic_write(path, doc)
