"""The Edit tab: select nodes, pick an action, preview what changes, apply, undo/redo, see the recipe grow.

Visible state lives in widget values (``nodes.options``/``nodes.value``, ``preview_html.value``,
``recipe_json.value``, ``history.options``, button ``disabled`` flags) so headless tests can assert it.
``selection`` (selected node names) and ``last_change`` (nodes added/removed/changed by the last
step) are what the graph view highlights: the tab's own graph rings the selection and colours the nodes
the last step added or changed; clicking a node there toggles it in the selection. Each button makes
one Session call inside ``status.guard``.
"""

from __future__ import annotations

import fnmatch
import html
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipywidgets as W

from .. import recipe as R
from ..errors import EditError
from ..session import EditPreview, NodeChange, Session
from ..specs import Dim, parse_specs
from ..workflows.model import history_labels
from .common import Status, on_kernel_thread
from .graph_widget import GraphWidget

__all__ = ["EditTab", "ACTIONS", "GRAPH_NODES", "build_edits", "match_nodes", "parse_shapes"]

GRAPH_NODES = 600  # draw the graph by default up to this many nodes (the checkbox turns it on for bigger ones)

# action label -> (needs selected nodes, needs which text fields)
ACTIONS: dict[str, tuple[bool, tuple[str, ...]]] = {
    "bypass node": (True, ()),
    "remove node (and what depends on it)": (True, ()),
    "replace op / attributes": (True, ("op", "attributes")),
    "insert node after output": (True, ("op", "name", "attributes")),
    "rename node": (True, ("name",)),
    "add node outputs as graph outputs": (True, ()),
    "extract subgraph (inputs -> outputs)": (False, ("inputs", "outputs")),
    "set input shapes": (False, ("shapes",)),
    "rename tensor": (False, ("inputs", "name")),
    "fold constants": (False, ()),
    "fuse BatchNorm into Conv/Gemm": (False, ()),
    "remove Identity/Dropout": (False, ()),
    "remove dead nodes": (False, ()),
    "fold If with constant condition": (False, ()),
    "dequantize integer ops": (False, ()),
}

_WHOLE_GRAPH: dict[str, Callable[[], R.Edit]] = {
    "fold constants": R.FoldConstants,
    "fuse BatchNorm into Conv/Gemm": R.FuseBatchNorm,
    "remove Identity/Dropout": R.RemoveIdentity,
    "remove dead nodes": R.RemoveDeadNodes,
    "fold If with constant condition": R.FoldConstantIf,
    "dequantize integer ops": R.DequantizeIntegerOps,
}


def match_nodes(rows: Sequence[Mapping[str, Any]], pattern: str) -> list[str]:
    """Names of nodes whose name or op matches ``pattern`` (glob with * ?, else case-insensitive substring)."""
    pattern = pattern.strip()
    if not pattern:
        return []
    glob = any(c in pattern for c in "*?[")
    out = []
    for r in rows:
        name, op = str(r["name"]), str(r["op"])
        if glob:
            hit = fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(op, pattern)
        else:
            p = pattern.lower()
            hit = p in name.lower() or p == op.lower()
        if hit:
            out.append(name)
    return out


def _split(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.replace("\n", ",").split(",") if t.strip())


def parse_shapes(text: str) -> dict[str, tuple[Dim, ...]]:
    """``input:1x3xHxW other:?x8`` -> {"input": (1, 3, "H", "W"), "other": (None, 8)}: the SPEC grammar of
    :mod:`workbench.specs` (inputs separated by spaces or ``;``) with one shape per input, ``?`` for a dynamic dim
    and a word for a symbolic one."""
    return {s.name: s.shape for s in parse_specs(text, ranges=False, symbolic=True, what="shapes")}


def _attributes(text: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EditError(f"attributes are not valid JSON: {exc}", hint='write e.g. {"alpha": 0.1, "axis": 1}') from exc
    if not isinstance(value, dict):
        raise EditError("attributes must be a JSON object", hint='write e.g. {"alpha": 0.1}')
    return value


def build_edits(action: str, nodes: Sequence[str], fields: Mapping[str, str],
                outputs_of: Mapping[str, Sequence[str]] | None = None) -> list[R.Edit]:
    """Turn the form (action, selected nodes, text fields) into recipe edits; bad input is an EditError."""
    if action not in ACTIONS:
        raise EditError(f"unknown action {action!r}", hint=f"pick one of {list(ACTIONS)}")
    needs_nodes, _ = ACTIONS[action]
    if needs_nodes and not nodes:
        raise EditError(f"'{action}' needs at least one selected node",
                        hint="select nodes in the list (or type a name/op pattern and press Select)")
    if action in _WHOLE_GRAPH:
        return [_WHOLE_GRAPH[action]()]
    op, name = fields.get("op", "").strip(), fields.get("name", "").strip()
    if action == "bypass node":
        return [R.BypassNode(node=n) for n in nodes]
    if action == "remove node (and what depends on it)":
        return [R.RemoveNode(node=n) for n in nodes]
    if action == "replace op / attributes":
        return [R.ReplaceNode(node=n, op=op or None, attributes=_attributes(fields.get("attributes", "")))
                for n in nodes]
    if action == "insert node after output":
        if not op:
            raise EditError("insert needs an op type", hint="type an ONNX op such as Relu in the 'op' box")
        outs = outputs_of or {}
        edits: list[R.Edit] = []
        for i, n in enumerate(nodes):
            tensor = (outs.get(n) or [n])[0]
            edits.append(R.InsertNode(tensor=tensor, op=op, name=(f"{name}_{i}" if name and len(nodes) > 1 else name),
                                      attributes=_attributes(fields.get("attributes", ""))))
        return edits
    if action == "rename node":
        if len(nodes) != 1 or not name:
            raise EditError("rename needs exactly one selected node and a new name",
                            hint="select one node and type its new name in the 'name' box")
        return [R.RenameNode(node=nodes[0], new_name=name)]
    if action == "add node outputs as graph outputs":
        outs = outputs_of or {}
        return [R.AddOutputs(tensors=tuple(t for n in nodes for t in (outs.get(n) or [])))]
    if action == "extract subgraph (inputs -> outputs)":
        return [R.ExtractSubgraph(inputs=_split(fields.get("inputs", "")), outputs=_split(fields.get("outputs", "")))]
    if action == "set input shapes":
        return [R.SetShapes(shapes=parse_shapes(fields.get("shapes", "")))]
    if action == "rename tensor":
        tensors = _split(fields.get("inputs", ""))
        if len(tensors) != 1 or not name:
            raise EditError("rename tensor needs one tensor name (in 'inputs') and a new name",
                            hint="type the tensor in 'inputs' and its new name in 'name'")
        return [R.RenameTensor(tensor=tensors[0], new_name=name)]
    raise AssertionError(action)  # pragma: no cover - every action is handled above


def _diff_html(head: str, diff: NodeChange | EditPreview) -> str:
    def items(key: str, names: tuple[str, ...]) -> str:
        shown = ", ".join(f"<code>{html.escape(n)}</code>" for n in names[:40])
        more = f" … and {len(names) - 40} more" if len(names) > 40 else ""
        return f'<li class="wb-{key}"><b>{key}</b> ({len(names)}): {shown or "-"}{more}</li>'

    counts = f" · nodes {diff.nodes_before} → {diff.nodes_after}" if isinstance(diff, EditPreview) else ""
    return (f'<div class="wb-diff"><b>{html.escape(head)}</b>{counts}<ul>{items("added", diff.added)}'
            f'{items("removed", diff.removed)}{items("changed", diff.changed)}</ul></div>')


class EditTab:
    """Graph surgery on the session's model, recorded as a replayable recipe."""

    title = "Edit"

    def __init__(self, session: Session, status: Status) -> None:
        self.session = session
        self.status = status
        on_kernel_thread(session)
        self.last_preview: EditPreview | None = None
        self._refreshing = False
        self._outputs: dict[str, list[str]] = {}
        self._select_callbacks: list[Callable[[list[str]], object]] = []  # on_select: the dashboard's selection signal

        # the pattern box takes what the left column leaves; the buttons keep their labels whole
        self.pattern = W.Text(placeholder="name or op, e.g. Relu or block2.*", description="match",
                              layout=W.Layout(width="300px", flex="0 1 auto", min_width="160px"))
        self.select_button = W.Button(description="Select", icon="filter",
                                      layout=W.Layout(width="auto", flex="0 0 auto"))
        self.clear_button = W.Button(description="Clear", layout=W.Layout(width="auto", flex="0 0 auto"))
        self.nodes = W.SelectMultiple(options=[], rows=14, layout=W.Layout(width="100%"))
        self.count = W.Label()
        self.action = W.Dropdown(options=list(ACTIONS), value="bypass node", description="action",
                                 layout=W.Layout(width="380px"))
        self.op = W.Text(placeholder="op type, e.g. Relu", description="op", layout=W.Layout(width="300px"))
        self.name = W.Text(placeholder="new node/tensor name", description="name", layout=W.Layout(width="300px"))
        self.attributes = W.Text(placeholder='{"alpha": 0.1}', description="attributes",
                                 layout=W.Layout(width="380px"))
        self.inputs = W.Text(placeholder="tensor names, comma separated", description="inputs",
                             layout=W.Layout(width="380px"))
        self.outputs = W.Text(placeholder="tensor names, comma separated", description="outputs",
                              layout=W.Layout(width="380px"))
        self.shapes = W.Text(placeholder="input:1x3x224x224 other:?xN (? dynamic, N symbolic)", description="shapes",
                             layout=W.Layout(width="380px"))
        self.preview_button = W.Button(description="Preview", icon="eye", layout=W.Layout(width="100px"))
        self.apply_button = W.Button(description="Apply", icon="check", button_style="primary",
                                     layout=W.Layout(width="100px"))
        self.undo_button = W.Button(description="Undo", icon="undo", layout=W.Layout(width="90px"))
        self.redo_button = W.Button(description="Redo", icon="repeat", layout=W.Layout(width="90px"))
        self.preview_html = W.HTML()
        self.change_html = W.HTML()
        self.history = W.Select(options=[], rows=8, layout=W.Layout(width="100%"))
        self.recipe_json = W.Textarea(value="", disabled=True, layout=W.Layout(width="100%", height="260px"))
        self.recipe_path = W.Text(value="recipe.json", description="recipe", layout=W.Layout(width="380px"))
        self.save_button = W.Button(description="Save recipe", icon="save", layout=W.Layout(width="120px"))
        self.load_button = W.Button(description="Load recipe", icon="upload", layout=W.Layout(width="120px"))
        self.export_path = W.Text(value="edited.onnx", description="model", layout=W.Layout(width="380px"))
        self.export_button = W.Button(description="Export ONNX", icon="download", layout=W.Layout(width="auto"))
        self.show_graph = W.Checkbox(value=len(session.model.graph.node) <= GRAPH_NODES, description="graph",
                                     indent=False, layout=W.Layout(width="90px"))
        self.graph = GraphWidget(multiselect=True, height=560)  # a click toggles the node in the selection
        self.graph.observe(self._on_graph_select, "selected")
        self._graph_digest: str | None = None
        self._graph_syncing = False

        self.select_button.on_click(lambda _b: self.select_matching())
        self.clear_button.on_click(lambda _b: self.select([]))
        self.nodes.observe(lambda _c: self._on_selection(), "value")
        self.show_graph.observe(lambda _c: self._draw_graph(), "value")
        self.history.observe(self._on_history, "value")
        self.action.observe(lambda _c: self._show_fields(), "value")
        self.preview_button.on_click(lambda _b: self._on_preview())
        self.apply_button.on_click(lambda _b: self._on_apply())
        self.undo_button.on_click(lambda _b: self._on_undo())
        self.redo_button.on_click(lambda _b: self._on_redo())
        self.save_button.on_click(lambda _b: self._on_save())
        self.load_button.on_click(lambda _b: self._on_load())
        self.export_button.on_click(lambda _b: self._on_export())

        self._fields = {"op": self.op, "name": self.name, "attributes": self.attributes, "inputs": self.inputs,
                        "outputs": self.outputs, "shapes": self.shapes}
        left = W.VBox([W.HBox([self.pattern, self.select_button, self.clear_button]),
                       W.HBox([self.count, self.show_graph]), self.nodes],
                      layout=W.Layout(width="45%", min_width="340px"))
        form = W.VBox([self.action, *self._fields.values(),
                       W.HBox([self.preview_button, self.apply_button, self.undo_button, self.redo_button]),
                       self.preview_html, self.change_html], layout=W.Layout(width="55%"))
        right = W.VBox([W.HTML("<b>history</b>"), self.history, W.HTML("<b>recipe</b>"), self.recipe_json,
                        W.HBox([self.recipe_path, self.save_button, self.load_button]),
                        W.HBox([self.export_path, self.export_button])])
        self.widget = W.VBox([W.HBox([left, form]), self.graph, right])
        self._show_fields()
        self.refresh()
        session.on_change(lambda _s: self.refresh())

    # --- what the dashboard reads -----------------------------------------------------------------

    @property
    def selection(self) -> list[str]:
        """Selected node names (for the graph view to highlight)."""
        return list(self.nodes.value)

    @property
    def last_change(self) -> NodeChange:
        """Nodes ``added``/``removed``/``changed`` by the session's last step, with its ``action`` and ``edit``."""
        return self.session.last_change

    def select(self, names: Sequence[str]) -> None:
        """Select nodes by name (names not in the model are ignored)."""
        known = set(self._outputs)
        self.nodes.value = tuple(n for n in names if n in known)

    def on_select(self, callback: Callable[[list[str]], object]) -> None:
        """Call ``callback(names)`` when the selection changes (not when a refresh keeps it)."""
        self._select_callbacks.append(callback)

    def select_matching(self) -> None:
        """Select the nodes whose name or op matches the pattern box (see :func:`match_nodes`)."""
        rows = [{"name": n.name, "op": n.op_type} for n in self.session.model.graph.node]
        self.select(match_nodes(rows, self.pattern.value))

    # --- refresh from the session -----------------------------------------------------------------

    def refresh(self) -> None:
        """Show the session's current model, recipe and history (after an edit, undo, redo or load)."""
        model = self.session.model
        kept = self.selection
        self._outputs = {n.name: list(n.output) for n in model.graph.node}
        callbacks, self._select_callbacks = self._select_callbacks, []  # keeping the selection is no new pick
        try:
            self.nodes.options = [(f"{n.name}  ·  {n.op_type}", n.name) for n in model.graph.node]
            self.select(kept)
        finally:
            self._select_callbacks = callbacks
        self.recipe_json.value = self.session.recipe.to_json()
        labels = history_labels(self.session)
        self._refreshing = True
        try:
            self.history.options = [(("▶ " if i == self.session.position else "  ") + lab, i)
                                    for i, lab in enumerate(labels)]
            self.history.value = self.session.position
        finally:
            self._refreshing = False
        self.undo_button.disabled = not self.session.can_undo
        self.redo_button.disabled = not self.session.can_redo
        change = self.session.last_change
        self.change_html.value = "" if change.action == "open" else _diff_html(
            f"last {change.action}: {change.edit}", change)
        self._show_count()
        self._draw_graph()

    # --- the graph: selection ringed, last change coloured -------------------------------------------

    def _draw_graph(self) -> None:
        self.graph.layout.display = None if self.show_graph.value else "none"
        if not self.show_graph.value:
            if self.graph.graph:
                self.graph.graph = {}
                self._graph_digest = None
            return
        change = self.session.last_change
        marks = {n: "changed" for n in change.changed}
        marks.update({n: "added" for n in change.added})
        self._graph_syncing = True
        try:
            with self.graph.hold_trait_notifications():
                if self._graph_digest != self.session.digest:
                    self.graph.set_model(self.session.model)
                    self._graph_digest = self.session.digest
                self.graph.set_overlay(marks, "last change")
                self.graph.selected = self.selection
        finally:
            self._graph_syncing = False

    def _on_graph_select(self, change: dict[str, Any]) -> None:
        """A click in the graph toggled a node in the widget's selection: the node list follows."""
        if not self._graph_syncing:
            self.select(change["new"])

    def _on_selection(self) -> None:
        self._show_count()
        for callback in list(self._select_callbacks):
            callback(self.selection)
        if self.show_graph.value and self.graph.selected != self.selection:
            self._graph_syncing = True
            try:
                self.graph.selected = self.selection
            finally:
                self._graph_syncing = False

    def _show_count(self) -> None:
        self.count.value = f"{len(self.nodes.value)} of {len(self.nodes.options)} nodes selected"

    def _show_fields(self) -> None:
        _, needed = ACTIONS[self.action.value]
        for key, widget in self._fields.items():
            widget.layout.display = None if key in needed else "none"

    # --- buttons ----------------------------------------------------------------------------------

    def _edits(self) -> list[R.Edit]:
        fields = {k: w.value for k, w in self._fields.items()}
        return build_edits(self.action.value, self.selection, fields, self._outputs)

    def _on_preview(self) -> None:
        with self.status.guard("previewing"):
            self.last_preview = self.session.preview(self._edits())
            self.preview_html.value = _diff_html(self.last_preview.edit, self.last_preview)

    def _report_change(self) -> None:
        """After a successful step, say what changed (other tabs' change handlers may have written the status)."""
        if self.status.state != "ok":
            return
        c = self.session.last_change
        self.status.ok(f"{c.action} {c.edit}: {len(c.added)} nodes added, {len(c.removed)} removed, "
                       f"{len(c.changed)} changed; {len(self.session.model.graph.node)} nodes")

    def _on_apply(self) -> None:
        with self.status.guard("applying"):
            self.session.apply_all(self._edits())
            self.preview_html.value = ""
        self._report_change()

    def _on_history(self, change: dict[str, Any]) -> None:
        """Selecting a history step jumps there (undo/redo several steps at once)."""
        if self._refreshing or change["new"] is None or change["new"] == self.session.position:
            return
        with self.status.guard(f"going to step {change['new']}"):
            self.session.goto(change["new"])
        self._report_change()

    def _on_undo(self) -> None:
        with self.status.guard("undo"):
            self.session.undo()
        self._report_change()

    def _on_redo(self) -> None:
        with self.status.guard("redo"):
            self.session.redo()
        self._report_change()

    def _on_save(self) -> None:
        with self.status.guard(f"saving {self.recipe_path.value}"):
            self.session.save(self.recipe_path.value)

    def _on_load(self) -> None:
        with self.status.guard(f"loading {self.recipe_path.value}"):
            self.session.load_recipe(self.recipe_path.value)

    def _on_export(self) -> None:
        with self.status.guard(f"exporting {self.export_path.value}"):
            self.session.export(self.export_path.value)
