"""Accuracy to a target on the real-model corpus: does ``workbench quantize --target-metric`` reach, with the task
metric, the tolerance that FP16 reaches, and what does it keep and cost?

    WORKBENCH_MEMORY_BUDGET=2G nice -n 5 .venv/bin/python benchmarks/bench_target.py [--models ID ...] [--calib 16]
        [--eval 16] [--timeout 1800] [--big]

For every corpus model with real data (``--big`` adds imgly_isnet_*, u2net_over_100mb, nudenet_classifier and t5_*,
left out by default), each in a child process of its own:

- FP32 reference outputs on the evaluation samples;
- FP16: ``workflows.quantize.convert`` with the calibration data (the default conversion a user runs, range guards
  from a reference run), its task metric against FP32;
- the target mode for the TensorRT and the ONNX Runtime placement: ``workflows.quantize.quantize`` with
  ``QuantizeSettings(target_metric=<the task metric>, tolerance=<the tolerance>)``: the calibration method, per-tensor
  methods, then the fewest layers kept in high precision (TensorRT: FP16 first, FP32 only where FP16 misses;
  ONNX Runtime: FP32). Recorded: reached or not, the metric before/after, the layers kept and in what precision, the
  methods chosen, the estimated relative cost (``debug.estimated_cost``: FLOPs weighted by precision, FP32 = 1.0,
  all INT8 = 0.25) of the plan and of all-INT8, the model's size, ONNX Runtime latency (ORT placement: FP32, the
  all-INT8 model and the target's, 1 thread, fastest of interleaved runs), wall time.

The task metric is the corpus metric (``corpus.metrics.task_metric``, the manifest's ``metric``, ``output`` and
``metric_options``) taken per sample and averaged over the samples, the form the debugger's plans are measured in
(a per-sample :class:`workbench.compare.metrics.Metric`). The tolerance (issue 13):

- agreement shares in [0, 1] (``top1``, ``detection``, ``mask_iou``, ``ctc_text``): 0.5 point absolute, i.e. a drop
  of at most 0.005 below FP32's own value (1.0): metric >= 0.995;
- ``cosine`` (an embedding's similarity to FP32's): 1 % relative to FP32's 1.0: cosine >= 0.99;
- ``rel_l2`` (the output's relative L2 error against FP32): 1 % relative: rel_l2 <= 0.01.

The plans are chosen on the evaluation samples and the metric is reported on the same samples (the first
``--eval`` of the samples; the calibration data are the first ``--calib``): "reached" means on this data.

Prints a table with ratios and merges each model's row into ``benchmarks/out/bench_target.json`` (a model measured
again replaces its row); ``--copy-docs`` copies the file to ``docs/bench_target.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
OUT = ROOT / "benchmarks" / "out" / "bench_target.json"
DOCS = ROOT / "docs" / "bench_target.json"
BIG = ("imgly_isnet_", "u2net_over_100mb", "nudenet_classifier", "t5_")
SHARES = ("top1", "detection", "mask_iou", "ctc_text")
PLACEMENTS = ("tensorrt", "onnxruntime")


def tolerance_for(metric: str) -> float:
    """The issue's tolerance for a corpus metric (see the module docstring)."""
    if metric in SHARES:
        return 0.005
    if metric in ("cosine", "rel_l2"):
        return 0.01
    raise ValueError(f"no tolerance defined for metric '{metric}'")


def reaches(metric: str, value: float, fp32: float = 1.0) -> bool:
    """Whether ``value`` of ``metric`` is within :func:`tolerance_for` of FP32 (``fp32``: FP32's own value)."""
    tol = tolerance_for(metric)
    return bool(value <= tol + 1e-12) if metric == "rel_l2" else bool(fp32 - value <= tol + 1e-12)


def per_sample_metric(manifest: Mapping[str, Any]) -> Any:
    """The manifest's task metric as a per-sample :class:`~workbench.compare.metrics.Metric` (each sample's outputs
    scored alone by ``corpus.metrics.task_metric``)."""
    from corpus.metrics import task_metric
    from workbench.compare.metrics import Metric

    name, output = manifest.get("metric") or "rel_l2", manifest.get("output")
    options = manifest.get("metric_options") or {}

    def fn(outputs: Mapping[str, np.ndarray], batch: Mapping[str, np.ndarray],
           ref: Mapping[str, np.ndarray]) -> np.ndarray:
        n = len(next(iter(ref.values())))
        values = []
        for i in range(n):
            r = {k: v[i:i + 1] for k, v in ref.items()}
            c = {k: outputs[k][i:i + 1] for k in ref}
            values.append(task_metric(name, r, c, output=output, **options).value)
        return np.asarray(values, dtype=np.float64)

    return Metric(name, fn, name != "rel_l2")


# --- child: one model -----------------------------------------------------------------------------------------


def _size(model: Any, path: Path) -> int:
    import onnx

    onnx.save(model, str(path), save_as_external_data=model.ByteSize() > 1_900_000_000)
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def _all_int8(session: Any) -> Any:
    """The target's quantized model without its plan: the chosen methods, no layer kept (and no FP16 region)."""
    import dataclasses

    from workbench.recipe import Quantize
    from workbench.replay import replay

    edits = list(session.recipe.edits)
    k = max(i for i, e in enumerate(edits) if isinstance(e, Quantize))
    edits = [*edits[:k], dataclasses.replace(edits[k], exclude=())]
    return replay(session.original, tuple(edits), cache_dir=session.cache_dir)


class PhaseClock:
    """A workflow progress callback that adds up the seconds spent in each phase of the target mode."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.phase = "calibrate"
        self.mark = time.perf_counter()

    def __call__(self, done: int, total: int, phase: str = "") -> None:
        now = time.perf_counter()
        self.seconds[self.phase] = self.seconds.get(self.phase, 0.0) + now - self.mark
        self.mark = now
        self.phase = ("methods" if phase.startswith("target: method ") else
                      "tensor_methods" if phase.startswith("target: methods for") else
                      "sensitivity" if "sensitivity" in phase else
                      "plans" if phase.startswith("plan") else self.phase)

    def done(self) -> dict[str, float]:
        self(0, 0, "")
        return {k: round(v, 1) for k, v in self.seconds.items()}


def run_model(model_id: str, calib_n: int, eval_n: int, work: Path, placements: tuple[str, ...]) -> dict[str, Any]:
    """Everything for one model (in this process)."""
    from bench_corpus import load_inputs, throughput

    from corpus.fetch import load_manifest
    from corpus.samples import as_workbench_data, model_file
    from workbench.backends.ort import OrtEngine
    from workbench.data import load_data
    from workbench.debug import evaluate
    from workbench.session import Session
    from workbench.workflows import quantize as wq

    manifest = load_manifest(model_id)
    path = model_file(manifest)
    metric_name = manifest.get("metric") or "rel_l2"
    metric = per_sample_metric(manifest)
    tol = tolerance_for(metric_name)
    inputs = load_inputs(manifest, max(calib_n, eval_n))
    calib, evals = as_workbench_data(inputs.take(calib_n)), as_workbench_data(inputs.take(eval_n))
    row: dict[str, Any] = {"model": model_id, "metric": metric_name, "tolerance": tol,
                           "target": (f">= {1 - tol:g}" if metric_name != "rel_l2" else f"<= {tol:g}"),
                           "calib": calib_n, "eval": eval_n, "placements": {}}
    base = Session(path, cache_dir=work / "cache_base")
    reference = base.model
    ds = load_data(evals, reference)
    row["eval_samples"] = ds.samples
    ref_outs = [OrtEngine(reference).run(b.feeds) for b in ds.batches(64)]

    def score(model: Any) -> float:
        return float(evaluate(model, ds, metric, ref_outs, batch_size=64, max_samples=None, reference=reference))

    fp32 = score(reference)
    row["fp32_metric"] = fp32
    row["fp32_size"] = _size(reference, work / "fp32.onnx")
    # FP16: the default conversion with the data's ranges
    start = time.perf_counter()
    try:
        s16 = Session(path, cache_dir=work / "cache_fp16")
        conv = wq.convert(s16, "fp16", data=calib)
        value = score(s16.model)
        row["fp16"] = {"metric": value, "reaches": reaches(metric_name, value, fp32), "kept_fp32": len(conv.kept),
                       "size": _size(s16.model, work / "fp16.onnx"), "seconds": time.perf_counter() - start}
    except Exception as exc:  # noqa: BLE001 - a model FP16 cannot run is reported, the target mode still runs
        row["fp16"] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    print("PARTIAL " + json.dumps(row, default=float), flush=True)  # what a timeout leaves
    for placement in placements:
        start = time.perf_counter()
        session = Session(path, cache_dir=work / f"cache_{placement}")
        clock = PhaseClock()
        try:
            r = wq.quantize(session, calib, wq.QuantizeSettings(target=placement, target_metric=metric,
                                                               tolerance=tol), eval_data=evals, progress=clock)
        except Exception as exc:  # noqa: BLE001 - a failure is the benchmark's finding: recorded, the run goes on
            row["placements"][placement] = {"error": f"{type(exc).__name__}: {str(exc)[:400]}",
                                            "seconds": time.perf_counter() - start}
            continue
        seconds = time.perf_counter() - start
        t = r.target_metric
        assert t is not None
        final = session.model
        check = score(final)  # the written model, measured again: what the target mode reports is what it wrote
        int8 = _all_int8(session)
        out: dict[str, Any] = {
            "reached": t.met and reaches(metric_name, check, fp32), "met": t.met, "metric": check,
            "reported": t.after, "before": t.before, "all_int8_metric": score(int8),
            "method": t.method, "methods": dict(t.methods), "tensor_methods": dict(t.tensor_methods),
            "kept": list(t.kept), "kept_fp16": list(t.kept_fp16),
            "layers": dict(t.layers), "float_heads": list(r.float_heads), "cost": t.estimated_cost,
            "cost_all_int8": t.cost_all_int8, "plans_tried": t.plans_tried, "message": t.message,
            "size": _size(final, work / f"{placement}.onnx"), "size_all_int8": _size(int8, work / f"{placement}_i8.onnx"),
            "seconds": seconds, "phases": clock.done(), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        }
        if placement == "onnxruntime":
            try:
                feeds = inputs.runs()[0]
                tp = throughput({"fp32": work / "fp32.onnx", "all_int8": work / f"{placement}_i8.onnx",
                                 "target": work / f"{placement}.onnx"}, feeds, inputs.step, seconds=2.0, min_runs=20)
                out["latency_ms"] = {k: 1000.0 * inputs.step / v for k, v in tp.items()}
            except Exception as exc:  # noqa: BLE001
                out["latency_ms"] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        row["placements"][placement] = out
        print("PARTIAL " + json.dumps(row, default=float), flush=True)
    return row


def worker(model_id: str, calib: int, evals: int, placements: tuple[str, ...]) -> None:
    with tempfile.TemporaryDirectory(prefix="bench_target_") as tmp:
        row = run_model(model_id, calib, evals, Path(tmp), placements)
    print("RESULT " + json.dumps(row, default=float))


# --- parent -----------------------------------------------------------------------------------------------------


def _child(model_id: str, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.setdefault("WORKBENCH_MEMORY_BUDGET", "2G")
    cmd = [sys.executable, __file__, "--worker", model_id, "--calib", str(args.calib), "--eval", str(args.eval),
           "--placements", *args.placements]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_target_cwd_") as scratch:
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env, cwd=scratch)
        except subprocess.TimeoutExpired as exc:  # keep what it measured before (FP16, a first placement)
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            part = [ln for ln in out.splitlines() if ln.startswith("PARTIAL ")]
            if not part:
                return {"model": model_id, "error": f"timed out after {args.timeout} s"}
            row = json.loads(part[-1][len("PARTIAL "):])
            for placement in args.placements:
                row["placements"].setdefault(placement, {"error": f"timed out after {args.timeout} s (the model's "
                                                                  "whole run)"})
            return row
    got = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode != 0 or not got:
        tail = [ln for ln in (p.stderr or p.stdout).strip().splitlines() if ln.strip()][-4:]
        return {"model": model_id, "error": f"exit {p.returncode}: " + " | ".join(tail)[-600:]}
    row = json.loads(got[-1][len("RESULT "):])
    row["wall_s"] = time.perf_counter() - start
    return row


def _merged(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    try:
        old = json.loads(OUT.read_text()).get("models", []) if OUT.is_file() else []
    except ValueError:
        old = []
    new = {r["model"]: r for r in rows}
    return [new.pop(r["model"], r) for r in old] + list(new.values())


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Done-when: on every model FP16 reaches, does the target mode reach it (per placement)?"""
    out: dict[str, Any] = {}
    for placement in PLACEMENTS:
        fp16_ok = [r for r in rows if (r.get("fp16") or {}).get("reaches") is True
                   and placement in r.get("placements", {})]
        reached = [r["model"] for r in fp16_ok if r["placements"][placement].get("reached")]
        failed = [r["model"] for r in fp16_ok if "error" in r["placements"][placement]]
        out[placement] = {"fp16_reaches": len(fp16_ok), "target_reaches": len(reached),
                          "missed": [r["model"] for r in fp16_ok if r["model"] not in reached + failed],
                          "errors": failed}
    return out


def save(rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    rows = _merged(rows)
    result = {"generated": time.strftime("%Y-%m-%d %H:%M:%S"),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared)",
              "note": "task metric per sample, averaged; tolerance: shares (top1, detection, mask_iou, ctc_text) "
                      "a drop <= 0.005 below FP32 (1.0), cosine >= 0.99, rel_l2 <= 0.01; plans chosen and measured "
                      "on the evaluation samples (the first --eval; calibration the first --calib); cost: FLOPs "
                      "weighted by precision (FP32 1.0, all INT8 0.25); latency: ONNX Runtime CPU, 1 thread, "
                      "fastest of interleaved runs",
              "models": rows, "summary": summary(rows)}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=float))
    tmp.replace(OUT)
    return result


def _fmt(v: Any, spec: str = ".4g") -> str:
    return "-" if v is None else format(v, spec)


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [f"{'model':<28} {'metric':<9} {'fp16':>8} {'ok':>3} | {'placement':<11} {'int8':>8} {'target':>8} "
             f"{'ok':>3} {'kept i8/16/32':>14} {'cost':>6} {'x int8':>6} {'size/fp32':>9} {'lat/fp32':>8} {'s':>6}"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['model']:<28} error: {r['error'][:100]}")
            continue
        f = r.get("fp16") or {}
        head = (f"{r['model']:<28} {r['metric']:<9} {_fmt(f.get('metric')):>8} "
                f"{('yes' if f.get('reaches') else 'no') if 'metric' in f else 'err':>3}")
        for k, placement in enumerate(PLACEMENTS):
            p = r["placements"].get(placement)
            if p is None:
                continue
            lead = head if k == 0 else " " * len(head)
            if "error" in p:
                lines.append(f"{lead} | {placement:<11} error: {p['error'][:80]}")
                continue
            lay = p["layers"]
            cost, c8 = p.get("cost"), p.get("cost_all_int8")
            lat = p.get("latency_ms") or {}
            lat_ratio = lat["target"] / lat["fp32"] if "target" in lat and "fp32" in lat else None
            lines.append(f"{lead} | {placement:<11} {_fmt(p['all_int8_metric']):>8} {_fmt(p['metric']):>8} "
                         f"{'yes' if p['reached'] else 'no':>3} "
                         f"{lay.get('int8', 0):>4}/{lay.get('fp16', 0)}/{lay.get('fp32', 0):<4} "
                         f"{_fmt(cost, '.3f'):>6} {_fmt(cost / c8 if cost and c8 else None, '.2f'):>6} "
                         f"{_fmt(p['size'] / r['fp32_size'], '.2f'):>9} {_fmt(lat_ratio, '.2f'):>8} "
                         f"{p['seconds']:>6.0f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=[], metavar="ID")
    ap.add_argument("--skip", nargs="+", default=[], metavar="ID", help="models left out")
    ap.add_argument("--big", action="store_true", help="also the big models (isnet, u2net, nudenet_classifier, t5)")
    ap.add_argument("--calib", type=int, default=16)
    ap.add_argument("--eval", type=int, default=16)
    ap.add_argument("--placements", nargs="+", default=list(PLACEMENTS), choices=PLACEMENTS)
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per model (its child process)")
    ap.add_argument("--copy-docs", action="store_true", help=f"copy the JSON to {DOCS.relative_to(ROOT)}")
    ap.add_argument("--summary", action="store_true", help="recompute the saved file's summary and print its table")
    ap.add_argument("--worker", metavar="MODEL", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.calib, args.eval, tuple(args.placements))
        return 0
    if args.summary:
        result = save([], args)
        print("\n".join(table(result["models"])))
        print(json.dumps(result["summary"], indent=1))
        if args.copy_docs:
            shutil.copyfile(OUT, DOCS)
        return 0
    from corpus.fetch import manifests

    chosen = [m["id"] for m in manifests() if m.get("data") and (not args.models or m["id"] in args.models)
              and m["id"] not in args.skip and (args.big or args.models or not m["id"].startswith(BIG))]
    rows = []
    for mid in chosen:
        print(f"== {mid}", flush=True)
        row = _child(mid, args)
        rows.append(row)
        print("\n".join(table([row])), flush=True)
        save(rows, args)
    result = save(rows, args)
    print()
    print("\n".join(table(result["models"])))
    for placement, s in result["summary"].items():
        print(f"{placement}: FP16 reaches the tolerance on {s['fp16_reaches']} models; the target mode on "
              f"{s['target_reaches']} of them" + (f"; missed: {', '.join(s['missed'])}" if s["missed"] else "")
              + (f"; did not run: {', '.join(s['errors'])}" if s["errors"] else ""))
    if args.copy_docs:
        shutil.copyfile(OUT, DOCS)
        print(f"copied to {DOCS}")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
