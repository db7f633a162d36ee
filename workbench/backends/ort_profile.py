"""Per-node timings from ONNX Runtime's profiler, in the workbench's one timing-table schema.

ORT writes a Chrome-trace JSON when ``SessionOptions.enable_profiling`` is set: one ``<node>_kernel_time``
event per node per run, inside ``model_run`` events. With graph optimisations off the node names are the
ONNX node names. With them on, ORT fuses nodes (Conv+BatchNorm+Relu, NCHWc layouts, ...) and renames
them; the optimised graph is saved beside the trace and each optimised node is mapped back to the ONNX
nodes it computes (see :func:`map_optimized_nodes`).

The timing schema (``TIMING_COLUMNS``) lives here, at the lowest layer that builds timing tables, so that
backends can produce them without importing :mod:`workbench.profile` (which re-exports it).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx

from ..cancel import Cancel, Progress, cancelled, report
from ..errors import DataError
from ..graph import load_model, model_bytes
from ..table import Table
from .base import Feeds
from .ort import is_ort_error

if TYPE_CHECKING:  # ort.py imports this module lazily; no import cycle at run time
    from .ort import OrtEngine

__all__ = [
    "TIMING_COLUMNS",
    "PRECISION_RANK",
    "lowest_precision",
    "timing_table",
    "profile_session",
    "profile_model",
    "map_optimized_nodes",
    "parse_ort_trace",
]

TIMING_COLUMNS = ("name", "onnx_nodes", "type", "precision", "median_ms", "mean_ms", "pct")

# Lower rank = fewer bits. Index/bool types only count when a layer touches nothing else.
PRECISION_RANK = {"fp4": 0, "int4": 0, "fp8": 1, "int8": 2, "uint8": 2, "fp16": 3, "bf16": 3, "fp32": 4, "fp64": 5}
_INDEX_TYPES = ("int32", "int64", "int16", "uint16", "uint32", "uint64", "bool")

# ORT's dtype names in input_type_shape / output_type_shape -> workbench precision names
_ORT_DTYPES = {"float": "fp32", "float16": "fp16", "bfloat16": "bf16", "double": "fp64", "int8": "int8",
               "uint8": "uint8", "int4": "int4", "uint4": "int4", "float8e4m3fn": "fp8", "float8e5m2": "fp8",
               "int32": "int32", "int64": "int64", "bool": "bool", "int16": "int16", "uint16": "uint16"}

# ORT layout ops that compute nothing of the model's own (they have no ONNX node of their own)
_LAYOUT_OPS = {"ReorderInput", "ReorderOutput", "MemcpyToHost", "MemcpyFromHost"}


def lowest_precision(labels: Iterable[str | None]) -> str | None:
    """The narrowest numeric precision among ``labels`` (``int8`` beats ``fp16`` beats ``fp32``).

    Index types (int32/int64/bool) only win when nothing else is present; None when nothing is known.
    """
    seen = [x for x in labels if x]
    ranked = [x for x in seen if x in PRECISION_RANK]
    if ranked:
        best = min(ranked, key=lambda x: PRECISION_RANK[x])
        return "int8" if best == "uint8" else best
    index = [x for x in seen if x in _INDEX_TYPES]
    return index[0] if index else None


def timing_table(records: Iterable[Mapping[str, Any]]) -> Table:
    """Build a timing table from records with name, onnx_nodes, type, precision, median_ms, mean_ms.

    ``pct`` is each row's share of the summed median time (recomputed here so every source agrees).
    """
    rows = [dict(r) for r in records]
    total = sum(float(r.get("median_ms") or 0.0) for r in rows)
    out = []
    for r in rows:
        median = float(r.get("median_ms") or 0.0)
        mean = r.get("mean_ms")
        out.append((
            str(r["name"]),
            [str(n) for n in (r.get("onnx_nodes") or [])],
            r.get("type") or "",
            r.get("precision"),
            median,
            float(mean) if mean is not None else median,
            100.0 * median / total if total > 0 else 0.0,
        ))
    return Table(TIMING_COLUMNS, tuple(out))


def _dtype(entry: Mapping[str, Any]) -> str | None:
    for key in entry:
        return _ORT_DTYPES.get(str(key), str(key))
    return None


def parse_ort_trace(events: Sequence[Mapping[str, Any]], *, skip_runs: int = 0) -> dict[str, dict[str, Any]]:
    """Per-node samples from an ORT profiler trace: {node: {"op", "samples" [ms per run], "dtypes"}}.

    Node kernel events are assigned to the ``model_run`` they fall in; the first ``skip_runs`` runs
    (warm-up) are dropped. Several kernel events of one node in one run are summed.
    """
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                  if e.get("cat") == "Session" and e.get("name") == "model_run")
    runs = runs[skip_runs:]
    nodes: dict[str, dict[str, Any]] = {}
    per_run: dict[str, list[float]] = {}
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        ts = e["ts"]
        run = next((i for i, (a, b) in enumerate(runs) if a <= ts <= b), None)
        if run is None:
            continue
        name = e["name"][: -len("_kernel_time")]
        args = e.get("args", {})
        info = nodes.setdefault(name, {"op": args.get("op_name", ""), "dtypes": set(), "order": len(nodes)})
        for entry in list(args.get("input_type_shape", [])) + list(args.get("output_type_shape", [])):
            d = _dtype(entry)
            if d:
                info["dtypes"].add(d)
        samples = per_run.setdefault(name, [0.0] * len(runs))
        samples[run] += e["dur"] / 1000.0
    for name, info in nodes.items():
        info["samples"] = per_run[name]
    return nodes


_EPILOGUE_OPS = {"Relu", "Clip", "LeakyRelu", "BatchNormalization", "QuantizeLinear"}


def map_optimized_nodes(original: onnx.ModelProto, optimized: onnx.ModelProto) -> dict[str, list[str]]:
    """For each node of ORT's optimised graph, the original ONNX nodes it computes.

    Evidence, strongest first: the optimised node keeps an original node's name; it writes an original
    tensor (that tensor's producer); its name is an original tensor plus an ORT suffix (``x_nchwc``).
    From those seeds we first walk forward over fused-away epilogues (an activation or QuantizeLinear that
    is the only reader of a seed's vanished output: a QLinearConv applies them itself), then back through
    original tensors that no longer exist in the optimised graph, claiming their producers unless another
    optimised node claimed them. Layout-only nodes ORT inserts (ReorderInput/Output, Memcpy) map to no ONNX node.
    """
    producer = {o: n.name for n in original.graph.node for o in n.output}
    node_inputs = {n.name: list(n.input) for n in original.graph.node}
    names = set(node_inputs)
    present = {t for n in optimized.graph.node for t in (*n.input, *n.output)}
    present |= {i.name for i in optimized.graph.input} | {o.name for o in optimized.graph.output}

    seeds: dict[str, list[str]] = {}
    for n in optimized.graph.node:
        if n.op_type in _LAYOUT_OPS and n.name not in names:
            seeds[n.name] = []
            continue
        found: list[str] = []
        if n.name in names:
            found.append(n.name)
        found += [producer[o] for o in n.output if o in producer]
        if not found:
            base = re.sub(r"(_token_\d+|_nchwc|_fused|_[A-Za-z]+Fusion)+$", "", n.name)
            if base in names:
                found.append(base)
            elif base in producer:
                found.append(producer[base])
        seeds[n.name] = list(dict.fromkeys(found))

    # epilogues first: an activation or Quantize that only finishes a seed's output (now fused away) is that
    # seed's (a QLinearConv requantizes and applies the Relu itself); a DequantizeLinear stays with its consumer
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in original.graph.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n)
    outputs_of = {n.name: list(n.output) for n in original.graph.node}
    claimed = {s for found in seeds.values() for s in found}
    for found in seeds.values():
        frontier = list(found)
        while frontier:
            tensors = [t for t in outputs_of.get(frontier.pop(), []) if t and t not in present]
            for t in tensors:
                users = consumers.get(t, [])
                if len(users) == 1 and users[0].op_type in _EPILOGUE_OPS and users[0].name not in claimed:
                    found.append(users[0].name)
                    claimed.add(users[0].name)
                    frontier.append(users[0].name)
    result: dict[str, list[str]] = {}
    for opt_name, found in seeds.items():
        covered = list(found)
        stack = list(found)
        while stack:
            node = stack.pop()
            for t in node_inputs.get(node, []):
                if not t or t in present or t not in producer:
                    continue
                p = producer[t]
                if p in claimed or p in covered:
                    continue
                covered.append(p)
                stack.append(p)
        order = {n.name: i for i, n in enumerate(original.graph.node)}
        result[opt_name] = sorted(covered, key=lambda x: order.get(x, 0))
    return result


def profile_session(engine: OrtEngine, feeds: Feeds, *, iterations: int = 20, warmup: int = 2,
                    progress: Progress | None = None, cancel: Cancel = None) -> Table:
    """Per-node timings of ``engine`` (an :class:`~workbench.backends.ort.OrtEngine`) over ``iterations`` runs.

    ``progress(run, warmup + iterations, phase)`` after each run; ``cancel`` stops between runs
    (:class:`~workbench.errors.DataError`, nothing kept).

    Profiling must be switched on when a session is created: an engine made with ``trace`` is profiled itself
    (once: its session is closed after), any other gets a second session on ``engine.model`` with the engine's own
    options (optimisation level, threads, the file it reads).
    """
    if iterations < 1:
        raise DataError(f"iterations must be at least 1, got {iterations}", hint="use --iterations 20")
    if engine.trace is not None:
        return _profile_traced(engine, engine.trace, feeds, iterations, warmup, progress, cancel)
    from .ort import OrtEngine

    with tempfile.TemporaryDirectory(prefix="wb-ortprof-") as tmp:
        twin = OrtEngine(engine.model, optimize=engine.optimize, threads=engine.threads, path=engine.path, trace=tmp)
        return _profile_traced(twin, Path(tmp), feeds, iterations, warmup, progress, cancel)


def _profile_traced(engine: OrtEngine, folder: Path, feeds: Feeds, iterations: int, warmup: int,
                    progress: Progress | None, cancel: Cancel) -> Table:
    """Run an engine made with ``trace=folder`` and read its trace. Where ONNX Runtime fused or renamed nodes, its
    optimised graph maps them back to the model's, written by a second session after the first is closed (each is
    the size of the model: a 194 MB tree ensemble is 1.15 GB as a protobuf)."""
    session = engine.session
    runs = warmup + iterations
    try:
        for i in range(runs):
            if cancelled(cancel):
                raise DataError(f"profiling cancelled after {i} of {runs} runs", hint="run it again when ready")
            session.run(None, dict(feeds))
            report(progress, i + 1, runs, "warm-up" if i < warmup else "timed runs")
    except Exception as exc:
        session.end_profiling()
        engine.close()
        if not is_ort_error(exc):
            raise
        raise DataError(f"ONNX Runtime failed to run the model while profiling: {str(exc).strip().splitlines()[0]}",
                        hint="check input names, shapes and dtypes against `workbench inspect`") from exc
    trace = json.loads(Path(session.end_profiling()).read_text())
    del session
    engine.close()
    nodes = parse_ort_trace(trace, skip_runs=warmup)
    mapping = None
    if engine.optimize and not _as_is(nodes, engine.model):
        mapping = map_optimized_nodes(engine.model, _optimized_graph(engine, folder / "optimized.onnx"))
    records = []
    for name, info in sorted(nodes.items(), key=lambda kv: kv[1]["order"]):
        samples = info["samples"]
        records.append({
            "name": name,
            "onnx_nodes": mapping.get(name, []) if mapping is not None else [name],
            "type": info["op"],
            "precision": lowest_precision(info["dtypes"]),
            "median_ms": statistics.median(samples),
            "mean_ms": statistics.fmean(samples),
        })
    return timing_table(records)


# ops ONNX Runtime folds or removes without a kernel of their own (they take no time to map)
_NO_KERNEL = frozenset({"Constant", "Identity", "Dropout"})


def _as_is(nodes: Mapping[str, Mapping[str, Any]], model: onnx.ModelProto) -> bool:
    """Whether ONNX Runtime ran ``model``'s own nodes (``nodes``: :func:`parse_ort_trace`): each traced node is a
    node of the model with its op type, and each node of the model was traced (Constant, Identity and Dropout
    aside, which ORT removes), so none was fused away or renamed. Then the optimised graph, which costs another copy of the model, is not needed."""
    g = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in g.node for a in n.attribute):
        return False
    ops = {n.name: n.op_type for n in g.node}
    return all(ops.get(name) == info["op"] for name, info in nodes.items()) and all(
        n.name in nodes for n in g.node if n.op_type not in _NO_KERNEL)


def _optimized_graph(engine: OrtEngine, path: Path) -> onnx.ModelProto:
    """The graph ONNX Runtime optimises ``engine.model`` into (a session made only to write it, with the engine's
    optimisation level)."""
    import onnxruntime as ort

    from .ort import optimization_level

    opts = ort.SessionOptions()
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                            optimization_level(engine.model, engine.optimize))
    opts.log_severity_level = 3
    opts.optimized_model_filepath = str(path)
    source = str(engine.path) if engine.path is not None else model_bytes(engine.model)
    ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
    return onnx.load(str(path))


def profile_model(model: Any, feeds: Feeds, *, optimize: bool = True, iterations: int = 20,
                  threads: int | None = None, path: str | os.PathLike[str] | None = None,
                  progress: Progress | None = None, cancel: Cancel = None) -> Table:
    """Profile ``model`` (path, sample name or ModelProto) per node in one ORT CPU session (``progress`` and
    ``cancel`` as in :func:`profile_session`). A ModelProto is used as it is (not copied); ``path``: the file it
    is, unchanged, which ONNX Runtime then reads instead of the model serialised again."""
    from .ort import OrtEngine, check_feeds

    model = model if isinstance(model, onnx.ModelProto) else load_model(model)
    feeds = check_feeds(model, feeds)
    with tempfile.TemporaryDirectory(prefix="wb-ortprof-") as tmp:
        engine = OrtEngine(model, optimize=optimize, threads=threads, path=path, trace=tmp)
        try:
            return profile_session(engine, feeds, iterations=iterations, progress=progress, cancel=cancel)
        finally:
            engine.close()
