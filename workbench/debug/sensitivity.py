"""Sensitivity (:func:`sensitivity`): for each quantized/low-precision layer L, the end metric with only L
restored to FP32. Computed without N rebuilds: the candidate runs once per batch with its intermediate
tensors exposed, and one combined ONNX model holds, for every L, the *tail* of the candidate downstream of
L with L restored (tensors renamed per layer, weights shared). Feeding it the captured activations gives all
N "restore one layer" outputs in one run per batch; only the tails are recomputed. That is also the floor of
any exact method: restoring L changes L's output, so every node downstream of L must run again on every
sample; for a CNN whose FLOPs are spread along its depth the tails hold about half of one full pass per layer
(0.48x on the ResNet-18-topology and 0.49x on the digits CNN of ``benchmarks/bench_debug.py``). Fewer samples
are no way out when neighbouring layers differ by less than their sampling noise: the ranking counts those
pairs (``Sensitivity.unsettled_pairs``, with a warning), whose order no smaller sample can reproduce.
The other direction, ``direction="quantize_only"`` (the FP32 model with only L quantized, as Polygraphy's and
ONNX Runtime's qdq_loss_debug users expect), uses the same tails with the reference as the base: upstream of
L everything is FP32, so the reference's captured activations feed L's Q/DQ and only L's downstream runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper

from ..backends.capture import BUDGET_ENV, capture_budget, measure_bytes, plan_capture, sample_bytes
from ..backends.ort import OrtEngine, check_feeds, with_outputs
from ..cancel import Cancel, Progress, report
from ..choices import DIRECTIONS
from ..cluster import Cluster, fan_out
from ..compare.driver import ModelSource, cast_feeds, input_names
from ..compare.metrics import Metric, output_error, run_metric
from ..data import Axes, Batch, Dataset, DataSource, load_data, output_sample_axes, samples_first
from ..errors import DataError, EditError
from ..graph import iter_graphs, load_model, rename_reads, subgraph_reads, subgraphs, tensor_infos
from ..parallel import resolve_workers, threads_per_worker
from ..table import Table
from .restore import Factory, isolate_layers, low_precision_layers, restore_layers

__all__ = ["Sensitivity", "sensitivity", "DIRECTIONS", "SENSITIVITY_COLUMNS", "SETTLED_Z"]

SENSITIVITY_COLUMNS = ("rank", "node", "op", "precision", "score", "metric_gain", "metric_restored", "rel_l2_restored")


def _toposort(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    ready = set(available)
    pending = list(nodes)
    out: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for n in pending:
            if all((not i) or i in ready for i in n.input) and _outer_reads(n) <= ready:
                out.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):  # a cycle or a missing input: keep order, let ORT report it
            return out + rest
        pending = rest
    return out



def _outer_reads(node: onnx.NodeProto) -> set[str]:
    """The outer-scope tensors ``node``'s If/Loop/Scan bodies read (not made inside them)."""
    if not subgraphs(node):
        return set()
    own: set[str] = set()
    for body in subgraphs(node):
        for g in iter_graphs(body):
            own.update(o for n in g.node for o in n.output if o)
            own.update(i.name for i in (*g.input, *g.initializer))
    return {t for t in subgraph_reads(node) if t and t not in own}


# --- sensitivity ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sensitivity:
    """Ranked table (``SENSITIVITY_COLUMNS``), best score first, plus the metric with nothing restored."""

    table: Table
    metric: str
    higher_is_better: bool
    metric_reference: float
    metric_before: float
    samples: int
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    #: neighbouring pairs of the ranking whose per-sample score differences average less than
    #: ``SETTLED_Z`` paired standard errors from zero: their order is within sampling noise.
    unsettled_pairs: int = 0
    #: ``restore`` (only L back in FP32) or ``quantize_only`` (only L in low precision); see :func:`sensitivity`
    direction: str = "restore"

    @property
    def ranking(self) -> list[str]:
        """The layers, most sensitive first."""
        return self.table.column("node")



def _serialized(candidate: onnx.ModelProto) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """The candidate's nodes and initializers serialised by name (what :func:`_changed` compares with)."""
    return ({n.name: n.SerializeToString(deterministic=True) for n in candidate.graph.node},
            {i.name: i.SerializeToString(deterministic=True) for i in candidate.graph.initializer})


def _changed(serialized: tuple[dict[str, bytes], dict[str, bytes]], variant: onnx.ModelProto
             ) -> tuple[list[onnx.NodeProto], set[str]]:
    """Nodes of ``variant`` that compute something the candidate (its :func:`_serialized`) does not (new or
    different nodes, nodes reading a different initializer, and everything downstream), in graph order; and the
    changed initializers."""
    cand_nodes, cand_inits = serialized
    changed_inits = {i.name for i in variant.graph.initializer
                     if cand_inits.get(i.name) != i.SerializeToString(deterministic=True)}
    dirty = set(changed_inits)
    out = []
    for n in variant.graph.node:
        if (cand_nodes.get(n.name) != n.SerializeToString(deterministic=True)
                or any(i in dirty for i in n.input if i) or _outer_reads(n) & dirty):
            out.append(n)
            dirty.update(o for o in n.output if o)
    return out, changed_inits


def _tails_model(candidate: onnx.ModelProto, variants: Mapping[str, onnx.ModelProto]
                 ) -> tuple[onnx.ModelProto, list[str], dict[str, dict[str, str]], dict[str, list[str]]]:
    """One model holding, for each variant (the candidate with one layer in high precision), the part of it
    that differs from the candidate: tensors renamed per variant, unchanged weights shared.

    Returns (model, boundary tensors to feed from the candidate's own run, {layer: {output: tail output}},
    {layer: the boundary tensors its tail reads}).
    """
    outputs = [o.name for o in candidate.graph.output]
    cinfos = tensor_infos(candidate)
    cand_inits = {i.name: i for i in candidate.graph.initializer}
    cand_prod = {o: n for n in candidate.graph.node for o in n.output if o}
    g = helper.make_graph([], "sensitivity_tails", [], [])
    shared: set[str] = set()  # initializers and constant-node outputs added once, shared by all tails
    boundary: dict[str, None] = {}
    out_map: dict[str, dict[str, str]] = {}
    reads: dict[str, list[str]] = {}

    # tensors computed from initializers only in the candidate (e.g. a weight's DequantizeLinear), found in one
    # pass per round over the nodes (not by recursion upstream: a deep network exceeded Python's recursion limit)
    constants = set(cand_inits)
    grew = True
    while grew:
        before = len(constants)
        for n in candidate.graph.node:
            if n.op_type == "Constant" or (bool(n.input) and all(i in constants for i in n.input if i)):
                constants.update(o for o in n.output if o)
        grew = len(constants) > before

    def constant(t: str) -> bool:
        """A tensor computed from initializers only in the candidate."""
        return t in constants

    def share(t: str) -> None:
        if t in shared:
            return
        shared.add(t)
        if t in cand_inits:
            g.initializer.append(cand_inits[t])
            return
        n = cand_prod[t]
        for i in n.input:
            if i:
                share(i)
        g.node.append(n)
        shared.update(o for o in n.output if o)

    serialized = _serialized(candidate)  # once, not once per variant (70 layers: 3.6 s of a ResNet-50's prep)
    for li, (layer, variant) in enumerate(variants.items()):
        tail, changed_inits = _changed(serialized, variant)
        inits = {i.name: i for i in variant.graph.initializer}
        rename = {o: f"{o}__s{li}" for n in tail for o in n.output if o}
        needs: dict[str, None] = {}
        for name in changed_inits:
            init = onnx.TensorProto()
            init.CopyFrom(inits[name])
            init.name = rename[name] = f"{name}__s{li}"
            g.initializer.append(init)
        for n in tail:
            new = onnx.NodeProto()
            new.CopyFrom(n)
            new.name = f"{n.name}__s{li}"
            # the outer tensors an If/Loop/Scan body reads are inputs too (oww_hey_jarvis: an If in a tail read
            # the candidate's 'x.1', which the tails model neither fed nor computed)
            outer = sorted(_outer_reads(new))
            for body in subgraphs(new):
                rename_reads(body, {t: rename[t] for t in outer if t in rename})
            for i in (*new.input, *(t for t in outer if t not in rename)):
                if not i or i in rename:
                    continue
                if constant(i):
                    share(i)
                elif i in inits:
                    if i not in shared:
                        g.initializer.append(inits[i])
                        shared.add(i)
                else:
                    boundary[i] = needs[i] = None
            for k, i in enumerate(new.input):
                if i in rename:
                    new.input[k] = rename[i]
            for k, o in enumerate(new.output):
                if o:
                    new.output[k] = rename[o]
            g.node.append(new)
        reads[layer] = list(needs)
        out_map[layer] = {}
        for o in outputs:
            if o in rename:
                out_map[layer][o] = rename[o]
                info = cinfos.get(o)
                elem = helper.np_dtype_to_tensor_dtype(np.dtype(info.dtype)) if info else onnx.TensorProto.FLOAT
                g.output.append(helper.make_tensor_value_info(rename[o], elem, None))
    for b in boundary:
        info = cinfos.get(b)
        if info is None or info.dtype == "unknown":
            raise EditError(f"tensor '{b}' of the candidate has no known type", hint="run shape inference first")
        g.input.append(helper.make_tensor_value_info(b, helper.np_dtype_to_tensor_dtype(np.dtype(info.dtype)), None))
    ordered = _toposort(list(g.node), {i.name for i in g.input} | {i.name for i in g.initializer})
    del g.node[:]
    g.node.extend(ordered)
    model = helper.make_model(g, opset_imports=list(candidate.opset_import))
    model.ir_version = candidate.ir_version
    return model, list(boundary), out_map, reads



SETTLED_Z = 2.0


class _PairStats:
    """Streaming sums (per layer) and cross products (per pair of layers) of per-sample scores, so paired
    differences between any two layers can be tested at the end in O(layers^2) memory, whatever the samples."""

    def __init__(self, count: int) -> None:
        self.total = np.zeros(count)
        self.gram = np.zeros((count, count))
        self.n = 0

    def add(self, scores: np.ndarray) -> None:  # [layers, samples of this batch]
        """One sample at a time, in order: the sums do not depend on how the samples were batched."""
        with np.errstate(invalid="ignore", over="ignore"):  # a non-finite score makes its pairs NaN: not counted
            for s in scores.T:
                self.total += s
                self.gram += np.outer(s, s)
        self.n += scores.shape[1]

    def unsettled(self, order: Sequence[int], z: float = SETTLED_Z) -> int:
        """How many neighbouring pairs of ``order`` (layer indices, in rank order) have a mean paired
        difference within ``z`` standard errors of zero (exact ties included)."""
        count = 0
        for a, b in zip(order, order[1:]):
            mean = (self.total[a] - self.total[b]) / self.n if self.n else 0.0
            squares = self.gram[a, a] + self.gram[b, b] - 2.0 * self.gram[a, b]
            var = max(0.0, (squares - self.n * mean * mean) / (self.n - 1)) if self.n > 1 else 0.0
            if abs(mean) <= z * np.sqrt(var / max(self.n, 1)):
                count += 1
        return count


@dataclass(frozen=True)
class _BatchScores:
    """Per-sample values one batch adds to the sensitivity sums ([samples] or [layers, samples])."""

    ref_metric: np.ndarray
    before_metric: np.ndarray
    before_error: np.ndarray
    metric: np.ndarray
    error: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True)
class _TailGroup:
    """The layers one run per batch scores (:func:`~workbench.backends.capture.plan_capture`): their tails and the
    base tensors those read; the first group also captures the outputs."""

    layers: tuple[int, ...]  # indices into ``_SensitivityBatch.layers``
    base_capture: list[str]
    tails: onnx.ModelProto
    out_map: dict[str, dict[str, str]]


@dataclass
class _SensitivityBatch:
    """What one batch adds to the sensitivity sums, a pure function of the models and the batch: the thread pool
    and a Dask cluster (:func:`workbench.cluster.fan_out`) call the same object. Engines are made on first use in
    each process and never pickled. The layers are scored by one tails run per :class:`_TailGroup` (one group
    unless the memory budget splits them); each layer's numbers come from one run, so the split changes no bit."""

    base: onnx.ModelProto  # the reference (capturing the boundary tensors for quantize_only)
    cand: onnx.ModelProto  # the candidate (capturing the boundary tensors for restore)
    groups: tuple[_TailGroup, ...]
    outputs: list[str]
    layers: list[str]
    metric: Metric
    out_axes: dict[str, int | None]
    description: str
    only: bool
    rank_by: str
    threads: int | None
    _engines: Any = field(default=None, init=False, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_engines": None}

    def engines(self) -> tuple[OrtEngine, OrtEngine, tuple[OrtEngine, ...]]:
        if self._engines is None:
            with _ENGINES_LOCK:
                if self._engines is None:  # no arena: the captures' memory is returned after each run
                    self._engines = (OrtEngine(self.base, threads=self.threads, low_memory=True),
                                     OrtEngine(self.cand, threads=self.threads, low_memory=True),
                                     tuple(OrtEngine(g.tails, threads=self.threads, low_memory=True)
                                           for g in self.groups))
        return self._engines

    def warm_up(self) -> None:
        """Open the sessions (a cluster worker does it while the batches are queued: :func:`fan_out`)."""
        self.engines()

    def __call__(self, item: Batch) -> _BatchScores:
        """Everything one batch contributes (runs on a worker thread: ONNX Runtime releases the GIL)."""
        ref_eng, cand_eng, tail_engs = self.engines()
        only, outputs, layers, metric = self.only, self.outputs, self.layers, self.metric
        out_axes, description, rank_by, err = self.out_axes, self.description, self.rank_by, output_error()
        sign = 1.0 if metric.higher_is_better else -1.0
        feeds, batch = item.feeds, item.arrays
        for gi, (group, tail_eng) in enumerate(zip(self.groups, tail_engs)):
            if only:
                bv = ref_eng.run(feeds, outputs=group.base_capture)
                if gi == 0:
                    rv = {o: bv[o] for o in outputs}
                    cv = cand_eng.run(feeds)
            else:
                if gi == 0:
                    rv = ref_eng.run(feeds)
                bv = cand_eng.run(feeds, outputs=group.base_capture)
                if gi == 0:
                    cv = {o: bv[o] for o in outputs}
            if gi == 0:
                base_out = {o: bv[o] for o in outputs}  # what a layer's tail leaves unchanged
                rv = samples_first(rv, out_axes)  # metrics read outputs samples-first
                ref_m = run_metric(metric, rv, batch, rv, description)
                cand_outs = samples_first({o: cv[o] for o in outputs}, out_axes)
                before_m = run_metric(metric, cand_outs, batch, rv, description)
                before_e = run_metric(err, cand_outs, batch, rv, description)
                n = len(ref_m)
                m_all, e_all, scores = (np.empty((len(layers), n)), np.empty((len(layers), n)),
                                        np.empty((len(layers), n)))
            known = {**bv, **feeds}
            tail_inputs = [i.name for i in tail_eng.session.get_inputs()]
            tail_outputs = [o.name for o in tail_eng.session.get_outputs()]
            tv = tail_eng.run(cast_feeds(tail_eng, {i: known[i] for i in tail_inputs}), outputs=tail_outputs)
            del known, bv
            for k in group.layers:
                layer = layers[k]
                changed = group.out_map[layer]
                outs = samples_first({o: tv[changed[o]] if o in changed else base_out[o] for o in outputs}, out_axes)
                m_all[k] = run_metric(metric, outs, batch, rv, description)
                e_all[k] = run_metric(err, outs, batch, rv, description)
                if only:
                    scores[k] = sign * (ref_m - m_all[k]) if rank_by == "metric" else e_all[k]
                else:
                    scores[k] = sign * (m_all[k] - before_m) if rank_by == "metric" else before_e - e_all[k]
            del tv  # this group's tails go before the next group's come
        return _BatchScores(ref_m, before_m, before_e, m_all, e_all, scores)


_SENSITIVITY_HINT = ("rank fewer layers (layers=[...], CLI --layers), feed smaller input shapes, use fewer workers, or "
                     f"raise the budget (memory_budget=..., ${BUDGET_ENV}) where the machine has the memory")


def _plan_tails(ref: onnx.ModelProto, base: onnx.ModelProto, ds: Dataset, variants: Mapping[str, onnx.ModelProto],
                tails: onnx.ModelProto, boundary: list[str], out_map: dict[str, dict[str, str]],
                reads: dict[str, list[str]], step: int, budget: int, warnings: list[str]
                ) -> tuple[tuple[_TailGroup, ...], int]:
    """The batch step and the groups of layers scored by one tails run each, within ``budget`` bytes per worker:
    a layer needs the base tensors its tail reads and its tail's outputs, every run the outputs and the inputs."""
    outputs = [o.name for o in ref.graph.output]
    feeds_only = set(input_names(base))
    layers = list(variants)
    capture = list(dict.fromkeys(outputs + [b for b in boundary if b not in feeds_only]))
    one = (_TailGroup(tuple(range(len(layers))), capture, tails, out_map),)
    if ds.samples < (ds.run_length or 1):  # no full batch: the batches say so
        return one, step
    first = ds.batch(0, min(ds.samples, ds.run_length or 1))
    feeds, samples = check_feeds(ref, first.feeds, where=f"the first sample of {ds.description}"), first.samples
    sizes, unknown = sample_bytes(base, capture, feeds, samples, where="the base model")
    if unknown:
        engine = OrtEngine(with_outputs(base, unknown), low_memory=True)
        try:
            sizes.update(measure_bytes(engine, feeds, unknown, samples, guess=max([*sizes.values(), 1]), budget=budget))
        finally:
            engine.close()
    keyed: dict[Hashable, int] = {("b", t): v for t, v in sizes.items()}
    units: list[list[Hashable]] = []
    for layer in layers:
        keys: list[Hashable] = [("b", b) for b in reads[layer] if b not in feeds_only]
        for o in out_map[layer]:
            keyed[("t", layer, o)] = sizes[o]
            keys.append(("t", layer, o))
        units.append(keys)
    # both models' outputs and the feeds, each run
    fixed = 2 * sum(sizes[o] for o in outputs) + sum(-(-v.nbytes // samples) for v in feeds.values())
    plan = plan_capture(units, keyed, labels=layers, fixed=fixed, requested=step, fixed_step=ds.run_length, budget=budget,
                        what="sensitivity", hint=_SENSITIVITY_HINT, noun="layers")
    assert plan is not None  # refused otherwise
    note = plan.describe(ds.run_length or step)
    if note:
        warnings.append(note.replace("tensors captured in", "layers scored in"))
    if len(plan.groups) == 1:
        return one, plan.step
    groups = []
    for gi, members in enumerate(plan.groups):
        g_tails, g_boundary, g_map, _reads = _tails_model(base, {layers[k]: variants[layers[k]] for k in members})
        lead = outputs if gi == 0 else []
        groups.append(_TailGroup(tuple(members), list(dict.fromkeys(lead + [b for b in g_boundary
                                                                            if b not in feeds_only])),
                                 g_tails, g_map))
    return tuple(groups), plan.step


_ENGINES_LOCK = threading.Lock()


def sensitivity(
    reference: ModelSource,
    candidate: ModelSource,
    data: DataSource,
    *,
    metric: Metric | None = None,
    layers: Sequence[str] | None = None,
    batch_size: int = 64,
    max_samples: int | None = None,
    rank_by: str = "rel_l2",
    factory: Factory | None = None,
    direction: str = "restore",
    workers: int | None = None,
    progress: Progress | None = None,
    cancel: Cancel = None,
    sample_axes: Axes | None = None,
    cluster: Cluster | None = None,
    memory_budget: int | None = None,
    run_length: int | None = None,
) -> Sensitivity:
    """Rank the candidate's low-precision layers by how much restoring each alone to FP32 helps
    (``direction="restore"``, the default) or how much quantizing each alone hurts (``"quantize_only"``).

    ``score`` is the drop of the outputs' relative L2 error (per sample, against the reference) when the layer
    alone is restored (``rank_by="rel_l2"``, the default: continuous, so it separates layers that a coarse
    metric such as accuracy on a few hundred samples ties), or the gain in ``metric`` (``rank_by="metric"``).
    ``metric_gain`` and ``metric_restored`` always report ``metric`` (default: the relative L2 error).
    ``factory(keep)`` builds the candidate with ``keep`` in high precision (e.g. re-quantizing with
    ``exclude=keep``, see :func:`recipe_models`); by default the layer is restored in the candidate graph
    (:func:`restore_layers`). Only the part of each variant that differs from the candidate is run.

    ``direction="quantize_only"``: each variant is the FP32 reference with only L in low precision (as the
    candidate has it: :func:`isolate_layers`; with ``factory``, ``factory(every other low-precision layer)``).
    Upstream of L everything is FP32, so the reference's own activations feed L's variant and only L's
    downstream part runs. ``score`` is then the outputs' relative L2 error vs FP32 with only L quantized
    (``rank_by="rel_l2"``) or the drop of ``metric`` vs FP32 (``rank_by="metric"``); ``metric_gain`` is the
    change of ``metric`` vs FP32 (negative when L hurts), ``metric_restored`` / ``rel_l2_restored`` the
    metric / error of that variant, and ``metric_before`` still the candidate's metric as it is.

    ``workers`` threads run batches side by side (default: one per core, at most 4; 1 = none), each of
    ``batch_size / workers`` samples so the memory in flight stays about that of one ``batch_size`` batch; the
    result does not depend on either. A user ``metric`` function is then called from those threads.
    ``cluster`` (:func:`workbench.cluster.connect`): the batches run as Dask tasks instead (the models sent to every
    worker once), merged in the same order, so the result is bit-identical to the local run with the same
    ``workers``; a worker lost mid-run is replaced by Dask and noted in ``warnings``.

    The captured tensors and the tails' outputs stay within a memory budget (``memory_budget`` bytes for all
    workers, else ``$WORKBENCH_MEMORY_BUDGET``, else half the available memory; :mod:`workbench.backends.capture`):
    the batch step shrinks until a batch fits, and where one sample does not, the layers are scored by several
    tails runs per batch (each layer's numbers stay those of one run); a layer that alone does not fit is refused.
    """
    if rank_by not in ("rel_l2", "metric"):
        raise DataError(f"unknown rank_by '{rank_by}'", hint="use 'rel_l2' or 'metric'")
    if direction not in DIRECTIONS:
        raise DataError(f"unknown direction '{direction}'", hint=f"use one of {', '.join(DIRECTIONS)}")
    only = direction == "quantize_only"
    t0 = time.perf_counter()
    ref = reference if isinstance(reference, onnx.ModelProto) and len(reference.graph.value_info) \
        else load_model(reference)
    cand = candidate if isinstance(candidate, onnx.ModelProto) and len(candidate.graph.value_info) \
        else load_model(candidate)
    metric = metric or output_error()
    sign = 1.0 if metric.higher_is_better else -1.0
    precisions = low_precision_layers(ref, cand)
    if layers is None:
        layers = list(precisions)
    unknown = [n for n in layers if n not in precisions]
    if unknown:
        raise DataError(f"node(s) {unknown} do not run in low precision in the candidate",
                        hint=f"choose among {list(precisions)[:12]}")
    if not layers:
        raise DataError("the candidate has no quantized or low-precision layer to rank",
                        hint="quantize or convert the model first (Quantize / ConvertPrecision edit)")
    ds = load_data(data, ref, sample_axes=sample_axes, run_length=run_length)  # one run of the data per batch
    out_axes = output_sample_axes(ref, ds)
    warnings: list[str] = []
    if only:
        others = {layer: tuple(n for n in precisions if n != layer) for layer in layers}
        variants = {layer: (factory(others[layer]) if factory is not None else isolate_layers(cand, ref, [layer]))
                    for layer in layers}
    else:
        variants = {layer: (factory((layer,)) if factory is not None else restore_layers(cand, ref, [layer]))
                    for layer in layers}
    base = ref if only else cand  # the model every variant differs from; the tails are fed from its run
    tails, boundary, out_map, reads = _tails_model(base, variants)
    outputs = [o.name for o in ref.graph.output]
    n_workers = resolve_workers(workers)
    threads = threads_per_worker(n_workers)
    step = -(-batch_size // n_workers)  # the workers share ``batch_size``: memory in flight stays about the same
    groups, step = _plan_tails(ref, base, ds, variants, tails, boundary, out_map, reads, step,
                               capture_budget(n_workers, memory_budget), warnings)
    del variants
    base_capture = list(dict.fromkeys(c for g in groups for c in g.base_capture))
    plan = _SensitivityBatch(with_outputs(ref, base_capture) if only else ref,
                             cand if only else with_outputs(cand, boundary), groups, outputs, list(layers), metric,
                             out_axes, ds.description, only, rank_by, threads)
    sums = np.zeros(len(layers))
    errs = np.zeros(len(layers))
    pairs = _PairStats(len(layers))  # the ranked quantity per sample, relative to the candidate's
    ref_sum = before_sum = before_err = 0.0
    seen = 0
    total = ds.samples if max_samples is None else min(ds.samples, max_samples)
    # every sum is added to one sample at a time in sample order, so neither the worker count nor the batch
    # split changes a bit of the result
    # on a cluster (``cluster``) the same per-batch function runs as Dask tasks, merged here in the same order
    for r in fan_out(plan, ds.batches(step, max_samples=max_samples, cancel=cancel, warnings=warnings), n_workers,
                     cluster, notify=warnings.append):
        for j in range(len(r.ref_metric)):
            ref_sum += r.ref_metric[j]
            before_sum += r.before_metric[j]
            before_err += r.before_error[j]
            sums += r.metric[:, j]
            errs += r.error[:, j]
        pairs.add(r.scores)
        seen += len(r.ref_metric)
        report(progress, seen, total, "sensitivity")
    if seen == 0:
        raise DataError(f"no samples from {ds.description} were used", hint="provide more samples")
    before = before_sum / seen
    before_e = before_err / seen
    fp32 = ref_sum / seen
    ops = {n.name: n.op_type for n in cand.graph.node}
    rows = []
    for k, layer in enumerate(layers):
        m = sums[k] / seen
        e = errs[k] / seen
        if only:  # the change vs FP32 when only this layer is quantized: most damaging first
            gain = sign * (m - fp32)
            score = -gain if rank_by == "metric" else e
        else:
            gain = sign * (m - before)
            score = gain if rank_by == "metric" else before_e - e
        rows.append((layer, ops.get(layer, "?"), precisions[layer], score, gain, m, e))
    rows.sort(key=lambda r: (-r[3], r[4]) if only else (-r[3], -r[4]))
    table = Table(SENSITIVITY_COLUMNS, tuple((k + 1, *r) for k, r in enumerate(rows)))
    if seen < 16:
        warnings.append(f"only {seen} samples: the ranking is not reliable")
    index = {name: k for k, name in enumerate(layers)}
    unsettled = pairs.unsettled([index[r[0]] for r in rows])
    if unsettled:
        warnings.append(f"{unsettled} of {len(rows) - 1} neighbouring pairs in the ranking differ by less than "
                        f"{SETTLED_Z:g} standard errors (paired, over {seen} samples): their order is within "
                        "sampling noise, may change with other data, and cannot be had from fewer samples")
    return Sensitivity(table, metric.name, metric.higher_is_better, fp32, before, seen,
                       time.perf_counter() - t0, warnings, unsettled, direction)
