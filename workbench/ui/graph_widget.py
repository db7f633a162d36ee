"""The graph widget: node boxes, labelled edges, zoom/pan/fit, search, name-scope groups and overlays.

An ``anywidget`` whose front end (``static/graph.js``) is bundled from ``js/graph/`` at build time
(``make js``); nothing is fetched at run time. The kernel sends the compact JSON of
:func:`workbench.plots.graph_data.graph_json`; traits carry the state both ways:

- ``selected``: node names; a click in the graph sets it (``multiselect`` toggles instead), setting it here
  highlights the nodes and centres the view on the last one (expanding the groups that hide it);
- ``highlight``: nodes ringed in red (the unsupported nodes of a check, the last edit, ...);
- ``overlay``: ``graph_data.overlay(values, title)`` colours nodes by time, error, precision, ...; ``{}`` = op type;
- ``overlays``: named overlays offered in the widget's "colour:" menu (picking one sets ``overlay``);
- ``info`` (front end -> kernel): what was drawn (``boxes``, ``units``, ``collapsed`` groups, ``first_paint_ms``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import anywidget
import onnx
import traitlets as T

from ..plots.graph_data import graph_json, overlay

__all__ = ["GraphWidget", "STATIC"]

STATIC = Path(__file__).parent / "static"


class GraphWidget(anywidget.AnyWidget):
    """A model graph (or an engine's layer graph) drawn in the browser; see the module docstring for traits."""

    _esm = STATIC / "graph.js"
    graph = T.Dict().tag(sync=True)
    selected = T.List(T.Unicode()).tag(sync=True)
    highlight = T.List(T.Unicode()).tag(sync=True)
    overlay = T.Dict().tag(sync=True)
    overlays = T.Dict().tag(sync=True)
    multiselect = T.Bool(False).tag(sync=True)
    height = T.Int(560).tag(sync=True)
    collapse_above = T.Int(400).tag(sync=True)  # boxes shown at first before name-scope groups collapse
    info = T.Dict().tag(sync=True)

    def __init__(self, model: onnx.ModelProto | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if model is not None:
            self.set_model(model)

    @classmethod
    def from_data(cls, data: Mapping[str, Any], **kwargs: Any) -> GraphWidget:
        """A widget showing ``{"graph", "overlay"}`` data (e.g. :func:`workbench.plots.profile.timing_graph`)."""
        widget = cls(**kwargs)
        widget.set_graph(data["graph"])
        widget.overlay = dict(data.get("overlay") or {})
        return widget

    # --- kernel-side API ---------------------------------------------------------------------------------

    def set_model(self, model: onnx.ModelProto, *, title: str = "") -> None:
        """Draw ``model`` (selection and highlight keep the names that still exist)."""
        self.set_graph(graph_json(model, title=title))

    def set_graph(self, graph: Mapping[str, Any]) -> None:
        """Draw a graph already in the widget's JSON format (e.g. :func:`graph_data.engine_graph_json`)."""
        names = {n["id"] for n in graph.get("nodes", [])}
        with self.hold_trait_notifications():
            self.graph = dict(graph)
            self.selected = [n for n in self.selected if n in names]
            self.highlight = [n for n in self.highlight if n in names]

    @property
    def node_names(self) -> list[str]:
        """Names of the drawn nodes (graph inputs/outputs as ``in:x``/``out:y``)."""
        return [n["id"] for n in self.graph.get("nodes", [])]

    def select(self, names: Iterable[str]) -> None:
        """Select nodes by name (unknown names are dropped)."""
        known = set(self.node_names)
        self.selected = [n for n in names if n in known]

    def set_overlay(self, values: Mapping[str, Any] | None, title: str = "", *, log: bool = False) -> None:
        """Colour nodes by ``{node: number | str}`` with a legend; None or empty goes back to op types."""
        self.overlay = overlay(values, title, log=log) if values else {}

    def add_overlay(self, name: str, values: Mapping[str, Any], *, log: bool = False, show: bool = False) -> None:
        """Offer ``{node: number | str}`` as overlay ``name`` in the widget's colour menu (``show``: colour by it now);
        the same name again replaces it (an active overlay of that name is refreshed too)."""
        ov = overlay(values, name, log=log)
        active = self.overlay.get("title") == name and bool(self.overlay)
        self.overlays = {**self.overlays, name: ov}
        if show or active:
            self.overlay = ov

    def remove_overlay(self, name: str) -> None:
        """Drop overlay ``name`` from the colour menu (back to op types if it was shown)."""
        if self.overlay.get("title") == name:
            self.overlay = {}
        self.overlays = {k: v for k, v in self.overlays.items() if k != name}

    def to_html(self) -> str:
        """A self-contained HTML fragment drawing this graph (overlay, selection and colour menu included) without a
        kernel: the bundle and the graph JSON inline, for reports opened offline."""
        state = {"graph": self.graph, "selected": self.selected, "highlight": self.highlight, "overlay": self.overlay,
                 "overlays": self.overlays, "multiselect": self.multiselect, "height": self.height,
                 "collapse_above": self.collapse_above, "info": {}}
        data = json.dumps(state, separators=(",", ":")).replace("</", "<\\/")
        bundle = json.dumps(self._esm).replace("</", "<\\/")
        div = f"wbg-{uuid.uuid4().hex[:12]}"
        return (f'<div id="{div}" class="wb-graph-static"></div>\n<script type="module">\n'
                f"const state = {data};\nconst handlers = {{}};\n"
                "const model = {get: (k) => state[k], set: (k, v) => { state[k] = v; (handlers['change:' + k] || [])"
                ".forEach((f) => f()); }, on: (e, f) => { (handlers[e] = handlers[e] || []).push(f); }, off: () => {}, "
                "save_changes: () => {}};\n"
                f"const url = URL.createObjectURL(new Blob([{bundle}], {{type: 'text/javascript'}}));\n"
                f"import(url).then((m) => m.default.render({{model, el: document.getElementById('{div}')}}));\n"
                "</script>\n")

    def colour_of(self, name: str) -> str:
        """The fill the front end gives node ``name`` (overlay colour, else its op's colour)."""
        if self.overlay:
            return self.overlay.get("colors", {}).get(name, "#eeeeee")
        node = next(n for n in self.graph["nodes"] if n["id"] == name)
        return self.graph["colors"][node["op"]]
