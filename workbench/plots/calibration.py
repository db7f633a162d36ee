"""Calibration figures: one tensor's histogram with the threshold each method chooses, and a per-tensor
comparison of the methods. Plain data in (a TensorStats-like object or dict), plotly figures out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Union

import plotly.graph_objects as go

from ..precision.scales import TensorStats

__all__ = ["METHOD_COLOURS", "histogram_figure", "methods_figure"]

METHOD_COLOURS = {"max": "#d62728", "percentile": "#ff7f0e", "entropy": "#2ca02c", "mse": "#1f77b4",
                  "override": "#9467bd"}


Stats = Union[TensorStats, Mapping[str, Any]]  # noqa: UP007
"""One tensor's statistics: a TensorStats, or a dict with its fields (``hist``, ``hist_max``, ``thresholds``...)."""


def _get(stats: Stats, key: str, default: Any = None) -> Any:
    return stats.get(key, default) if isinstance(stats, Mapping) else getattr(stats, key, default)


def histogram_figure(tensor: str, stats: Stats, *, chosen: str | None = None, log_y: bool = True) -> go.Figure:
    """Histogram of ``|x|`` for ``tensor`` with a vertical line per method's threshold (and the override).

    Trace names are stable: ``histogram`` then ``threshold:<method>`` so a FigureWidget can be updated in place.
    """
    counts = list(_get(stats, "hist", []) or [])
    hist_max = float(_get(stats, "hist_max", 0.0) or 0.0)
    width = hist_max / len(counts) if counts and hist_max else 0.0
    centers = [(i + 0.5) * width for i in range(len(counts))]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=centers, y=counts, width=[width] * len(counts), name="histogram",
                         marker_color="#999", hovertemplate="|x| ≈ %{x:.4g}: %{y} values<extra></extra>"))
    peak = max(counts) if counts else 1
    lines = dict(_get(stats, "thresholds", {}) or {})
    override = _get(stats, "override")
    if override is not None:
        lines["override"] = float(override)
    for method, value in lines.items():
        bold = method == chosen or method == "override"
        fig.add_trace(go.Scatter(
            x=[value, value], y=[0.5 if log_y else 0, peak * 1.5], mode="lines", name=f"threshold:{method}",
            line={"color": METHOD_COLOURS.get(method, "#333"), "width": 3 if bold else 1.5,
                  "dash": "solid" if bold else "dash"},
            hovertemplate=f"{method}: amax %{{x:.4g}}<extra></extra>"))
    fig.update_layout(title=f"{tensor}: |x| histogram and thresholds", xaxis_title="|x|",
                      yaxis_title="count", yaxis_type="log" if log_y else "linear", bargap=0,
                      height=320, margin={"l": 50, "r": 10, "t": 40, "b": 40}, legend={"orientation": "h"})
    return fig


def methods_figure(tensors: Mapping[str, Stats]) -> go.Figure:
    """Each method's threshold as a fraction of the tensor's max, one row per tensor."""
    names = list(tensors)
    fig = go.Figure()
    methods = sorted({m for s in tensors.values() for m in (_get(s, "thresholds", {}) or {})})
    for method in methods:
        ratios = []
        for t in names:
            th = _get(tensors[t], "thresholds", {}) or {}
            mx = th.get("max") or 0.0
            ratios.append(th.get(method, 0.0) / mx if mx else 0.0)
        fig.add_trace(go.Scatter(x=ratios, y=names, mode="markers", name=method,
                                 marker={"color": METHOD_COLOURS.get(method, "#333"), "size": 9}))
    fig.update_layout(title="threshold / max per tensor", xaxis_title="amax / max", xaxis_range=[0, 1.05],
                      height=max(240, 22 * len(names) + 80), margin={"l": 220, "r": 10, "t": 40, "b": 40})
    return fig
