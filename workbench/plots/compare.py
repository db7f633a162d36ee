"""Figures for accuracy debugging: error growth along the graph, sensitivity bars, the plans' Pareto chart,
and a {node: error} colouring for the graph widget (``GraphWidget.set_overlay(node_error_colours(...))``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from ..table import Table

__all__ = ["error_growth", "sensitivity_bars", "pareto", "pareto_front", "node_error_colours"]

_RED, _BLUE, _GREY, _GREEN = "#c62828", "#1565c0", "#9e9e9e", "#2e7d32"


def error_growth(layers: Table, *, column: str = "rel_l2", tolerance: float | None = None,
                 first_divergence: Mapping[str, Any] | None = None, title: str | None = None) -> go.Figure:
    """Per-tensor error in graph order (log scale): the total error and each layer's local error."""
    recs = layers.records()
    x = [r["index"] for r in recs]
    hover = [f"{r['tensor']}<br>node {r['node']} ({r['op']})" for r in recs]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x, y=[r[column] for r in recs], mode="lines+markers", name=f"{column} (total)",
                             text=hover, hovertemplate="%{text}<br>%{y:.3g}<extra></extra>",
                             line=dict(color=_BLUE)))
    local = f"local_{column}"
    if local in layers.columns:
        fig.add_trace(go.Bar(x=x, y=[r[local] for r in recs], name=f"{column} (local: own error)",
                             hovertext=hover, hovertemplate="%{hovertext}<br>local %{y:.3g}<extra></extra>",
                             marker_color=_GREY,
                             opacity=0.6))
    if tolerance is not None:
        fig.add_hline(y=tolerance, line_dash="dash", line_color=_RED, annotation_text=f"tolerance {tolerance:g}")
    if first_divergence:
        fig.add_trace(go.Scatter(x=[first_divergence["index"]], y=[first_divergence.get(column)], mode="markers",
                                 name=f"first divergence: {first_divergence['node']}",
                                 marker=dict(color=_RED, size=14, symbol="x")))
    fig.update_layout(title=title or f"Error along the graph ({column})", xaxis_title="tensor (graph order)",
                      yaxis_title=column, yaxis_type="log", barmode="overlay", legend=dict(orientation="h", y=-0.2),
                      margin=dict(l=60, r=20, t=50, b=40))
    fig.update_xaxes(tickmode="array", tickvals=x, ticktext=[r["node"].rsplit("/", 1)[-1] or r["node"] for r in recs])
    return fig


def sensitivity_bars(table: Table, *, top: int = 30, keep: Sequence[str] = (), title: str | None = None) -> go.Figure:
    """Horizontal bars of the sensitivity score, most sensitive on top; layers in ``keep`` in red."""
    recs = table.records()[:top]
    recs = list(reversed(recs))
    keep_set = set(keep)
    fig = go.Figure(go.Bar(
        x=[r["score"] for r in recs], y=[r["node"] for r in recs], orientation="h",
        marker_color=[_RED if r["node"] in keep_set else _BLUE for r in recs],
        customdata=[[r["op"], r["precision"], r.get("metric_restored")] for r in recs],
        hovertemplate="%{y} (%{customdata[0]}, %{customdata[1]})<br>score %{x:.4g}<br>"
                      "metric restored %{customdata[2]:.4g}<extra></extra>",
    ))
    fig.update_layout(title=title or "Sensitivity: output error recovered by restoring one layer to FP32",
                      xaxis_title="score", height=max(250, 24 * len(recs) + 100),
                      margin=dict(l=20, r=20, t=50, b=40))
    return fig


def pareto_front(points: Sequence[tuple[float, float]], *, higher_is_better: bool = True) -> list[int]:
    """Indices of the (cost, metric) points no other point beats on both, sorted by cost."""
    def better(a: tuple[float, float], b: tuple[float, float]) -> bool:
        ma, mb = (a[1], b[1]) if higher_is_better else (-a[1], -b[1])
        return a[0] <= b[0] and ma >= mb and (a[0] < b[0] or ma > mb)

    idx = [i for i, p in enumerate(points)
           if p[0] is not None and not any(better(q, p) for q in points if q[0] is not None)]
    return sorted(idx, key=lambda i: points[i][0])


def pareto(plans: Table, *, chosen: Sequence[str] | None = None, target: float | None = None,
           higher_is_better: bool = True, metric: str = "metric", title: str | None = None) -> go.Figure:
    """Every plan tried: estimated cost vs metric, the Pareto front, the target and the chosen plan."""
    recs = [r for r in plans.records() if r["cost"] is not None and not _nan(r["metric"])]
    pts = [(r["cost"], r["metric"]) for r in recs]
    front = pareto_front(pts, higher_is_better=higher_is_better)
    hover = [f"plan {r['plan']} ({r['step']}): keep {r['kept']}<br>{', '.join(r['keep'][:6])}"
             + ("…" if len(r["keep"]) > 6 else "") for r in recs]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="markers", name="plans tried",
                             text=hover, hovertemplate="%{text}<br>cost %{x:.3f}<br>" + metric + " %{y:.4g}<extra></extra>",
                             marker=dict(size=10, color=[_GREEN if r["met"] else _GREY for r in recs])))
    fig.add_trace(go.Scatter(x=[pts[i][0] for i in front], y=[pts[i][1] for i in front], mode="lines",
                             name="Pareto front", line=dict(color=_BLUE, dash="dot"), hoverinfo="skip"))
    if chosen is not None:
        match = [i for i, r in enumerate(recs) if set(r["keep"]) == set(chosen)]
        if match:
            i = match[-1]
            fig.add_trace(go.Scatter(x=[pts[i][0]], y=[pts[i][1]], mode="markers", name="chosen plan",
                                     marker=dict(size=16, color=_RED, symbol="star")))
    if target is not None:
        fig.add_hline(y=target, line_dash="dash", line_color=_RED, annotation_text=f"target {target:.4g}")
    fig.update_layout(title=title or "Plans: accuracy vs estimated cost", xaxis_title="estimated cost (all FP32 = 1)",
                      yaxis_title=metric, margin=dict(l=60, r=20, t=50, b=40))
    return fig


def node_error_colours(errors: Mapping[str, float | None], *, log: bool = True) -> dict[str, float]:
    """{node: error} -> {node: value} for ``GraphWidget.set_overlay``: log10 of the error by default, so a
    layer 10x worse is one colour step away; zero errors map to the smallest nonzero one."""
    vals = {k: float(v) for k, v in errors.items() if v is not None and not _nan(v)}
    if not log:
        return vals
    positive = [v for v in vals.values() if v > 0]
    floor = min(positive) if positive else 1e-12
    return {k: math.log10(max(v, floor)) for k, v in vals.items()}


def _nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)
