"""Model-level actions: the summary and layer table, the TensorRT check and its repairs, recipe edits and exports.

For ``workbench inspect``, ``workbench check`` and ``workbench edit`` and for the Model and Edit tabs. The core
(graph, check, edits, precision) is imported inside the functions, so importing this module costs little.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DataError, RecipeError
from ..graph.shapes import TensorInfo
from ..graph.summary import ModelSummary, count_text
from ..recipe import EDIT_KINDS, Edit, Recipe, edit_from_dict
from ..session import Session
from ..specs import parse_specs
from .base import Cancel, Progress, Result, report

if TYPE_CHECKING:
    import onnx

    from ..calibration import ScaleCache
    from ..edits.repairs import Repair
    from ..table import Table

__all__ = [
    "BARE_KINDS",
    "CheckResult",
    "EditResult",
    "ModelSummary",
    "RepairApplied",
    "RepairedCheck",
    "SkippedRepair",
    "TensorSummary",
    "Unsupported",
    "count_text",
    "apply_repair",
    "check",
    "describe",
    "edit",
    "find_repairs",
    "history_labels",
    "inspect",
    "layer_table",
    "node_precisions",
    "parse_static_shapes",
    "recipe_scales",
]

Source = Session | str | os.PathLike[str] | bytes
Shapes = str | Sequence[str] | None

BARE_KINDS: tuple[str, ...] = tuple(k for k, cls in EDIT_KINDS.items() if not dataclasses.fields(cls))
"""Edit kinds that take no arguments (``workbench edit MODEL fold_constants,fuse_batchnorm -o OUT``)."""


def _model(source: Source | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(source, Session):
        return source.model
    from ..graph import load_model

    return load_model(source)


def _opt_shapes(shapes: Shapes, model: onnx.ModelProto) -> dict[str, tuple[int, ...]] | None:
    """{input: opt dims} of a SPEC checked against ``model`` (None without one)."""
    if not shapes:
        return None
    from ..backends.trt_profiles import parse_shapes

    return {p.input: tuple(p.opt) for p in parse_shapes(shapes, model)}


# --- inspect -------------------------------------------------------------------------------------------


TensorSummary = TensorInfo
"""A graph input or output: name, element type and shape (:class:`workbench.graph.TensorInfo`)."""


def inspect(source: Source | onnx.ModelProto, *, shapes: Shapes = None, layers: bool = False,
            progress: Progress | None = None) -> ModelSummary:
    """The summary of a model (a session's current model, a path, a sample name or a ModelProto); with ``shapes`` (a
    SPEC: the opt shape of a range is used) FLOPs at those input shapes; ``layers`` adds the layer table."""
    from ..graph import layer_table as graph_layers
    from ..graph import summary

    report(progress, 0, 2, "reading the model")
    model = _model(source)
    at = _opt_shapes(shapes, model)
    info = summary(model, shapes=at)
    report(progress, 1, 2, "summarising")
    table = graph_layers(model, shapes=at) if layers else None
    report(progress, 2, 2, "done")
    return info if table is None else dataclasses.replace(info, layers=table)


def layer_table(source: Source | onnx.ModelProto, *, shapes: Shapes = None) -> Table:
    """One row per node (name, op, tensors, shapes, dtype, params, FLOPs, weights) of the model."""
    from ..graph import layer_table as graph_layers

    model = _model(source)
    return graph_layers(model, shapes=_opt_shapes(shapes, model))


def node_precisions(model: onnx.ModelProto) -> dict[str, str]:
    """{node: precision} the graph gives each node (fp32, fp16, int8, ...), for the graph's precision overlay."""
    from ..precision import node_precisions as precisions

    return dict(precisions(model))


# --- check and repairs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unsupported(Result):
    """A node TensorRT cannot take, and why."""

    node: str
    op: str
    reason: str


@dataclass(frozen=True)
class SkippedRepair(Result):
    """A repair that was not applied, and why (a value or shape missing, or its edit refused the model)."""

    title: str
    reason: str


@dataclass(frozen=True)
class RepairedCheck(Result):
    """The check of the repaired model: the repair edits applied (as recipe JSON), those skipped, the verdict."""

    edits: tuple[Mapping[str, Any], ...]
    skipped: tuple[SkippedRepair, ...]
    parsable: bool | None
    buildable: bool | None
    errors: tuple[str, ...] = ()
    unsupported: tuple[Unsupported, ...] = ()
    suggestions: tuple[str, ...] = ()
    repairs: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class CheckResult(Result):
    """What ``workbench check`` prints: the CLI contract keys (``parsable``, ``buildable``, ``unsupported``,
    ``errors``, ``suggestions``) and more: the builder's own errors, the profiles used, a crash, the repairs offered
    (recipe JSON) and, after a repair, the check of the repaired model and the files written."""

    model: str
    backend: str | None
    version: str | None
    parsable: bool | None
    buildable: bool | None
    unsupported: tuple[Unsupported, ...]
    errors: tuple[str, ...]
    suggestions: tuple[str, ...]
    crashed: Mapping[str, Any] | None
    profiles: tuple[Mapping[str, Any], ...]
    derived_profiles: tuple[str, ...]
    nodes: int
    supported_nodes: int | None
    build_seconds: float | None
    layers: int | None
    io: tuple[Mapping[str, Any], ...]
    notes: tuple[str, ...]
    builder_errors: tuple[str, ...]
    repairs: tuple[Mapping[str, Any], ...]
    repaired: RepairedCheck | None
    output: str | None = None
    recipe: str | None = None

    @property
    def ok(self) -> bool:
        """Parsed and built."""
        return bool(self.parsable and self.buildable)

    @property
    def verdict(self) -> str:
        """'builds', 'parses' or 'fails'."""
        return "builds" if self.buildable else "parses" if self.parsable else "fails"

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``workbench check`` (``output`` and ``recipe`` only when written)."""
        out = super().to_dict()
        for key in ("output", "recipe"):
            if out[key] is None:
                del out[key]
        return out


def _unsupported(items: Sequence[Mapping[str, Any]] | None) -> tuple[Unsupported, ...]:
    return tuple(Unsupported(str(u.get("node", "")), str(u.get("op", "")), str(u.get("reason", "")))
                 for u in items or ())


def _result(rep: Any, **extra: Any) -> CheckResult:
    fixed = rep.repaired
    repaired = None if fixed is None else RepairedCheck(
        edits=tuple(fixed.get("edits", ())), skipped=tuple(SkippedRepair(s["title"], s["reason"])
                                                          for s in fixed.get("skipped", ())),
        parsable=fixed.get("parsable"), buildable=fixed.get("buildable"), errors=tuple(fixed.get("errors", ())),
        unsupported=_unsupported(fixed.get("unsupported")), suggestions=tuple(fixed.get("suggestions", ())),
        repairs=tuple(fixed.get("repairs", ())))
    return CheckResult(
        model=str(rep.model), backend=rep.backend, version=rep.version, parsable=rep.parsable, buildable=rep.buildable,
        unsupported=_unsupported(rep.unsupported), errors=tuple(rep.errors), suggestions=tuple(rep.suggestions),
        crashed=rep.crashed, profiles=tuple(rep.profiles), derived_profiles=tuple(rep.derived_profiles),
        nodes=rep.nodes, supported_nodes=rep.supported_nodes, build_seconds=rep.build_seconds, layers=rep.layers,
        io=tuple(rep.io), notes=tuple(rep.notes), builder_errors=tuple(rep.builder_errors), repairs=tuple(rep.repairs),
        repaired=repaired, **extra)


def check(source: Source | onnx.ModelProto, *, shapes: Shapes = None, backend: str = "auto", timeout: float = 600.0,
          in_process: bool = False, progress: Progress | None = None, cancel: Cancel = None) -> CheckResult:
    """Can TensorRT take the model? The real parser and an ahead-of-time build (in a child process unless
    ``in_process``), with suggestions and the repairs the workbench offers. A cancelled check raises
    :class:`~workbench.check.CheckCancelled` (a WorkbenchError)."""
    from ..check import check_model

    model = _model(source) if isinstance(source, (Session, bytes)) else source  # a path: the check reads the file
    report(progress, 0, 1, "parsing and building in a child process…")
    rep = check_model(model, shapes=shapes, backend=backend, timeout=timeout, in_process=in_process, cancel=cancel)
    report(progress, 1, 1, "done")
    return _result(rep)


def check_and_repair(session: Session, *, shapes: Shapes = None, backend: str = "auto", timeout: float = 600.0,
                     in_process: bool = False, values: Mapping[str, Any] | None = None,
                     output: str | os.PathLike[str] | None = None, recipe_out: str | os.PathLike[str] | None = None,
                     progress: Progress | None = None, cancel: Cancel = None) -> CheckResult:
    """Check ``session``'s model, apply every ready repair to the session (one undoable step; ``values``:
    {input: value} for ``freeze_input``), check the repaired model, and write it to ``output`` and the recipe to
    ``recipe_out`` when given."""
    from ..check import check_model

    report(progress, 0, 1, "checking, repairing and checking again…")
    rep = check_model(session.model, shapes=shapes, backend=backend, timeout=timeout, in_process=in_process,
                      repair=True, values=values, cancel=cancel)
    edits = [edit_from_dict(e) for e in (rep.repaired or {}).get("edits", [])]
    if edits:
        session.apply_all(edits)
    written = str(session.export(output)) if output else None
    saved = str(session.save(recipe_out)) if recipe_out else None
    report(progress, 1, 1, "done")
    rep.model = str(session.source_path or rep.model)
    return _result(rep, output=written, recipe=saved)


def find_repairs(model: onnx.ModelProto) -> tuple[Repair, ...]:
    """The repairs the workbench can apply to ``model`` (each a list of recipe edits)."""
    from ..edits.repairs import find_repairs as find

    return tuple(find(model))


@dataclass(frozen=True)
class RepairApplied(Result):
    """A repair applied to the session: its edit kinds, in order."""

    kind: str
    edits: tuple[str, ...]


def apply_repair(session: Session, repair: Repair, *, value: str = "", shapes: str = "") -> RepairApplied:
    """Apply ``repair`` to ``session`` as one undoable step. ``value`` (JSON: a number or a list) fills a
    ``freeze_input`` repair's input; ``shapes`` (a SPEC of one static shape per input, or bare dims when the repair
    needs one input) a ``static_shapes`` repair's. A missing or bad value or shape is a DataError naming it."""
    if repair.needs_value:
        text = value.strip()
        if not text:
            raise DataError(f"the repair needs the value of input '{repair.needs_value}'",
                            hint=f"type the value you always run with in the '{repair.needs_value}' box"
                            + (f", e.g. {repair.examples[0]}" if repair.examples else ""))
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"'{text}' is not a number or a JSON list for input '{repair.needs_value}'",
                            hint="e.g. 16000 or [1.0, 2.0]") from exc
        repair = repair.with_value(parsed)
    if repair.needs_shapes:
        repair = repair.with_shapes(parse_static_shapes(shapes, repair.needs_shapes))
    session.apply_all(list(repair.edits))
    return RepairApplied(repair.kind, tuple(e.kind for e in repair.edits))


def parse_static_shapes(text: str, needed: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """``"x:1x3 y:2x4"`` (or a bare ``"1x3"`` when one input is needed) -> ``{input: dims}`` for every needed input:
    the SPEC grammar (:mod:`workbench.specs`) with one shape per input. A missing input, an unknown one or a bad
    dim is a DataError naming it."""
    needed = tuple(needed)
    if not text.strip():
        raise DataError(f"the repair needs static shapes for input(s) {', '.join(repr(n) for n in needed)}",
                        hint="type the shapes you run with, e.g. " + " ".join(f"{n}:1x3x224x224" for n in needed))
    specs = parse_specs(text, ranges=False, default_name=needed[0] if len(needed) == 1 else None, what="shapes")
    out: dict[str, tuple[int, ...]] = {}
    for s in specs:
        if s.name not in needed:
            raise DataError(f"input '{s.name}' is not one this repair fixes", hint=f"it needs {', '.join(needed)}")
        dims = tuple(d for d in s.shape if isinstance(d, int))
        if any(d <= 0 for d in dims):
            raise DataError(f"shapes {s.name}: dims must be >= 1 for a static shape",
                            hint="positive whole numbers separated by x, e.g. 1x3x224x224")
        out[s.name] = dims
    missing = [n for n in needed if n not in out]
    if missing:
        raise DataError(f"no shape given for input(s) {', '.join(repr(n) for n in missing)}",
                        hint="give every input the repair lists, e.g. " + " ".join(f"{n}:DIMS" for n in missing))
    return out


# --- edits ---------------------------------------------------------------------------------------------


def describe(edit: Edit) -> str:
    """One line saying what ``edit`` does."""
    from ..edits import describe as say

    return say(edit)


def history_labels(session: Session) -> tuple[str, ...]:
    """One label per step of the session's history: "(original model)", then "i. what step i did"."""
    history = session.history
    labels = ["(original model)"]
    for i in range(1, len(history)):
        prev, cur = history[i - 1], history[i]
        new = cur.edits[len(prev.edits):] if cur.edits[: len(prev.edits)] == prev.edits else cur.edits
        if new:
            text = "; ".join(describe(e) for e in new)
        elif prev.calibration != cur.calibration:
            text = "calibration settings"
        elif prev.build != cur.build:
            text = "build settings"
        else:
            text = "recipe"
        labels.append(f"{i}. {text}")
    return tuple(labels)


@dataclass(frozen=True)
class EditResult(Result):
    """What ``workbench edit`` prints: the file written, the number of edits, node counts, each edit in words and
    the recipe digest."""

    output: str
    edits: int
    nodes_before: int
    nodes_after: int
    applied: tuple[str, ...]
    digest: str


def _inline(text: str) -> Recipe | None:
    """``fold_constants,fuse_batchnorm`` -> a template recipe, when every part is an argument-free edit kind."""
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    if not kinds or any(k not in BARE_KINDS for k in kinds):
        return None
    return Recipe(edits=tuple(edit_from_dict({"kind": k}) for k in kinds))


def edit(model: str | os.PathLike[str], recipe: str | os.PathLike[str], output: str | os.PathLike[str], *,
         progress: Progress | None = None) -> EditResult:
    """Replay ``recipe`` (a recipe .json, a template, or argument-free edit kinds separated by commas) on ``model``
    and write the edited model to ``output`` (never over the input model); byte-identical to the session's."""
    path = Path(recipe)
    report(progress, 0, 2, "replaying the recipe")
    inline = None if path.exists() else _inline(str(recipe))
    if inline is not None:
        session = Session(model, recipe=inline)
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise RecipeError(f"cannot read recipe {path}: {exc}",
                              hint=f"give a recipe .json, or edit kinds that need no arguments separated by commas: "
                              f"{', '.join(BARE_KINDS)}") from exc
        cache = path.with_suffix(".cache")
        session = Session(model, recipe=Recipe.from_json(text, where=str(path)),
                          cache_dir=cache if cache.is_dir() else None)
    report(progress, 1, 2, "writing the model")
    out = session.export(output)
    report(progress, 2, 2, "done")
    return EditResult(output=str(out), edits=len(session.recipe.edits), nodes_before=len(session.original.graph.node),
                      nodes_after=len(session.model.graph.node),
                      applied=tuple(describe(e) for e in session.recipe.edits), digest=session.digest)


# --- the calibration a session's views show ----------------------------------------------------------------


def recipe_scales(session: Session) -> ScaleCache | None:
    """The calibration (a :class:`~workbench.calibration.ScaleCache`) the session's model goes with: the scale cache
    of the recipe's last Quantize edit, else the newest one calibrated for the current model; None without one."""
    from ..calibration import ScaleCache  # noqa: F811 - the type above is for checkers only
    from ..errors import CalibrationError
    from ..graph import model_bytes, sha256_bytes
    from ..precision.scales import latest_scales
    from ..recipe import Quantize

    for e in reversed(session.recipe.edits):
        if isinstance(e, Quantize) and e.scales:
            try:
                return ScaleCache.load(session.cache_dir / "scales" / f"{e.scales}.json")
            except CalibrationError:
                break
    found = latest_scales(session.cache_dir, sha256_bytes(model_bytes(session.model)))
    return found[1] if found else None
