"""The corpus suite: on every corpus model, what a user would do, one test per (model, step).

CI runs the manifests marked ``"ci": true`` (the slow steps layerwise, debug and dashboard only on the smallest
model of each task, to fit CI's budget); ``CORPUS=all`` runs every step on every manifest (``make corpus``);
``CORPUS_MODELS=a,b`` runs every step on the models named. Each step ends
``ok`` or in a clean refusal: a :class:`~workbench.errors.WorkbenchError` with a specific message (the test
records it and passes). Anything else (a traceback, an internal error, a wrong number) fails. Every outcome is
written to ``benchmarks/out/corpus_results.json``; ``python -m corpus.report`` renders docs/corpus.md from it.

Steps share their artefacts (the INT8 model is compared, debugged and built): a step whose prerequisite was
refused or failed is recorded as ``blocked`` and skipped.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.corpus

ROOT = Path(__file__).resolve().parents[1]
# the working results file; corpus.run gives each child its own (CORPUS_RESULTS) and merges it. Never the
# committed docs/corpus_results.json, which only corpus.run updates.
RESULTS = Path(os.environ.get("CORPUS_RESULTS") or ROOT / "benchmarks" / "out" / "corpus_results.json")
ALL = os.environ.get("CORPUS", "").lower() == "all"
ONLY = [m for m in os.environ.get("CORPUS_MODELS", "").split(",") if m]
ONLY_STEPS = [s for s in os.environ.get("CORPUS_STEPS", "").split(",") if s]  # corpus.run resumes after a kill
CALIB_SAMPLES = 32 if ALL else 8
EVAL_SAMPLES = 16 if ALL else 8
DEBUG_SAMPLES = 4
STEPS = ("inspect", "check", "simplify", "fp16", "int8_tensorrt", "int8_onnxruntime", "compare", "layerwise",
         "debug", "build", "profile", "dashboard")
SIMPLIFY_RTOL = 1e-5


# --- which models ------------------------------------------------------------------------------------------


def _manifests() -> tuple[list[dict[str, Any]], str]:
    """(manifests to run, why none when empty)."""
    try:
        from corpus.fetch import manifests
    except ImportError as exc:
        return [], f"corpus.fetch is not importable ({exc})"
    found = [dict(m) for m in manifests(ci_only=not ALL)]
    if ONLY:
        found = [m for m in found if m["id"] in ONLY]
    return found, "no manifest selected" if not found else ""


HEAVY = ("layerwise", "debug", "dashboard")  # the slow steps (tens of seconds per model on 2 cores)
HEAVY_CI_MAX_BYTES = 3_000_000


def heavy_models(manifests: list[dict[str, Any]]) -> set[str]:
    """Models that run the slow steps: all with CORPUS=all; in CI the smallest model of each task (up to 3 MB),
    so the CI subset covers every kind within its time budget."""
    if ALL or ONLY:
        return {m["id"] for m in manifests}
    best: dict[str, dict[str, Any]] = {}
    for m in manifests:
        t = m.get("task", "")
        if m.get("size_bytes", 0) <= HEAVY_CI_MAX_BYTES and (t not in best or m["size_bytes"] < best[t]["size_bytes"]):
            best[t] = m
    return {m["id"] for m in best.values()}


MANIFESTS, NONE_WHY = _manifests()
_HEAVY = heavy_models(MANIFESTS)
CASES = [(m["id"], s) for m in MANIFESTS for s in STEPS
         if (s not in HEAVY or m["id"] in _HEAVY) and (not ONLY_STEPS or s in ONLY_STEPS)] or [("none", "none")]


# --- results file --------------------------------------------------------------------------------------------

_results: dict[str, dict[str, Any]] = {}


def _record(model: str, step: str, status: str, message: str = "", seconds: float = 0.0, **detail: Any) -> None:
    _results[f"{model}/{step}"] = {"model": model, "step": step, "status": status, "message": message[:600],
                                   "seconds": round(seconds, 2), **detail}
    _write()  # after every step: a run that is stopped still leaves its results


@pytest.fixture(scope="module", autouse=True)
def _write_results():
    yield
    _write()


def _write(running: str | None = None) -> None:
    """Merge this process's rows into RESULTS (locked; a row replaces only its own model/step, none is dropped), with
    the step now running (what corpus.run records as FAILED when the process is killed)."""
    if not _results and running is None:
        return
    from corpus.run import merge_file

    meta = {m["id"]: {k: m.get(k) for k in ("title", "exporter", "opset", "task", "metric", "features", "ci")}
            for m in MANIFESTS}
    merge_file(RESULTS, {"generated": time.strftime("%Y-%m-%d %H:%M:%S"), "models": meta,
                         "results": list(_results.values()), "running": running})


# --- one model's shared state --------------------------------------------------------------------------------


class Blocked(Exception):
    """A prerequisite step did not produce its artefact."""


class ModelRun:
    """Lazily computed artefacts of one model (each computed once; its exception is remembered)."""

    def __init__(self, manifest: dict[str, Any], workdir: Path) -> None:
        self.manifest, self.id, self.workdir = manifest, manifest["id"], workdir
        self._memo: dict[str, Any] = {}

    def get(self, key: str, fn: Callable[[], Any]) -> Any:
        if key not in self._memo:
            try:
                self._memo[key] = ("ok", fn())
            except BaseException as exc:  # noqa: BLE001 - remembered, re-raised to this and later steps
                self._memo[key] = ("error", exc)
                raise
        state, value = self._memo[key]
        if state == "error":
            raise Blocked(f"needs {key}, which ended in {type(value).__name__}: {str(value).splitlines()[0][:200]}")
        return value

    # artefacts
    @property
    def path(self) -> Path:
        from corpus.samples import model_file

        return self.get("model file", lambda: model_file(self.manifest))

    @property
    def model(self) -> Any:
        from workbench.graph import load_model

        return self.get("model", lambda: load_model(self.path))

    def inputs(self, n: int) -> Any:
        from corpus.samples import load_inputs

        full = self.get("inputs", lambda: load_inputs(self.manifest, samples=max(CALIB_SAMPLES, EVAL_SAMPLES)))
        return full.take(n)

    def outputs(self, path: Path | str, n: int = EVAL_SAMPLES) -> dict[str, np.ndarray]:
        """Outputs of the model at ``path`` on the first ``n`` samples (run one by one in ONNX Runtime)."""
        return self.get(f"outputs {path} {n}", lambda: run_ort(path, self.inputs(n)))

    def reference(self, n: int = EVAL_SAMPLES) -> dict[str, np.ndarray]:
        return self.outputs(self.path, n)

    def shapes(self) -> list[str] | None:
        """--shapes specs for the model's dynamic inputs, from the manifest."""
        specs = []
        for vi in self.model.graph.input:
            dims = vi.type.tensor_type.shape.dim
            spec = self.manifest["inputs"].get(vi.name)
            if spec is None or not any(not d.HasField("dim_value") for d in dims):
                continue
            specs.append(f"{vi.name}:" + "x".join(str(int(d)) for d in spec["shape"]))
        return specs or None


def run_ort(path: Path | str, inputs: Any, *, optimize: bool = True) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    want = {i.name for i in sess.get_inputs()}
    per: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for run in inputs.runs():
        feeds = {k: v for k, v in run.items() if k in want}
        for n, v in zip(names, sess.run(None, feeds)):
            if isinstance(v, np.ndarray):  # a sequence or map output (ZipMap) has no task metric
                per[n].append(v)
    return {n: (np.concatenate(_same_lengths(v), axis=0) if v[0].ndim else np.stack(v)) for n, v in per.items() if v}


def _same_lengths(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Runs' outputs zero-padded to the longest length on each axis but the first: a decoder's output length
    depends on its input (slanet_1m: 168 steps for one image, 270 for the next)."""
    if len({a.shape[1:] for a in arrays}) <= 1:
        return arrays
    longest = np.max([a.shape for a in arrays], axis=0)
    return [np.pad(a, [(0, 0)] + [(0, int(n - k)) for n, k in zip(longest[1:], a.shape[1:])]) for a in arrays]


def task_score(run: ModelRun, cand: dict[str, np.ndarray]) -> dict[str, Any]:
    from corpus.metrics import task_metric

    m = run.manifest
    ref = run.reference()
    score = task_metric(m.get("metric") or "rel_l2", ref, cand, output=m.get("output"),
                        **(m.get("metric_options") or {}))
    err = task_metric("rel_l2", ref, cand)
    return {"metric": score.metric, "value": round(score.value, 5), "rel_l2": round(err.value, 6)}


def _nonfinite(outs: dict[str, np.ndarray]) -> list[str]:
    return [k for k, v in outs.items() if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all()]


# --- outcome classification ---------------------------------------------------------------------------------


def specific(message: str, *, builder: bool = False) -> str:
    """Why a refusal's message is not specific enough ('' when it is). ``builder``: the text quotes TensorRT's
    builder, whose own words may say 'Internal Error' (its assertion), which is the builder's to say."""
    text = message.strip()
    if len(text) < 20:
        return f"too short to act on: {text!r}"
    if "Traceback (most recent call last)" in text:
        return "a traceback"
    if "internal error" in text.lower() and not builder:
        return "an internal error"
    return ""


QUANTIZABLE = {"Conv", "ConvTranspose", "Gemm", "MatMul", "LSTM", "GRU", "RNN"}


def _all_ops(graph: Any) -> set[str]:
    ops = set()
    for n in graph.node:
        ops.add(n.op_type)
        for a in n.attribute:
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                ops |= _all_ops(g)
    return ops


def bug_refusal(run: ModelRun, message: str) -> str:
    """Why a WorkbenchError is our own bug dressed as a refusal ('' when it is a fair refusal)."""
    if "produced an invalid graph" in message:
        return "the workbench wrote an invalid graph"
    if "no tensor to calibrate" in message:
        found = _all_ops(run.model.graph) & QUANTIZABLE
        if found:
            return f"says nothing to calibrate, but the model (with its subgraphs) has {sorted(found)}"
    return ""


def _is_internal(exc: BaseException) -> bool:
    return type(exc).__name__ == "InternalError" or getattr(exc, "internal", False) is True


# Known workbench bugs (entries in docs/corpus_failures.md): the step still runs; a failure is recorded
# and reported as xfail so CI stays green, a pass is recorded as ok. Remove an entry once its fix lands.
KNOWN = {
}


def run_step(run: ModelRun, step: str, fn: Callable[[], dict[str, Any] | None]) -> None:
    known = KNOWN.get((run.id, step))
    if known is None:
        _run_step(run, step, fn)
        return
    try:
        _run_step(run, step, fn)
    except (AssertionError, pytest.fail.Exception, Exception) as exc:
        if isinstance(exc, pytest.skip.Exception):
            raise
        entry = _results.get(f"{run.id}/{step}", {})
        _record(run.id, step, "xfail", f"known ({known}): {entry.get('message', str(exc))}", entry.get("seconds", 0))
        pytest.xfail(f"corpus_failures.md {known}")


def _run_step(run: ModelRun, step: str, fn: Callable[[], dict[str, Any] | None]) -> None:
    from workbench.errors import WorkbenchError

    _write(running=step)
    start = time.perf_counter()
    try:
        info = fn() or {}
    except Blocked as exc:
        _record(run.id, step, "blocked", str(exc), time.perf_counter() - start)
        pytest.skip(str(exc))
    except pytest.skip.Exception as exc:
        _record(run.id, step, "skipped", str(exc), time.perf_counter() - start)
        raise
    except WorkbenchError as exc:
        seconds = time.perf_counter() - start
        msg = exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
        why = "an internal error" if _is_internal(exc) else specific(
            exc.message, builder=type(exc).__name__ in ("BuildError", "CheckCancelled"))
        if why:
            _record(run.id, step, "failed", f"{type(exc).__name__} ({why}): {msg}", seconds)
            pytest.fail(f"{run.id}/{step}: refusal is {why}: {msg}")
        bug = bug_refusal(run, exc.message)
        if bug:
            _record(run.id, step, "failed", f"{type(exc).__name__} ({bug}): {msg}", seconds)
            pytest.fail(f"{run.id}/{step}: {bug}: {msg}")
        _record(run.id, step, "refused", msg, seconds, error=type(exc).__name__)
        return
    except AssertionError as exc:
        _record(run.id, step, "failed", f"assertion: {str(exc).splitlines()[0] if str(exc) else ''}",
                time.perf_counter() - start)
        raise
    except Exception as exc:
        tb = traceback.extract_tb(exc.__traceback__)
        where = next((f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(tb)
                      if "/workbench/" in f.filename), "")
        _record(run.id, step, "failed", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                f"{f' at {where}' if where else ''}", time.perf_counter() - start)
        raise
    status = info.pop("_status", "ok")
    _record(run.id, step, status, info.pop("_message", ""), time.perf_counter() - start, **info)


# --- the steps ------------------------------------------------------------------------------------------------


def step_inspect(run: ModelRun) -> dict[str, Any]:
    from workbench.graph import layer_table, summary

    s = summary(run.model)
    table = layer_table(run.model)
    rows = table.records()
    assert s.nodes > 0 and rows, "empty summary or layer table"
    assert s.params > 0, f"summary says params {s.params} for a model with real weights"
    return {"params": s.params, "nodes": s.nodes, "layers": len(rows), "opset": s.opset}


def freeze_values(run: ModelRun) -> dict[str, Any]:
    """{input: value} of the model's small fixed inputs (a sample rate): what a user passes as ``--freeze sr=16000``."""
    data = run.inputs(1)
    return {k: (v.item() if v.size == 1 else v.tolist()) for k, v in data.arrays.items()
            if data.axes.get(k) is None and v.size <= 16}


def repaired(run: ModelRun) -> tuple[Any, Path | None]:
    """(check result, the repaired model's path or None) of ``workbench check MODEL --repair`` as a user runs it
    (``workflows.model.check_and_repair``: the raw model checked, every ready repair applied to the session as recipe
    edits, the repaired model checked), with the model's shapes and its fixed inputs' values."""

    def make() -> tuple[Any, Path | None]:
        from workbench.session import Session
        from workbench.workflows.model import check, check_and_repair, find_repairs

        if not find_repairs(run.model):  # nothing to repair: the plain check (no session, no second model copy)
            return check(run.path, shapes=run.shapes(), backend="tensorrt-rtx", timeout=600.0), None
        s = Session(run.path, cache_dir=run.workdir / "cache_repair")
        r = check_and_repair(s, shapes=run.shapes(), backend="tensorrt-rtx", timeout=600.0,
                             values=freeze_values(run))
        edits = r.repaired.edits if r.repaired is not None else ()
        out = s.export(run.workdir / "repaired.onnx", overwrite=True) if edits else None
        return r, out

    return run.get("check --repair", make)


def _repair_detail(r: Any) -> dict[str, Any]:
    """The check's raw verdict and, where repairs were applied, which and the repaired model's verdict."""
    fixed = r.repaired
    edits = [e["kind"] for e in fixed.edits] if fixed is not None else []
    return {"builds_raw": bool(r.buildable), "repairs": edits,
            "builds_repaired": bool(fixed.buildable) if fixed is not None and edits else None,
            "repairs_skipped": [f"{x.title}: {x.reason}" for x in fixed.skipped] if fixed is not None else []}


def step_check(run: ModelRun) -> dict[str, Any]:
    r, _path = repaired(run)
    detail = _repair_detail(r)
    if r.buildable:
        return {"layers": r.layers, **detail}
    words = "; ".join([*r.errors, *(f"{u.node} ({u.op}): {u.reason}" for u in r.unsupported)])
    assert words, f"check says not buildable without saying why: {r.to_dict()}"
    assert not r.crashed, f"the builder crashed: {r.crashed}"
    why = specific(words, builder=True)
    assert not why, f"the check's reason is {why}: {words}"
    if detail["builds_repaired"]:
        words += f" (builds after the repairs: {', '.join(detail['repairs'])})"
    return {"_status": "refused", "_message": words, "suggestions": list(r.suggestions), **detail}


def _session_model(run: ModelRun, edits: list[Any], name: str) -> tuple[Any, Path]:
    from workbench.session import Session

    s = Session(run.path, cache_dir=run.workdir / "cache")
    s.apply_all(edits)
    return s, s.export(run.workdir / name, overwrite=True)


def _session_model_path(run: ModelRun, edits: list[Any], name: str) -> Path:
    return _session_model(run, edits, name)[1]


def step_simplify(run: ModelRun) -> dict[str, Any]:
    from workbench.recipe import FoldConstants, FuseBatchNorm, RemoveIdentity

    before = len(run.model.graph.node)
    out = _session_model_path(run, [FoldConstants(), FuseBatchNorm(), RemoveIdentity()], "simplified.onnx")
    import onnx

    after = len(onnx.load(str(out), load_external_data=False).graph.node)
    ref, got = run.reference(), run_ort(out, run.inputs(EVAL_SAMPLES))
    worst, floor = _rel_l2(ref, got), None
    if any(v > SIMPLIFY_RTOL for v in worst.values()):
        # The limit is float32's: a rewrite that only reorders float32 arithmetic (BatchNorm folded into the Conv
        # before it) moves outputs by a few ULPs. Where the outputs amplify that (a Sigmoid saturated near 0, read
        # through ONNX Runtime's approximate logistic: relative error 5e-3 at outputs ~1e-7), the same happens
        # when ONNX Runtime applies its own graph optimizations, which fold the same BatchNorms. That noise floor,
        # measured on the original model, is the limit then: simplify may move no output more than it.
        floor = _rel_l2(run_ort(run.path, run.inputs(EVAL_SAMPLES), optimize=False), ref)
    limit = {k: max(SIMPLIFY_RTOL, 1.5 * (floor or {}).get(k, 0.0)) for k in worst}
    bad = {k: v for k, v in worst.items() if v > limit[k]}
    assert not bad, (f"simplified outputs differ from the original beyond {SIMPLIFY_RTOL} relative (or ONNX "
                     f"Runtime's own optimization noise {floor}): {bad}")
    return {"nodes_before": before, "nodes_after": after, "max_rel_l2": max(worst.values(), default=0.0),
            **({"ort_noise_floor": max(floor.values(), default=0.0)} if floor else {})}


def _rel_l2(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict[str, float]:
    """Relative L2 error of each output of ``got`` against ``ref`` (a non-float output: 0 or 1, equal or not)."""
    worst = {}
    for k, r in ref.items():
        r64, g64 = r.astype(np.float64), got[k].astype(np.float64)
        den = max(float(np.linalg.norm(r64)), 1e-30)
        worst[k] = float(np.linalg.norm(g64 - r64)) / den if np.issubdtype(r.dtype, np.floating) else float(
            not np.array_equal(r, got[k]))
    return worst


def fp16(run: ModelRun) -> tuple[Any, Path]:
    """(session, exported path) of the fp16 conversion a user runs (``workbench convert MODEL --inputs DATA``):
    nodes touching a tensor beyond fp16's range on a reference run over the model's data stay fp32."""

    def make() -> tuple[Any, Path]:
        from corpus.samples import as_workbench_data
        from workbench.session import Session
        from workbench.workflows.quantize import convert

        s = Session(run.path, cache_dir=run.workdir / "cache")
        convert(s, "fp16", data=as_workbench_data(run.inputs(CALIB_SAMPLES)))
        return s, s.export(run.workdir / "fp16.onnx", overwrite=True)

    return run.get("fp16", make)


def step_fp16(run: ModelRun) -> dict[str, Any]:
    path = fp16(run)[1]
    outs = run.outputs(path)
    bad = [k for k in _nonfinite(outs) if k not in _nonfinite(run.reference())]
    assert not bad, f"fp16 outputs {bad} hold inf or NaN where FP32's do not"
    return task_score(run, outs)


def quantized(run: ModelRun, target: str) -> Any:
    """(session, exported path) of the default INT8 recipe for ``target``, calibrated on the model's data."""
    from corpus.samples import as_workbench_data

    def make() -> Any:
        from workbench.calibration import calibrate
        from workbench.precision import activation_tensors
        from workbench.recipe import CalibrationSettings, FuseBatchNorm, Quantize
        from workbench.session import Session

        s = Session(run.path, cache_dir=run.workdir / f"cache_{target}")
        if any(n.op_type == "BatchNormalization" for n in s.model.graph.node):
            s.apply(FuseBatchNorm())
        model = s.model
        tensors = activation_tensors(model, target=target) if target != "tensorrt" else None
        data = as_workbench_data(run.inputs(CALIB_SAMPLES))
        cache = calibrate(model, data, method="entropy", tensors=tensors)
        digest = cache.save(s.cache_dir)
        s.set_calibration(CalibrationSettings(method="entropy", samples=cache.samples, data="corpus"))
        s.apply(Quantize(scales=digest, target=target))
        out = s.export(run.workdir / f"int8_{target}.onnx", overwrite=True)
        s.save(run.workdir / f"int8_{target}.json")
        return s, out

    return run.get(f"int8 ({target})", make)


def _step_int8(run: ModelRun, target: str) -> dict[str, Any]:
    _s, path = quantized(run, target)
    outs = run.outputs(path)
    bad = [k for k in _nonfinite(outs) if k not in _nonfinite(run.reference())]
    assert not bad, f"INT8 outputs {bad} hold inf or NaN"
    return task_score(run, outs)


def step_int8_tensorrt(run: ModelRun) -> dict[str, Any]:
    return _step_int8(run, "tensorrt")


def step_int8_onnxruntime(run: ModelRun) -> dict[str, Any]:
    return _step_int8(run, "onnxruntime")


def _candidate(run: ModelRun) -> tuple[Path, str]:
    try:
        return quantized(run, "tensorrt")[1], "int8"
    except Blocked:
        return fp16(run)[1], "fp16"


def step_compare(run: ModelRun) -> dict[str, Any]:
    from corpus.samples import as_workbench_data
    from workbench.compare import compare

    cand, which = _candidate(run)
    report = compare(run.path, cand, as_workbench_data(run.inputs(EVAL_SAMPLES)))
    d = report.to_dict()
    rel = {k: v.get("rel_l2") for k, v in d["outputs"].items()}
    ours = task_score(run, run.outputs(cand))["rel_l2"]
    worst = max((v for v in rel.values() if v is not None), default=None)
    assert worst is None or abs(worst - ours) <= 1e-3 + 0.05 * ours, \
        f"compare's worst output rel_l2 {worst} disagrees with the suite's own {ours}"
    return {"candidate": which, "samples": d["samples"], "rel_l2": rel}


def step_layerwise(run: ModelRun) -> dict[str, Any]:
    from corpus.samples import as_workbench_data
    from workbench.compare import compare

    cand, which = _candidate(run)
    report = compare(run.path, cand, as_workbench_data(run.inputs(DEBUG_SAMPLES)), layerwise=True)
    d = report.to_dict()
    assert d.get("layers"), "layerwise compare joined no tensor"
    fd = d.get("first_divergence") or {}
    return {"candidate": which, "tensors": len(d["layers"]), "first_divergence": fd.get("tensor")}


def step_debug(run: ModelRun) -> dict[str, Any]:
    from corpus.samples import as_workbench_data
    from workbench.compare import output_error
    from workbench.debug import debug_precision, recipe_models

    try:
        session, _path = quantized(run, "tensorrt")
        which = "int8"
    except Blocked:  # nothing to quantize: debug the fp16 conversion instead
        session, _path = fp16(run)
        which = "fp16"
    reference, factory = recipe_models(session.original, session.recipe, session.cache_dir)
    inputs = run.inputs(DEBUG_SAMPLES)  # max_samples counts entries of the sample axis: whole runs of a sequence
    result = debug_precision(reference, factory(()), as_workbench_data(inputs), factory=factory,
                             metric=output_error(), tolerance=0.05, max_samples=DEBUG_SAMPLES * inputs.run_length)
    d = result.to_dict()
    assert d["sensitivity"], "debug ranked no layer of an INT8 model"
    return {"candidate": which, "ranked": len(d["sensitivity"]), "keep": len(d["keep_high_precision"] or []), "met": d["met"],
            "seconds_debug": d.get("seconds")}


def step_build(run: ModelRun) -> dict[str, Any]:
    """The raw model's engine; where the builder refuses it, the model after the repairs ``check --repair``
    applies is built too (``builds_raw`` / ``builds_repaired``, the repairs named): corpus.report counts both."""
    from workbench.backends.trt_profiles import parse_shapes
    from workbench.build import build_engine
    from workbench.errors import BuildError
    from workbench.graph import load_model
    from workbench.recipe import BuildSettings

    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX (the rtx extra, which make test installs)")

    def build(path: Path, name: str) -> Any:
        model = run.model if path == run.path else load_model(path)
        names = {vi.name for vi in model.graph.input}
        shapes = [x for x in run.shapes() or [] if x.split(":")[0] in names] or None
        settings = BuildSettings(backend="tensorrt-rtx", profiles=parse_shapes(shapes, model), timeout_s=900.0)
        return build_engine(path, settings, out=run.workdir / name, cache_dir=run.workdir / "engines")

    try:
        r = build(run.path, "model.engine")
    except BuildError as exc:
        why = specific(exc.message, builder=True)
        assert not why, f"the build's refusal is {why}: {exc.message}"
        from workbench.workflows.model import find_repairs

        if not find_repairs(run.model):
            return {"_status": "refused", "_message": exc.message + (f" (hint: {exc.hint})" if exc.hint else ""),
                    "builds_raw": False, "builds_repaired": None, "repairs": []}
        checked, path = repaired(run)
        kinds = [e["kind"] for e in checked.repaired.edits] if checked.repaired is not None else []
        if path is None:
            return {"_status": "refused", "_message": exc.message + (f" (hint: {exc.hint})" if exc.hint else ""),
                    "builds_raw": False, "builds_repaired": None, "repairs": []}
        try:
            fixed = build(path, "repaired.engine")
        except BuildError as again:
            return {"_status": "refused", "_message": f"{exc.message} (after the repairs {', '.join(kinds)}: "
                    f"{again.message})", "builds_raw": False, "builds_repaired": False, "repairs": kinds}
        assert fixed.bytes > 0
        return {"_status": "refused", "_message": f"{exc.message} (builds after the repairs: {', '.join(kinds)})",
                "builds_raw": False, "builds_repaired": True, "repairs": kinds, "bytes": fixed.bytes,
                "layers": fixed.layers, "build_seconds": round(fixed.seconds, 1)}
    assert r.bytes > 0
    return {"bytes": r.bytes, "layers": r.layers, "build_seconds": round(r.seconds, 1), "builds_raw": True,
            "builds_repaired": None, "repairs": []}


def step_profile(run: ModelRun) -> dict[str, Any]:
    from workbench.backends.ort_profile import profile_model
    from workbench.profile import group_times, total_ms

    feeds = run.inputs(EVAL_SAMPLES).runs()[0]
    table = profile_model(run.model, feeds, iterations=3)
    total = total_ms(table)
    assert total > 0 and table.records(), "an empty profile"
    groups = group_times(table, "op_type", model=run.model).records()
    return {"total_ms": round(total, 3), "layers": len(table.records()), "op_types": len(groups)}


# --- the dashboard --------------------------------------------------------------------------------------------


class _Escapes:
    """Exceptions that escaped a click (ipywidgets logs and swallows them) or a job's thread."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __enter__(self) -> _Escapes:
        self._hook = threading.excepthook
        threading.excepthook = lambda a: self.seen.append(f"thread: {a.exc_type.__name__}: {a.exc_value}")
        self._handler = logging.Handler()
        self._handler.emit = lambda rec: (  # type: ignore[method-assign]
            self.seen.append(f"callback: {rec.getMessage()}") if rec.getMessage().startswith("Exception in callback")
            else None)
        self._handler.setLevel(logging.WARNING)
        for name in ("traitlets", "ipywidgets", ""):
            logging.getLogger(name).addHandler(self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        threading.excepthook = self._hook
        for name in ("traitlets", "ipywidgets", ""):
            logging.getLogger(name).removeHandler(self._handler)


def step_dashboard(run: ModelRun) -> dict[str, Any]:
    pytest.importorskip("ipywidgets", reason="the notebook extra")
    from corpus.samples import as_workbench_data
    from workbench.ui import Workbench

    data = run.inputs(DEBUG_SAMPLES)
    npz = run.workdir / "dashboard_data.npz"
    extra = {"__run_length__": np.array(data.run_length)} if data.run_length > 1 else {}
    np.savez(npz, **data.arrays, **extra)  # a sequence model's data say their run length, as a user's .npz would
    spec = "; ".join(run.shapes() or [])
    tabs: dict[str, str] = {}
    with _Escapes() as escapes:
        wb = Workbench(str(run.path))
        status = wb.status
        assert status.state != "error", f"the dashboard did not open the model: {status.message}"

        def action(title: str, fn: Callable[[Any], None]) -> None:
            before = len(escapes.seen)
            tab = wb.tabs[title]
            if type(tab).__name__ == "UnavailableTab":  # the tab refused the model: its message is the result
                why = specific(tab.error.message, builder=False)
                tabs[title] = (f"failed ({why}): " if why else "refused: ") + tab.error.message[:300]
                return
            fn(tab)
            if len(escapes.seen) > before:
                tabs[title] = "failed: " + escapes.seen[-1][:300]
            elif status.state == "busy":
                tabs[title] = f"failed: still busy after the action ({status.message})"
            elif status.state == "error":
                internal = getattr(status, "internal", None)
                why = "an internal error" if internal is not None else specific(
                    status.message, builder=title in ("Model", "Build"))
                tabs[title] = (f"failed ({why}): " if why else "refused: ") + status.message[:300]
            else:
                tabs[title] = "ok"

        def model_tab(t: Any) -> None:
            t.shapes.value = spec
            t.check_button.click()
            t.job.wait(900)

        def edit_tab(t: Any) -> None:
            t.action.value = "fold constants"
            t.apply_button.click()
            if status.state == "ok":
                t.undo_button.click()

        def precision_tab(t: Any) -> None:
            t.op_precision.value = "fp16"
            t.set_op_button.click()
            t.apply_button.click()
            if status.state == "ok" and wb.session.can_undo:
                wb.session.undo()

        def calibrate_tab(t: Any) -> None:
            t.use_data(as_workbench_data(data), "corpus data")
            t.run_button.click()
            t.wait(900)
            if status.state == "ok":
                t.quantize_button.click()

        def build_tab(t: Any) -> None:
            t.profiles.value = "\n".join(run.shapes() or [])
            t.build_button.click()
            t.wait(900)

        def profile_tab(t: Any) -> None:
            t.shapes.value = spec
            t.ort_button.click()
            wait = getattr(t, "wait", None)
            if wait:
                wait(300)

        def debug_tab(t: Any) -> None:
            t.data.value = str(npz)
            t.metric.value = "rel_l2"
            t.tolerance.value = 0.05
            t.max_samples.value = DEBUG_SAMPLES * data.run_length
            t.compare_button.click()
            t.wait(600)
            if status.state == "ok":
                t.debug_button.click()
                t.debug_job.wait(600)

        for title, fn in (("Model", model_tab), ("Edit", edit_tab), ("Precision", precision_tab),
                          ("Calibrate", calibrate_tab), ("Build", build_tab), ("Profile", profile_tab),
                          ("Debug", debug_tab)):
            if title in wb.tabs:
                action(title, fn)
    failed = {k: v for k, v in tabs.items() if v.startswith("failed")}
    assert not failed, f"dashboard tabs failed: {failed}"
    refused = {k: v for k, v in tabs.items() if v.startswith("refused")}
    return {"tabs": tabs, **({"_status": "refused", "_message": "; ".join(f"{k}: {v[9:]}" for k, v in
                                                                          refused.items())} if refused else {})}


# --- the test ---------------------------------------------------------------------------------------------------

_runs: dict[str, ModelRun] = {}


def _run_for(model_id: str, tmp_path_factory: pytest.TempPathFactory) -> ModelRun:
    if model_id not in _runs:
        _runs.clear()  # one model's artefacts at a time
        manifest = next(m for m in MANIFESTS if m["id"] == model_id)
        _runs[model_id] = ModelRun(manifest, tmp_path_factory.mktemp(f"corpus_{model_id}"))
    return _runs[model_id]


@pytest.mark.parametrize(("model_id", "step"), CASES, ids=[f"{m}-{s}" for m, s in CASES])
def test_corpus(model_id: str, step: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    if model_id == "none":
        pytest.skip(f"no corpus models: {NONE_WHY}")
    run = _run_for(model_id, tmp_path_factory)
    try:
        run.path  # noqa: B018 - fetch (once) before timing the step
    except Blocked as exc:
        _record(model_id, step, "skipped", str(exc))
        pytest.skip(str(exc))
    except Exception as exc:
        if type(exc).__name__ != "RegistryUnreachable":
            _record(model_id, step, "failed", f"fetch: {type(exc).__name__}: {exc}")
            raise
        why = f"cannot fetch {model_id}, the registry is unreachable: {exc}"  # offline CI: skip, never fail
        _record(model_id, step, "skipped", why)
        pytest.skip(why)
    run_step(run, step, lambda: globals()[f"step_{step}"](run))
