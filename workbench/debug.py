"""Which low-precision layers break accuracy, and the fewest to keep in high precision to fix it.

Sensitivity (:func:`sensitivity`): for each quantized/low-precision layer L, the end metric with only L
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

Bisection (:func:`find_plan`): greedy on the ranking (keep the top 1, 2, 4, ... layers) until the metric
meets the tolerance, bisection between the last failing and first passing count to confirm the smallest
prefix, then a pruning pass that drops kept layers not needed. Every plan tried is recorded with its metric
and an estimated relative cost for a Pareto chart. A tolerance that even the all-high-precision plan misses
stops with the best plan found and says so.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .backends.ort import OrtEngine, with_outputs
from .cancel import cancelled
from .cluster import Cluster, fan_out
from .compare import Metric, _cast_feeds, _input_names, output_error, run_metric
from .data import Axes, Batch, Dataset, load_data, output_sample_axes, samples_first
from .errors import DataError, EditError, RecipeError
from .fsio import atomic_write
from .graph import TensorInfo, load_model, node_flops, prune_unused, tensor_infos
from .parallel import resolve_workers, threads_per_worker
from .recipe import ConvertPrecision, Quantize, Recipe
from .table import Table

__all__ = [
    "low_precision_layers",
    "restore_layers",
    "isolate_layers",
    "sensitivity",
    "DIRECTIONS",
    "Sensitivity",
    "find_plan",
    "Plan",
    "estimated_cost",
    "plan_recipe",
    "recipe_models",
    "debug_precision",
    "DebugResult",
    "outlier_channel_model",
    "SENSITIVITY_COLUMNS",
    "PLAN_COLUMNS",
]

SENSITIVITY_COLUMNS = ("rank", "node", "op", "precision", "score", "metric_gain", "metric_restored", "rel_l2_restored")
#: ``restore``: the candidate with only layer L back in FP32; ``quantize_only``: the FP32 reference with only L
#: in low precision (as Polygraphy's / ONNX Runtime's qdq_loss_debug users expect).
DIRECTIONS = ("restore", "quantize_only")
PLAN_COLUMNS = ("plan", "kept", "keep", "metric", "cost", "met", "step")
Factory = Callable[[tuple[str, ...]], onnx.ModelProto]
Progress = Callable[[str, int, int], Any]
_COST = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0, "fp8": 1.0}


# --- which layers, and restoring them ----------------------------------------------------------------


def low_precision_layers(reference: onnx.ModelProto, candidate: onnx.ModelProto) -> dict[str, str]:
    """{node: precision} for candidate nodes (also in the reference) that run below FP32, in graph order."""
    from .precision import node_precisions

    ref_nodes = {n.name for n in reference.graph.node}
    return {n: p for n, p in node_precisions(candidate).items() if p != "fp32" and n in ref_nodes}


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _toposort(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    ready = set(available)
    pending = list(nodes)
    out: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for n in pending:
            if all((not i) or i in ready for i in n.input):
                out.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):  # a cycle or a missing input: keep order, let ORT report it
            return out + rest
        pending = rest
    return out


def restore_layers(candidate: onnx.ModelProto, reference: onnx.ModelProto, nodes: Iterable[str]) -> onnx.ModelProto:
    """A copy of ``candidate`` in which each named node is the reference's FP32 node again.

    The restored node reads the full-precision tensors (which Q/DQ and Cast insertion leave under their
    original names) and the reference's FP32 weights, and writes the reference's output names; the
    candidate's Q/DQ or Cast nodes that only served it disappear. Tensors read inside If/Loop/Scan bodies count
    as read, and a restored node's bodies read the same full-precision tensors as its inputs.
    """
    from .graph import rename_reads, sort_nodes, subgraph_reads
    ref_nodes = {n.name: n for n in reference.graph.node}
    ref_inits = {i.name: i for i in reference.graph.initializer}
    out = _copy(candidate)
    g = out.graph
    cand_inits = {i.name: i for i in g.initializer}
    infos = tensor_infos(candidate)
    ref_infos = tensor_infos(reference)
    ref_prod = {o: n for n in reference.graph.node for o in n.output if o}
    added: set[str] = set()
    for name in dict.fromkeys(nodes):
        rn = ref_nodes.get(name)
        idx = next((k for k, n in enumerate(g.node) if n.name == name), None)
        if rn is None or idx is None:
            where = "reference" if rn is None else "candidate"
            raise EditError(f"node '{name}' is not in the {where} model", hint="pick a node from the sensitivity table")
        produced = {o for n in g.node for o in n.output} | {i.name for i in g.input}
        cn = g.node[idx]
        new = onnx.NodeProto()
        new.CopyFrom(rn)
        extra: list[onnx.NodeProto] = []
        own = set(new.input)
        body_reads = sorted(t for t in subgraph_reads(new) if t not in own)  # outer tensors its bodies read
        proxy = helper.make_node("Identity", list(new.input) + body_reads, [], name="")
        for k, t in enumerate(proxy.input):
            if not t:
                continue
            if t in ref_inits:
                ci = cand_inits.get(t)
                if ci is None or ci.SerializeToString() != ref_inits[t].SerializeToString():
                    fp32 = f"{t}__fp32"
                    if fp32 not in added:
                        init = onnx.TensorProto()
                        init.CopyFrom(ref_inits[t])
                        init.name = fp32
                        g.initializer.append(init)
                        added.add(fp32)
                    proxy.input[k] = fp32
                continue
            if t in produced:
                ref_info, cand_info = ref_infos.get(t), infos.get(t)
                if ref_info is None or cand_info is None or ref_info.dtype == cand_info.dtype:
                    continue
                # the candidate computes ``t`` in another type (e.g. a Constant converted to fp16): read the
                # reference's own constant, else cast back to the reference's type
                fp32 = f"{t}__fp32"
                proxy.input[k] = fp32
                if fp32 in added:
                    continue
                added.add(fp32)
                producer = ref_prod.get(t)
                if producer is not None and producer.op_type == "Constant":
                    const = onnx.NodeProto()
                    const.CopyFrom(producer)
                    const.name, const.output[0] = f"{producer.name}__fp32", fp32
                    extra.append(const)
                else:
                    to = helper.np_dtype_to_tensor_dtype(np.dtype(ref_info.dtype))
                    extra.append(helper.make_node("Cast", [t], [fp32], name=f"{t}__restore_cast", to=to))
                continue
            if t not in ref_prod and t not in {i.name for i in reference.graph.input}:
                continue  # made inside the node's own bodies
            low = next((t + s for s in ("__fp16", "__bf16") if t + s in produced), None)
            if low is None:
                raise EditError(f"cannot restore node '{name}': its input tensor '{t}' is not in the candidate",
                                hint="the candidate renamed the full-precision tensor; restore it in the recipe "
                                     "(exclude/keep the node) instead")
            extra.append(helper.make_node("Cast", [low], [t], name=f"{t}__restore_cast", to=onnx.TensorProto.FLOAT))
        for k in range(len(new.input)):
            new.input[k] = proxy.input[k]
        renamed = {t: proxy.input[len(new.input) + j] for j, t in enumerate(body_reads)
                   if proxy.input[len(new.input) + j] != t}
        for body in (a.g for a in new.attribute if a.type == onnx.AttributeProto.GRAPH):
            rename_reads(body, renamed)
        for a in new.attribute:
            if a.type == onnx.AttributeProto.GRAPHS:
                for body in a.graphs:
                    rename_reads(body, renamed)
        ref_outs = [o for o in new.output]
        for k, o in enumerate(cn.output):
            read = (any(o in n.input or o in subgraph_reads(n) for n in g.node if n is not cn)
                    or o in {x.name for x in g.output})
            if o and k < len(ref_outs) and o != ref_outs[k] and read:
                info = infos.get(o)
                to = helper.np_dtype_to_tensor_dtype(np.dtype(info.dtype)) if info and info.dtype != "unknown" \
                    else onnx.TensorProto.FLOAT
                extra.append(helper.make_node("Cast", [ref_outs[k]], [o], name=f"{o}__restore_cast", to=to))
        others = [n for n in g.node if n is not cn and any(o in ref_outs for o in n.output)]
        for n in others:
            g.node.remove(n)
        idx = next(k for k, n in enumerate(g.node) if n is cn)
        g.node.remove(cn)
        for j, n in enumerate([*extra, new]):
            g.node.insert(idx + j, n)
    sort_nodes(g)  # bodies' outer reads are dependencies too
    prune_unused(g)
    del g.value_info[:]
    return out


def isolate_layers(candidate: onnx.ModelProto, reference: onnx.ModelProto, nodes: Iterable[str]) -> onnx.ModelProto:
    """The reference with only the named nodes running as in the candidate (everything else FP32).

    Every other low-precision node of the candidate is restored (:func:`restore_layers`); restored weights keep
    the reference's initializer names where nothing else uses them, so the result differs from the reference
    only at the named nodes (which lets :func:`sensitivity` run just their downstream part).
    """
    nodes = list(dict.fromkeys(nodes))
    low = low_precision_layers(reference, candidate)
    missing = [n for n in nodes if n not in low]
    if missing:
        raise EditError(f"node(s) {missing} do not run in low precision in the candidate",
                        hint=f"choose among {list(low)[:12]}")
    out = restore_layers(candidate, reference, [n for n in low if n not in nodes])
    g = out.graph
    ref_inits = {i.name for i in reference.graph.initializer}
    from .graph import all_nodes

    used = {o for n in all_nodes(g) for o in n.output} | {i.name for i in g.input} | {i.name for i in g.initializer}
    back = {i.name: i.name[:-len("__fp32")] for i in g.initializer
            if i.name.endswith("__fp32") and i.name[:-len("__fp32")] in ref_inits
            and i.name[:-len("__fp32")] not in used}
    for i in g.initializer:
        if i.name in back:
            i.name = back[i.name]
    from .graph import rename_reads

    rename_reads(g, back)  # If/Loop/Scan bodies read them by name too
    return out


# --- sensitivity ---------------------------------------------------------------------------------------


@dataclass
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
        return self.table.column("node")


def _descendants(nodes: Sequence[onnx.NodeProto], start: onnx.NodeProto) -> list[onnx.NodeProto]:
    consumers: dict[str, list[int]] = {}
    for k, n in enumerate(nodes):
        for i in n.input:
            consumers.setdefault(i, []).append(k)
    seen = {id(start)}
    keep = [start]
    stack = [start]
    while stack:
        for o in stack.pop().output:
            for k in consumers.get(o, []):
                n = nodes[k]
                if id(n) not in seen:
                    seen.add(id(n))
                    keep.append(n)
                    stack.append(n)
    order = {id(n): k for k, n in enumerate(nodes)}
    return sorted(keep, key=lambda n: order[id(n)])


def _changed(candidate: onnx.ModelProto, variant: onnx.ModelProto) -> tuple[list[onnx.NodeProto], set[str]]:
    """Nodes of ``variant`` that compute something the candidate does not (new or different nodes, nodes
    reading a different initializer, and everything downstream), in graph order; and the changed initializers."""
    cand_nodes = {n.name: n.SerializeToString(deterministic=True) for n in candidate.graph.node}
    cand_inits = {i.name: i.SerializeToString(deterministic=True) for i in candidate.graph.initializer}
    changed_inits = {i.name for i in variant.graph.initializer
                     if cand_inits.get(i.name) != i.SerializeToString(deterministic=True)}
    dirty = set(changed_inits)
    out = []
    for n in variant.graph.node:
        if (cand_nodes.get(n.name) != n.SerializeToString(deterministic=True)
                or any(i in dirty for i in n.input if i)):
            out.append(n)
            dirty.update(o for o in n.output if o)
    return out, changed_inits


def _tails_model(candidate: onnx.ModelProto, variants: Mapping[str, onnx.ModelProto]
                 ) -> tuple[onnx.ModelProto, list[str], dict[str, dict[str, str]]]:
    """One model holding, for each variant (the candidate with one layer in high precision), the part of it
    that differs from the candidate: tensors renamed per variant, unchanged weights shared.

    Returns (model, boundary tensors to feed from the candidate's own run, {layer: {output: tail output}}).
    """
    outputs = [o.name for o in candidate.graph.output]
    cinfos = tensor_infos(candidate)
    cand_inits = {i.name: i for i in candidate.graph.initializer}
    cand_prod = {o: n for n in candidate.graph.node for o in n.output if o}
    g = helper.make_graph([], "sensitivity_tails", [], [])
    shared: set[str] = set()  # initializers and constant-node outputs added once, shared by all tails
    boundary: dict[str, None] = {}
    out_map: dict[str, dict[str, str]] = {}

    def constant(t: str) -> bool:
        """A tensor computed from initializers only in the candidate (e.g. a weight's DequantizeLinear)."""
        if t in cand_inits:
            return True
        n = cand_prod.get(t)
        return n is not None and (n.op_type == "Constant" or (bool(n.input) and all(constant(i) for i in n.input
                                                                                     if i)))

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

    for li, (layer, variant) in enumerate(variants.items()):
        tail, changed_inits = _changed(candidate, variant)
        inits = {i.name: i for i in variant.graph.initializer}
        rename = {o: f"{o}__s{li}" for n in tail for o in n.output if o}
        for name in changed_inits:
            init = onnx.TensorProto()
            init.CopyFrom(inits[name])
            init.name = rename[name] = f"{name}__s{li}"
            g.initializer.append(init)
        for n in tail:
            new = onnx.NodeProto()
            new.CopyFrom(n)
            new.name = f"{n.name}__s{li}"
            for k, i in enumerate(new.input):
                if not i:
                    continue
                if i in rename:
                    new.input[k] = rename[i]
                elif constant(i):
                    share(i)
                elif i in inits:
                    if i not in shared:
                        g.initializer.append(inits[i])
                        shared.add(i)
                else:
                    boundary[i] = None
            for k, o in enumerate(new.output):
                if o:
                    new.output[k] = rename[o]
            g.node.append(new)
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
    return model, list(boundary), out_map


def _metric_value(values: list[float], counts: int) -> float:
    return float(sum(values) / counts) if counts else float("nan")


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


@dataclass
class _SensitivityBatch:
    """What one batch adds to the sensitivity sums, a pure function of the models and the batch: the thread pool
    and a Dask cluster (:func:`workbench.cluster.fan_out`) call the same object. Engines are made on first use in
    each process and never pickled."""

    base: onnx.ModelProto  # the reference (capturing the boundary tensors for quantize_only)
    cand: onnx.ModelProto  # the candidate (capturing the boundary tensors for restore)
    tails: onnx.ModelProto
    outputs: list[str]
    base_capture: list[str]
    out_map: dict[str, dict[str, str]]
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

    def engines(self) -> tuple[OrtEngine, OrtEngine, OrtEngine]:
        if self._engines is None:
            with _ENGINES_LOCK:
                if self._engines is None:
                    self._engines = tuple(OrtEngine(m, threads=self.threads) for m in (self.base, self.cand,
                                                                                          self.tails))
        return self._engines

    def __call__(self, item: Batch) -> _BatchScores:
        """Everything one batch contributes (runs on a worker thread: ONNX Runtime releases the GIL)."""
        ref_eng, cand_eng, tail_eng = self.engines()
        only, outputs, base_capture, out_map, layers, metric = (self.only, self.outputs, self.base_capture,
                                                                  self.out_map, self.layers, self.metric)
        out_axes, description, rank_by, err = self.out_axes, self.description, self.rank_by, output_error()
        sign = 1.0 if metric.higher_is_better else -1.0
        tail_inputs = [i.name for i in tail_eng.session.get_inputs()]
        tail_outputs = [o.name for o in tail_eng.session.get_outputs()]
        feeds, batch = item.feeds, item.arrays
        if only:
            bv = ref_eng.run(feeds, outputs=base_capture)
            rv = {o: bv[o] for o in outputs}
            cv = cand_eng.run(feeds)
        else:
            rv = ref_eng.run(feeds)
            cv = bv = cand_eng.run(feeds, outputs=base_capture)
        known = {**bv, **feeds}
        tv = tail_eng.run(_cast_feeds(tail_eng, {i: known[i] for i in tail_inputs}), outputs=tail_outputs)
        rv = samples_first(rv, out_axes)  # metrics read outputs samples-first
        ref_m = run_metric(metric, rv, batch, rv, description)
        cand_outs = samples_first({o: cv[o] for o in outputs}, out_axes)
        before_m = run_metric(metric, cand_outs, batch, rv, description)
        before_e = run_metric(err, cand_outs, batch, rv, description)
        n = len(ref_m)
        m_all, e_all, scores = np.empty((len(layers), n)), np.empty((len(layers), n)), np.empty((len(layers), n))
        for k, layer in enumerate(layers):
            outs = samples_first({o: tv[out_map[layer][o]] if o in out_map[layer] else bv[o] for o in outputs},
                                 out_axes)
            m_all[k] = run_metric(metric, outs, batch, rv, description)
            e_all[k] = run_metric(err, outs, batch, rv, description)
            if only:
                scores[k] = sign * (ref_m - m_all[k]) if rank_by == "metric" else e_all[k]
            else:
                scores[k] = sign * (m_all[k] - before_m) if rank_by == "metric" else before_e - e_all[k]
        return _BatchScores(ref_m, before_m, before_e, m_all, e_all, scores)


@dataclass
class _EvaluateBatch:
    """One batch's metric sum and sample count for :func:`evaluate` (threads or cluster, as above)."""

    model: onnx.ModelProto
    metric: Metric
    out_axes: dict[str, int | None]
    description: str
    threads: int | None
    _engine: Any = field(default=None, init=False, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_engine": None}

    def __call__(self, item: tuple[Batch, dict[str, np.ndarray]]) -> tuple[float, int]:
        if self._engine is None:
            with _ENGINES_LOCK:
                if self._engine is None:
                    self._engine = OrtEngine(self.model, threads=self.threads)
        batch, rv = item
        outs = samples_first(self._engine.run(batch.feeds), self.out_axes)
        values = run_metric(self.metric, outs, batch.arrays, samples_first(rv, self.out_axes), self.description)
        return float(values.sum()), len(values)


_ENGINES_LOCK = threading.Lock()


def sensitivity(
    reference: Any,
    candidate: Any,
    data: Any,
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
    cancel: Callable[[], bool] | None = None,
    sample_axes: Axes | None = None,
    cluster: Cluster | None = None,
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
    """
    if rank_by not in ("rel_l2", "metric"):
        raise DataError(f"unknown rank_by '{rank_by}'", hint="use 'rel_l2' or 'metric'")
    if direction not in DIRECTIONS:
        raise DataError(f"unknown direction '{direction}'", hint=f"use one of {', '.join(DIRECTIONS)}")
    only = direction == "quantize_only"
    import time

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
    ds = load_data(data, ref, sample_axes=sample_axes)
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
    tails, boundary, out_map = _tails_model(base, variants)
    del variants
    outputs = [o.name for o in ref.graph.output]
    base_capture = list(dict.fromkeys(outputs + [b for b in boundary if b not in _input_names(base)]))
    n_workers = resolve_workers(workers)
    threads = threads_per_worker(n_workers)
    step = -(-batch_size // n_workers)  # the workers share ``batch_size``: memory in flight stays about the same
    plan = _SensitivityBatch(with_outputs(ref, base_capture) if only else ref,
                             cand if only else with_outputs(cand, boundary), tails, outputs, base_capture, out_map,
                             list(layers), metric, out_axes, ds.description, only, rank_by, threads)
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
        if progress is not None:
            progress("sensitivity", seen, total)
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


# --- cost and evaluation -----------------------------------------------------------------------------


def estimated_cost(model: onnx.ModelProto, reference: onnx.ModelProto | None = None) -> float | None:
    """Relative cost of ``model``: FLOPs weighted by precision (fp32 4, fp16/bf16 2, int8/fp8 1 per FLOP),
    divided by the same FLOPs all in FP32 (so all-FP32 = 1.0, all-INT8 = 0.25). An estimate, not a timing;
    symbolic dims count as 1. None when no layer has known FLOPs."""
    from .precision import node_precisions

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


def evaluate(model: onnx.ModelProto, data: Dataset, metric: Metric, reference_outputs: list[dict[str, np.ndarray]],
             *, batch_size: int, max_samples: int | None, reference: onnx.ModelProto,
             workers: int | None = None, cluster: Cluster | None = None) -> float:
    """Mean per-sample ``metric`` of ``model`` over ``data`` (reference outputs precomputed per batch), batches
    run on ``workers`` threads (see :func:`sensitivity`) or as tasks on ``cluster`` (the same sums, same order)."""
    n_workers = resolve_workers(workers)
    data_in = data
    data = load_data(data, reference)
    plan = _EvaluateBatch(model, metric, output_sample_axes(reference, data), data.description,
                          threads_per_worker(n_workers))
    if cluster is None:
        batches: Iterable[Any] = data.batches(batch_size, max_samples=max_samples)
    else:  # the data goes to the workers once, for every plan evaluated on it
        batches = cluster.share_each(data_in, ("evaluate", batch_size, max_samples),
                                     lambda: data.batches(batch_size, max_samples=max_samples))
    total = seen = 0.0
    for value, n in fan_out(plan, zip(batches, reference_outputs), n_workers, cluster):
        total += value
        seen += n
    return total / seen if seen else float("nan")


# --- the plan -----------------------------------------------------------------------------------------


@dataclass
class Plan:
    """The layers to keep in high precision, the metric it reaches, and every plan tried (``PLAN_COLUMNS``)."""

    keep: tuple[str, ...]
    metric: float
    met: bool
    target: float
    tried: Table
    message: str
    cost: float | None = None


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
) -> Plan:
    """Smallest prefix of ``ranking`` to keep in high precision so ``ok(metric)``: greedy (1, 2, 4, ...), then
    bisection between the last failing and the first passing count, then pruning of unneeded layers.

    ``evaluate_plan(keep) -> (metric, cost)`` builds and measures one plan.
    """
    rows: list[tuple[Any, ...]] = []
    cache: dict[tuple[str, ...], tuple[float, float | None]] = {}

    def run(keep: tuple[str, ...], step: str) -> bool:
        if keep not in cache:
            if len(cache) >= max_evaluations:
                return False
            cache[keep] = evaluate_plan(keep)
            m, c = cache[keep]
            rows.append((len(rows), len(keep), list(keep), m, c, bool(ok(m)), step))
            if progress is not None:
                progress(f"plan {len(rows)}: keep {len(keep)}", len(rows), max_evaluations)
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
        return Plan(keep, m, False, target, tried, message, c)
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
            for layer in reversed(chosen):
                trial = tuple(x for x in chosen if x != layer)
                if trial and run(trial, "prune"):
                    chosen = trial
        message = f"keep {len(chosen)} of {n} layers in high precision to meet the tolerance"
        if len(cache) >= max_evaluations:
            message += f" (search stopped at {max_evaluations} plan evaluations: a smaller set may exist)"
    m, c = cache[chosen]
    return Plan(chosen, m, True, target, Table(PLAN_COLUMNS, tuple(rows)), message, c)


# --- recipes ------------------------------------------------------------------------------------------


def plan_recipe(recipe: Recipe, keep: Iterable[str]) -> Recipe:
    """The recipe with ``keep`` added to the last precision edit (Quantize ``exclude`` / ConvertPrecision ``keep``)."""
    keep = tuple(keep)
    edits = list(recipe.edits)
    for k in range(len(edits) - 1, -1, -1):
        e = edits[k]
        if isinstance(e, Quantize):
            edits[k] = dataclasses.replace(e, exclude=tuple(dict.fromkeys((*e.exclude, *keep))))
            return recipe.replace(edits=tuple(edits))
        if isinstance(e, ConvertPrecision):
            edits[k] = dataclasses.replace(e, keep=tuple(dict.fromkeys((*e.keep, *keep))))
            return recipe.replace(edits=tuple(edits))
    raise RecipeError("the recipe has no quantize or convert_precision edit to adjust",
                      hint="add one first (workbench quantize/convert --recipe-out, or the Precision tab)")


def recipe_models(original: onnx.ModelProto, recipe: Recipe, cache_dir: str | os.PathLike[str] | None
                  ) -> tuple[onnx.ModelProto, Factory]:
    """(FP32 reference = the recipe's graph edits only, factory ``keep -> candidate model``)."""
    from .replay import replay

    plan_recipe(recipe, ())  # raises when there is no precision edit
    reference = replay(original, recipe.edits, cache_dir=cache_dir, precision=False)
    return reference, lambda keep: replay(original, plan_recipe(recipe, keep).edits, cache_dir=cache_dir)


# --- all together ---------------------------------------------------------------------------------------


@dataclass
class DebugResult:
    """Sensitivity ranking + plan; ``to_dict()`` gives the CLI keys."""

    sensitivity: Sensitivity
    plan: Plan
    metric_reference: float
    metric_before: float
    recipe: Recipe | None = None
    recipe_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "sensitivity": [{"node": r["node"], "score": r["score"], "op": r["op"], "precision": r["precision"],
                             "metric_gain": r["metric_gain"], "metric_restored": r["metric_restored"]}
                            for r in self.sensitivity.table.records()],
            "keep_high_precision": list(self.plan.keep),
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
            "warnings": self.sensitivity.warnings,
            "direction": self.sensitivity.direction,
        }


def debug_precision(
    reference: onnx.ModelProto,
    candidate: onnx.ModelProto,
    data: Any,
    *,
    factory: Factory | None = None,
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
    cancel: Callable[[], bool] | None = None,
    sample_axes: Axes | None = None,
    cluster: Cluster | None = None,
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
    """
    ref = reference if len(reference.graph.value_info) else load_model(reference)
    cand = candidate if len(candidate.graph.value_info) else load_model(candidate)
    metric = metric or output_error()
    ds = load_data(data, ref, sample_axes=sample_axes)
    out_axes = output_sample_axes(ref, ds)
    limits = [n for n in (max_samples, rank_samples) if n]
    sens = sensitivity(ref, cand, ds, metric=metric, layers=layers, batch_size=batch_size, factory=factory,
                       max_samples=min(limits) if limits else None, direction=direction, workers=workers,
                       progress=progress, cancel=cancel, cluster=cluster)
    # reference outputs once (all evaluation samples), reused by every plan evaluation
    ref_eng = OrtEngine(ref)
    warnings: list[str] = []
    ref_outs: list[dict[str, np.ndarray]] = []
    ref_total = 0.0
    samples = 0
    for batch in ds.batches(batch_size, max_samples=max_samples, warnings=warnings):
        rv = ref_eng.run(batch.feeds)
        ref_outs.append(rv)
        first = samples_first(rv, out_axes)
        ref_total += float(run_metric(metric, first, batch.arrays, first, ds.description).sum())
        samples += batch.samples
    metric_reference = ref_total / samples
    if metric.higher_is_better:
        target = metric_reference - tolerance
        granularity = 1.0 / samples
        if tolerance < granularity and metric.name == "accuracy":
            sens.warnings.append(f"a tolerance of {tolerance:g} is finer than one sample in {samples} "
                                 f"({granularity:.4g}): the plan must match the reference's correct count")

        def ok(m: float) -> bool:
            return m >= target - 1e-12
    else:
        target = tolerance

        def ok(m: float) -> bool:
            return m <= target + 1e-12

    build = factory or (lambda keep: restore_layers(cand, ref, keep))

    def evaluate_plan(keep: tuple[str, ...]) -> tuple[float, float | None]:
        if cancelled(cancel):
            raise DataError("debugging was cancelled", hint="run it again to finish")
        model = cand if not keep and factory is None else build(keep)
        m = evaluate(model, ds, metric, ref_outs, batch_size=batch_size, max_samples=max_samples, reference=ref,
                     workers=workers, cluster=cluster)
        return m, estimated_cost(model, ref)

    plan = find_plan(sens.ranking, evaluate_plan, ok=ok, target=target, higher_is_better=metric.higher_is_better,
                     progress=progress)
    before = next((r[3] for r in plan.tried.rows if r[1] == 0), sens.metric_before)
    out_recipe = plan_recipe(recipe, plan.keep) if recipe is not None else None
    path = None
    if out_recipe is not None and recipe_out is not None:
        path = str(atomic_write(recipe_out, out_recipe.to_json()))
    return DebugResult(sens, plan, metric_reference, before, out_recipe, path)


# --- a model that breaks in INT8, honestly ---------------------------------------------------------------


def outlier_channel_model(model: onnx.ModelProto, pairs: Mapping[str, str], *, channel: int = 0,
                          factor: float = 64.0) -> onnx.ModelProto:
    """Scale one channel by ``factor`` between a BatchNormalization (``pairs`` key) and the weighted node that
    reads it after a ReLU/pool (value), compensated in that node's weights: the FP32 function is unchanged
    (ReLU and max-pooling commute with a positive scale), but the activation now has one outlier channel,
    as real networks do, and per-tensor INT8 quantization of it loses the other channels."""
    out = _copy(model)
    inits = {i.name: i for i in out.graph.initializer}
    nodes = {n.name: n for n in out.graph.node}

    def scale(name: str, axis: int, by: float) -> None:
        arr = numpy_helper.to_array(inits[name]).copy()
        index = [slice(None)] * arr.ndim
        index[axis] = channel
        arr[tuple(index)] *= by
        inits[name].CopyFrom(numpy_helper.from_array(arr, name))

    for bn_name, consumer in pairs.items():
        bn, node = nodes.get(bn_name), nodes.get(consumer)
        if bn is None or node is None or bn.op_type != "BatchNormalization":
            raise EditError(f"'{bn_name}' must be a BatchNormalization and '{consumer}' a node of the model",
                            hint="name a BatchNormalization followed (via Relu/MaxPool) by a Conv or Gemm")
        if node.op_type == "Conv":
            axis = 1
        elif node.op_type == "Gemm":
            axis = 1 if next((a.i for a in node.attribute if a.name == "transB"), 0) else 0
        else:
            raise EditError(f"'{consumer}' is a {node.op_type}; outlier_channel_model handles Conv and Gemm",
                            hint="pick a Conv or Gemm consumer")
        scale(bn.input[1], 0, factor)  # gamma
        scale(bn.input[2], 0, factor)  # beta
        scale(node.input[1], axis, 1.0 / factor)
    return out
