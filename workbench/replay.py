"""The one path that applies an edit of any kind: graph edits (:mod:`workbench.edits`) and precision edits
(:mod:`workbench.precision`) alike. The session, the CLI and the debugger all apply edits through here."""

from __future__ import annotations

import os
from collections.abc import Iterable

import onnx

from .recipe import ConvertPrecision, Edit, Quantize

__all__ = ["apply", "is_precision_edit", "replay"]

CacheDir = str | os.PathLike[str] | None


def is_precision_edit(edit: Edit) -> bool:
    """True for edits that set precision (ConvertPrecision, Quantize), False for graph edits."""
    return isinstance(edit, (ConvertPrecision, Quantize))


def apply(model: onnx.ModelProto, edit: Edit, *, cache_dir: CacheDir = None) -> onnx.ModelProto:
    """A new model with ``edit`` applied (``model`` is never mutated)."""
    if is_precision_edit(edit):
        from .precision import apply_precision_edit

        return apply_precision_edit(model, edit, cache_dir=cache_dir)
    from .edits import apply_edit

    return apply_edit(model, edit, cache_dir=cache_dir)


def replay(model: onnx.ModelProto, edits: Iterable[Edit], *, cache_dir: CacheDir = None,
           precision: bool = True) -> onnx.ModelProto:
    """``edits`` applied in order; with ``precision=False`` the precision edits are skipped (the FP32 reference
    of a recipe: its graph edits only)."""
    for edit in edits:
        if precision or not is_precision_edit(edit):
            model = apply(model, edit, cache_dir=cache_dir)
    return model
