"""Accuracy debugging: compare a candidate with its FP32 reference (outputs, or layer by layer), rank the
low-precision layers that break accuracy and find the fewest to keep in high precision; apply that plan.

For ``workbench compare``, ``workbench debug`` and the Debug tab. Every action takes the session, the data (anything
the data layer reads: an ``.npz`` path, a folder, a Dataset), ``progress``, ``cancel`` and ``cluster`` (a connected
:class:`~workbench.workflows.cluster.Cluster`: the batches run there, with the same result as locally). The core
(compare, debug, data) is imported inside the functions, so importing this module costs little.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

from ..choices import DIRECTIONS, METRICS
from ..errors import DataError
from ..recipe import ConvertPrecision, Quantize, Recipe
from .base import Cancel, Progress, Result, jsonable
from .cluster import Cluster, ClusterUse

if TYPE_CHECKING:
    import onnx

    from ..compare import CompareReport, Tolerance
    from ..data import Dataset, DataSummary
    from ..debug import DebugResult, Factory
    from ..session import Session

__all__ = ["CompareResult", "DebugRun", "CompareReport", "DebugResult", "METRICS", "DIRECTIONS", "compare", "debug",
           "apply_plan", "plan_recipe", "parse_tolerance", "has_precision_edit"]

#: ``fp32``: the session's model with its precision edits left out; ``original``: the file as opened; or a model
Reference = Literal["fp32", "original"] | str | os.PathLike[str]
#: ``session``: the session's model (its current recipe); or another ONNX file / model
Candidate = Literal["session"] | str | os.PathLike[str]
#: anything the data layer reads: an .npz path, a folder of images/audio, a dict of arrays, a Dataset
Data = Union[str, "os.PathLike[str]", Mapping[str, Any], "Dataset"]  # noqa: UP007


def __getattr__(name: str) -> Any:
    """The core's result types, imported on first use (``CompareReport``, ``DebugResult``)."""
    if name == "CompareReport":
        from ..compare import CompareReport

        return CompareReport
    if name == "DebugResult":
        from ..debug import DebugResult

        return DebugResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class CompareResult(Result):
    """A comparison (:class:`~workbench.compare.CompareReport`), the data it read, the cluster it ran on, and the
    reference model compared against (for a graph view; not in ``to_dict()``)."""

    report: CompareReport
    data: DataSummary
    cluster: ClusterUse | None = None
    reference: onnx.ModelProto | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The CLI's JSON: the report's keys, ``data`` and (on a cluster) ``cluster``."""
        out = {**self.report.to_dict(), "data": jsonable(self.data)}
        if self.cluster is not None:
            out["cluster"] = self.cluster.to_dict()
        return out


@dataclass(frozen=True)
class DebugRun(Result):
    """A sensitivity ranking and plan (:class:`~workbench.debug.DebugResult`), the recipe with the plan applied (and
    where it was saved), the tolerance used, the data it read and the cluster it ran on."""

    result: DebugResult
    recipe: Recipe | None
    recipe_path: str | None
    tolerance: float
    data: DataSummary
    cluster: ClusterUse | None = None

    def to_dict(self) -> dict[str, Any]:
        """The CLI's JSON: the result's keys, ``cluster`` (on a cluster), ``recipe`` (the path), ``tolerance``,
        ``data``."""
        out = dict(self.result.to_dict())
        if self.cluster is not None:
            out["cluster"] = self.cluster.to_dict()
        out["recipe"] = self.recipe_path
        out["tolerance"] = self.tolerance
        out["data"] = jsonable(self.data)
        return out


def has_precision_edit(recipe: Recipe) -> bool:
    """Whether ``recipe`` quantizes or converts precision (what the debugger can take back)."""
    return any(isinstance(e, (Quantize, ConvertPrecision)) for e in recipe.edits)


def plan_recipe(recipe: Recipe, keep: Sequence[str]) -> Recipe:
    """``recipe`` with ``keep`` added to its last precision edit (Quantize ``exclude`` / ConvertPrecision ``keep``)."""
    from ..debug import plan_recipe as _plan_recipe

    return _plan_recipe(recipe, keep)


def parse_tolerance(text: str) -> Tolerance:
    """``"rel_l2=0.05,cosine=0.99"`` (a bare number is a rel_l2 limit) as a :class:`~workbench.compare.Tolerance`."""
    from ..compare import Tolerance

    return Tolerance.parse(text)


def _load(source: str | os.PathLike[str] | onnx.ModelProto) -> onnx.ModelProto:
    from ..graph import load_model

    return load_model(source)


def _models(session: Session, reference: Reference, candidate: Candidate
            ) -> tuple[onnx.ModelProto, onnx.ModelProto, Factory | None]:
    """(reference, candidate, ``factory(keep)`` building the candidate with ``keep`` in high precision, or None)."""
    from ..debug import recipe_models

    precision = has_precision_edit(session.recipe)
    factory = None
    if precision:
        ref, factory = recipe_models(session.original, session.recipe, session.cache_dir)
    else:
        ref = session.model
    if reference == "original":
        ref = session.original
    elif reference != "fp32":
        ref = _load(reference)
    if candidate != "session":
        if not str(candidate).strip():
            raise DataError("no candidate file given", hint="type the path of the converted/quantized .onnx")
        return ref, _load(candidate), None
    if not precision:
        raise DataError("the session's recipe has no quantize or convert_precision edit: nothing to compare",
                        hint="quantize or convert the model first (Precision/Calibrate tabs, workbench quantize/"
                             "convert --recipe-out), or compare another ONNX file as the candidate")
    return ref, session.model, factory


def _data(data: Data, model: onnx.ModelProto) -> Dataset:
    from ..data import load_data

    if isinstance(data, (str, os.PathLike)) and not str(data).strip():
        raise DataError("no data given", hint="give an .npz with one array per model input, or a folder of images "
                                              "or .wav files")
    return load_data(str(data).strip() if isinstance(data, str) else data, model)


def compare(
    session: Session,
    data: Data,
    *,
    reference: Reference = "fp32",
    candidate: Candidate = "session",
    layerwise: bool = False,
    local: bool = True,
    tensors: Sequence[str] | None = None,
    tolerance: Tolerance | str | float | None = None,
    label: str = "label",
    batch_size: int = 32,
    max_samples: int | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
    cancel: Cancel = None,
    cluster: Cluster | None = None,
) -> CompareResult:
    """Compare ``candidate`` with ``reference`` over ``data``: output errors (and accuracy when the data has a
    ``label`` array), with ``layerwise`` every intermediate tensor joined by name and, with ``local``, each one's
    own error (:func:`workbench.compare.compare`). ``tolerance``: pass/fail limits (a Tolerance, a spec such as
    ``"rel_l2=0.05,cosine=0.99"`` or a rel_l2 number; default rel_l2 0.1)."""
    from ..compare import Tolerance, accuracy
    from ..compare import compare as _compare

    ref, cand, _ = _models(session, reference, candidate)
    ds = _data(data, ref)
    if tolerance is None or isinstance(tolerance, Tolerance):
        limits = tolerance
    elif isinstance(tolerance, (int, float)):
        limits = Tolerance(rel_l2=float(tolerance))
    else:
        limits = Tolerance.parse(tolerance)
    report = _compare(ref, cand, ds, layerwise=layerwise, local=local, tensors=tensors, tolerance=limits,
                      metrics=[accuracy(label)] if label in ds else [], batch_size=batch_size,
                      max_samples=max_samples, workers=workers, progress=progress, cancel=cancel, cluster=cluster)
    return CompareResult(report, ds.describe(), ClusterUse.of(cluster), ref)


def debug(
    session: Session,
    data: Data,
    *,
    reference: Reference = "fp32",
    candidate: Candidate = "session",
    metric: str = "auto",
    tolerance: float | None = None,
    label: str = "label",
    direction: str = "restore",
    batch_size: int = 64,
    max_samples: int | None = None,
    rank_samples: int | None = None,
    workers: int | None = None,
    recipe_out: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    cancel: Cancel = None,
    cluster: Cluster | None = None,
) -> DebugRun:
    """Rank the candidate's low-precision layers and find the fewest to keep in high precision
    (:func:`workbench.debug.debug_precision`).

    ``metric`` (:data:`METRICS`): what the plan must meet; ``tolerance``: for accuracy the largest drop below FP32
    (default 0.001), for rel_l2 the largest output error (default 0.05). With the session's own model as the
    candidate every plan is the recipe re-applied with those layers kept (``DebugRun.recipe``); ``recipe_out``
    saves that recipe (pinned to the session's model, its scales copied beside it). ``rank_samples``: rank on
    that many samples only (the plans are still measured on all). ``progress`` phases: ``sensitivity``, then
    ``plan N: keep K``.
    """
    from ..compare import accuracy, output_error
    from ..debug import debug_precision

    if metric not in METRICS:
        raise DataError(f"unknown metric '{metric}'", hint=f"use one of {', '.join(METRICS)}")
    ref, cand, factory = _models(session, reference, candidate)
    ds = _data(data, ref)
    use_acc = metric == "accuracy" or (metric == "auto" and label in ds)
    limit = tolerance if tolerance is not None else (0.001 if use_acc else 0.05)
    result = debug_precision(ref, cand, ds, factory=factory, metric=accuracy(label) if use_acc else output_error(),
                             tolerance=limit, batch_size=batch_size, max_samples=max_samples,
                             rank_samples=rank_samples, direction=direction, workers=workers, progress=progress,
                             cancel=cancel, cluster=cluster)
    fixed = plan_recipe(session.recipe, result.plan.keep) if factory is not None else None
    path = None
    if recipe_out is not None:
        if fixed is None:
            raise DataError("no recipe to save: the candidate is another ONNX file, not the session's model",
                            hint="debug the session's own model (its recipe) to get a fixed recipe")
        from ..session import Session

        saved = Session(session.source_path or session.original, recipe=fixed, cache_dir=session.cache_dir)
        path = str(saved.save(Path(recipe_out)))
    return DebugRun(result, fixed, path, limit, ds.describe(), ClusterUse.of(cluster))


def apply_plan(session: Session, keep: Sequence[str]) -> Recipe:
    """Keep ``keep`` in high precision in the session's recipe (one undoable step); the new recipe."""
    if not keep:
        raise DataError("no plan to apply", hint="run the sensitivity ranking and plan search first")
    session.set_recipe(plan_recipe(session.recipe, keep))
    return session.recipe
