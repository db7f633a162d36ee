"""Repairs applied for a check: the ready ones :func:`~workbench.edits.repairs.find_repairs` offers, with the user's
values and static shapes filled in."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import onnx

from .. import recipe as R
from ..backends.trt_profiles import parse_shapes, resolve_profiles
from ..edits import apply_edits
from ..edits.repairs import Repair, fill_values, find_repairs
from ..errors import EditError
from ..recipe import ShapeProfile

__all__ = ["given_profiles", "repair_model", "static_shapes"]


def given_profiles(shapes: str | Sequence[str] | Sequence[ShapeProfile] | None, model: onnx.ModelProto
           ) -> tuple[ShapeProfile, ...]:
    """The profiles a SPEC (string or list) or a list of ShapeProfiles gives, validated against ``model``."""
    if shapes is None or isinstance(shapes, str) or all(isinstance(s, str) for s in shapes):
        return parse_shapes(shapes, model)  # type: ignore[arg-type]
    return tuple(shapes)  # type: ignore[arg-type]


def static_shapes(model: onnx.ModelProto, given: Sequence[ShapeProfile] = ()) -> dict[str, tuple[int, ...]]:
    """{input: dims} of the inputs whose profile is one shape (min = opt = max): the given profiles, else derived
    ones. What a ``static_shapes`` repair fixes the inputs to (a profile with a range gives none)."""
    return {p.input: tuple(p.opt) for p in resolve_profiles(model, given).profiles if p.min == p.opt == p.max}


def repair_model(model: onnx.ModelProto, repairs: Sequence[Repair] | None = None,
                 values: Mapping[str, Any] | None = None, shapes: Mapping[str, Sequence[int]] | None = None,
                 ) -> tuple[onnx.ModelProto, list[R.Edit], list[dict[str, str]]]:
    """Apply ``repairs`` (default: every one :func:`find_repairs` offers) with ``values`` (for ``freeze_input``)
    and static ``shapes`` ({input: dims}, for ``static_shapes``) filled in: (repaired model, the edits applied in
    order, [{title, reason}] of repairs skipped: a value or shape missing, or an edit that refused this model)."""
    todo = fill_values(find_repairs(model) if repairs is None else repairs, values or {}, shapes)
    applied: list[R.Edit] = []
    skipped: list[dict[str, str]] = []
    for r in todo:
        if not r.ready and r.needs_shapes:
            example = " ".join(f"--shapes {k}:DIMS" for k in r.needs_shapes)
            skipped.append({"title": r.title, "reason": f"needs one static shape for each of {list(r.needs_shapes)}: "
                            f"pass shapes={{input: dims}} or {example} (one shape, not a MIN,OPT,MAX range)"})
            continue
        if not r.ready:
            skipped.append({"title": r.title, "reason": f"needs the value of input '{r.needs_value}'"
                            + (f" (e.g. {r.examples[0]!r})" if r.examples else "")
                            + f": pass values={{'{r.needs_value}': ...}} or --freeze {r.needs_value}=VALUE"})
            continue
        try:
            model = apply_edits(model, list(r.edits))
        except EditError as exc:
            skipped.append({"title": r.title, "reason": f"{exc.message} ({exc.hint})" if exc.hint else exc.message})
            continue
        applied += r.edits
    return model, applied, skipped


