"""FP8 beside INT8, ModelOpt's FP8 and FP16 on real corpus models, side by side in one run.

    nice -n 5 .venv/bin/python benchmarks/bench_fp8.py [--models ID ...] [--calib 16] [--eval 16] [--build]

Per model, on its real data (``corpus.samples.load_inputs``; evaluation samples follow the calibration samples
where the data hold both), the task metric (``corpus.metrics``) and the output's rel L2 against FP32 of:
- ``int8``: the default ``workbench quantize`` (the façade, Q/DQ placed for TensorRT);
- ``fp8``: ``workbench quantize --dtype fp8`` (the same façade and placement, float8e4m3fn Q/DQ, scales amax/448,
  an opset < 19 model converted with onnx's version converter), with its default method, and ``fp8_<method>``
  for every other calibration method (the same statistics, another threshold);
- ``modelopt_fp8``: NVIDIA ModelOpt's ONNX PTQ, ``quantize_mode="fp8"``, ``calibration_eps=["cpu"]``,
  ``high_precision_dtype="fp32"`` (as bench_corpus.py runs its INT8), in its own venv (``MODELOPT_PYTHON``);
- ``fp16``: ``workbench convert --precision fp16 --inputs CALIB``.
Every model runs in ONNX Runtime (CPU) through the workbench's ``OrtEngine``, which keeps a float8 model at the
basic optimization level (``workbench.backends.ort.optimization_level``). The same FP8 models are also run at
``ORT_ENABLE_ALL`` (``ort_enable_all``: what happens without that rule) and, with ``--build``, ours is built with
TensorRT-RTX on the CPU (``workbench build --backend tensorrt-rtx``: layers that run in FP8).

Prints a table with ratios and writes ``benchmarks/out/bench_fp8.json`` (copied to docs/bench_fp8.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
OUT = ROOT / "benchmarks" / "out" / "bench_fp8.json"
DOCS = ROOT / "docs" / "bench_fp8.json"
MODELS = ["picodet_layout_cdla", "yolov8n_doclaynet", "ppocr_v4_det", "u2netp_small", "blazeface_back_256",
          "malviz_resnet18_external_data"]

MODELOPT_FP8 = r"""
import json, sys, time, traceback
import numpy as np
src, npz, out, method = sys.argv[1:5]
from modelopt.onnx.quantization import quantize
data = dict(np.load(npz))
t = time.perf_counter()
try:
    quantize(src, quantize_mode="fp8", calibration_data=data, calibration_eps=["cpu"], high_precision_dtype="fp32",
             calibration_method=method or None, output_path=out)
except Exception as exc:
    traceback.print_exc()
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
    raise SystemExit(0)
print(json.dumps({"seconds": time.perf_counter() - t}))
"""


def outputs(model: Any, inputs: Any) -> dict[str, np.ndarray]:
    """The model's outputs on every run of ``inputs`` (concatenated), in the workbench's ONNX Runtime engine."""
    from workbench.backends.ort import OrtEngine

    engine = OrtEngine(model)
    want = {i.name for i in engine.session.get_inputs()}
    per: dict[str, list[np.ndarray]] = {n: [] for n in engine.output_names}
    for feeds in inputs.runs():
        for n, v in engine.run({k: v for k, v in feeds.items() if k in want}).items():
            per[n].append(v)
    return {n: (np.concatenate(v) if v[0].ndim else np.stack(v)) for n, v in per.items() if v}


def enable_all(model: Any, inputs: Any, ref: Mapping[str, np.ndarray], out_name: str | None) -> str:
    """What ONNX Runtime's ``ORT_ENABLE_ALL`` does to an FP8 model: its error, or its output's rel L2 against the
    same model at the basic level (0: the same results)."""
    import onnxruntime as ort

    from corpus.metrics import task_metric
    from workbench.graph import model_bytes

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 4
    try:
        sess = ort.InferenceSession(model_bytes(model), so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's refusal is the finding
        return "fails: " + str(exc).strip().splitlines()[0][-160:]
    names = [o.name for o in sess.get_outputs()]
    want = {i.name for i in sess.get_inputs()}
    per: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for feeds in inputs.runs():
        for n, v in zip(names, sess.run(None, {k: v for k, v in feeds.items() if k in want})):
            per[n].append(v)
    got = {n: (np.concatenate(v) if v[0].ndim else np.stack(v)) for n, v in per.items() if v}
    return f"rel_l2 {task_metric('rel_l2', ref, got, output=out_name).value:.4g} vs basic"


def rtx_build(path: Path, work: Path) -> dict[str, Any]:
    """``workbench build PATH --backend tensorrt-rtx``: ok, seconds and how many engine layers write FP8, or the
    builder's own words."""
    engine = work / (path.stem + ".engine")
    p = subprocess.run([str(ROOT / ".venv" / "bin" / "workbench"), "build", str(path), "-o", str(engine),
                        "--backend", "tensorrt-rtx", "--json"], capture_output=True, text=True, timeout=1800)
    try:
        r = json.loads(p.stdout)
    except ValueError:
        return {"ok": False, "error": (p.stderr or p.stdout).strip()[-300:]}
    if "error" in r:
        return {"ok": False, "error": r["error"][:300], "hint": r.get("hint", "")[:200]}
    layers = r.get("engine_layers") or []
    fp8 = sum(1 for layer in layers if any(o.get("DataType") == "FP8" for o in layer.get("Outputs", [])))
    return {"ok": True, "seconds": round(r["seconds"], 2), "layers": len(layers), "fp8_layers": fp8}


def bench_model(mid: str, args: argparse.Namespace, mo_ok: bool, work: Path) -> dict[str, Any]:
    from bench_corpus import MODELOPT_PYTHON, _child, _fp16_ours, _modelopt_calibration, load_inputs, part

    from corpus.fetch import load_manifest
    from corpus.metrics import task_metric
    from corpus.samples import as_workbench_data, model_file
    from workbench.calibration import METHODS
    from workbench.errors import WorkbenchError
    from workbench.graph import load_model
    from workbench.session import Session
    from workbench.workflows.quantize import QuantizeSettings, apply_quantize, quantize

    manifest = load_manifest(mid)
    path = model_file(manifest)
    inputs = load_inputs(manifest, args.calib + args.eval)
    calib = part(inputs, 0, args.calib)
    held_out = inputs.samples >= args.calib + args.eval
    evals = part(inputs, args.calib, args.eval) if held_out else part(inputs, 0, args.eval)
    metric, out_name = manifest.get("metric") or "rel_l2", manifest.get("output")
    opts = manifest.get("metric_options") or {}
    ref = outputs(load_model(path), evals)
    row: dict[str, Any] = {"model": mid, "metric": metric, "calib": calib.samples, "eval": evals.samples,
                           "held_out": held_out, "metric_value": {}, "rel_l2": {}, "seconds": {}, "notes": []}

    def score(key: str, model: Any, seconds: float | None = None) -> None:
        got = outputs(model, evals)
        row["metric_value"][key] = round(task_metric(metric, ref, got, output=out_name, **opts).value, 5)
        row["rel_l2"][key] = round(task_metric("rel_l2", ref, got, output=out_name).value, 5)
        if seconds is not None:
            row["seconds"][key] = round(seconds, 2)
        print(f"  {mid} {key}: {metric} {row['metric_value'][key]:.4g}, rel_l2 {row['rel_l2'][key]:.4g}", flush=True)

    data = as_workbench_data(calib)
    for dtype in ("int8", "fp8"):
        session = Session(path, cache_dir=work / f"cache_{mid}_{dtype}")
        settings = QuantizeSettings(dtype=dtype)
        start = time.perf_counter()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = quantize(session, data, settings)
        except WorkbenchError as exc:
            row["metric_value"][dtype] = f"refused: {exc.message[:200]}"
            print(f"  {mid} {dtype}: refused: {exc.message}", flush=True)
            continue
        row["notes"] += sorted({str(w.message)[:240] for w in caught if "opset" in str(w.message)})
        score(dtype, session.model, time.perf_counter() - start)
        if dtype != "fp8":
            continue
        row["fp8_method"] = settings.method
        model_path = session.export(work / f"{mid}_fp8.onnx", overwrite=True)
        row["ort_enable_all"] = enable_all(session.model, evals, outputs(session.model, evals), out_name)
        print(f"  {mid} fp8 at ORT_ENABLE_ALL: {row['ort_enable_all']}", flush=True)
        if args.build:
            row["rtx_build"] = rtx_build(Path(model_path), work)
            print(f"  {mid} fp8 TensorRT-RTX build: {row['rtx_build']}", flush=True)
        assert result.calibration is not None
        cache = result.calibration.cache
        for method in METHODS:
            if method == settings.method:
                continue
            session.undo()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                apply_quantize(session, cache.with_method(method), QuantizeSettings(dtype="fp8", method=method))
            score(f"fp8_{method}", session.model)
    fp16 = _fp16_ours(path, calib, work, mid)
    if isinstance(fp16, str):
        row["metric_value"]["fp16"] = fp16
    else:
        score("fp16", load_model(fp16))
    if mo_ok:
        npz = work / f"{mid}_calib_modelopt.npz"
        _modelopt_calibration(calib, npz)
        for key, method in (("modelopt_fp8", ""), ("modelopt_fp8_max", "max")):
            out = work / f"{mid}_{key}.onnx"
            r = _child([MODELOPT_PYTHON, "-c", MODELOPT_FP8, str(path), str(npz), str(out), method], args.timeout,
                       args.rss_limit)
            if "error" in r:
                row["metric_value"][key] = f"failed: {r['error']}"
                print(f"  {mid} {key}: {r['error']}", flush=True)
                continue
            mo = load_model(out) if out.stat().st_size < 2**31 else out
            score(key, mo, r["seconds"])
    row["ratios"] = ratios(row)
    return row


def ratios(row: Mapping[str, Any]) -> dict[str, float]:
    """The rel L2 of ours FP8 over ours INT8, over ModelOpt's FP8 and over FP16 (below 1: ours FP8 is closer)."""
    rel = row["rel_l2"]
    out = {}
    for other in ("int8", "modelopt_fp8", "fp16"):
        if isinstance(rel.get("fp8"), float) and isinstance(rel.get(other), float) and rel[other] > 0:
            out[f"fp8_rel_l2_over_{other}"] = round(rel["fp8"] / rel[other], 3)
    return out


COLUMNS = ["int8", "fp8", "fp8_max", "fp8_percentile", "fp8_entropy", "fp8_mse", "fp8_auto", "modelopt_fp8",
           "modelopt_fp8_max", "fp16"]


def _cell(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else "-" if v is None else str(v)[:12]


def _print(rows: list[dict[str, Any]]) -> None:
    cols = [c for c in COLUMNS if any(c in r["metric_value"] for r in rows)]
    for what in ("metric_value", "rel_l2"):
        print(f"\n{what} against FP32")
        print(f"{'model':32s} {'metric':10s} " + " ".join(f"{c:>16s}" for c in cols))
        for r in rows:
            print(f"{r['model']:32s} {r['metric']:10s} " + " ".join(f"{_cell(r[what].get(c)):>16s}" for c in cols))
    print("\nratios (rel L2 of ours FP8 over ...; below 1: ours FP8 is closer to FP32)")
    for r in rows:
        print(f"{r['model']:32s} " + ", ".join(f"{k} {v}" for k, v in r["ratios"].items())
              + f"; ORT_ENABLE_ALL: {r.get('ort_enable_all')}" + (f"; RTX: {r['rtx_build']}" if "rtx_build" in r else ""))


def main(argv: list[str] | None = None) -> int:
    from bench_corpus import modelopt_status

    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--models", nargs="+", default=MODELS, metavar="ID")
    ap.add_argument("--calib", type=int, default=16)
    ap.add_argument("--eval", type=int, default=16)
    ap.add_argument("--build", action="store_true", help="also build ours FP8 with TensorRT-RTX (CPU)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per ModelOpt run")
    ap.add_argument("--rss-limit", type=float, default=4096, help="MB of RSS per ModelOpt run")
    ap.add_argument("--keep", metavar="DIR", help="write the models into DIR and keep them (default: a temporary folder)")
    args = ap.parse_args(argv)
    status = modelopt_status()
    if status:
        print(status, flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_fp8_") as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        for mid in args.models:
            print(f"{mid}:", flush=True)
            rows.append(bench_model(mid, args, not status, work))
    old = json.loads(OUT.read_text()).get("models", []) if OUT.is_file() else []
    new = {r["model"]: r for r in rows}
    merged = [new.pop(r["model"], r) for r in old] + list(new.values())
    result = {"generated": time.strftime("%Y-%m-%d %H:%M:%S"),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "note": "task metric and output rel L2 against FP32 on held-out real samples; ORT CPU through OrtEngine "
                      "(float8 models at ORT_ENABLE_BASIC)", "modelopt": status or "run", "models": merged}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = OUT.with_suffix(".tmp")
    tmp_out.write_text(json.dumps(result, indent=1, default=float))
    tmp_out.replace(OUT)
    shutil.copyfile(OUT, DOCS)
    _print(merged)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
