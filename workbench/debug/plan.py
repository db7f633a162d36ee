"""The fewest layers to keep in high precision (:func:`find_plan`).

The layers are tried in :func:`plan_order`: those whose restoring alone improves the metric first, then the
sensitivity ranking. Greedy on that order (keep the first 1, 2, 4, ... layers) until the metric meets the
tolerance, bisection between the last failing and first passing count, then pruning of kept layers not needed:
blocks (halves, quarters, ...) from 8 kept layers on, then one by one. :func:`mixed_plan` then tries the kept
layers in FP16 before FP32 (the TensorRT placement). Every plan tried is recorded with its metric and an estimated
relative cost for a Pareto chart. A tolerance that even the all-high-precision plan misses stops with the best plan
found and says so.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from ..backends.ort import OrtEngine
from ..cancel import Cancel, Progress, cancelled, report
from ..cluster import Cluster, fan_out
from ..compare.metrics import Metric, output_error, run_metric
from ..data import Axes, Batch, Dataset, DataSource, load_data, output_sample_axes, samples_first
from ..errors import DataError, RecipeError
from ..fsio import atomic_write
from ..graph import TensorInfo, load_model, node_flops, tensor_infos
from ..parallel import resolve_workers, threads_per_worker
from ..recipe import ConvertPrecision, Quantize, Recipe
from ..table import Table
from .restore import Factory, restore_layers
from .sensitivity import Sensitivity, sensitivity

__all__ = ["Plan", "find_plan", "mixed_plan", "plan_order", "estimated_cost", "evaluate", "plan_recipe", "recipe_models",
           "mixed_models", "MixedFactory", "DebugResult", "debug_precision", "PLAN_COLUMNS"]

PLAN_COLUMNS = ("plan", "kept", "keep", "metric", "cost", "met", "step", "fp16")
#: ``(keep, fp16) -> model``: the candidate with ``keep`` out of low precision, those in ``fp16`` (a subset of
#: ``keep``) in FP16 through Cast nodes and the rest in FP32 (:func:`recipe_models`)
MixedFactory = Callable[[tuple[str, ...], tuple[str, ...]], onnx.ModelProto]
_COST = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0, "fp8": 1.0}


# --- cost and evaluation -----------------------------------------------------------------------------


def estimated_cost(model: onnx.ModelProto, reference: onnx.ModelProto | None = None) -> float | None:
    """Relative cost of ``model``: FLOPs weighted by precision (fp32 4, fp16/bf16 2, int8/fp8 1 per FLOP),
    divided by the same FLOPs all in FP32 (so all-FP32 = 1.0, all-INT8 = 0.25). An estimate, not a timing;
    symbolic dims count as 1. None when no layer has known FLOPs."""
    from ..precision import node_precisions

    ref = reference if reference is not None else model
    infos = {k: TensorInfo(v.name, v.dtype, None if v.shape is None else
                           tuple(d if isinstance(d, int) and d > 0 else 1 for d in v.shape))
             for k, v in tensor_infos(ref).items()}
    precs = node_precisions(model)
    total = weighted = 0.0
    for n in ref.graph.node:
        f = node_flops(n, infos)
        if not f:
            continue
        total += 4.0 * f
        weighted += _COST.get(precs.get(n.name, "fp32"), 4.0) * f
    return weighted / total if total else None



_ENGINES_LOCK = threading.Lock()


@dataclass
class _ModelBatch:
    """A per-batch function of one model, run by the thread pool or as Dask tasks (:func:`workbench.cluster.fan_out`)
    alike: its engine is made on first use in each process and never pickled."""

    model: onnx.ModelProto
    metric: Metric
    out_axes: dict[str, int | None]
    description: str
    threads: int | None
    _engine: Any = field(default=None, init=False, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_engine": None}

    def engine(self) -> OrtEngine:
        if self._engine is None:
            with _ENGINES_LOCK:
                if self._engine is None:
                    self._engine = OrtEngine(self.model, threads=self.threads)
        return self._engine


class _ReferenceBatch(_ModelBatch):
    """One batch's reference outputs, the reference's metric sum on it and its sample count."""

    def __call__(self, batch: Batch) -> tuple[dict[str, np.ndarray], float, int]:
        rv = self.engine().run(batch.feeds)
        first = samples_first(rv, self.out_axes)
        return rv, float(run_metric(self.metric, first, batch.arrays, first, self.description).sum()), batch.samples


class _EvaluateBatch(_ModelBatch):
    """One batch's metric sum and sample count for :func:`evaluate`."""

    def __call__(self, item: tuple[Batch, dict[str, np.ndarray]]) -> tuple[float, int]:
        batch, rv = item
        outs = samples_first(self.engine().run(batch.feeds), self.out_axes)
        values = run_metric(self.metric, outs, batch.arrays, samples_first(rv, self.out_axes), self.description)
        return float(values.sum()), len(values)


def _shared_batches(cluster: Cluster | None, data: Dataset, batch_size: int, max_samples: int | None, *,
                    owner: Any = None, **kw: Any) -> Iterable[Any]:
    """``data``'s batches, or with ``cluster`` futures of them, sent to the workers once per ``owner`` (default
    ``data``) for every pass over them (the reference's and each plan's)."""
    if cluster is None:
        return data.batches(batch_size, max_samples=max_samples, **kw)
    return cluster.share_each(data if owner is None else owner, ("evaluate", batch_size, max_samples),
                              lambda: list(data.batches(batch_size, max_samples=max_samples, **kw)))


def evaluate(model: onnx.ModelProto, data: Dataset, metric: Metric, reference_outputs: list[dict[str, np.ndarray]],
             *, batch_size: int, max_samples: int | None, reference: onnx.ModelProto,
             workers: int | None = None, cluster: Cluster | None = None) -> float:
    """Mean per-sample ``metric`` of ``model`` over ``data`` (reference outputs precomputed per batch), batches
    run on ``workers`` threads (see :func:`sensitivity`) or as tasks on ``cluster`` (the same sums, same order)."""
    n_workers = resolve_workers(workers)
    ds = load_data(data, reference)
    plan = _EvaluateBatch(model, metric, output_sample_axes(reference, ds), ds.description,
                          threads_per_worker(n_workers))
    batches = _shared_batches(cluster, ds, batch_size, max_samples, owner=data if isinstance(data, Dataset) else ds)
    total = seen = 0.0
    for value, n in fan_out(plan, zip(batches, reference_outputs), n_workers, cluster):
        total += value
        seen += n
    return total / seen if seen else float("nan")


# --- the plan -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """The layers to keep in high precision (those in ``fp16`` in FP16, the rest of ``keep`` in FP32), the metric
    it reaches, and every plan tried (``PLAN_COLUMNS``)."""

    keep: tuple[str, ...]
    metric: float
    met: bool
    target: float
    tried: Table
    message: str
    cost: float | None = None
    fp16: tuple[str, ...] = ()


def find_plan(
    ranking: Sequence[str],
    evaluate_plan: Callable[[tuple[str, ...]], tuple[float, float | None]],
    *,
    ok: Callable[[float], bool],
    target: float,
    higher_is_better: bool,
    prune: bool = True,
    max_evaluations: int = 40,
    progress: Progress | None = None,
    precision: str = "fp32",
) -> Plan:
    """Smallest prefix of ``ranking`` to keep in high precision so ``ok(metric)``: greedy (1, 2, 4, ...), then
    bisection between the last failing and the first passing count, then pruning of unneeded layers.

    ``evaluate_plan(keep) -> (metric, cost)`` builds and measures one plan; ``precision`` (``fp32`` or ``fp16``)
    is the one it keeps layers in, recorded in the plan (``Plan.fp16``) and in every row tried.
    """
    in_fp16 = precision == "fp16"
    rows: list[tuple[Any, ...]] = []
    cache: dict[tuple[str, ...], tuple[float, float | None]] = {}

    def run(keep: tuple[str, ...], step: str) -> bool:
        if keep not in cache:
            if len(cache) >= max_evaluations:
                return False
            cache[keep] = evaluate_plan(keep)
            m, c = cache[keep]
            rows.append((len(rows), len(keep), list(keep), m, c, bool(ok(m)), f"fp16 {step}" if in_fp16 else step,
                         list(keep) if in_fp16 else []))
            report(progress, len(rows), max_evaluations, f"plan {len(rows)}: keep {len(keep)}")
        return bool(ok(cache[keep][0]))

    ranking = list(ranking)
    n = len(ranking)
    chosen: tuple[str, ...] | None = None
    message = ""
    if run((), "baseline"):
        chosen, message = (), "the candidate already meets the tolerance: nothing to keep in high precision"
    elif not run(tuple(ranking), "all high precision"):
        keep = max(cache, key=lambda k: cache[k][0]) if higher_is_better else min(cache, key=lambda k: cache[k][0])
        m, c = cache[keep]
        message = (f"the tolerance cannot be met: even with all {n} ranked layers in high precision the metric "
                   f"is {m:.4g} (target {target:.4g}); the best plan found is returned")
        tried = Table(PLAN_COLUMNS, tuple(rows))
        return Plan(keep, m, False, target, tried, message, c, keep if in_fp16 else ())
    else:
        lo, hi, k = 0, n, 1
        while k < n:
            if run(tuple(ranking[:k]), "greedy"):
                hi = k
                break
            lo = k
            k *= 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if run(tuple(ranking[:mid]), "bisect"):
                hi = mid
            else:
                lo = mid
        chosen = tuple(ranking[:hi])
        if prune and len(chosen) > 1:
            chosen = _pruned(chosen, run)
        message = f"keep {len(chosen)} of {n} layers in {precision.upper()} to meet the tolerance"
        if len(cache) >= max_evaluations:
            message += f" (search stopped at {max_evaluations} plan evaluations: a smaller set may exist)"
    m, c = cache[chosen]
    return Plan(chosen, m, True, target, Table(PLAN_COLUMNS, tuple(rows)), message, c, chosen if in_fp16 else ())


PRUNE_BLOCKS = 8  # from this many kept layers, pruning first drops blocks of them (halves, quarters, ...)


def _pruned(chosen: tuple[str, ...], run: Callable[[tuple[str, ...], str], bool]) -> tuple[str, ...]:
    """``chosen`` without the layers the plan does not need: blocks of them dropped from the least sensitive end
    (half of the set, then quarters, ... then one at a time), each drop kept where the plan still passes. A task
    metric decided by a few samples near a boundary is not monotone in the layers kept (blazeface_back_256: 12 of
    the ranking's layers fail, 16 pass, then 10 of those 16 pass), so the greedy and bisection can stop at a large
    prefix of which a few layers suffice; dropping blocks finds those within the evaluation budget where dropping
    one layer per evaluation cannot."""
    size = len(chosen) // 2 if len(chosen) >= PRUNE_BLOCKS else 1
    while size >= 1:
        end = len(chosen)
        while end > 0:
            start = max(0, end - size)
            trial = chosen[:start] + chosen[end:]
            if trial and run(trial, "prune"):
                chosen = trial
            end = start
        size //= 2
    return chosen


def mixed_plan(
    ranking: Sequence[str],
    evaluate_mixed: Callable[[tuple[str, ...], tuple[str, ...]], tuple[float, float | None]],
    *,
    ok: Callable[[float], bool],
    target: float,
    higher_is_better: bool,
    prune: bool = True,
    max_evaluations: int = 40,
    progress: Progress | None = None,
) -> Plan:
    """:func:`find_plan` with FP16 tried first for the kept layers (cheaper than FP32, and usually enough): the
    FP16 search; where even every ranked layer in FP16 misses the tolerance, the FP32 search, then each layer of
    its plan moved to FP16 (least sensitive first) wherever the tolerance stays met, so only the layers FP16 does
    not serve stay FP32. ``evaluate_mixed(keep, fp16) -> (metric, cost)``; the plans of both searches and the
    moves are in ``tried``, renumbered in the order measured."""
    half = find_plan(ranking, lambda keep: evaluate_mixed(keep, keep), ok=ok, target=target,
                     higher_is_better=higher_is_better, prune=prune, max_evaluations=max_evaluations,
                     progress=progress, precision="fp16")
    if half.met:
        return half
    full = find_plan(ranking, lambda keep: evaluate_mixed(keep, ()), ok=ok, target=target,
                     higher_is_better=higher_is_better, prune=prune, max_evaluations=max_evaluations,
                     progress=progress)
    rows = [*half.tried.rows, *full.tried.rows]
    if not full.met:
        best = max((half, full), key=lambda p: p.metric) if higher_is_better else min((half, full),
                                                                                       key=lambda p: p.metric)
        return dataclasses.replace(best, tried=_renumbered(rows), message=full.message)
    fp16: tuple[str, ...] = ()
    metric, cost = full.metric, full.cost
    for layer in reversed(full.keep):  # least sensitive first
        trial = (*fp16, layer)
        m, c = evaluate_mixed(full.keep, trial)
        passed = bool(ok(m))
        rows.append((len(rows), len(full.keep), list(full.keep), m, c, passed, "mixed: to fp16", list(trial)))
        report(progress, len(rows), max_evaluations, f"plan {len(rows)}: {layer} in fp16")
        if passed:
            fp16, metric, cost = trial, m, c
    keep32 = len(full.keep) - len(fp16)
    message = (f"keep {len(full.keep)} of {len(ranking)} layers in high precision to meet the tolerance: "
               f"{len(fp16)} in FP16, {keep32} in FP32 (FP16 alone, even for every ranked layer, missed it)")
    return Plan(full.keep, metric, True, target, _renumbered(rows), message, cost, fp16)


def _renumbered(rows: Sequence[tuple[Any, ...]]) -> Table:
    return Table(PLAN_COLUMNS, tuple((k, *r[1:]) for k, r in enumerate(rows)))


# --- recipes ------------------------------------------------------------------------------------------


def plan_recipe(recipe: Recipe, keep: Iterable[str], fp16: Iterable[str] = ()) -> Recipe:
    """The recipe with ``keep`` added to the last precision edit (Quantize ``exclude`` / ConvertPrecision ``keep``);
    ``fp16`` (kept layers of a Quantize to run in FP16, the rest of ``keep`` staying FP32): a ConvertPrecision of
    those nodes right after it."""
    keep = tuple(keep)
    half = tuple(dict.fromkeys(fp16))
    edits = list(recipe.edits)
    for k in range(len(edits) - 1, -1, -1):
        e = edits[k]
        if isinstance(e, Quantize):
            edits[k] = dataclasses.replace(e, exclude=tuple(dict.fromkeys((*e.exclude, *keep, *half))))
            if half:
                edits.insert(k + 1, ConvertPrecision(precision="fp16", nodes=half))
            return recipe.replace(edits=tuple(edits))
        if isinstance(e, ConvertPrecision):
            if half:  # the last precision edit is a conversion: nothing to keep in FP16 instead of INT8
                break
            edits[k] = dataclasses.replace(e, keep=tuple(dict.fromkeys((*e.keep, *keep))))
            return recipe.replace(edits=tuple(edits))
    raise RecipeError("the recipe has no quantize or convert_precision edit to adjust"
                      + (" (layers kept in FP16 need a quantize edit)" if half else ""),
                      hint="add one first (workbench quantize/convert --recipe-out, or the Precision tab)")


def recipe_models(original: onnx.ModelProto, recipe: Recipe, cache_dir: str | os.PathLike[str] | None
                  ) -> tuple[onnx.ModelProto, Factory]:
    """(FP32 reference = the recipe's graph edits only, factory ``keep -> candidate model``)."""
    reference, mixed = mixed_models(original, recipe, cache_dir)
    return reference, lambda keep: mixed(keep, ())


def mixed_models(original: onnx.ModelProto, recipe: Recipe, cache_dir: str | os.PathLike[str] | None
                 ) -> tuple[onnx.ModelProto, MixedFactory]:
    """(FP32 reference, :data:`MixedFactory` ``(keep, fp16) -> candidate``: the recipe replayed by
    :func:`plan_recipe`)."""
    from ..replay import replay

    plan_recipe(recipe, ())  # raises when there is no precision edit
    reference = replay(original, recipe.edits, cache_dir=cache_dir, precision=False)
    return reference, lambda keep, fp16: replay(original, plan_recipe(recipe, keep, fp16).edits, cache_dir=cache_dir)


# --- all together ---------------------------------------------------------------------------------------


def plan_order(sens: Sensitivity) -> list[str]:
    """The order the plan search keeps layers in: for ``direction="restore"``, the layers whose restoring alone
    improves the target metric first (largest gain first), then the rest in the ranking's order. The ranking
    (by the outputs' rel L2) is what separates layers that a coarse task metric ties, but a task metric decided by
    a few samples near a boundary (a detection, a class) is served by the layers that flip them, whose rel L2 share
    may be small: they go first. For the rel_l2 metric both orders are the same."""
    if sens.direction != "restore":
        return sens.ranking
    recs = sens.table.records()
    helps = sorted((r for r in recs if r["metric_gain"] > 0), key=lambda r: (-r["metric_gain"], r["rank"]))
    first = [r["node"] for r in helps]
    return first + [n for n in sens.ranking if n not in set(first)]


@dataclass(frozen=True)
class DebugResult:
    """Sensitivity ranking + plan; ``to_dict()`` gives the CLI keys."""

    sensitivity: Sensitivity
    plan: Plan
    metric_reference: float
    metric_before: float
    recipe: Recipe | None = None
    recipe_path: str | None = None
    #: the ranking's warnings, then those of the plans' evaluation data (e.g. samples a fixed batch dropped)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The CLI's JSON keys."""
        return {
            "sensitivity": [{"node": r["node"], "score": r["score"], "op": r["op"], "precision": r["precision"],
                             "metric_gain": r["metric_gain"], "metric_restored": r["metric_restored"]}
                            for r in self.sensitivity.table.records()],
            "keep_high_precision": list(self.plan.keep),
            "keep_fp16": list(self.plan.fp16),
            "metric": self.sensitivity.metric,
            "metric_reference": self.metric_reference,
            "metric_before": self.metric_before,
            "metric_after": self.plan.metric,
            "met": self.plan.met,
            "message": self.plan.message,
            "plans": self.plan.tried.records(),
            "cost_after": self.plan.cost,
            "samples": self.sensitivity.samples,
            "seconds": self.sensitivity.seconds,
            "recipe": self.recipe_path,
            "warnings": self.warnings,
            "direction": self.sensitivity.direction,
        }


def debug_precision(
    reference: onnx.ModelProto,
    candidate: onnx.ModelProto,
    data: DataSource,
    *,
    factory: Factory | None = None,
    mixed: MixedFactory | None = None,
    metric: Metric | None = None,
    tolerance: float = 0.01,
    layers: Sequence[str] | None = None,
    batch_size: int = 64,
    max_samples: int | None = None,
    rank_samples: int | None = None,
    direction: str = "restore",
    workers: int | None = None,
    recipe: Recipe | None = None,
    recipe_out: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    cancel: Cancel = None,
    sample_axes: Axes | None = None,
    cluster: Cluster | None = None,
    run_length: int | None = None,
) -> DebugResult:
    """Rank the candidate's low-precision layers, then find the fewest to keep in high precision.

    ``tolerance``: for a higher-is-better metric (accuracy) the largest allowed drop below the reference;
    for an error metric (rel_l2) the largest allowed value. ``factory(keep)`` builds the candidate with
    ``keep`` in high precision (default: restore those nodes in the candidate graph); with ``recipe`` the
    chosen plan's recipe (:func:`plan_recipe`) is returned and, with ``recipe_out``, saved.
    ``rank_samples`` ranks on the first that many samples only (faster; the plans are still measured on
    ``max_samples`` / all samples, so the accuracy reported is exact). ``direction`` is the sensitivity's
    (:func:`sensitivity`): the plan is searched greedily along whichever ranking it gives. ``workers``
    threads run batches side by side, in the ranking and in every plan's evaluation (see :func:`sensitivity`);
    ``cluster``: as Dask tasks there instead, with the same result (the data sent to the workers once).
    ``mixed`` (:func:`mixed_models`; the ranking still uses ``factory``): kept layers try FP16 first
    (:func:`mixed_plan`), the plan's ``fp16`` says which, and the recipe keeps those in FP16.
    """
    ref = reference if len(reference.graph.value_info) else load_model(reference)
    cand = candidate if len(candidate.graph.value_info) else load_model(candidate)
    metric = metric or output_error()
    ds = load_data(data, ref, sample_axes=sample_axes, run_length=run_length)  # one run of the data per batch
    out_axes = output_sample_axes(ref, ds)
    limits = [n for n in (max_samples, rank_samples) if n]
    sens = sensitivity(ref, cand, ds, metric=metric, layers=layers, batch_size=batch_size, factory=factory,
                       max_samples=min(limits) if limits else None, direction=direction, workers=workers,
                       progress=progress, cancel=cancel, cluster=cluster)
    # reference outputs once (all evaluation samples), reused by every plan evaluation
    n_workers = resolve_workers(workers)
    warnings: list[str] = []
    ref_outs: list[dict[str, np.ndarray]] = []
    ref_total = 0.0
    samples = 0
    ref_plan = _ReferenceBatch(ref, metric, out_axes, ds.description, threads_per_worker(n_workers))
    batches = _shared_batches(cluster, ds, batch_size, max_samples, warnings=warnings)
    for rv, value, n in fan_out(ref_plan, batches, n_workers, cluster, notify=warnings.append):
        ref_outs.append(rv)
        ref_total += value
        samples += n
    if cancelled(cancel):
        raise DataError("debugging was cancelled", hint="run it again to finish")
    metric_reference = ref_total / samples
    if metric.higher_is_better:
        target = metric_reference - tolerance
        granularity = 1.0 / samples
        if tolerance < granularity and metric.name == "accuracy":
            warnings.append(f"a tolerance of {tolerance:g} is finer than one sample in {samples} "
                                 f"({granularity:.4g}): the plan must match the reference's correct count")

        def ok(m: float) -> bool:
            return m >= target - 1e-12
    else:
        target = tolerance

        def ok(m: float) -> bool:
            return m <= target + 1e-12

    build = factory or (lambda keep: restore_layers(cand, ref, keep))

    def measure(model: onnx.ModelProto) -> tuple[float, float | None]:
        if cancelled(cancel):
            raise DataError("debugging was cancelled", hint="run it again to finish")
        m = evaluate(model, ds, metric, ref_outs, batch_size=batch_size, max_samples=max_samples, reference=ref,
                     workers=workers, cluster=cluster)
        return m, estimated_cost(model, ref)

    order = plan_order(sens)
    if mixed is not None:
        plan = mixed_plan(order, lambda keep, fp16: measure(mixed(keep, fp16)), ok=ok, target=target,
                          higher_is_better=metric.higher_is_better, progress=progress)
    else:
        plan = find_plan(order, lambda keep: measure(cand if not keep and factory is None else build(keep)),
                         ok=ok, target=target, higher_is_better=metric.higher_is_better, progress=progress)
    before = next((r[3] for r in plan.tried.rows if r[1] == 0), sens.metric_before)
    out_recipe = plan_recipe(recipe, plan.keep, plan.fp16) if recipe is not None else None
    path = None
    if out_recipe is not None and recipe_out is not None:
        path = str(atomic_write(recipe_out, out_recipe.to_json()))
    return DebugResult(sens, plan, metric_reference, before, out_recipe, path,
                       list(dict.fromkeys([*sens.warnings, *warnings])))
