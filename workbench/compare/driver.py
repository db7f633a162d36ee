"""Reference vs candidate: output metrics, layerwise metrics joined by tensor name, first divergence, local error.

The reference is the FP32 model in ONNX Runtime; the candidate a converted/quantized model in ONNX Runtime
(real INT8 kernels for Q/DQ models) or any :class:`~workbench.backends.base.Engine` (outputs only).
Data is streamed batch by batch; per tensor only running sums are kept (:class:`ErrorStats`), so memory
does not grow with the number of samples.

Layerwise, every float tensor produced by a reference node that the candidate also produces (Cast and
Q/DQ insertion keep the full-precision names) is compared. The *local* error of a tensor is the error of
its candidate producer when fed the *reference* activations: the candidate graph is cut at every joined
tensor (each cut tensor becomes an input fed from the reference run, its producer writes ``T__local``), so
one extra run gives every layer's own error, separated from the error it inherits.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Union

import numpy as np
import onnx
from onnx import helper

from ..backends.base import Engine
from ..backends.capture import (
    BUDGET_ENV,
    CapturePlan,
    capture_budget,
    format_bytes,
    measure_bytes,
    plan_capture,
    sample_bytes,
)
from ..backends.ort import OrtEngine, check_feeds, with_outputs
from ..cancel import Cancel, Progress, report
from ..cluster import Cluster, fan_out
from ..data import Axes, Batch, Dataset, DataSource, load_data, output_sample_axes, samples_first
from ..errors import DataError, ModelError
from ..graph import TensorInfo, load_model, prune_unused, subgraph_reads, tensor_infos
from ..parallel import resolve_workers, threads_per_worker
from ..table import Table
from .metrics import ErrorStats, Metric, Tolerance, run_metric, topk_hits

__all__ = ["ModelSource", "CompareReport", "compare", "joined_tensors", "local_model", "input_names", "cast_feeds",
           "LAYER_COLUMNS", "MIN_SAMPLES", "TOP_K_MEANING"]

#: a model as the comparison takes it: a path, a sample name, serialized bytes or a ModelProto
ModelSource = Union[str, "os.PathLike[str]", bytes, onnx.ModelProto]  # noqa: UP007
MIN_SAMPLES = 16  # fewer samples than this give a warning: the numbers are not meaningful
LAYER_COLUMNS = ("index", "tensor", "node", "op", "max_abs", "mean_abs", "rel_l2", "cosine", "snr_db",
                 "local_rel_l2", "local_snr_db", "nan", "passed")
TOP_K_MEANING = ("top{k}_agreement: the share of samples whose reference top-1 class (argmax over the classes of a "
                 "[samples, classes] output) is among the candidate's k highest scores; computed only for such "
                 "outputs with more than k classes")


def input_names(model: onnx.ModelProto) -> list[str]:
    """The model's inputs that are not initializers (what a caller feeds)."""
    inits = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


# --- models ------------------------------------------------------------------------------------------


def _as_model(model: ModelSource, what: str) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto) and len(model.graph.value_info):
        return model
    return load_model(model)


def _float(info: TensorInfo | None) -> bool:
    return info is not None and info.dtype in ("float32", "float16", "bfloat16", "float64")


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output if o}


_LOW_SUFFIXES = ("__fp16", "__bf16")


def joined_tensors(reference: onnx.ModelProto, candidate: onnx.ModelProto,
                   tensors: Sequence[str] | None = None) -> tuple[dict[str, str], list[str], list[str]]:
    """({reference tensor: candidate tensor} in reference graph order, only in the reference, only in the
    candidate). A tensor the candidate only holds in fp16/bf16 (``T__fp16``) joins through that name."""
    ref_infos, cand_infos = tensor_infos(reference), tensor_infos(candidate)
    cand_prod = _producers(candidate)
    ref_order = [o for n in reference.graph.node for o in n.output if o]
    if tensors is not None:
        unknown = [t for t in tensors if t not in set(ref_order)]
        if unknown:
            raise DataError(f"tensor(s) {unknown} are not produced by any node of the reference model",
                            hint="use names from the layer table's outputs column")
        wanted = set(tensors)
        ref_order = [t for t in ref_order if t in wanted]
    joined: dict[str, str] = {}
    only_ref: list[str] = []
    for t in ref_order:
        if not _float(ref_infos.get(t)):
            continue
        name = t if t in cand_prod else next((t + s for s in _LOW_SUFFIXES if t + s in cand_prod), None)
        if name is None:
            only_ref.append(t)
        else:
            joined[t] = name
    used = set(joined.values())
    ref_set = {o for n in reference.graph.node for o in n.output}
    only_cand = [o for n in candidate.graph.node for o in n.output
                 if o and o not in ref_set and o not in used and _float(cand_infos.get(o))]
    return joined, only_ref, only_cand


def local_model(candidate: onnx.ModelProto, cut: Sequence[str]) -> tuple[onnx.ModelProto, dict[str, str]]:
    """The candidate cut at every tensor in ``cut``: each becomes a graph input (fed with the reference value)
    and its producer writes ``<name>__local`` instead. Returns (model, {tensor: local output name})."""
    infos = tensor_infos(candidate)
    out = onnx.ModelProto()
    out.CopyFrom(candidate)
    g = out.graph
    cut_set = set(cut)
    consumed = {i for n in g.node for i in n.input}
    renamed: dict[str, str] = {}
    for n in g.node:
        for k, o in enumerate(n.output):
            if o in cut_set:
                n.output[k] = renamed[o] = f"{o}__local"
    del g.output[:]
    del g.value_info[:]
    for t in cut:
        info = infos.get(t)
        elem = helper.np_dtype_to_tensor_dtype(np.dtype(info.dtype)) if info is not None and _float(info) \
            else onnx.TensorProto.FLOAT
        if t in renamed:
            g.output.append(helper.make_tensor_value_info(renamed[t], elem, None))
        if t in consumed and t in renamed:
            g.input.append(helper.make_tensor_value_info(t, elem, None))
    return out, renamed


# --- the report --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompareReport:
    """Result of :func:`compare`; ``to_dict()`` gives the CLI keys."""

    outputs: dict[str, dict[str, Any]]
    samples: int
    tolerance: Tolerance
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    layers: Table | None = None
    first_divergence: dict[str, Any] | None = None
    nan: dict[str, Any] | None = None
    only_in_reference: list[str] = field(default_factory=list)
    only_in_candidate: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: what the ``top{k}_agreement`` values mean, when any output has one (None: none was computed)
    top_k: str | None = None

    @property
    def passed(self) -> bool:
        """Every output within the tolerance."""
        return all(o["passed"] for o in self.outputs.values())

    def node_errors(self, column: str = "rel_l2") -> dict[str, float]:
        """{reference node: error} for colouring a graph view (layerwise runs only)."""
        if self.layers is None:
            return {}
        return {r["node"]: r[column] for r in self.layers.records() if r[column] is not None}

    def to_dict(self) -> dict[str, Any]:
        """The CLI's JSON keys (``layers`` only for a layerwise run)."""
        out: dict[str, Any] = {
            "outputs": self.outputs,
            "first_divergence": self.first_divergence,
            "passed": self.passed,
            "samples": self.samples,
            "tolerance": self.tolerance.to_dict(),
            "metrics": self.metrics,
            "nan": self.nan,
            "only_in_reference": self.only_in_reference,
            "only_in_candidate": len(self.only_in_candidate),
            "warnings": self.warnings,
            "top_k": self.top_k,
        }
        if self.layers is not None:
            out["layers"] = self.layers.records()
        return out



def _nan_origin(candidate: onnx.ModelProto, feeds: dict[str, np.ndarray], samples: int,
                reference: onnx.ModelProto | None, budget: int) -> dict[str, Any] | None:
    """Run one batch (``samples``) with the candidate's float tensors exposed, in graph order, as many per run as
    ``budget`` bytes hold (:func:`~workbench.backends.capture.sample_bytes`); the first holding NaN/Inf."""
    infos = tensor_infos(candidate)
    names = [o for n in candidate.graph.node for o in n.output if o and _float(infos.get(o))]
    sizes, _unknown = sample_bytes(candidate, names, feeds, samples, where="the candidate")
    guess = max(sizes.values(), default=1)  # a tensor of unknown shape: as large as the largest known
    runs: list[list[str]] = [[]]
    held = 0
    for t in names:
        size = sizes.get(t, guess) * samples
        if runs[-1] and held + size > budget:
            runs.append([])
            held = 0
        runs[-1].append(t)
        held += size
    prod = _producers(candidate)
    ref_nodes = {n.name for n in reference.graph.node} if reference is not None else set()
    engine = OrtEngine(with_outputs(candidate, names), optimize=False, low_memory=True)
    try:
        for run in runs:
            values = engine.run(feeds, outputs=run)
            for t in run:
                bad = values[t]
                if not np.isfinite(bad).all():
                    node = prod[t]
                    return {"tensor": t, "node": node.name, "op": node.op_type, "in_reference": node.name in ref_nodes,
                            "nan": int(np.isnan(bad).sum()), "inf": int(np.isinf(bad).sum())}
            del values
    finally:
        engine.close()
    return None


@dataclass
class _BatchPart:
    """One batch's contribution to a comparison, merged in batch order."""

    samples: int
    outputs: dict[str, ErrorStats]
    layers: dict[str, ErrorStats]
    local: dict[str, ErrorStats]
    top_hits: dict[str, dict[int, int]]
    sums: dict[str, dict[str, float]]
    nan_feeds: dict[str, np.ndarray] | None  # the first batch whose candidate outputs hold NaN/Inf


_ENGINES_LOCK = threading.Lock()


@dataclass(frozen=True)
class _Group:
    """The tensors one run per batch captures (:func:`~workbench.backends.capture.plan_capture`): the first group
    also captures the outputs."""

    joined: dict[str, str]  # {reference tensor: candidate tensor} compared in this run
    ref_capture: list[str]
    cand_capture: list[str]
    local: onnx.ModelProto | None  # the candidate cut at every joined tensor, pruned to this group's local outputs
    local_names: dict[str, str]  # {candidate tensor: its local output}


@dataclass
class _CompareBatch:
    """What one batch adds to a comparison, a pure function of the models and the batch: the thread pool and a
    Dask cluster (:func:`workbench.cluster.fan_out`) call the same object. Engines are made on first use in each
    process and never pickled; a candidate given as an engine runs on this process's threads only. The
    intermediate tensors are captured by one run per :class:`_Group` (one group unless the memory budget splits
    them); every tensor's sums come from one run, so the split changes no bit."""

    ref: onnx.ModelProto  # the reference, capturing every group's ``ref_capture``
    cand: onnx.ModelProto | None  # the candidate capturing the joined tensors (None: ``engine`` is the candidate)
    groups: tuple[_Group, ...]
    outputs: list[str]
    joined: dict[str, str]  # {reference tensor: candidate tensor}
    back: dict[str, str]  # {candidate tensor: reference tensor}
    metrics: list[Metric]
    topk: tuple[int, ...]
    out_axes: dict[str, int | None]
    description: str
    threads: int | None
    low_memory: bool = False  # engines without ONNX Runtime's arena (captures: memory returned after each run)
    engine: Any = field(default=None, repr=False, compare=False)  # an Engine candidate (local runs only)
    _engines: Any = field(default=None, init=False, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        if self.engine is not None:
            raise TypeError("a candidate engine cannot be sent to a cluster")  # compare() refuses it earlier
        return {**self.__dict__, "_engines": None}

    def engines(self) -> tuple[OrtEngine, Any, tuple[OrtEngine | None, ...]]:
        """(reference, candidate, each group's local model or None) engines of this process, made once."""
        if self._engines is None:
            with _ENGINES_LOCK:
                if self._engines is None:
                    low = self.low_memory
                    cand = self.engine
                    if cand is None:
                        if self.cand is None:
                            raise TypeError("_CompareBatch needs a candidate model or engine")
                        cand = OrtEngine(self.cand, threads=self.threads, low_memory=low)
                    self._engines = (OrtEngine(self.ref, threads=self.threads, low_memory=low), cand,
                                     tuple(OrtEngine(g.local, threads=self.threads, low_memory=low)
                                           if g.local is not None else None for g in self.groups))
        return self._engines

    def __call__(self, item: Batch) -> _BatchPart:
        """One batch's runs and sums (on a worker thread: ONNX Runtime and numpy release the GIL)."""
        ref_eng, cand_eng, local_engs = self.engines()
        outputs, back = self.outputs, self.back
        feeds, batch, n = check_feeds(self.ref, item.feeds, where=self.description), item.arrays, item.samples
        part = _BatchPart(n, {o: ErrorStats() for o in outputs}, {t: ErrorStats() for t in self.joined},
                          {back[c]: ErrorStats() for g in self.groups for c in g.local_names},
                          {o: {} for o in outputs},
                          {m.name: {"reference": 0.0, "candidate": 0.0} for m in self.metrics}, None)
        for gi, (group, local_eng) in enumerate(zip(self.groups, local_engs)):
            rv = ref_eng.run(feeds, outputs=group.ref_capture)
            if self.engine is not None:
                cv = cand_eng.run(feeds)
                absent = [o for o in outputs if o not in cv]
                if absent:
                    raise DataError(f"the candidate engine does not produce output(s) {absent}",
                                    hint="build the engine from the same model as the reference")
            else:
                cv = cand_eng.run(feeds, outputs=group.cand_capture)
            if gi == 0:
                self._outputs(part, rv, cv, feeds, batch, n)
            for t, c in group.joined.items():
                part.layers[t].update(rv[t], cv[c], n)
            if local_eng is not None:
                local_inputs = [x.name for x in local_eng.session.get_inputs()]
                local_feeds = {i: (rv[back[i]] if i in back else feeds[i]) for i in local_inputs}
                lv = local_eng.run(cast_feeds(local_eng, local_feeds), outputs=list(group.local_names.values()))
                for c, name in group.local_names.items():
                    part.local[back[c]].update(rv[back[c]], lv[name], n)
                del lv
            del rv, cv  # this group's captures go before the next group's come
        return part

    def _outputs(self, part: _BatchPart, rv: Mapping[str, np.ndarray], cv: Mapping[str, np.ndarray],
                 feeds: dict[str, np.ndarray], batch: Mapping[str, np.ndarray], n: int) -> None:
        """The outputs' sums, top-k hits and metrics (from the first group's run)."""
        outputs, out_axes = self.outputs, self.out_axes
        for o in outputs:
            part.outputs[o].update(rv[o], cv[o], n)
            r_o, c_o = samples_first({o: rv[o]}, out_axes)[o], samples_first({o: cv[o]}, out_axes)[o]
            if r_o.ndim == 2 and r_o.shape[0] == n and r_o.shape[1] > 1:  # [samples, classes] only
                for k in self.topk:
                    if k < r_o.shape[1]:
                        part.top_hits[o][k] = int(topk_hits(r_o, np.nan_to_num(c_o.astype(np.float32)), k).sum())
        if any(not np.isfinite(cv[o]).all() for o in outputs):
            part.nan_feeds = feeds
        ref_outs = samples_first({o: rv[o] for o in outputs}, out_axes)
        cand_outs = samples_first({o: cv[o] for o in outputs}, out_axes)
        for m in self.metrics:
            part.sums[m.name]["reference"] += float(run_metric(m, ref_outs, batch, ref_outs, self.description).sum())
            part.sums[m.name]["candidate"] += float(run_metric(m, cand_outs, batch, ref_outs,
                                                               self.description).sum())


def _local_reads(lm: onnx.ModelProto, outputs: Iterable[str]) -> dict[str, list[str]]:
    """{local output: the graph inputs of the local model its computation reads}."""
    prod = _producers(lm)
    inputs = set(input_names(lm))
    out: dict[str, list[str]] = {}
    for o in outputs:
        reads: dict[str, None] = {}
        seen: set[str] = set()
        stack = [o]
        while stack:
            t = stack.pop()
            if t in inputs:
                reads[t] = None
            elif t not in seen and t in prod:
                seen.add(t)
                node = prod[t]
                stack.extend(i for i in node.input if i)
                stack.extend(subgraph_reads(node))
        out[o] = list(reads)
    return out


def _capture_sizes(ref: onnx.ModelProto, cand: onnx.ModelProto, ref_names: Sequence[str], cand_names: Sequence[str],
                   back: Mapping[str, str], feeds: dict[str, np.ndarray], samples: int, budget: int
                   ) -> tuple[dict[str, int], dict[str, int]]:
    """Bytes per sample of each captured reference and candidate tensor: shape inference at the batch's shapes; a
    candidate tensor whose shape stays unknown is its reference's elements at its own type; the rest measured on
    the first batch."""
    ref_sizes, ref_unknown = sample_bytes(ref, ref_names, feeds, samples, where="the reference")
    cand_sizes, cand_unknown = sample_bytes(cand, cand_names, feeds, samples, where="the candidate")
    need = list(dict.fromkeys(ref_unknown + [back[c] for c in cand_unknown if c in back and back[c] not in ref_sizes]))
    if need:
        engine = OrtEngine(with_outputs(ref, need), low_memory=True)
        try:
            ref_sizes.update(measure_bytes(engine, feeds, need, samples,
                                           guess=max([*ref_sizes.values(), *cand_sizes.values(), 1]), budget=budget))
        finally:
            engine.close()
    ref_infos, cand_infos = tensor_infos(ref), tensor_infos(cand)
    for c in cand_unknown:
        r = back.get(c, c)
        r_info, c_info = ref_infos.get(r), cand_infos.get(c)
        r_item = np.dtype(r_info.dtype).itemsize if r_info is not None and _float(r_info) and r_info.dtype != \
            "bfloat16" else 4
        c_item = np.dtype(c_info.dtype).itemsize if c_info is not None and _float(c_info) and c_info.dtype != \
            "bfloat16" else 4
        cand_sizes[c] = -(-ref_sizes.get(r, 0) * c_item // r_item)
    return ref_sizes, cand_sizes


_BUDGET_HINT = ("compare fewer tensors (tensors=[...], CLI --tensors), feed smaller input shapes, use fewer workers, or "
                f"raise the budget (memory_budget=..., ${BUDGET_ENV}) where the machine has the memory")


def _plan_groups(ref: onnx.ModelProto, cand: onnx.ModelProto, ds: Dataset, outputs: list[str], joined: dict[str, str],
                 back: dict[str, str], local_lm: onnx.ModelProto | None, local_names: dict[str, str], step: int,
                 budget: int, warnings: list[str]) -> tuple[tuple[_Group, ...], int]:
    """The layerwise capture within ``budget`` bytes per worker (:func:`~workbench.backends.capture.plan_capture`):
    the batch step and the groups of joined tensors captured by one run each; local errors are left out (with a
    warning) where one tensor's local run alone does not fit."""
    extra_ref = [back[i] for i in input_names(local_lm) if i in back] if local_lm is not None else []
    one = _Group(joined, list(dict.fromkeys(outputs + list(joined) + extra_ref)),
                 list(dict.fromkeys(outputs + list(joined.values()))), local_lm, local_names)
    if ds.samples < (ds.run_length or 1):  # no full run: the batches say so
        return (one,), step
    first = ds.batch(0, min(ds.samples, ds.run_length or 1))
    feeds = check_feeds(ref, first.feeds, where=f"the first sample of {ds.description}")
    ref_sizes, cand_sizes = _capture_sizes(ref, cand, one.ref_capture, one.cand_capture, back, feeds, first.samples,
                                           budget)
    reads = _local_reads(local_lm, local_names.values()) if local_lm is not None else {}
    sizes: dict[Hashable, int] = {("r", t): v for t, v in ref_sizes.items()}
    sizes.update({("c", c): v for c, v in cand_sizes.items()})
    sizes.update({("l", c): cand_sizes[c] for c in local_names})

    def units(with_local: bool) -> list[list[Hashable]]:
        out: list[list[Hashable]] = []
        for t, c in joined.items():
            keys: list[Hashable] = [("r", t), ("c", c)]
            if with_local and c in local_names:
                keys.append(("l", c))
                keys.extend(("r", back[i]) for i in reads[local_names[c]] if i in back)
            out.append(keys)
        return out

    largest = max([*ref_sizes.values(), *cand_sizes.values(), 0])
    # the outputs of both models, the feeds and ErrorStats' float32 temporaries of the largest tensor
    fixed = sum(ref_sizes.get(o, 0) + cand_sizes.get(o, 0) for o in outputs) + \
        sum(-(-v.nbytes // first.samples) for v in feeds.values()) + 12 * largest
    def planned(with_local: bool) -> CapturePlan | None:
        return plan_capture(units(with_local), sizes, labels=list(joined), fixed=fixed, requested=step,
                            fixed_step=ds.run_length, budget=budget, what="layerwise compare", hint=_BUDGET_HINT,
                            refuse=not with_local)

    with_local = local_lm is not None
    plan = planned(with_local)
    if plan is None:
        with_local = False
        warnings.append("local errors were left out: one tensor's local run alone does not fit the memory budget of "
                        f"{format_bytes(budget)} per worker ({_BUDGET_HINT})")
        plan = planned(False)
    assert plan is not None  # refused above otherwise
    note = plan.describe(ds.run_length or step)
    if note:
        warnings.append(note)
    if len(plan.groups) == 1:
        if with_local:
            return (one,), plan.step
        return (_Group(joined, list(dict.fromkeys(outputs + list(joined))), one.cand_capture, None, {}),), plan.step
    groups = []
    names = list(joined)
    for gi, members in enumerate(plan.groups):
        gj = {names[i]: joined[names[i]] for i in members}
        g_local = {c: local_names[c] for c in gj.values() if c in local_names} if with_local else {}
        g_reads = [back[i] for n in g_local.values() for i in reads[n] if i in back]
        lead = outputs if gi == 0 else []
        lm = None
        if g_local:
            assert local_lm is not None
            lm = onnx.ModelProto()
            lm.CopyFrom(local_lm)
            prune_unused(lm.graph, keep=set(g_local.values()), inputs=True)
        groups.append(_Group(gj, list(dict.fromkeys(lead + list(gj) + g_reads)),
                             list(dict.fromkeys(lead + list(gj.values()))), lm, g_local))
    return tuple(groups), plan.step


def compare(
    reference: ModelSource,
    candidate: ModelSource | Engine,
    data: DataSource,
    *,
    layerwise: bool = False,
    local: bool = True,
    tensors: Sequence[str] | None = None,
    tolerance: Tolerance | None = None,
    layer_tolerance: Tolerance | None = None,
    metrics: Iterable[Metric] = (),
    topk: Sequence[int] = (1, 5),
    batch_size: int = 32,
    max_samples: int | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
    cancel: Cancel = None,
    sample_axes: Axes | None = None,
    cluster: Cluster | None = None,
    memory_budget: int | None = None,
    run_length: int | None = None,
) -> CompareReport:
    """Compare ``candidate`` with ``reference`` over ``data`` (anything :func:`~workbench.data.load_data`
    reads: an .npz path, a folder, a dict of arrays, a Dataset; ``sample_axes`` and ``run_length`` as there:
    with a run length every run of either model is exactly one run of the data, whatever ``batch_size``).

    Top-k agreement (``top{k}_agreement``) is reported only where it was computed: for an output of shape
    [samples, classes] with more than ``k`` classes, the share of samples whose reference top-1 class is among
    the candidate's ``k`` highest scores (``CompareReport.top_k`` says so in words).

    ``reference``/``candidate``: paths, sample names or ModelProtos (the candidate may also be an
    :class:`Engine`, outputs only). With ``layerwise`` every joined intermediate tensor is compared (or only
    ``tensors``) and, with ``local``, each one's local error. Metrics such as :func:`accuracy` are evaluated
    on both models. ``workers`` threads (default one per core, at most 4; always 1 for an engine) share
    ``batch_size``, so memory in flight stays that of one batch; the metrics then differ from one worker's
    only by the rounding of their sums. ``cluster`` (:func:`workbench.cluster.connect`): the batches run as Dask
    tasks instead (the models sent to every worker once), merged in the same order, so the report is bit-identical
    to the local run with the same ``workers``; a worker lost mid-run is replaced by Dask and noted in
    ``warnings``. ``progress(samples done, total, "compare")`` after each batch.

    Layerwise captures stay within a memory budget (``memory_budget`` bytes for all workers together, else
    ``$WORKBENCH_MEMORY_BUDGET``, else half the available memory; :mod:`workbench.backends.capture`): the batch
    step shrinks until a batch's captured tensors fit, and where one sample's do not, the tensors are captured by
    several runs per batch (each tensor's numbers stay those of one run, so they do not change); local errors
    are left out, with a warning, where one tensor's local run alone does not fit; a tensor that alone does not
    fit is refused, naming the bytes. The plan is made here, so a cluster runs the same batches.
    """
    tolerance = tolerance or Tolerance()
    layer_tolerance = layer_tolerance or tolerance
    ref = _as_model(reference, "reference")
    engine_cand: Engine | None = None
    cand: onnx.ModelProto | None = None
    if isinstance(candidate, Engine) and not isinstance(candidate, (onnx.ModelProto, str, os.PathLike, bytes)):
        engine_cand = candidate
    else:
        cand = _as_model(candidate, "candidate")  # anything else: load_model says what it is not
    if engine_cand is not None and layerwise:
        raise DataError("layerwise comparison needs the candidate as an ONNX model, not an engine",
                        hint="compare the engine's outputs only, or pass the ONNX model it was built from")
    if engine_cand is not None and cluster is not None:
        raise DataError("a candidate engine cannot run on a cluster (its runtime lives in this process)",
                        hint="compare the ONNX model on the cluster, or the engine without a cluster")
    ds = load_data(data, ref, sample_axes=sample_axes, run_length=run_length)
    out_axes = output_sample_axes(ref, ds)
    _check_io(ref, cand)
    metrics = list(metrics)
    n_workers = 1 if engine_cand is not None else resolve_workers(workers)  # an engine's context is not shared
    threads = threads_per_worker(n_workers)
    step = -(-batch_size // n_workers)
    warnings: list[str] = []
    if ds.samples < MIN_SAMPLES:
        warnings.append(f"only {ds.samples} samples: metrics on so few samples are not meaningful "
                        f"(use {MIN_SAMPLES} or more, ideally hundreds)")
    outputs = [o.name for o in ref.graph.output if o.type.HasField("tensor_type")]
    skipped = [o.name for o in ref.graph.output if not o.type.HasField("tensor_type")]
    if skipped:  # a sequence or map (ZipMap's list of dicts) has no element-wise error
        warnings.append(f"output(s) {skipped} are not tensors (sequence/map): left out of the comparison")
    if not outputs:
        raise DataError("the model has no tensor output to compare", hint="compare a model with tensor outputs")

    joined: dict[str, str] = {}
    only_ref: list[str] = []
    only_cand: list[str] = []
    local_lm: onnx.ModelProto | None = None
    local_names: dict[str, str] = {}
    if layerwise:
        assert cand is not None
        joined, only_ref, only_cand = joined_tensors(ref, cand, tensors)
        if not joined:
            raise DataError("the reference and the candidate share no intermediate tensor names",
                            hint="layerwise comparison joins tensors by name; keep the original names when "
                                 "converting (workbench convert/quantize do)")
    back = {c: r for r, c in joined.items()}
    if layerwise and local:
        assert cand is not None
        # cut at every joined tensor (not only the selected ones) so a local error is one layer's own error
        every = joined if tensors is None else joined_tensors(ref, cand)[0]
        local_lm, local_names = local_model(cand, list(every.values()))
        if tensors is not None:
            keep = {local_names[c] for c in joined.values() if c in local_names}
            prune_unused(local_lm.graph, keep=keep, inputs=True)
            local_names = {c: n for c, n in local_names.items() if n in keep}
        all_back = {c: r for r, c in every.items()}
        back.update({i: all_back[i] for i in input_names(local_lm) if i in all_back})
    budget = capture_budget(n_workers, memory_budget)
    groups: tuple[_Group, ...] = (_Group(joined, outputs, outputs, None, {}),)
    if layerwise:
        assert cand is not None
        groups, step = _plan_groups(
            ref, cand, ds, outputs, joined, back, local_lm, local_names, step, budget, warnings)
    ref_all = list(dict.fromkeys(c for g in groups for c in g.ref_capture))
    cand_model = None if cand is None else (with_outputs(cand, list(joined.values())) if joined else cand)
    plan = _CompareBatch(with_outputs(ref, ref_all), cand_model, groups, outputs, joined, back, metrics, tuple(topk),
                         out_axes, ds.description, threads, layerwise, engine_cand)

    out_stats = {o: ErrorStats() for o in outputs}
    layer_stats = {t: ErrorStats() for t in joined}
    local_stats = {back[c]: ErrorStats() for g in groups for c in g.local_names}
    top_hits: dict[str, dict[int, int]] = {o: {} for o in outputs}
    top_seen: dict[str, dict[int, int]] = {o: {} for o in outputs}
    sums = {m.name: {"reference": 0.0, "candidate": 0.0} for m in metrics}
    nan_feeds = None
    nan_samples = 0
    seen = 0
    total = ds.samples if max_samples is None else min(ds.samples, max_samples)
    batches = ds.batches(step, max_samples=max_samples, cancel=cancel, warnings=warnings)
    for part in fan_out(plan, batches, n_workers, cluster, notify=warnings.append):
        for merged, added in ((out_stats, part.outputs), (layer_stats, part.layers), (local_stats, part.local)):
            for key, stats in added.items():
                merged[key].merge(stats)
        for o, hits in part.top_hits.items():
            for k, h in hits.items():
                top_hits[o][k] = top_hits[o].get(k, 0) + h
                top_seen[o][k] = top_seen[o].get(k, 0) + part.samples
        for name, pair in part.sums.items():
            for side, value in pair.items():
                sums[name][side] += value
        if nan_feeds is None and part.nan_feeds is not None:
            nan_feeds, nan_samples = part.nan_feeds, part.samples
        seen += part.samples
        report(progress, seen, total, "compare")
    if seen == 0:
        raise DataError(f"no samples from {ds.description} were compared", hint="provide more samples")

    out_report: dict[str, dict[str, Any]] = {}
    for o in outputs:
        em = out_stats[o].metrics()
        m: dict[str, Any] = asdict(em)  # the report's per-output record: the metrics and what follows
        for k, count in sorted(top_hits[o].items()):  # only a k computed on every sample of this output
            if top_seen[o][k] == seen:
                m[f"top{k}_agreement"] = count / seen
        m["passed"] = tolerance.passed(em)
        out_report[o] = m
        if em.padded:
            warnings.append(f"output '{o}' has a data-dependent length that differs between the reference and the "
                            f"candidate in {em.padded} batch(es): compared zero-padded, the missing or extra "
                            "elements counted as error in full")
    metric_report = {name: {k: v / seen for k, v in s.items()} for name, s in sums.items()}

    layers = first = None
    if layerwise:
        ref_prod = _producers(ref)
        rows = []
        for i, t in enumerate(joined):
            lm = layer_stats[t].metrics()
            own = local_stats[t].metrics() if t in local_stats else None  # the layer's own (local) error
            node = ref_prod[t]
            passed = layer_tolerance.passed(lm)
            local_rel, local_snr = (own.rel_l2, own.snr_db) if own is not None else (None, None)
            rows.append((i, t, node.name, node.op_type, lm.max_abs, lm.mean_abs, lm.rel_l2, lm.cosine, lm.snr_db,
                         local_rel, local_snr, lm.nan, passed))
            if first is None and not passed:
                first = {"index": i, "tensor": t, "node": node.name, "op": node.op_type, "max_abs": lm.max_abs,
                         "rel_l2": lm.rel_l2, "cosine": lm.cosine, "snr_db": lm.snr_db, "nan": lm.nan,
                         "local_rel_l2": local_rel}
        layers = Table(LAYER_COLUMNS, tuple(rows))

    nan = None
    if nan_feeds is not None:
        if cand is not None:
            nan = _nan_origin(cand, nan_feeds, nan_samples, ref, budget)
        if nan is None:
            bad = [o for o in outputs if out_stats[o].nan]
            nan = {"tensor": bad[0] if bad else None, "node": None, "op": None, "in_reference": None,
                   "nan": sum(out_stats[o].nan for o in outputs), "inf": None}
        warnings.append(f"the candidate produces NaN/Inf; it first appears in tensor '{nan['tensor']}'"
                        + (f" (node '{nan['node']}', {nan['op']})" if nan.get("node") else ""))
    if only_ref:
        warnings.append(f"{len(only_ref)} reference tensor(s) have no candidate counterpart and were not "
                        f"compared (e.g. {only_ref[:3]})")
    top_k = TOP_K_MEANING if any(k.startswith("top") for m in out_report.values() for k in m) else None
    return CompareReport(out_report, seen, tolerance, metric_report, layers, first, nan, only_ref, only_cand,
                         warnings, top_k)


def cast_feeds(engine: OrtEngine, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``feeds`` that ``engine`` takes, cast to its float input types (fp16/fp32/fp64)."""
    types = {i.name: i.type for i in engine.session.get_inputs()}
    out = {}
    for k, v in feeds.items():
        if k not in types:
            continue
        want = {"tensor(float16)": np.float16, "tensor(float)": np.float32, "tensor(double)": np.float64,
                "tensor(bfloat16)": None}.get(types[k])
        out[k] = v.astype(want) if want is not None and v.dtype != want else v
    return out


def _check_io(ref: onnx.ModelProto, cand: onnx.ModelProto | None) -> None:
    """The candidate must have the reference's inputs and outputs (names; ranks where known)."""
    if cand is None:
        return
    ri, ci = input_names(ref), input_names(cand)
    ro, co = [o.name for o in ref.graph.output], [o.name for o in cand.graph.output]
    if set(ri) != set(ci):
        raise ModelError(f"the models' inputs differ: reference {ri}, candidate {ci}",
                         hint="compare a candidate derived from the reference (same input names)")
    missing = [o for o in ro if o not in co]
    if missing:
        raise ModelError(f"the candidate lacks output(s) {missing} of the reference (it has {co})",
                         hint="keep the output names when converting; rename them back with a rename_tensor edit")
    rinf, cinf = tensor_infos(ref), tensor_infos(cand)
    for name in ri + ro:
        a, b = rinf.get(name), cinf.get(name)
        if not (a and b and a.shape is not None and b.shape is not None):
            continue
        fixed = [(x, y) for x, y in zip(a.shape, b.shape) if isinstance(x, int) and isinstance(y, int) and x and y]
        if len(a.shape) != len(b.shape) or any(x != y for x, y in fixed):
            raise ModelError(f"tensor '{name}' has shape {list(a.shape)} in the reference and {list(b.shape)} in "
                             "the candidate", hint="compare a candidate derived from the reference (same inputs "
                             "and outputs)")
