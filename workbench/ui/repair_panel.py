"""The Model tab's repair panel: after a TensorRT check, one button per repair the workbench can apply.

A repair is a list of recipe edits (:mod:`workbench.edits.repairs`); its button applies them through
``Session.apply_all`` (one undoable step each), so the recipe records them. A ``freeze_input`` repair has a value
box first (JSON: a number or a list, e.g. ``16000``); a ``static_shapes`` repair a shapes box (the SPEC grammar of
:mod:`workbench.specs` with one shape per input, e.g. ``x:1x3x224x224``; a bare ``1x3x224x224`` when it needs one
input). The panel empties when the
model changes: run the check again.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import ipywidgets as W

from ..session import Session
from ..workflows.model import apply_repair, find_repairs
from .common import Status

if TYPE_CHECKING:
    import onnx

    from ..workflows.model import Repair

__all__ = ["RepairPanel"]


class RepairPanel:
    """``show(model)`` lists the repairs for ``model``; ``buttons[i].click()`` applies repair ``i``."""

    def __init__(self, session: Session, status: Status) -> None:
        self.session = session
        self.status = status
        self.repairs: list[Repair] = []
        self.buttons: list[W.Button] = []
        self.values: dict[int, W.Text] = {}
        self.shapes: dict[int, W.Text] = {}  # static_shapes repairs: the input shapes to fix
        self._model: onnx.ModelProto | None = None
        self.widget = W.VBox([])
        self.widget.add_class("wb-repairs")
        session.on_change(lambda _s: self._on_change())

    def clear(self) -> None:
        """No repairs listed (a new check is running, or the model changed)."""
        self.repairs, self.buttons, self.values, self.shapes, self._model = [], [], {}, {}, None
        self.widget.children = ()

    def _on_change(self) -> None:
        if self._model is not None and self.session.model is not self._model:
            self.clear()

    def show(self, model: onnx.ModelProto) -> None:
        """List the repairs that apply to ``model`` (the model the check just ran on)."""
        self.clear()
        self._model = model
        self.repairs = list(find_repairs(model))
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
        """Apply repair ``index`` (with the value or shapes in its box) to the session's model."""
        rep = self.repairs[index]
        with self.status.guard(f"applying the repair '{rep.kind}'"):
            value = self.values[index].value if index in self.values else ""
            shapes = self.shapes[index].value if index in self.shapes else ""
            done = apply_repair(self.session, rep, value=value, shapes=shapes)
            self.status.ok(f"applied {', '.join(done.edits)}: check again to see whether TensorRT takes the model now")


def _example_dims(model: onnx.ModelProto, name: str) -> str:
    """The input's dims with the dynamic ones shown as 1 (a placeholder for the shapes box)."""
    for vi in model.graph.input:
        if vi.name == name:
            dims = vi.type.tensor_type.shape.dim
            return "x".join(str(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else "1" for d in dims)
    return "1"
