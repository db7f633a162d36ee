"""The Precision tab: a precision per node (fp32/fp16/bf16/int8/fp8), set per row or by op type, with the
fp16 guards shown, a summary of nodes per precision and the estimated weight memory; Apply records the
choices as ConvertPrecision / Quantize edits in the session's recipe.

Visible state lives in widget values so headless tests can assert it: ``rows`` ({node: Dropdown}),
``guards`` ({node: HTML reason}), ``op_type``/``op_precision`` + ``set_op_button``, ``summary.value``,
``apply_button``.
"""

from __future__ import annotations

import html
from collections import Counter
from typing import Any

import ipywidgets as W

from ..errors import CalibrationError, EditError
from ..graph import model_bytes, sha256_bytes
from ..precision import (
    latest_scales,
    node_precisions,
    plan_conversion,
    precision_guards,
    quantizable_nodes,
    weight_bytes,
)
from ..recipe import ConvertPrecision, Edit, Quantize
from .common import Status

__all__ = ["PrecisionTab"]

ALL = "(all)"


class PrecisionTab:
    """Choose each node's precision; Apply turns the choices into recipe edits."""

    title = "Precision"

    def __init__(self, session: Any, status: Status) -> None:
        self.session = session
        self.status = status
        self.rows: dict[str, W.Dropdown] = {}
        self.guards: dict[str, W.HTML] = {}
        self.current: dict[str, str] = {}
        self.ops: dict[str, str] = {}

        self.keep_guarded = W.Checkbox(value=True, indent=False,
                                       description="bulk changes keep guarded ops in fp32 (pick a row to override)")
        self.op_type = W.Dropdown(options=[ALL], value=ALL, description="op type")
        self.op_precision = W.Dropdown(options=["fp32", "fp16", "bf16", "int8", "fp8"], value="fp16",
                                       description="precision")
        self.set_op_button = W.Button(description="Set", icon="check")
        self.summary = W.HTML(value="")
        self.apply_button = W.Button(description="Apply", icon="check", button_style="primary")
        self.table = W.VBox(layout=W.Layout(max_height="420px", overflow="auto", width="100%"))

        self.set_op_button.on_click(self._on_set_op)
        self.apply_button.on_click(self._on_apply)
        session.on_change(lambda _s: self._rebuild())

        self.widget = W.VBox([
            W.HTML("<p>TensorRT-RTX and TensorRT 11 are strongly typed: precision is written into the graph "
                   "(Cast nodes for fp16/bf16, Q/DQ for int8/fp8). int8/fp8 use the latest scales from the "
                   "Calibrate tab.</p>"),
            W.HBox([self.op_type, self.op_precision, self.set_op_button]), self.keep_guarded,
            self.summary, self.table, self.apply_button,
        ])
        self._rebuild()

    # --- rows ----------------------------------------------------------------------------------------

    def _rebuild(self) -> None:
        model = self.session.model
        plan = plan_conversion(model, "fp16", guard=False)
        guards = {g["node"]: g["reason"] for g in precision_guards(model)}
        quantizable = set(quantizable_nodes(model))
        self.current = node_precisions(model)
        self.ops = {n.name: n.op_type for n in model.graph.node}
        self.rows, self.guards = {}, {}
        children = []
        for node in model.graph.node:
            name = node.name
            eligible = plan.get(name, {}).get("precision") == "fp16"
            if not eligible and name not in quantizable and self.current.get(name, "fp32") == "fp32":
                continue
            options = ["fp32"] + (["fp16", "bf16"] if eligible else []) + (["int8", "fp8"] if name in quantizable else [])
            value = self.current.get(name, "fp32")
            if value not in options:
                options.append(value)
            dd = W.Dropdown(options=options, value=value, layout=W.Layout(width="90px"))
            dd.observe(lambda _c: self._refresh_summary(), names="value")
            guard = W.HTML(f'<span style="color:#b26a00">⚠ {html.escape(guards[name])}</span>' if name in guards else "")
            self.rows[name], self.guards[name] = dd, guard
            children.append(W.HBox([W.Label(name, layout=W.Layout(width="340px")),
                                    W.Label(node.op_type, layout=W.Layout(width="150px")), dd, guard]))
        self.table.children = children
        self.op_type.options = [ALL] + sorted({self.ops[n] for n in self.rows})
        self._refresh_summary()

    def choices(self) -> dict[str, str]:
        """Node -> chosen precision (rows only)."""
        return {n: dd.value for n, dd in self.rows.items()}

    def _refresh_summary(self) -> None:
        choices = self.choices()
        plan = {n: choices.get(n, p) for n, p in self.current.items()}  # compute nodes (no Cast/Q/DQ)
        counts = Counter(plan.values())
        est = weight_bytes(self.session.model, plan)
        now = weight_bytes(self.session.model)
        parts = ", ".join(f"{p}: {counts[p]}" for p in ("fp32", "fp16", "bf16", "int8", "fp8") if counts[p])
        self.summary.value = (f'<p class="wb-precision-summary">nodes per precision: {parts} · estimated weight '
                              f"memory {est / 2**20:.3f} MiB (now {now / 2**20:.3f} MiB)</p>")

    def _on_set_op(self, _button: Any = None) -> None:
        with self.status.guard(f"setting {self.op_type.value} to {self.op_precision.value}"):
            target = self.op_precision.value
            skipped = 0
            for name, dd in self.rows.items():
                if self.op_type.value not in (ALL, self.ops[name]):
                    continue
                if target not in dd.options:
                    continue
                if target in ("fp16", "bf16") and self.keep_guarded.value and self.guards[name].value:
                    skipped += 1
                    continue
                dd.value = target
            if skipped:
                self.status.ok(f"{skipped} guarded node(s) kept fp32; set them per row to override")

    # --- apply ---------------------------------------------------------------------------------------

    def edits(self) -> list[Edit]:
        """The recipe edits that realise the rows' choices (only changes from the current precision)."""
        by: dict[str, list[str]] = {}
        for name, value in self.choices().items():
            now = self.current.get(name, "fp32")
            if value == now:
                continue
            if value == "fp32":
                raise EditError(f"node '{name}' already runs in {now}; going back to fp32 is an undo",
                                hint="use Undo (Edit tab) to remove the precision edit, then apply again")
            by.setdefault(value, []).append(name)
        edits: list[Edit] = []
        if by.get("int8") or by.get("fp8"):
            digest = sha256_bytes(model_bytes(self.session.model))
            found = latest_scales(self.session.cache_dir, digest)
            if found is None:
                raise CalibrationError("int8/fp8 needs calibrated scales for the current model",
                                       hint="calibrate in the Calibrate tab first, then apply")
            for dtype in ("int8", "fp8"):
                if by.get(dtype):
                    edits.append(Quantize(dtype=dtype, nodes=tuple(by[dtype]), method=found[1].method,
                                          scales=found[0]))
        for precision in ("fp16", "bf16"):
            if by.get(precision):
                edits.append(ConvertPrecision(precision=precision, nodes=tuple(by[precision])))
        if not edits:
            raise EditError("no precision changes to apply", hint="pick a precision per row or by op type first")
        return edits

    def _on_apply(self, _button: Any = None) -> None:
        with self.status.guard("applying the precision plan"):
            edits = self.edits()
            self.session.apply_all(edits)
            self.status.ok(f"applied {', '.join(e.kind for e in edits)}")
