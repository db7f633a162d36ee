"""The Model tab: summary, a filterable layer table, the graph view and a Check-with-TensorRT button.

Visible state lives in widget values (``summary.value``, ``rows.options``, ``details.value``,
``report.value``, the graph widget's ``graph``/``selected``/``highlight``/``overlay`` traits) so headless tests can read it. Clicking a node in the graph
selects its row; selecting a row marks the node in the graph and shows its details. ``on_select(callback)``
tells others (the dashboard) which node the user picked; ``highlight(names, note=...)`` rings nodes and says why.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import ipywidgets as W

from ..plots.graph_view import attribute_text
from ..session import Session
from ..table import Table
from ..workflows.model import (
    CheckResult,
    ModelSummary,
    TensorSummary,
    check,
    count_text,
    inspect,
    layer_table,
    node_precisions,
)
from .common import Job, Status, on_kernel_thread
from .graph_widget import GraphWidget
from .repair_panel import RepairPanel

if TYPE_CHECKING:
    import onnx

__all__ = ["ModelTab", "ALL_OPS"]

ALL_OPS = "all ops"


def _shape(shape: Sequence[int | str | None] | None) -> str:
    return "?" if shape is None else "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _summary_html(info: ModelSummary) -> str:
    def tensors(kind: str, items: Sequence[TensorSummary]) -> str:
        return "".join(
            f"<tr><td>{kind}</td><td><code>{html.escape(t.name)}</code></td><td>{html.escape(t.dtype)}</td>"
            f"<td>{html.escape(_shape(t.shape))}</td></tr>"
            for t in items
        )

    ops = ", ".join(f"{html.escape(op)} ×{n}" for op, n in sorted(info.ops.items(), key=lambda kv: -kv[1]))
    if info.flops is not None:
        flops = f"{info.flops:,} ({count_text(info.flops, 'FLOPs')})"
    elif info.flops_per_sample is not None:
        flops = f"{info.flops_per_sample:,} per sample ({info.flops_text()}; the batch dim is dynamic)"
    else:
        flops = "unknown (some shapes are not static)"
    return (
        '<div class="wb-summary">'
        '<table class="wb-io"><tr><th></th><th>tensor</th><th>dtype</th><th>shape</th></tr>'
        f"{tensors('input', info.inputs)}{tensors('output', info.outputs)}</table>"
        f"<p><b>nodes</b> {info.nodes} · <b>params</b> {info.params:,} · <b>opset</b> {info.opset} · "
        f"<b>FLOPs</b> {flops}</p><p><b>ops</b> {ops}</p></div>"
    )


def _row_label(rec: Mapping[str, Any]) -> str:
    out = ", ".join(rec["output_shapes"])
    return f"{rec['name']}  ·  {rec['op']}  ·  {out}"


def _details_html(rec: Mapping[str, Any], node: onnx.NodeProto) -> str:
    ins = "".join(f"<li><code>{html.escape(i)}</code></li>" for i in rec["inputs"]) or "<li>-</li>"
    outs = "".join(
        f"<li><code>{html.escape(o)}</code> {html.escape(s)}</li>" for o, s in zip(rec["outputs"], rec["output_shapes"])
    )
    attrs = "".join(
        f"<li>{html.escape(a.name)} = <code>{html.escape(attribute_text(a, limit=400))}</code></li>" for a in node.attribute
    )
    flops = "" if rec["flops"] is None else f" · FLOPs {rec['flops']:,}"
    return (
        f'<div class="wb-node"><b class="wb-node-name">{html.escape(rec["name"])}</b> '
        f'<span class="wb-node-op">{html.escape(rec["op"])}</span><br>'
        f"input shapes: {html.escape(', '.join(rec['input_shapes']) or '-')} · dtype {html.escape(str(rec['dtype']))}"
        f" · params {rec['params']:,}{flops}"
        f"<br>inputs<ul>{ins}</ul>outputs<ul>{outs}</ul>"
        + (f"attributes<ul>{attrs}</ul>" if attrs else "")
        + "</div>"
    )


def _report_html(report: CheckResult) -> str:
    def yes(v: bool | None) -> str:
        return "unknown" if v is None else "yes" if v else "no"

    parts = [
        f'<div class="wb-check"><p><b>parsable</b> {yes(report.parsable)} · '
        f'<b>buildable</b> {yes(report.buildable)}'
        + (f" · backend {html.escape(report.backend)}" if report.backend else "")
        + (f" {html.escape(report.version)}" if report.version else "")
        + (f" · {report.layers} engine layers" if report.layers is not None else "")
        + (f" · built in {report.build_seconds:.2f} s" if report.build_seconds is not None else "")
        + "</p>"
    ]
    if report.unsupported:
        rows = "".join(
            f"<tr><td><code>{html.escape(u.node)}</code></td><td>{html.escape(u.op)}</td>"
            f"<td>{html.escape(u.reason)}</td></tr>"
            for u in report.unsupported
        )
        parts.append(f"<p><b>unsupported</b></p><table><tr><th>node</th><th>op</th><th>reason</th></tr>{rows}</table>")
    if report.crashed:
        parts.append(f"<p class='wb-crash'><b>the builder crashed</b> "
                     f"({html.escape(str(report.crashed.get('signal')))})</p>")
    for key, items in (("errors", report.errors), ("suggestions", report.suggestions), ("notes", report.notes)):
        if items:
            lis = "".join(f"<li>{html.escape(e)}</li>" for e in items)
            parts.append(f"<p><b>{key}</b></p><ul class='wb-{key}'>{lis}</ul>")
    parts.append("</div>")
    return "".join(parts)


class ModelTab:
    """Summary, layer table with filters, graph view, node details and the TensorRT check."""

    title = "Model"

    def __init__(self, session: Session, status: Status) -> None:
        self.session = session
        self.status = status
        on_kernel_thread(session)
        self._model: onnx.ModelProto | None = None
        self._syncing = False
        self.table: Table | None = None
        self._nodes: dict[str, onnx.NodeProto] = {}
        self._highlight: tuple[str, ...] = ()
        self._select_callbacks: list[Callable[[str], None]] = []
        self.last_report: CheckResult | None = None

        self.summary = W.HTML()
        self.filter = W.Text(placeholder="name or op contains…", description="filter", continuous_update=True,
                             layout=W.Layout(width="98%"))
        self.op = W.Dropdown(options=[ALL_OPS], value=ALL_OPS, description="op", layout=W.Layout(width="98%"))
        self.count = W.Label()
        self.rows = W.Select(options=[], rows=14, layout=W.Layout(width="98%"))
        self.details = W.HTML(value="<i>select a layer in the table or click a node in the graph</i>")
        self.shapes = W.Text(placeholder="input:1x3x224x224 (optional)", description="shapes",
                             layout=W.Layout(width="360px"))
        self.check_button = W.Button(description="Check with TensorRT", icon="check", button_style="primary",
                                     layout=W.Layout(width="200px"))
        self.cancel_button = W.Button(description="Cancel", icon="stop", layout=W.Layout(width="100px"))
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, layout=W.Layout(width="140px"))
        self.phase = W.Label()
        self.report = W.HTML()
        self.repair_panel = RepairPanel(session, status)  # a button per repair, after a check
        self.graph = GraphWidget(height=620)  # one widget for the tab's life; refresh sends it the new graph
        self.graph.observe(self._on_graph_select, "selected")
        # the graph takes the width the table column leaves, never more than the page
        self._graph_box = W.Box([self.graph], layout=W.Layout(width="100%"))
        self.highlight_note = W.HTML()  # what the ringed nodes are, when a caller says (e.g. the last edit)

        for w, css in ((self.summary, "wb-model-summary"), (self.filter, "wb-filter"), (self.op, "wb-op"),
                       (self.count, "wb-count"), (self.rows, "wb-rows"), (self.details, "wb-details"),
                       (self.shapes, "wb-shapes"), (self.check_button, "wb-check-button"),
                       (self.report, "wb-report"), (self._graph_box, "wb-graph"),
                       (self.phase, "wb-check-phase"), (self.cancel_button, "wb-check-cancel"),
                       (self.highlight_note, "wb-highlight-note")):
            w.add_class(css)  # stable hooks for the browser test and for styling
        self.filter.observe(lambda _: self._apply_filter(), "value")
        self.op.observe(lambda _: self._apply_filter(), "value")
        self.rows.observe(self._on_row, "value")
        self.job = Job(status, run_button=self.check_button, cancel_button=self.cancel_button,
                       progress=self.progress, phase=self.phase)
        self.check_button.on_click(self._on_check)

        left = W.VBox([self.filter, self.op, self.count, self.rows, self.details],
                      layout=W.Layout(flex="0 0 430px", width="430px", overflow="hidden"))
        self.widget = W.VBox([
            self.summary,
            W.HBox([left, W.VBox([self.highlight_note, self._graph_box],
                                 layout=W.Layout(flex="1 1 0", min_width="320px"))]),
            W.HBox([self.check_button, self.cancel_button, self.shapes, self.progress, self.phase]),
            self.report,
            self.repair_panel.widget,
        ])
        self.refresh()
        session.on_change(lambda _s: self.refresh())

    # --- state from the session ------------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read the session's current model (after an edit, undo, redo or load)."""
        model = self.session.model
        if model is self._model:  # settings changed, not the graph (the session caches models by edits)
            return
        self._model = model
        self.summary.value = _summary_html(inspect(model))
        self.table = layer_table(model)
        self._nodes = {n.name: n for n in model.graph.node}
        keep = self.rows.value
        ops = [ALL_OPS, *sorted(set(self.table.column("op")))]
        self._syncing = True
        try:
            if self.op.value not in ops:
                self.op.value = ALL_OPS
            self.op.options = ops
        finally:
            self._syncing = False
        self._highlight = tuple(n for n in self._highlight if n in self._nodes)
        self.highlight_note.value = ""  # it described the rings on the previous model
        self._syncing = True
        try:
            with self.graph.hold_trait_notifications():
                self.graph.set_model(model)
                self.graph.highlight = list(self._highlight)
                self.graph.add_overlay("precision", node_precisions(model))  # offered in the graph's colour menu
        finally:
            self._syncing = False
        self._apply_filter(keep=keep if keep in self._nodes else None)
        self._show_details(self.rows.value)  # the kept node may have changed (new weights, inputs)
        self.report.value = ""
        self.last_report = None

    # --- filtering and selection --------------------------------------------------------------------

    def visible_rows(self) -> Table:
        """The layer-table rows the current filter text and op dropdown let through."""
        assert self.table is not None
        text = self.filter.value.strip().lower()
        op = self.op.value
        return self.table.where(
            lambda r: (op in (None, ALL_OPS) or r["op"] == op)
            and (not text or text in r["name"].lower() or text in r["op"].lower())
        )

    def _apply_filter(self, keep: str | None = None) -> None:
        if self._syncing or self.table is None:
            return
        shown = self.visible_rows()
        keep = keep if keep is not None else self.rows.value
        options = [(_row_label(r), r["name"]) for r in shown.records()]
        names = {name for _, name in options}
        self._syncing = True
        try:
            self.rows.options = options
            self.rows.value = keep if keep in names else None
        finally:
            self._syncing = False
        self.count.value = f"{len(shown)} of {len(self.table)} layers"
        if keep not in names:
            self._show_details(None)

    def _on_row(self, change: dict[str, Any]) -> None:
        if not self._syncing:
            self._show_details(change["new"])
            if change["new"] is not None:
                self._selected_by_user(change["new"])

    def select(self, name: str | None) -> None:
        """Select a node by name: its row in the table, its marker in the graph, its details."""
        if name is not None and name not in self._nodes:
            return
        if name is not None and name not in {v for _, v in self.rows.options}:
            self._syncing = True
            try:
                self.filter.value = ""
                self.op.value = ALL_OPS
            finally:
                self._syncing = False
            self._apply_filter(keep=name)
        self._syncing = True
        try:
            self.rows.value = name
        finally:
            self._syncing = False
        self._show_details(name)

    def _show_details(self, name: str | None) -> None:
        if name is None or self.table is None:
            self.details.value = "<i>select a layer in the table or click a node in the graph</i>"
        else:
            rec = next(r for r in self.table.records() if r["name"] == name)
            self.details.value = _details_html(rec, self._nodes[name])
        self._mark_selected(name)

    def _mark_selected(self, name: str | None) -> None:
        """Select ``name`` in the graph widget (its front end highlights it and centres the view on it)."""
        want = [name] if name else []
        if self.graph.selected != want:
            self._syncing = True
            try:
                self.graph.selected = want
            finally:
                self._syncing = False

    def _on_graph_select(self, change: dict[str, Any]) -> None:
        """A click in the graph (the front end set ``selected``): select the node's row and tell subscribers."""
        if self._syncing or not change["new"]:
            return
        name = change["new"][-1]
        self.select(name)
        if self.selected == name:
            self._selected_by_user(name)

    def on_select(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(node_name)`` when the user picks a node (a row or a click in the graph; not
        :meth:`select` from code); returns a function that unsubscribes it."""
        self._select_callbacks.append(callback)
        return lambda: self._select_callbacks.remove(callback) if callback in self._select_callbacks else None

    def _selected_by_user(self, name: str) -> None:
        for callback in list(self._select_callbacks):
            callback(name)

    @property
    def selected(self) -> str | None:
        """The node selected in the table (None: none)."""
        return self.rows.value

    # --- hooks for other tabs -----------------------------------------------------------------------

    def highlight(self, names: Iterable[str], note: str = "") -> None:
        """Ring the given nodes in the graph (others pass e.g. the slowest or most divergent layers); ``note``
        (plain text) is shown above the graph to say what the rings are."""
        self._highlight = tuple(n for n in names if n in self._nodes)
        self.highlight_note.value = f'<span class="wb-note">{html.escape(note)}</span>' if note else ""
        self.graph.highlight = list(self._highlight)

    def color_by(self, values: Mapping[str, Any] | None, title: str = "") -> None:
        """Colour nodes by a {node: value} mapping (time, error, precision); None goes back to op types."""
        self.graph.set_overlay(values, title)

    # --- TensorRT check -----------------------------------------------------------------------------

    def _on_check(self, _button: Any = None) -> None:
        """Run the check in the background (the builder runs in a child process; the kernel stays responsive); the
        report is shown on the kernel thread when it is in."""
        self.report.value = ""
        self.last_report = None
        self.repair_panel.clear()
        model, shapes = self.session.model, self.shapes.value.strip() or None
        self.job.start("checking the model with TensorRT",
                       lambda job: check(model, shapes=shapes, progress=job.report, cancel=job.cancel_event),
                       lambda result: self._show_check(model, result))

    def _show_check(self, model: onnx.ModelProto, result: CheckResult) -> str:
        if self.session.model is not model:
            self.status.ok("the model changed during the check, so its report is not shown: run it again")
            return "outdated"
        self.report.value = _report_html(result)
        self.repair_panel.show(model)
        self.last_report = result
        self.highlight([u.node for u in result.unsupported if u.node])
        self.status.ok(f"TensorRT check: the model {result.verdict}"
                       + (f" ({len(result.unsupported)} unsupported node(s))" if result.unsupported else ""))
        return result.verdict
