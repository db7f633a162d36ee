"""The Profile tab: per-layer timings from ONNX Runtime (this CPU) or imported trtexec JSON, charts, comparison.

Profiles are kept by label in ``profiles`` ({label: timing Table}). Visible state lives in widget values so
headless tests can assert it: ``shown.options``/``shown.value`` (the profile on display), ``summary.value``,
``table_html.value`` (its slowest layers), ``chart`` (a FigureWidget), ``compare_with.options``,
``compare_html.value``, ``compare_totals_chart``, ``precision_chart`` and ``compare_chart``. The ONNX Runtime
profile runs as ``job`` (a :class:`~workbench.ui.common.Job`: progress, Cancel; ``wait()`` joins it).

Each chart is created when it is first needed (None until then) and refilled in place afterwards (see
:func:`workbench.ui.common.refill`). Engines built in the Build tab can be opened too: their layers (what TensorRT
fused, mapped to ONNX nodes) appear with zero times, since no GPU runs them here.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as W
import plotly.graph_objects as go

from ..plots.graph_data import engine_graph
from ..plots.profile import (
    compare_layers,
    compare_totals,
    group_bar,
    layer_bar,
    precision_mix,
    time_treemap,
    timing_graph,
)
from ..table import Table
from ..workflows import build as wf
from .common import Job, Status, refill
from .graph_widget import GraphWidget

__all__ = ["ProfileTab", "VIEWS"]

VIEWS = ("layers", "op type", "precision", "treemap", "graph", "engine graph")


# The tables' text is selectable and copyable: stated explicitly, so no container's user-select (a tab bar's, a
# button's, a slider's are "none" in the widget CSS) is inherited by them.
SELECTABLE_CSS = ("<style>.wb-selectable,.wb-selectable *{user-select:text;-webkit-user-select:text;cursor:text}"
                  "</style>")


def _selectable(table_html: str) -> str:
    """``table_html`` in a box whose text the user can select and copy."""
    return f'<div class="wb-selectable">{SELECTABLE_CSS}{table_html}</div>'


def _rows_html(table: Table, top: int, tactics: dict[str, str | None] | None = None) -> str:
    rows = table.sort_by("median_ms", descending=True).head(top).records()
    tactic_head = "<th>tactic</th>" if tactics else ""

    def tactic(r: dict[str, Any]) -> str:
        return f"<td><code>{html.escape(tactics.get(r['name']) or '')}</code></td>" if tactics else ""

    body = "".join(
        f"<tr><td>{html.escape(r['name'])}</td><td>{html.escape(', '.join(r['onnx_nodes']))}</td>"
        f"<td>{html.escape(r['type'])}</td><td>{r['precision'] or '?'}</td><td>{r['median_ms']:.4g}</td>"
        f"<td>{r['pct']:.1f}</td>{tactic(r)}</tr>" for r in rows)
    # long fused-layer names, node lists and tactics wrap inside the page; a scroller catches what still cannot fit
    return ('<div class="wb-profile-rows-box wb-selectable" style="overflow-x:auto;max-width:100%">' + SELECTABLE_CSS +
            "<style>.wb-profile-rows td{overflow-wrap:anywhere;max-width:28em;vertical-align:top}</style>"
            '<table class="wb-profile-rows"><thead><tr><th>layer</th><th>ONNX nodes</th><th>type</th>'
            f"<th>precision</th><th>median ms</th><th>%</th>{tactic_head}</tr></thead><tbody>{body}</tbody></table></div>")


class ProfileTab:
    """Profile the current model with ONNX Runtime, import TensorRT timings, plot and compare them."""

    title = "Profile"

    def __init__(self, session: Any, status: Status) -> None:
        self.session = session
        self.status = status
        self.profiles: dict[str, Table] = {}
        self._rendering_off = False
        self.tactics: dict[str, dict[str, str | None]] = {}  # label -> {layer: tactic} for TensorRT profiles
        self._select_callbacks: list[Any] = []  # on_select: ONNX nodes picked in a graph view (the dashboard's)
        self._result_callbacks: list[Any] = []  # on_result: after a profile is added

        # ONNX Runtime on this CPU
        self.optimize = W.Checkbox(value=True, description="ORT graph optimisations", indent=False)
        self.iterations = W.BoundedIntText(value=20, min=1, max=10000, description="iterations",
                                           layout=W.Layout(width="180px"))
        self.batch = W.BoundedIntText(value=1, min=1, max=4096, description="batch", layout=W.Layout(width="160px"))
        self.shapes = W.Text(placeholder="input:1x3x64x64 for dynamic dims (optional)", description="shapes",
                             layout=W.Layout(width="360px"))
        self.data = W.Text(placeholder="a folder of images/.wav or an .npz (optional; else random data of the shapes)",
                           description="data", layout=W.Layout(width="560px"))
        self.shapes_used = W.Label(value="")  # the input shapes the last ONNX Runtime profile ran with
        self.ort_button = W.Button(description="Profile with ONNX Runtime", icon="clock-o", button_style="primary",
                                   layout=W.Layout(width="auto", min_width="230px"))
        self.cancel_button = W.Button(description="Cancel", icon="stop", disabled=True)
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, layout=W.Layout(width="200px"))
        self.phase = W.Label(value="")
        self.job = Job(status, run_button=self.ort_button, cancel_button=self.cancel_button, progress=self.progress,
                       phase=self.phase)
        # trtexec files
        self.layers_path = W.Text(placeholder="G.json from trtexec --exportLayerInfo", description="layer info",
                                  layout=W.Layout(width="560px"))
        self.profile_path = W.Text(placeholder="P.json from trtexec --exportProfile", description="profile",
                                   layout=W.Layout(width="560px"))
        self.label = W.Text(placeholder="label, e.g. a100-fp16", description="label", layout=W.Layout(width="300px"))
        self.map_to_model = W.Checkbox(value=False, description="check layer names against the current model",
                                       indent=False, layout=W.Layout(width="auto"))
        self.import_button = W.Button(description="Import trtexec JSON", icon="upload", layout=W.Layout(width="230px"))
        # engines built in the Build tab
        self.engines = W.Dropdown(options=[], description="engine", layout=W.Layout(width="70%"))
        self.engine_button = W.Button(description="Open engine layers", icon="sitemap", layout=W.Layout(width="230px"))
        reason = wf.gpu_status()
        self.gpu_note = W.HTML(
            "<i>No GPU here: TensorRT engines cannot be timed on this machine. Time them on a device "
            "(trtexec --exportLayerInfo/--exportProfile) and import the files; an engine built here shows its "
            "layers with zero times.</i>" if reason else "")
        # display
        self.shown = W.Dropdown(options=[], description="profile", layout=W.Layout(width="420px"))
        self.view = W.ToggleButtons(options=VIEWS, value="layers")
        self.top = W.IntSlider(value=20, min=5, max=100, description="top N")
        self.summary = W.HTML()
        self.table_html = W.HTML()
        self.chart: go.FigureWidget | None = None  # created by the first profile shown
        self.graph: GraphWidget | None = None  # the "graph" view: the model coloured by time (created on first use)
        # the "engine graph" view: an engine's fused layers and reformats coloured by time; selecting layers rings
        # their ONNX nodes in the "graph" view and lists them in `linked`
        self.engine_graph: GraphWidget | None = None
        self.engine_infos: dict[str, Any] = {}  # label -> EngineInfo of the profiles that came with layer info
        self.linked = W.HTML()
        self._chart_box = W.Box([], layout=W.Layout(width="100%"))
        # comparison
        self.compare_with = W.SelectMultiple(options=[], description="compare", rows=4, layout=W.Layout(width="420px"))
        self.compare_button = W.Button(description="Compare", icon="balance-scale", layout=W.Layout(width="160px"))
        self.compare_html = W.HTML()
        self.compare_totals_chart: go.FigureWidget | None = None  # created by the first comparison
        self.precision_chart: go.FigureWidget | None = None
        self.compare_chart: go.FigureWidget | None = None
        self._compare_box = W.VBox([])

        for w, css in ((self.ort_button, "wb-profile-ort"), (self.import_button, "wb-profile-import"),
                       (self.summary, "wb-profile-summary"), (self.compare_button, "wb-profile-compare")):
            w.add_class(css)
        self.ort_button.on_click(self._on_ort)
        self.import_button.on_click(self._on_import)
        self.engine_button.on_click(self._on_engine)
        self.compare_button.on_click(self._on_compare)
        self.shown.observe(lambda _: self._render(), names="value")
        self.view.observe(lambda _: self._render(), names="value")
        self.top.observe(lambda _: self._render(), names="value")

        self.widget = W.VBox([
            W.HTML("<b>ONNX Runtime (this CPU)</b>"),
            W.HBox([self.ort_button, self.optimize, self.iterations, self.batch, self.shapes]),
            W.HBox([self.data, self.shapes_used]),
            W.HBox([self.cancel_button, self.progress, self.phase]),
            W.HTML("<b>TensorRT</b>"), self.gpu_note,
            W.HBox([W.VBox([self.layers_path, self.profile_path]), W.VBox([self.label, self.map_to_model])]),
            self.import_button,
            W.HBox([self.engines, self.engine_button]),
            W.HTML("<hr>"),
            W.HBox([self.shown, self.top]), self.view, self.summary, self._chart_box, self.table_html,
            W.HTML("<hr><b>Compare</b> (matched by ONNX node)"),
            W.HBox([self.compare_with, self.compare_button]), self.compare_html, self._compare_box,
        ])
        self.refresh_engines()
        self.load_saved()
        if hasattr(session, "on_change"):  # an edit/undo changes the digest: offer that model's saved profiles
            session.on_change(lambda _s: self.load_saved())

    # --- actions -----------------------------------------------------------------------------------------

    def _on_ort(self, _button: Any = None) -> None:
        """Profile in the background (``job``): the controls are read here, the profile runs on a fork of the
        session (the model and digest it is saved under stay those of the click), :meth:`_profiled` shows it."""
        fork = self.session.fork()
        data, shapes = self.data.value.strip() or None, self.shapes.value
        batch, iterations, optimize = int(self.batch.value), int(self.iterations.value), bool(self.optimize.value)
        label = self._unique(f"ort-cpu{'' if optimize else '-noopt'}")
        self.job.start("profiling with ONNX Runtime",
                       lambda job: wf.profile_onnxruntime(fork, data=data, shapes=shapes, batch=batch,
                                                          iterations=iterations, optimize=optimize, save=True,
                                                          label=label, progress=job.report, cancel=job.cancel_event),
                       on_done=self._profiled)

    def _profiled(self, result: wf.OrtProfile) -> str:
        """Show an ONNX Runtime profile (on the kernel thread); the final phase label."""
        self.shapes_used.value = "ran with " + ", ".join(
            f"{k} {'x'.join(map(str, v)) or 'scalar'}" for k, v in result.shapes.items())
        label = self._add(result.label, result.table)
        return f"done: {label}"

    def wait(self, timeout: float | None = 300.0) -> None:
        """Block until a running ONNX Runtime profile has ended and been shown (headless tests, scripts)."""
        self.job.wait(timeout)

    def _on_import(self, _button: Any = None) -> None:
        with self.status.guard("importing trtexec JSON"):
            result = wf.import_trtexec(self.session, self.layers_path.value.strip() or None,
                                       self.profile_path.value.strip() or None, label=self.label.value.strip() or None,
                                       map_to_model=self.map_to_model.value)
            label = self._unique(result.label)
            if result.info is not None:
                self.engine_infos[label] = result.info
            self._add(label, result.table, result.tactics)

    def refresh_engines(self) -> None:
        """Re-list the engines built for this session (the Build tab's cache)."""
        found = wf.engines(self.session)
        keep = self.engines.value
        self.engines.options = [(f"{e.name} · {e.backend} · {e.layers} layers", e.path) for e in found]
        if found:
            self.engines.value = keep if keep in {e.path for e in found} else found[0].path

    def _on_engine(self, _button: Any = None) -> None:
        self.refresh_engines()
        with self.status.guard("reading engine layers"):
            result = wf.open_engine(self.session, self.engines.value or "")
            label = self._unique(result.label)
            self.engine_infos[label] = result.info
            self._add(label, result.table, result.tactics)

    def load_saved(self) -> None:
        """Reload the ONNX Runtime profiles saved for the session's current model (same digest)."""
        for saved in wf.saved_profiles(self.session):
            if saved.label not in self.profiles:
                self._add(saved.label, saved.table, announce=False)

    def _unique(self, label: str) -> str:
        """``label``, or ``label-2``, ``label-3`` ... when a profile already has it."""
        base, k = label, 2
        while label in self.profiles:
            label, k = f"{base}-{k}", k + 1
        return label

    def _add(self, label: str, table: Table, tactics: dict[str, str | None] | None = None, *,
             announce: bool = True) -> str:
        label = self._unique(label)
        self.profiles[label] = table
        if tactics and any(tactics.values()):
            self.tactics[label] = tactics
        self._rendering_off = True  # one render below, not one per widget change (each is a round of plotly messages)
        try:
            self.shown.options = list(self.profiles)
            self.compare_with.options = list(self.profiles)
            self.shown.value = label
        finally:
            self._rendering_off = False
        self._render()
        for callback in list(self._result_callbacks):
            callback()
        if announce:
            self.status.ok(f"{label}: {len(table)} layers, {wf.summarize(table).total_ms:.4g} ms")
        return label

    def _on_compare(self, _button: Any = None) -> None:
        with self.status.guard("comparing profiles"):
            picked = {label: self.profiles[label] for label in self.compare_with.value}
            result = wf.compare(picked)
            self.comparison = result.layers
            labels = list(picked)
            rows = sorted(self.comparison.records(), key=lambda r: -max(r[f"{lab}_ms"] for lab in labels))
            top = Table(self.comparison.columns, tuple(tuple(r.values()) for r in rows[: self.top.value]))
            self.compare_html.value = (_selectable(result.summary._repr_html_()) + "<p><b>Per layer</b> (matched by "
                                       f"ONNX node; delta = {html.escape(labels[-1])} - {html.escape(labels[0])})</p>"
                                       + _selectable(top._repr_html_()))
            first = self.compare_chart is None
            self.compare_totals_chart = refill(self.compare_totals_chart, compare_totals(picked))
            self.precision_chart = refill(self.precision_chart, precision_mix(picked))
            self.compare_chart = refill(self.compare_chart, compare_layers(picked, top=self.top.value))
            if first:
                self._compare_box.children = (self.compare_totals_chart, self.precision_chart, self.compare_chart)

    # --- display -----------------------------------------------------------------------------------------

    def _show_engine_graph(self, label: str, table: Table) -> None:
        info = self.engine_infos.get(label)
        if info is None:
            self._chart_box.children = (self.linked,)
            self.linked.value = ("<i>this profile has no engine layer information (import trtexec's "
                                 "--exportLayerInfo JSON, or open an engine built here)</i>")
            return
        if self.engine_graph is None:
            self.engine_graph = GraphWidget(height=600)
            self.engine_graph.observe(lambda _c: self._link_layers(), "selected")
            self.engine_graph.observe(lambda _c: self._publish(self.linked_nodes), "selected")
        times = dict(zip(table.column("name"), table.column("median_ms")))
        with self.engine_graph.hold_trait_notifications():
            self.engine_graph.set_graph(engine_graph(info, title=f"{label}: engine layers"))
            self.engine_graph.set_overlay(times, "median ms")
        self._chart_box.children = (self.engine_graph, self.linked)
        self._link_layers()

    def on_select(self, callback: Any) -> None:
        """Call ``callback(onnx_nodes)`` when the user picks a node in the graph view or an engine layer in the
        engine graph (its ONNX nodes)."""
        self._select_callbacks.append(callback)

    def on_result(self, callback: Any) -> None:
        """Call ``callback()`` after each profile added (the joined view re-reads the profiles)."""
        self._result_callbacks.append(callback)

    def _publish(self, names: list[str]) -> None:
        if names:  # a redraw dropping the selection is not a pick
            for callback in list(self._select_callbacks):
                callback(list(names))

    @property
    def linked_nodes(self) -> list[str]:
        """ONNX nodes of the engine layers selected in the engine graph (in layer order, no repeats)."""
        if self.engine_graph is None:
            return []
        links = self.engine_graph.graph.get("links", {})
        return list(dict.fromkeys(n for layer in self.engine_graph.selected for n in links.get(layer, ())))

    def _link_layers(self) -> None:
        nodes = self.linked_nodes
        layers = self.engine_graph.selected if self.engine_graph is not None else []
        self.linked.value = "" if not layers else (
            f"<div class='wb-linked'><b>{html.escape(', '.join(layers))}</b> fused ONNX node(s): "
            + (", ".join(f"<code>{html.escape(n)}</code>" for n in nodes) or "none") + "</div>")
        if self.graph is not None:  # ringed in the model graph view
            self.graph.highlight = [n for n in nodes if n in set(self.graph.node_names)]

    def _render(self) -> None:
        if self._rendering_off:
            return
        label = self.shown.value
        if label is None or label not in self.profiles:
            return
        table = self.profiles[label]
        summary = wf.summarize(table)
        counts = ", ".join(f"{k} {v}" for k, v in summary.precisions.items())
        self.summary.value = (f"<b>{html.escape(label)}</b>: {len(table)} layers · total {summary.total_ms:.4g} ms "
                              f"(sum of per-layer medians) · {html.escape(counts)}")
        top = self.top.value
        view = self.view.value
        model = self.session.model
        names = {n.name for n in model.graph.node}
        on_model = any(n in names for ns in table.column("onnx_nodes") for n in ns)
        if view == "engine graph":
            self._show_engine_graph(label, table)
            self.table_html.value = _rows_html(table, top, self.tactics.get(label))
            return
        self.linked.value = ""
        if view == "layers":
            fig = layer_bar(table, top=top)
        elif view == "op type":
            fig = group_bar(table, "op_type", model=model if on_model else None)
        elif view == "precision":
            fig = group_bar(table, "precision")
        elif view == "treemap":
            fig = time_treemap(table, model=model if on_model else None)
        else:
            data = timing_graph(model, table, title=None if on_model else
                                "this profile's layers do not name the current model's nodes")
            if self.graph is None:
                self.graph = GraphWidget(height=600)
                self.graph.observe(lambda c: self._publish(c["new"]), "selected")
            with self.graph.hold_trait_notifications():
                self.graph.set_graph(data["graph"])
                self.graph.overlay = data["overlay"]
            self._chart_box.children = (self.graph,)
            self.table_html.value = _rows_html(table, top, self.tactics.get(label))
            return
        self.chart = refill(self.chart, fig)
        if self._chart_box.children != (self.chart,):
            self._chart_box.children = (self.chart,)
        self.table_html.value = _rows_html(table, top, self.tactics.get(label))
