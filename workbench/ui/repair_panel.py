"""The Model tab's repair panel: after a TensorRT check, one button per repair the workbench can apply.

A repair is a list of recipe edits (:mod:`workbench.edits.repairs`); its button applies them through
``Session.apply_all`` (one undoable step each), so the recipe records them. A ``freeze_input`` repair has a value
box first (JSON: a number or a list, e.g. ``16000``); a ``static_shapes`` repair a shapes box (``x:1x3x224x224``,
several inputs separated by spaces; a bare ``1x3x224x224`` when it needs one input). The panel empties when the
model changes: run the check again.
"""

from __future__ import annotations

import html
import json
from typing import Any

import ipywidgets as W
import onnx

from ..edits.repairs import Repair, find_repairs
from ..errors import DataError
from .common import Status

__all__ = ["RepairPanel", "parse_static_shapes"]


class RepairPanel:
    """``show(model)`` lists the repairs for ``model``; ``buttons[i].click()`` applies repair ``i``."""

    def __init__(self, session: Any, status: Status) -> None:
        self.session = session
        self.status = status
        self.repairs: list[Repair] = []
        self.buttons: list[W.Button] = []
        self.values: dict[int, W.Text] = {}
        self.shapes: dict[int, W.Text] = {}  # static_shapes repairs: the input shapes to fix
        self._model: onnx.ModelProto | None = None
        self.widget = W.VBox([])
        self.widget.add_class("wb-repairs")
        if hasattr(session, "on_change"):
            session.on_change(lambda _s: self._on_change())

    def clear(self) -> None:
        self.repairs, self.buttons, self.values, self.shapes, self._model = [], [], {}, {}, None
        self.widget.children = ()

    def _on_change(self) -> None:
        if self._model is not None and self.session.model is not self._model:
            self.clear()

    def show(self, model: onnx.ModelProto) -> None:
        """List the repairs that apply to ``model`` (the model the check just ran on)."""
        self.clear()
        self._model = model
        self.repairs = find_repairs(model)
        rows: list[W.Widget] = []
        for i, rep in enumerate(self.repairs):
            button = W.Button(description=f"repair: {rep.kind}", tooltip=rep.title, icon="wrench",
                              layout=W.Layout(width="240px"))
            button.add_class(f"wb-repair-{rep.kind}")
            button.on_click(lambda _b, i=i: self.apply(i))
            self.buttons.append(button)
            parts: list[W.Widget] = [button]
            if rep.needs_value:
                example = rep.examples[0] if rep.examples else None
                box = W.Text(description=rep.needs_value, placeholder=f"e.g. {example}" if example is not None else "",
                             layout=W.Layout(width="200px"))
                self.values[i] = box
                parts.append(box)
            if rep.needs_shapes:
                example = " ".join(f"{k}:{_example_dims(model, k)}" for k in rep.needs_shapes)
                box = W.Text(description="shapes", placeholder=f"e.g. {example}", layout=W.Layout(width="320px"))
                box.add_class("wb-repair-shapes")
                self.shapes[i] = box
                parts.append(box)
            parts.append(W.HTML(f"<span title='{html.escape(rep.title)}'>{html.escape(rep.why)}</span>"))
            rows.append(W.HBox(parts))
        if rows:
            rows.insert(0, W.HTML("<b>repairs the workbench can apply</b> (each is recipe edits; undo reverts it)"))
        self.widget.children = tuple(rows)

    def apply(self, index: int) -> None:
        """Apply repair ``index`` (with the value in its box, for a freeze) to the session's model."""
        rep = self.repairs[index]
        with self.status.guard(f"applying the repair '{rep.kind}'"):
            if rep.needs_value:
                text = self.values[index].value.strip()
                if not text:
                    raise DataError(f"the repair needs the value of input '{rep.needs_value}'",
                                    hint=f"type the value you always run with in the '{rep.needs_value}' box"
                                    + (f", e.g. {rep.examples[0]}" if rep.examples else ""))
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise DataError(f"'{text}' is not a number or a JSON list for input '{rep.needs_value}'",
                                    hint="e.g. 16000 or [1.0, 2.0]") from exc
                rep = rep.with_value(value)
            if rep.needs_shapes:
                rep = rep.with_shapes(parse_static_shapes(self.shapes[index].value, rep.needs_shapes))
            self.session.apply_all(list(rep.edits))
            self.status.ok(f"applied {', '.join(e.kind for e in rep.edits)}: check again to see whether TensorRT "
                           f"takes the model now")


def _example_dims(model: onnx.ModelProto, name: str) -> str:
    """The input's dims with the dynamic ones shown as 1 (a placeholder for the shapes box)."""
    for vi in model.graph.input:
        if vi.name == name:
            dims = vi.type.tensor_type.shape.dim
            return "x".join(str(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else "1" for d in dims)
    return "1"


def parse_static_shapes(text: str, needed: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    """``"x:1x3 y:2x4"`` (or a bare ``"1x3"`` when one input is needed) -> ``{input: dims}`` for every needed input;
    a missing input, an unknown one or a bad dim is a DataError naming it."""
    items = text.replace(";", " ").replace(",", " ").split()
    if not items:
        raise DataError(f"the repair needs static shapes for input(s) {', '.join(repr(n) for n in needed)}",
                        hint="type the shapes you run with, e.g. "
                             + " ".join(f"{n}:1x3x224x224" for n in needed))
    out: dict[str, tuple[int, ...]] = {}
    for item in items:
        name, sep, dims = item.rpartition(":")
        if not sep:
            if len(needed) != 1 or len(items) != 1:
                raise DataError(f"'{item}' does not say which input it is for",
                                hint=f"write name:dims, e.g. {needed[0]}:{item}")
            name = needed[0]
        if name not in needed:
            raise DataError(f"input '{name}' is not one this repair fixes", hint=f"it needs {', '.join(needed)}")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError as exc:
            raise DataError(f"'{dims}' is not a static shape for input '{name}'",
                            hint="positive whole numbers separated by x, e.g. 1x3x224x224") from exc
        if not shape or any(d <= 0 for d in shape):
            raise DataError(f"'{dims}' is not a static shape for input '{name}'",
                            hint="positive whole numbers separated by x, e.g. 1x3x224x224")
        out[name] = shape
    missing = [n for n in needed if n not in out]
    if missing:
        raise DataError(f"no shape given for input(s) {', '.join(repr(n) for n in missing)}",
                        hint="give every input the repair lists, e.g. " + " ".join(f"{n}:DIMS" for n in missing))
    return out
