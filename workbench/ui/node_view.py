"""The joined view: one place that shows everything known about the selected node, whichever tab selected it.

:class:`Selection` is the dashboard's one selection signal: a tab publishes the ONNX nodes the user picked (a
row, a click in a graph, an engine layer: its ONNX nodes) with ``selection.set(names, source)``; the
:class:`NodeView` follows it. The view draws :class:`~workbench.plots.node_facts.NodeFacts` (gathered by
:func:`~workbench.plots.node_facts.node_facts` through the ``gather`` callable the dashboard passes) as HTML with
small inline SVG histograms (no plotly: nothing heavy is shipped to the page per selection).

Visible state for tests: ``html.value``, ``nodes.options``/``nodes.value`` (several selected nodes: pick one),
``facts`` (the NodeFacts on display).
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence

import ipywidgets as W

from ..plots.node_facts import NodeFacts

__all__ = ["Selection", "NodeView", "facts_html", "histogram_svg"]

EMPTY = ("<i>select a node (a row or a box in the Model tab's graph, the Edit tab, an engine layer in the Profile tab, "
         "the Debug tab's graph) to see everything known about it here</i>")


class Selection:
    """The dashboard's selection signal: ``names`` (ONNX nodes), ``source`` (which tab/view set them)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.source = ""
        self._callbacks: list[Callable[[Selection], None]] = []

    def set(self, names: Sequence[str] | str, source: str = "") -> None:
        """Publish a selection (a name or names; empty clears it) and tell the subscribers."""
        names = [names] if isinstance(names, str) else [n for n in names if n]
        self.names, self.source = list(dict.fromkeys(names)), source
        for callback in list(self._callbacks):
            callback(self)

    def subscribe(self, callback: Callable[[Selection], None]) -> Callable[[], None]:
        """Call ``callback(selection)`` on every :meth:`set`; returns a function that unsubscribes it."""
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback) if callback in self._callbacks else None


def _f(v: float | None, fmt: str = ".4g") -> str:
    return "-" if v is None else format(v, fmt)


def histogram_svg(counts: Sequence[int], *, lo: float | None = None, hi: float | None = None,
                  marks: Sequence[tuple[float, str]] = (), width: int = 240, height: int = 48,
                  css: str = "wb-hist") -> str:
    """A small bar chart of ``counts`` over [lo, hi] as inline SVG; ``marks`` are (x, colour) vertical lines."""
    if not counts:
        return ""
    top = max(counts) or 1
    w = width / len(counts)
    bars = "".join(f'<rect x="{i * w:.2f}" y="{height - c / top * height:.2f}" width="{max(w - 0.5, 0.5):.2f}" '
                   f'height="{c / top * height:.2f}" fill="#5b8def"/>' for i, c in enumerate(counts) if c)
    lines = ""
    if lo is not None and hi is not None and hi > lo:
        for x, colour in marks:
            px = min(max((x - lo) / (hi - lo), 0.0), 1.0) * width
            lines += f'<line x1="{px:.2f}" x2="{px:.2f}" y1="0" y2="{height}" stroke="{colour}" stroke-width="1.5"/>'
    axis = (f'<div class="wb-hist-axis" style="display:flex;justify-content:space-between;width:{width}px;'
            f'font-size:10px;color:#666"><span>{_f(lo)}</span><span>{_f(hi)}</span></div>') if lo is not None else ""
    return (f'<svg class="{css}" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'style="background:#f7f7f7;display:block">{bars}{lines}</svg>{axis}')


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], css: str) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{css}"><tr>{th}</tr>{body}</table>'


def facts_html(f: NodeFacts) -> str:
    """The joined view of one node as HTML (sections only for what exists)."""
    esc = html.escape
    parts = [f'<div class="wb-nv-head"><b class="wb-nv-name">{esc(f.name)}</b> '
             + (f'<span class="wb-nv-op">{esc(f.op)}</span>' if f.op else "")
             + (f' <span class="wb-nv-precision">· {esc(f.precision)}</span>' if f.precision else "") + "</div>"]
    if not f.in_model:
        parts.append("<p class='wb-nv-missing'><i>not a node of the current model (a name from a profile or "
                     "engine of another export)</i></p>")
    if f.inputs or f.outputs:
        rows = [[f"in <code>{esc(t)}</code>", esc(s)] for t, s in f.inputs] + \
               [[f"out <code>{esc(t)}</code>", esc(s)] for t, s in f.outputs]
        parts.append("<details class='wb-nv-io'><summary>inputs / outputs</summary>"
                     + _table(("tensor", "dtype [shape]"), rows, "wb-nv-io-table") + "</details>")
    if f.attributes:
        parts.append("<div class='wb-nv-section'><b>attributes</b>" + _table(
            ("name", "value"), [[esc(k), f"<code>{esc(v)}</code>"] for k, v in f.attributes], "wb-nv-attrs") + "</div>")
    for w in f.weights:
        shape = "×".join(map(str, w.shape)) or "scalar"
        stats = (f"min {_f(w.min)} · max {_f(w.max)} · mean {_f(w.mean)} · std {_f(w.std)}" if w.min is not None
                 else esc(w.note))
        parts.append(f"<div class='wb-nv-weight'><b>weight</b> <code>{esc(w.tensor)}</code> [{shape}] {esc(w.dtype)} "
                     f"<span class='wb-nv-source'>({esc(w.source)})</span><br><span class='wb-nv-stats'>{stats}</span>"
                     + histogram_svg(w.hist, lo=w.min, hi=w.max, marks=[(0.0, "#999")]) + "</div>")
    if f.layers:
        rows = [[esc(x.label), f"<code>{esc(x.layer)}</code>"
                 + (f"<br><small>fused with {esc(', '.join(x.fused))}</small>" if x.fused else ""),
                 esc(x.type), esc(x.precision or "?"), f"{x.median_ms:.4g}", f"{x.pct:.1f}"]
                + ([f"<small>{esc(x.tactic or '')}</small>"] if any(y.tactic for y in f.layers) else [])
                for x in f.layers]
        head = ["profile", "layer", "type", "precision", "median ms", "%"] + (
            ["tactic"] if any(y.tactic for y in f.layers) else [])
        parts.append("<div class='wb-nv-section'><b>engine layers / profile rows</b>"
                     + _table(head, rows, "wb-nv-layers") + "</div>")
    for r in f.ranges:
        marks = [(r.amax, "#d62728")]
        chosen = f"amax {_f(r.amax)} ({esc('override' if r.override is not None else r.method)})"
        others = ", ".join(f"{esc(m)} {_f(v)}" for m, v in r.thresholds.items())
        parts.append(f"<div class='wb-nv-range'><b>calibration</b> {r.role} <code>{esc(r.tensor)}</code>: "
                     f"<span class='wb-nv-amax'>{chosen}</span> · range [{_f(r.min)}, {_f(r.max)}]"
                     + (f"<br><small>thresholds: {others}</small>" if others else "")
                     + histogram_svg(r.hist, lo=0.0, hi=r.hist_max, marks=marks) + "</div>")
    if f.errors:
        rows = [[f"<code>{esc(e.tensor)}</code>", _f(e.rel_l2), _f(e.local_rel_l2), _f(e.cosine, ".5f"),
                 _f(e.snr_db, ".1f"), "-" if e.passed is None else "pass" if e.passed else "FAIL"] for e in f.errors]
        parts.append("<div class='wb-nv-section'><b>layerwise error</b> (last Compare)"
                     + _table(("tensor", "rel L2", "local rel L2", "cosine", "SNR dB", ""), rows, "wb-nv-errors")
                     + "</div>")
    if f.sensitivity is not None:
        s = f.sensitivity
        parts.append(f"<div class='wb-nv-sensitivity'><b>sensitivity</b>: rank {s.rank} of {s.of}, score {_f(s.score)}"
                     + (f", metric gain {_f(s.metric_gain)}" if s.metric_gain is not None else "") + "</div>")
    known = (f.attributes or f.weights or f.layers or f.ranges or f.errors or f.sensitivity or f.inputs)
    if not known:
        parts.append("<p><i>nothing known about this node yet</i></p>")
    return ('<div class="wb-node-view" style="font-size:12px;overflow-wrap:anywhere">'
            "<style>.wb-node-view table{border-collapse:collapse;margin:2px 0 6px}.wb-node-view td,.wb-node-view th"
            "{border:1px solid #ddd;padding:1px 4px;text-align:left;vertical-align:top}</style>"
            + "".join(parts) + "</div>")


class NodeView:
    """The joined view widget. ``gather(name) -> NodeFacts`` collects the facts; ``show(names)`` draws the first
    of them (the others are offered in the ``nodes`` dropdown); ``refresh()`` re-gathers (a new result exists)."""

    def __init__(self, gather: Callable[[str], NodeFacts]) -> None:
        self.gather = gather
        self.facts: NodeFacts | None = None
        self.source = ""
        self.title = W.HTML("<b>Selected node</b>")
        self.nodes = W.Dropdown(options=[], description="node", layout=W.Layout(width="98%", display="none"))
        self.html = W.HTML(EMPTY)
        self._quiet = False
        self.nodes.observe(lambda _c: None if self._quiet else self._draw(), "value")
        for w, css in ((self.html, "wb-node-view-body"), (self.nodes, "wb-node-view-nodes")):
            w.add_class(css)
        self.widget = W.VBox([self.title, self.nodes, self.html],
                             layout=W.Layout(flex="1 1 320px", min_width="280px", max_width="100%",
                                             border="1px solid #ddd", padding="4px", overflow="auto"))
        self.widget.add_class("wb-node-view")

    def show(self, names: Sequence[str], source: str = "") -> None:
        """Show the facts of ``names`` (the first; a dropdown picks among several), selected in ``source``."""
        names = list(dict.fromkeys(n for n in names if n))
        self.source = source
        self._quiet = True  # one draw below, not one per dropdown change
        try:
            self.nodes.options = names
            self.nodes.value = names[0] if names else None
        finally:
            self._quiet = False
        self.nodes.layout.display = None if len(names) > 1 else "none"
        self._draw()

    def follow(self, selection: Selection) -> Callable[[], None]:
        """Show whatever ``selection`` says from now on; returns the unsubscribe function."""
        return selection.subscribe(lambda s: self.show(s.names, s.source))

    def refresh(self) -> None:
        """Gather the shown node's facts again (a profile, calibration or comparison arrived)."""
        if self.nodes.value is not None:
            self._draw()

    def _draw(self) -> None:
        name = self.nodes.value
        if name is None:
            self.facts = None
            self.title.value = "<b>Selected node</b>"
            self.html.value = EMPTY
            return
        self.facts = self.gather(name)
        where = f" <small>(from {html.escape(self.source)})</small>" if self.source else ""
        self.title.value = f"<b>Selected node</b>{where}"
        self.html.value = facts_html(self.facts)
