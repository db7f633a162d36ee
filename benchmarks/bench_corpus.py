"""INT8 and fp16 on the real-model corpus, side by side with the anchors, in one run.

    .venv/bin/python benchmarks/bench_corpus.py [--ci] [--models ID ...] [--calib 16] [--eval 16]

On every corpus model with real data (``--ci``: the CI subset):
- accuracy: the task metric against FP32 of our default INT8 (Q/DQ placed for TensorRT and for ONNX Runtime),
  ONNX Runtime's ``quantize_static`` (QDQ, per-channel, MinMax and Entropy, symmetric s8 and u8 activations)
  and NVIDIA ModelOpt's ONNX PTQ (``quantize_mode="int8"``, ``calibration_eps=["cpu"]``,
  ``high_precision_dtype="fp32"``) where it installs (a venv of its own: its pins would replace this venv's onnx
  and onnxruntime; ``MODELOPT_PYTHON`` names its interpreter, default /tmp/movenv/bin/python);
- fp16: inf/NaN in the outputs of our conversion and of ModelOpt's AutoCast;
- ONNX Runtime throughput of FP32, ours placed for ONNX Runtime, and ORT's u8 ``quantize_static`` (the fastest of
  interleaved runs, 1 thread unless ``--threads``);
- wall time and peak RSS of calibrate + quantize per tool, each in a child process of its own.

Prints tables with ratios and merges its rows into ``benchmarks/out/bench_corpus.json`` (a model measured again
replaces its row; ``python -m corpus.report`` puts them into docs/corpus.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out" / "bench_corpus.json"
MODELOPT_PYTHON = os.environ.get("MODELOPT_PYTHON", "/tmp/movenv/bin/python")
ORT_TOOLS = {"ort_minmax_s8": ("MinMax", "s8"), "ort_entropy_s8": ("Entropy", "s8"),
             "ort_minmax_u8": ("MinMax", "u8"), "ort_entropy_u8": ("Entropy", "u8")}
TOOLS = ["ours_trt", "ours_ort", *ORT_TOOLS, "modelopt_int8"]


# --- child process: one tool's calibrate + quantize ---------------------------------------------------------


def _ours(model_path: Path, data: Any, target: str, out: Path) -> None:
    from workbench.calibration import DEFAULT_METHOD, calibrate
    from workbench.precision import activation_tensors
    from workbench.recipe import FuseBatchNorm, Quantize
    from workbench.session import Session

    s = Session(model_path, cache_dir=out.parent / f"cache_{target}")
    if any(n.op_type == "BatchNormalization" for n in s.model.graph.node):
        s.apply(FuseBatchNorm())
    tensors = activation_tensors(s.model, target=target) if target != "tensorrt" else None
    cache = calibrate(s.model, data, method=DEFAULT_METHOD, tensors=tensors)
    s.apply(Quantize(scales=cache.save(s.cache_dir), target=target, method=DEFAULT_METHOD))
    s.export(out, overwrite=True)


def _ort(model_path: Path, inputs: Any, method: str, act: str, out: Path) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.runs = iter(inputs.runs())

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.runs, None)

    import onnx

    m = onnx.load(str(model_path))
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 13)
    if opset < 13:  # ORT writes per-channel Q/DQ (an `axis`) that needs opset 13: convert first, as its docs say
        from onnx import version_converter

        model_path = out.with_name(out.stem + "_opset13.onnx")
        onnx.save(version_converter.convert_version(m, 13), str(model_path))
    quantize_static(str(model_path), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8 if act == "s8" else QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=getattr(CalibrationMethod, method),
                    extra_options={"ActivationSymmetric": act == "s8", "WeightSymmetric": True})


def load_inputs(manifest: dict[str, Any], samples: int) -> Any:
    """The model's samples (``corpus.samples.Inputs``): images as the corpus suite reads them; audio, tokens and
    bytes through ``corpus.data``, which runs their front ends (openWakeWord's mel spectrogram and embedding, a
    VAD's context, a tokenizer) where ``corpus.samples`` would feed raw wav or random ids."""
    from corpus import samples as S

    if (manifest.get("data") or {}).get("kind") in (None, "image", "npz"):
        return S.load_inputs(manifest, samples=samples)
    from corpus.data import sample_feeds

    feeds = sample_feeds(manifest["id"], samples)
    axes = {k: s.get("sample_axis") for k, s in manifest["inputs"].items()}
    n = min(v.shape[axes[k]] for k, v in feeds.items() if axes[k] is not None)
    out = S.Inputs(feeds, axes, n, f"corpus.data ({manifest['data']['kind']})", True)
    out._step = S._fixed_step(manifest["inputs"], axes)  # type: ignore[attr-defined]
    return out


def worker(tool: str, model_id: str, out: str, calib: int) -> None:
    """Run one tool in this (child) process and print {seconds, peak_mb} as JSON."""
    from corpus.fetch import load_manifest
    from corpus.samples import as_workbench_data, model_file

    manifest = load_manifest(model_id)
    path = model_file(manifest)
    inputs = load_inputs(manifest, calib)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if tool == "ours_trt":
        _ours(path, as_workbench_data(inputs), "tensorrt", Path(out))
    elif tool == "ours_ort":
        _ours(path, as_workbench_data(inputs), "onnxruntime", Path(out))
    else:
        _ort(path, inputs, *ORT_TOOLS[tool], Path(out))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_mb": (peak - base) / 1024.0, "peak_total_mb": peak / 1024.0}))


MODELOPT_INT8 = r"""
import json, resource, sys, time
import numpy as np
src, npz, out = sys.argv[1:4]
from modelopt.onnx.quantization import quantize
data = dict(np.load(npz))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
quantize(src, quantize_mode="int8", calibration_data=data, calibration_eps=["cpu"], high_precision_dtype="fp32",
         output_path=out)
s = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": s, "peak_mb": (peak - base) / 1024.0, "peak_total_mb": peak / 1024.0}))
"""

MODELOPT_AUTOCAST = r"""
import json, sys
import numpy as np, onnx
src, npz, out = sys.argv[1:4]
from modelopt.onnx.autocast import convert_to_mixed_precision
m = convert_to_mixed_precision(onnx_path=src, low_precision_type="fp16", calibration_data=npz)
onnx.save(m, out)
print(json.dumps({"ok": True}))
"""


def _child(cmd: list[str], timeout: float = 1800) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    # in a scratch folder: ONNX Runtime's quantization tools write temporary files (sym_shape_infer_temp.onnx,
    # <uuid>.data external weights) into the working directory, which was the repository
    with tempfile.TemporaryDirectory(prefix="bench_corpus_cwd_") as scratch:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=scratch)
    if p.returncode != 0:
        tail = [ln for ln in (p.stderr or p.stdout).strip().splitlines() if ln.strip()][-3:]
        return {"error": f"exit {p.returncode}: " + " | ".join(tail)[-400:]}
    try:
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"no result: {p.stdout[-200:]}"}


def modelopt_status() -> str:
    """'' when ModelOpt's ONNX PTQ imports in its interpreter, else why not."""
    if not Path(MODELOPT_PYTHON).exists():
        return (f"ModelOpt not run: no interpreter at {MODELOPT_PYTHON} (pip install 'nvidia-modelopt[onnx]' in a "
                "venv of its own: it pins onnx and onnxruntime-gpu versions that would replace this venv's)")
    r = _child([MODELOPT_PYTHON, "-c", "import json, modelopt; from modelopt.onnx.quantization import quantize; "
                                       "print(json.dumps({'version': modelopt.__version__}))"], timeout=600)
    return f"ModelOpt not run: it does not import ({r['error']})" if "error" in r else ""


# --- parent: run, measure, compare ----------------------------------------------------------------------------


def _session(path: Path, threads: int = 2) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def outputs(path: Path, inputs: Any) -> dict[str, np.ndarray]:
    sess = _session(path)
    names = [o.name for o in sess.get_outputs()]
    want = {i.name for i in sess.get_inputs()}
    per: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for feeds in inputs.runs():
        for n, v in zip(names, sess.run(None, {k: v for k, v in feeds.items() if k in want})):
            if isinstance(v, np.ndarray):
                per[n].append(v)
    return {n: (np.concatenate(v) if v[0].ndim else np.stack(v)) for n, v in per.items() if v}


def throughput(paths: dict[str, Path], feeds: dict[str, np.ndarray], samples: int, seconds: float = 3.0,
               threads: int = 1, min_runs: int = 30) -> dict[str, float]:
    """Samples/s of each model from its fastest run, the models' runs interleaved (at least ``seconds`` and
    ``min_runs`` each): on a machine shared with other jobs the fastest run is the one least disturbed, and
    interleaving gives each model the same share of quiet moments. One thread by default: on 2 busy cores two
    threads wait on each other (sequential timing of 3 s each, 2 threads, moved ratios by 3x here)."""
    runs = {}
    for key, path in paths.items():
        sess = _session(path, threads)
        want = {i.name for i in sess.get_inputs()}
        runs[key] = (sess, {k: v for k, v in feeds.items() if k in want})
        for _ in range(2):
            sess.run(None, runs[key][1])
    best = dict.fromkeys(runs, float("inf"))
    spent = dict.fromkeys(runs, 0.0)
    count = 0
    while min(spent.values()) < seconds or count < min_runs:
        count += 1
        for key, (sess, fd) in runs.items():
            start = time.perf_counter()
            sess.run(None, fd)
            took = time.perf_counter() - start
            best[key] = min(best[key], took)
            spent[key] += took
    return {k: samples / v for k, v in best.items()}


def _qdq_nodes(path: Path) -> int:
    """QuantizeLinear/DequantizeLinear and integer nodes in a model (0: it quantized nothing)."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return sum(1 for n in m.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") or "Integer" in n.op_type
               or n.op_type.startswith("QLinear"))


def _batch_feeds(manifest: dict[str, Any], model_path: Path, inputs: Any, batch: int) -> tuple[dict[str, Any], int]:
    """Feeds of ``batch`` samples when the model's sample axis is dynamic, else of one (its fixed batch)."""
    import onnx

    from corpus.samples import batch_of

    m = onnx.load(str(model_path), load_external_data=False)
    dynamic = True
    for vi in m.graph.input:
        ax = (manifest["inputs"].get(vi.name) or {}).get("sample_axis")
        dims = vi.type.tensor_type.shape.dim
        if ax is not None and ax < len(dims) and dims[ax].HasField("dim_value") and dims[ax].dim_value > 0:
            dynamic = False
    if dynamic and inputs.samples >= batch:
        return batch_of(inputs, 0, batch), batch
    return inputs.runs()[0], inputs.step


def bench_model(manifest: dict[str, Any], args: argparse.Namespace, mo_ok: bool, work: Path) -> dict[str, Any]:
    from corpus.metrics import task_metric
    from corpus.samples import model_file

    mid = manifest["id"]
    path = model_file(manifest)
    inputs = load_inputs(manifest, max(args.calib, args.eval))
    evals = inputs.take(args.eval)
    ref = outputs(path, evals)
    metric, out_name = manifest.get("metric") or "rel_l2", manifest.get("output")
    opts = manifest.get("metric_options") or {}

    def score(p: Path) -> tuple[float, float]:
        """The task metric and the output's rel L2 (the metric's output; all outputs' worst without one): on a
        few samples near a decision boundary the task metric flips with noise the rel L2 shows as such."""
        got = outputs(p, evals)
        return (task_metric(metric, ref, got, output=out_name, **opts).value,
                task_metric("rel_l2", ref, got, output=out_name).value)

    row: dict[str, Any] = {"model": mid, "metric": metric, "calib": args.calib, "eval": args.eval, "accuracy": {},
                           "cost": {}, "fp16": {}, "throughput": {}}
    paths: dict[str, Path] = {}
    npz = work / f"{mid}_calib.npz"
    calib = inputs.take(args.calib)
    np.savez(npz, **calib.arrays)
    for tool in TOOLS:
        out = work / f"{mid}_{tool}.onnx"
        if tool == "modelopt_int8":
            if not mo_ok:
                continue
            r = _child([MODELOPT_PYTHON, "-c", MODELOPT_INT8, str(path), str(npz), str(out)])
        else:
            r = _child([sys.executable, __file__, "--worker", tool, mid, str(out), "--calib", str(args.calib)])
        if "error" in r:
            row["accuracy"][tool] = {"error": r["error"]}
            print(f"  {mid} {tool}: {r['error']}", flush=True)
            continue
        row["cost"][tool] = {"seconds": r["seconds"], "peak_mb": r["peak_mb"]}
        try:
            value, rel = score(out)
            row["accuracy"][tool] = round(value, 5)
            row.setdefault("rel_l2", {})[tool] = round(rel, 5)
            row.setdefault("qdq_nodes", {})[tool] = _qdq_nodes(out)
            paths[tool] = out
        except Exception as exc:  # noqa: BLE001 - an anchor's model that does not run is reported, not fatal
            row["accuracy"][tool] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    higher = metric != "rel_l2"
    # an anchor that quantized nothing (its model is FP32: ModelOpt skips a model of MatMuls it will not quantize)
    # is not an INT8 result to compare with
    anchors = [v for k, v in row["accuracy"].items() if not k.startswith("ours") and isinstance(v, float)
               and row.get("qdq_nodes", {}).get(k, 1) > 0]
    if anchors:
        best = max(anchors) if higher else min(anchors)
        for key, tool in (("shortfall", "ours_trt"), ("shortfall_ort", "ours_ort")):
            ours = row["accuracy"].get(tool)
            if isinstance(ours, float):
                row[key] = (ours - best) if higher else (best - ours)
    # fp16
    try:
        from workbench.recipe import ConvertPrecision
        from workbench.session import Session

        s = Session(path, cache_dir=work / "cache_fp16")
        s.apply(ConvertPrecision(precision="fp16"))
        p16 = s.export(work / f"{mid}_fp16.onnx", overwrite=True)
        o16 = outputs(p16, evals)
        row["fp16"]["ours_finite"] = all(np.isfinite(v).all() for v in o16.values()
                                         if np.issubdtype(v.dtype, np.floating))
        row["fp16"]["ours_metric"] = round(task_metric(metric, ref, o16, output=out_name, **opts).value, 5)
    except Exception as exc:  # noqa: BLE001
        row["fp16"]["ours_finite"] = f"error: {type(exc).__name__}: {str(exc)[:120]}"
    if mo_ok:
        out = work / f"{mid}_autocast.onnx"
        r = _child([MODELOPT_PYTHON, "-c", MODELOPT_AUTOCAST, str(path), str(npz), str(out)])
        if "error" in r:
            row["fp16"]["modelopt_finite"] = f"error: {r['error'][:160]}"
        else:
            try:
                oa = outputs(out, evals)
                row["fp16"]["modelopt_finite"] = all(np.isfinite(v).all() for v in oa.values()
                                                     if np.issubdtype(v.dtype, np.floating))
                row["fp16"]["modelopt_metric"] = round(task_metric(metric, ref, oa, output=out_name, **opts).value, 5)
            except Exception as exc:  # noqa: BLE001
                row["fp16"]["modelopt_finite"] = f"error: {type(exc).__name__}: {str(exc)[:120]}"
    # throughput (ONNX Runtime, optimised; interleaved, fastest run)
    if "ours_ort" in paths and "ort_minmax_u8" in paths:
        feeds, b = _batch_feeds(manifest, path, inputs, args.batch)
        t = {"batch": b, **throughput({"fp32": path, "ours": paths["ours_ort"], "ort_u8": paths["ort_minmax_u8"]},
                                      feeds, b, args.seconds, args.threads)}
        t.update(ours_vs_fp32=t["ours"] / t["fp32"], ort_vs_fp32=t["ort_u8"] / t["fp32"],
                 ours_vs_ort=t["ours"] / t["ort_u8"])
        row["throughput"] = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in t.items()}
    return row


def _cell(v: Any) -> str:
    if isinstance(v, dict):
        return "err"
    return "-" if v is None else f"{v:.4g}"


def _merged(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """This run's rows merged into the saved file's: a model measured now replaces its old row, the others stay."""
    try:
        old = json.loads(OUT.read_text()).get("models", []) if OUT.is_file() else []
    except ValueError:
        old = []
    new = {r["model"]: r for r in rows}
    merged = [new.pop(r["model"], r) for r in old]
    return merged + list(new.values())


def _save(rows: list[dict[str, Any]], args: argparse.Namespace, unavailable: list[str]) -> dict[str, Any]:
    rows = _merged(rows)
    short = [r["shortfall"] for r in rows if r.get("shortfall") is not None]
    result = {"generated": time.strftime("%Y-%m-%d %H:%M:%S"),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "note": f"calibration and evaluation samples per model in its row (this run: {args.calib} / "
                      f"{args.eval}); throughput: fastest of interleaved runs, {args.threads} thread(s), "
                      f"{args.batch}-sample batches where the sample axis is dynamic",
              "tools": TOOLS, "unavailable": unavailable, "models": rows,
              "mean_shortfall": float(np.mean(short)) if short else None,
              "worse_than_best": sum(1 for s in short if s < -1e-9), "compared": len(short)}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=float))
    tmp.replace(OUT)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ci", action="store_true", help="only the CI subset")
    ap.add_argument("--models", nargs="+", default=[], metavar="ID")
    ap.add_argument("--calib", type=int, default=16, help="calibration samples (default 16)")
    ap.add_argument("--eval", type=int, default=16, help="evaluation samples (default 16)")
    ap.add_argument("--batch", type=int, default=4, help="throughput batch for a dynamic sample axis")
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per throughput measurement")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads for the throughput runs")
    ap.add_argument("--worker", nargs=3, metavar=("TOOL", "MODEL", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(*args.worker, calib=args.calib)
        return 0
    try:
        from corpus.fetch import manifests
    except ImportError as exc:
        print(f"no corpus: corpus.fetch is not importable ({exc})")
        return 0
    chosen = [m for m in manifests(ci_only=args.ci) if m.get("data")
              and (not args.models or m["id"] in args.models)]
    why_mo = modelopt_status()
    unavailable = [why_mo] if why_mo else []
    for msg in unavailable:
        print(msg)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_corpus_") as tmp:
        for m in chosen:
            print(f"== {m['id']} ({m.get('metric')})", flush=True)
            try:
                rows.append(bench_model(dict(m), args, not why_mo, Path(tmp)))
            except Exception as exc:  # noqa: BLE001 - a model that cannot be fetched or run: say so, go on
                print(f"  skipped: {type(exc).__name__}: {str(exc)[:300]}")
                rows.append({"model": m["id"], "metric": m.get("metric"), "accuracy": {}, "cost": {}, "fp16": {},
                             "throughput": {}, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
            _save(rows, args, unavailable)  # after every model: a stopped run keeps what it measured
    print(f"\n{'model':<26} {'metric':<9} " + " ".join(f"{t:>14}" for t in TOOLS) + "  ours-best")
    for r in rows:
        print(f"{r['model']:<26} {r['metric'] or '':<9} " + " ".join(f"{_cell(r['accuracy'].get(t)):>14}"
                                                                    for t in TOOLS)
              + (f"  {r['shortfall']:+.4f}" if r.get("shortfall") is not None else ""))
    result = _save(rows, args, unavailable)
    short = [r["shortfall"] for r in rows if r.get("shortfall") is not None]
    print("\nfp16 finite (ours / ModelOpt AutoCast):")
    for r in rows:
        f = r["fp16"]
        print(f"  {r['model']:<26} {f.get('ours_finite')} / {f.get('modelopt_finite', '-')}")
    print("\nINT8 for ONNX Runtime, samples/s (ratio to FP32; ours / ORT u8):")
    for r in rows:
        t = r["throughput"]
        if t:
            print(f"  {r['model']:<26} b{t['batch']} fp32 {t['fp32']:.1f}  ours {t['ours']:.1f} "
                  f"({t['ours_vs_fp32']:.2f}x)  ort_u8 {t['ort_u8']:.1f} ({t['ort_vs_fp32']:.2f}x)  "
                  f"ours/ort {t['ours_vs_ort']:.2f}")
    print("\ncalibrate+quantize seconds / peak RSS growth MB:")
    for r in rows:
        print(f"  {r['model']:<26} " + "  ".join(f"{t} {c['seconds']:.1f}s/{c['peak_mb']:.0f}MB"
                                                 for t, c in r["cost"].items()))
    if short:
        print(f"\nmean (ours TRT - best anchor): {np.mean(short):+.4f}; below the best on "
              f"{result['worse_than_best']} of {len(short)}")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
