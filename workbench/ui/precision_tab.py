"""The Precision tab: a precision per node (fp32/fp16/bf16/int8/fp8), set per row or by op type, with the
fp16 guards shown, a summary of nodes per precision and the estimated weight memory; Apply records the
choices as ConvertPrecision / Quantize edits in the session's recipe.

The choices live in plain dicts, not in one widget per node: a 5,000-node model would otherwise need ~70,000
widgets (14 s to construct). A fixed pool of ``PAGE_SIZE`` row widgets shows one page of the rows that pass
the filter; paging and filtering refill those widgets in place.

Visible state lives in widget values so headless tests can assert it: ``options`` ({node: allowed precisions}),
``guards`` ({node: reason, "" when not guarded}), ``choices()``, ``set_choice(node, precision)``,
``filter``/``page``/``page_label`` and ``page_rows`` (the pool: ``(name Label, op Label, Dropdown, guard HTML)``),
``op_type``/``op_precision`` + ``set_op_button``, ``summary.value``, ``target`` (where int8/fp8 Q/DQ are placed
for: TensorRT or ONNX Runtime CPU), ``apply_button``.
"""

from __future__ import annotations

import html
from collections import Counter
from typing import Any

import ipywidgets as W
from ipywidgets.widgets.widget_description import DescriptionStyle
from ipywidgets.widgets.widget_string import HTMLStyle, LabelStyle

from ..errors import EditError
from ..recipe import Edit
from ..workflows import quantize as wq
from .common import Status

__all__ = ["PrecisionTab", "PAGE_SIZE"]

ALL = "(all)"
PAGE_SIZE = 40


def _guard_html(reason: str) -> str:
    return f'<span style="color:#b26a00">⚠ {html.escape(reason)}</span>' if reason else ""


class PrecisionTab:
    """Choose each node's precision; Apply turns the choices into recipe edits."""

    title = "Precision"

    def __init__(self, session: Any, status: Status) -> None:
        self.session = session
        self.status = status
        self.options: dict[str, tuple[str, ...]] = {}  # node -> allowed precisions (rows only)
        self.guards: dict[str, str] = {}  # node -> guard reason ("" when not guarded)
        self.current: dict[str, str] = {}
        self.ops: dict[str, str] = {}
        self._choice: dict[str, str] = {}
        self._visible: list[str] = []  # rows passing the filter, in graph order
        self._now_bytes = 0
        self._syncing = False
        self._model: Any = None  # the model the rows were made for

        self.keep_guarded = W.Checkbox(value=True, indent=False, layout=W.Layout(width="auto"),
                                       description="bulk changes keep guarded ops in fp32 (pick a row to override)")
        self.op_type = W.Dropdown(options=[ALL], value=ALL, description="op type")
        self.op_precision = W.Dropdown(options=["fp32", "fp16", "bf16", "int8", "fp8"], value="fp16",
                                       description="precision")
        self.set_op_button = W.Button(description="Set", icon="check")
        self.summary = W.HTML(value="")
        self.apply_button = W.Button(description="Apply", icon="check", button_style="primary")
        self.target = W.Dropdown(options=[("TensorRT", "tensorrt"), ("ONNX Runtime CPU", "onnxruntime")],
                                 value="tensorrt", description="Q/DQ placement for",
                                 style={"description_width": "initial"})
        self.filter = W.Text(placeholder="node name or op contains…", description="filter", continuous_update=False,
                             layout=W.Layout(width="360px"))
        self.page = W.BoundedIntText(value=1, min=1, max=1, description="page", layout=W.Layout(width="160px"))
        self.prev_button = W.Button(description="◀", layout=W.Layout(width="40px"))
        self.next_button = W.Button(description="▶", layout=W.Layout(width="40px"))
        self.page_label = W.Label(layout=W.Layout(width="auto", flex="0 0 auto"))
        # the pool: PAGE_SIZE rows, created once, refilled per page. The rows share their layouts and styles: each
        # is a widget model of its own otherwise (~560 models for 40 rows), and a page reload restores every one
        name_layout, op_layout = W.Layout(width="340px"), W.Layout(width="150px")
        dd_layout, guard_layout = W.Layout(width="90px"), W.Layout(width="auto")
        label_style, dd_style, html_style = LabelStyle(), DescriptionStyle(), HTMLStyle()
        self.page_rows: list[tuple[W.Label, W.Label, W.Dropdown, W.HTML]] = []
        boxes = []
        for i in range(PAGE_SIZE):
            row = (W.Label(layout=name_layout, style=label_style), W.Label(layout=op_layout, style=label_style),
                   W.Dropdown(options=["fp32"], value="fp32", layout=dd_layout, style=dd_style),
                   W.HTML(layout=guard_layout, style=html_style))
            row[2].observe(lambda c, i=i: self._on_row(i, c["new"]), names="value")
            self.page_rows.append(row)
            boxes.append(W.HBox(list(row)))
        self._row_boxes = boxes
        self.table = W.VBox(boxes, layout=W.Layout(max_height="420px", overflow="auto", width="100%"))

        self.set_op_button.on_click(self._on_set_op)
        self.apply_button.on_click(self._on_apply)
        self.filter.observe(lambda _c: self._apply_filter(first_page=True), names="value")
        self.page.observe(lambda _c: self._fill_page(), names="value")
        self.prev_button.on_click(lambda _b: self._step(-1))
        self.next_button.on_click(lambda _b: self._step(1))
        session.on_change(lambda _s: self._rebuild())

        self.widget = W.VBox([
            W.HTML("<p>TensorRT-RTX and TensorRT 11 are strongly typed: precision is written into the graph "
                   "(Cast nodes for fp16/bf16, Q/DQ for int8/fp8). int8/fp8 use the latest scales from the "
                   "Calibrate tab.</p>"),
            W.HBox([self.op_type, self.op_precision, self.set_op_button]), self.keep_guarded,
            self.summary, W.HBox([self.filter, self.prev_button, self.page, self.next_button, self.page_label],
                                 layout=W.Layout(flex_flow="row wrap", align_items="center")),
            self.table, W.HBox([self.apply_button, self.target]),
        ])
        self._rebuild()

    # --- rows ----------------------------------------------------------------------------------------

    def _rebuild(self) -> None:
        """Rows for the session's model. Picks not applied yet survive a session change (a calibration, an edit
        elsewhere) for nodes that still exist and still allow them."""
        model = self.session.model
        if model is self._model:  # recipe settings changed (calibration, build), not the graph: keep everything
            return
        self._model = model
        pending = {n: v for n, v in self._choice.items() if v != self.current.get(n, "fp32")}
        choices = wq.node_choices(model)  # which precisions each node may take: decided in the core
        self.current, self.ops = choices.current, choices.ops
        self.options, self.guards = dict(choices.options), dict(choices.guards)
        self._now_bytes = wq.weight_bytes(model)
        self._choice = {n: pending[n] if pending.get(n) in options else self.current.get(n, "fp32")
                        for n, options in self.options.items()}
        self.op_type.options = [ALL] + sorted({self.ops[n] for n in self.options})
        self._apply_filter()
        self._refresh_summary()

    def _apply_filter(self, *, first_page: bool = False) -> None:
        text = self.filter.value.strip().lower()
        self._visible = [n for n in self.options if not text or text in n.lower() or text in self.ops[n].lower()]
        pages = max(1, -(-len(self._visible) // PAGE_SIZE))
        self._syncing = True
        try:
            self.page.max = pages
            self.page.value = 1 if first_page else min(self.page.value, pages)
        finally:
            self._syncing = False
        self._fill_page()

    def _step(self, delta: int) -> None:
        self.page.value = min(self.page.max, max(1, self.page.value + delta))

    def shown(self) -> list[str]:
        """The nodes on the current page (in the pool's first rows)."""
        start = (self.page.value - 1) * PAGE_SIZE
        return self._visible[start:start + PAGE_SIZE]

    def _fill_page(self) -> None:
        if self._syncing:
            return
        names = self.shown()
        self._syncing = True
        try:
            for i, (name_w, op_w, dd, guard_w) in enumerate(self.page_rows):
                box = self._row_boxes[i]
                if i >= len(names):
                    box.layout.display = "none"
                    continue
                name = names[i]
                box.layout.display = ""
                name_w.value, op_w.value = name, self.ops[name]
                if dd.options != self.options[name]:
                    dd.options = self.options[name]
                dd.value = self._choice[name]
                guard_w.value = _guard_html(self.guards[name])
        finally:
            self._syncing = False
        total = len(self._visible)
        start = (self.page.value - 1) * PAGE_SIZE
        self.page_label.value = (f"rows {start + 1}-{start + len(names)} of {total}" if names else "no rows")
        self.page_label.value += f" ({len(self.options)} nodes can change precision)"

    def _on_row(self, index: int, value: str | None) -> None:
        if self._syncing or value is None:
            return
        names = self.shown()
        if index < len(names):
            self._choice[names[index]] = value
            self._refresh_summary()

    def set_choice(self, node: str, precision: str) -> None:
        """Choose ``precision`` for ``node`` (as picking it in its row would)."""
        if node not in self.options:
            raise EditError(f"node '{node}' has no precision choice here",
                            hint="only nodes that can run in another precision are listed; check the filter")
        if precision not in self.options[node]:
            raise EditError(f"node '{node}' cannot run in {precision} (choices: {', '.join(self.options[node])})",
                            hint="pick one of the listed precisions")
        self._choice[node] = precision
        self._fill_page()
        self._refresh_summary()

    def choices(self) -> dict[str, str]:
        """Node -> chosen precision (rows only)."""
        return dict(self._choice)

    def _refresh_summary(self) -> None:
        plan = {n: self._choice.get(n, p) for n, p in self.current.items()}  # compute nodes (no Cast/Q/DQ)
        counts = Counter(plan.values())
        est = wq.weight_bytes(self.session.model, plan)
        parts = ", ".join(f"{p}: {counts[p]}" for p in ("fp32", "fp16", "bf16", "int8", "fp8") if counts[p])
        self.summary.value = (f'<p class="wb-precision-summary">nodes per precision: {parts} · estimated weight '
                              f"memory {est / 2**20:.3f} MiB (now {self._now_bytes / 2**20:.3f} MiB)</p>")

    def _on_set_op(self, _button: Any = None) -> None:
        with self.status.guard(f"setting {self.op_type.value} to {self.op_precision.value}"):
            target = self.op_precision.value
            skipped = 0
            for name, options in self.options.items():
                if self.op_type.value not in (ALL, self.ops[name]):
                    continue
                if target not in options:
                    continue
                if target in ("fp16", "bf16") and self.keep_guarded.value and self.guards[name]:
                    skipped += 1
                    continue
                self._choice[name] = target
            self._fill_page()
            self._refresh_summary()
            if skipped:
                self.status.ok(f"{skipped} guarded node(s) kept fp32; set them per row to override")

    # --- apply ---------------------------------------------------------------------------------------

    def edits(self) -> list[Edit]:
        """The recipe edits that realise the rows' choices (only changes from the current precision)."""
        return list(wq.precision_edits(self.session, self.choices(), target=self.target.value))

    def _on_apply(self, _button: Any = None) -> None:
        with self.status.guard("applying the precision plan"):
            result = wq.apply_precisions(self.session, self.choices(), target=self.target.value)
            self.status.ok(f"applied {', '.join(result.edits)}")
