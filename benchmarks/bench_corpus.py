"""INT8 and fp16 on the real-model corpus, side by side with the anchors, in one run.

    .venv/bin/python benchmarks/bench_corpus.py [--ci] [--models ID ...] [--calib 16] [--eval 16]

On every corpus model with real data (``--ci``: the CI subset):
- accuracy: the task metric against FP32 of what a user runs, the default ``workbench quantize`` (the façade's
  :func:`workbench.workflows.quantize.quantize`: fold BatchNorm, calibrate, Q/DQ placed for TensorRT and, with
  ``--target onnxruntime``, for ONNX Runtime), beside ONNX Runtime's ``quantize_static`` (QDQ, per-channel, MinMax
  and Entropy, symmetric s8 and u8 activations) and NVIDIA ModelOpt's ONNX PTQ (``quantize_mode="int8"``,
  ``calibration_eps=["cpu"]``, ``high_precision_dtype="fp32"``) where it installs (a venv of its own: its pins would
  replace this venv's onnx and onnxruntime; ``MODELOPT_PYTHON`` names its interpreter, default
  /tmp/movenv/bin/python). Evaluation samples follow the calibration samples where the data hold both (the row's
  ``held_out``), so no tool is scored on the samples it calibrated on;
- fp16: inf/NaN in the outputs of ours (``workbench convert --inputs``: ranges from a reference run on the
  calibration data) and of ModelOpt's AutoCast (the same data, ``keep_io_types=True`` as ours keeps them);
- ONNX Runtime throughput of FP32, ours placed for ONNX Runtime, and ORT's u8 ``quantize_static`` (the fastest of
  interleaved runs, 1 thread unless ``--threads``);
- wall time and peak RSS of calibrate + quantize per tool: one interpreter per family (ours, ORT, ModelOpt) imports
  its library and reads the calibration samples, then forks a process per tool, so each tool's clock and peak RSS
  (the kernel's high-water mark, reset at its start) are its own; a tool over ``--timeout`` s or ``--rss-limit`` MB
  is stopped and said so.

``--only-ours`` runs ours again (and ORT's u8, the throughput's pair) and keeps the anchors' saved cells where the
model's samples are the same (their digest in the row); each tool's commit is in the row's ``commits``.

A cell is the metric, or a short reason: ``refused: ...`` (the workbench's clean refusal, e.g. nothing to
quantize), ``failed: ...`` (the tool's own error), ``stopped: ...`` (time or memory limit). Prints tables and the
summary per placement, and merges its rows into ``benchmarks/out/bench_corpus.json`` (a model measured again
replaces its row; ``python -m corpus.report`` puts them into docs/corpus.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out" / "bench_corpus.json"
HERE = str(Path(__file__).resolve().parent)
MODELOPT_PYTHON = os.environ.get("MODELOPT_PYTHON", "/tmp/movenv/bin/python")
ORT_TOOLS = {"ort_minmax_s8": ("MinMax", "s8"), "ort_entropy_s8": ("Entropy", "s8"),
             "ort_minmax_u8": ("MinMax", "u8"), "ort_entropy_u8": ("Entropy", "u8")}
TOOLS = ["ours_trt", "ours_ort", *ORT_TOOLS, "modelopt_int8"]
RUNS = [*TOOLS, "ours_fp16", "modelopt_autocast"]  # the INT8 tools and the two fp16 conversions
# --only-ours: ours again (INT8 both placements, fp16) and ORT's u8, the throughput's pair, which is quick
ONLY_OURS = ("ours_trt", "ours_ort", "ours_fp16", "ort_minmax_u8")
PLACEMENTS = {"shortfall": "ours_trt", "shortfall_ort": "ours_ort"}
REASON_CHARS = 240
_EXC_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Fail|Failure)|AssertionError|KeyError)\b:?(.*)$")


# --- pure helpers (tested in tests/test_bench_corpus.py) ------------------------------------------------------


def short_reason(text: str, limit: int = REASON_CHARS) -> str:
    """One readable line from an exception's message or a child's stderr: the last ``SomeError: ...`` line of a
    traceback (else the last non-empty line), ORT's ``[ONNXRuntimeError] : 1 : FAIL :`` prefix dropped, whitespace
    collapsed, cut at ``limit`` characters."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return "no message"
    found = [ln for ln in lines if _EXC_LINE.match(ln)]
    line = found[-1] if found else lines[-1]
    line = re.sub(r"\[ONNXRuntimeError\] : \d+ : \w+ : ", "", line)
    line = " ".join(line.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def shortfalls(row: Mapping[str, Any]) -> dict[str, float]:
    """Ours minus the best anchor per placement (positive: ours better; rel_l2: lower is better), over the anchors
    with a number that quantized something (an anchor whose model is still FP32 is no INT8 result)."""
    acc, nodes = row.get("accuracy") or {}, row.get("qdq_nodes") or {}
    higher = row.get("metric") != "rel_l2"
    anchors = [v for k, v in acc.items() if not k.startswith("ours") and isinstance(v, (int, float))
               and nodes.get(k, 1) > 0]
    if not anchors:
        return {}
    best = max(anchors) if higher else min(anchors)
    out = {}
    for key, tool in PLACEMENTS.items():
        ours = acc.get(tool)
        if isinstance(ours, (int, float)):
            out[key] = float(ours - best) if higher else float(best - ours)
    return out


def summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per placement over ``rows`` (the merged file's, not one run's): models compared, mean of ours minus the best
    anchor, and the models below the best with by how much."""
    out = {}
    for key, tool in PLACEMENTS.items():
        vals = {r["model"]: r[key] for r in rows if r.get(key) is not None}
        below = {m: round(v, 5) for m, v in vals.items() if v < -1e-9}
        out[tool] = {"compared": len(vals), "mean": float(np.mean(list(vals.values()))) if vals else None,
                     "below": len(below), "below_by": dict(sorted(below.items(), key=lambda kv: kv[1]))}
    return out


def cell(v: Any) -> str:
    """A table cell: a number, or the reason string as it is."""
    if v is None:
        return "-"
    return v if isinstance(v, str) else f"{v:.4g}"


# --- child process: one tool's calibrate + quantize ---------------------------------------------------------


def _status_mb(key: str) -> float | None:
    """``VmRSS`` / ``VmHWM`` of this process in MB (Linux), None elsewhere."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) / 1024.0 if m else None


def measured(run: Callable[[], object]) -> dict[str, float]:
    """Wall seconds of ``run()`` and its peak RSS: the kernel's high-water mark reset before it (``clear_refs`` 5),
    so loading the data and the libraries beforehand does not hide the peak; ``peak_mb`` is the peak over the RSS
    at the start. Without /proc: the growth of ``ru_maxrss``. (Imported by the ModelOpt children too.)"""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        base, hwm = _status_mb("VmRSS"), True
    except OSError:
        base, hwm = None, False
    if base is None:
        base, hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, False
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    peak = (_status_mb("VmHWM") if hwm else None) or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"seconds": seconds, "peak_mb": max(0.0, peak - base), "peak_total_mb": peak}


def failure(exc: BaseException) -> str:
    """``Type: message (in file:line function)``, the innermost frame named: a tool's own error in a line."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    where = ""
    if frames:
        at = frames[-1]
        where = f" (in {at.filename.split('site-packages/')[-1]}:{at.lineno} {at.name})"
    return short_reason(f"{type(exc).__name__}: {' '.join(str(exc).split())}", REASON_CHARS - len(where)) + where


def forked(run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``run()`` in a forked child (Linux): the imports and the data are shared, the heap is fresh, so each tool's
    peak RSS and time are its own even when several run from one interpreter; its JSON result comes back through a
    pipe. Where there is no fork, ``run()`` here."""
    if not hasattr(os, "fork"):
        return run()
    sys.stdout.flush()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run, write the result, leave without running the parent's cleanup
        os.close(read)
        try:
            result = run()
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            result = {"error": failure(exc)}
        with os.fdopen(write, "w") as f:
            f.write(json.dumps(result))
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        text = f.read()
    _, status = os.waitpid(pid, 0)
    if not text:
        code = os.waitstatus_to_exitcode(status)
        return {"error": f"died ({'signal ' + str(-code) if code < 0 else 'exit ' + str(code)}, pid {pid})"}
    return json.loads(text)


def _ours(model_path: Path, data: Any, tool: str, work: Path) -> dict[str, Any]:
    """``workbench quantize MODEL --calib DATA [--target onnxruntime] -o OUT`` (ours_trt, ours_ort) or ``workbench
    convert MODEL --inputs DATA -o OUT`` (ours_fp16): the façade with its defaults."""
    from workbench.errors import WorkbenchError
    from workbench.session import Session
    from workbench.workflows.quantize import QuantizeSettings, convert, quantize

    out = work / f"{tool}.onnx"
    # a fresh cache folder: the workflow reuses a saved scale cache, which would time a cache hit
    session = Session(model_path, cache_dir=work / f"cache_{tool}")
    if tool == "ours_fp16":
        def run() -> object:
            return convert(session, "fp16", data=data, output=out)
    else:
        settings = QuantizeSettings(target="tensorrt" if tool == "ours_trt" else "onnxruntime")

        def run() -> object:
            return quantize(session, data, settings, output=out)
    try:
        return measured(run)
    except WorkbenchError as exc:
        return {"refused": short_reason(exc.message)}


def _ort(model_path: Path, inputs: Any, tool: str, work: Path) -> dict[str, Any]:
    """ONNX Runtime's ``quantize_static``: QDQ, per-channel symmetric int8 weights, the tool's method and
    activation type (s8 symmetric, u8 asymmetric)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    method, act = ORT_TOOLS[tool]
    out = work / f"{tool}.onnx"

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.runs = iter(inputs.runs())

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.runs, None)

    m = onnx.load(str(model_path), load_external_data=False)
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 13)

    def run() -> None:
        path = model_path
        if opset < 13:  # ORT writes per-channel Q/DQ (an `axis`) that needs opset 13: convert first, as its docs say
            from onnx import version_converter

            path = work / f"{tool}_opset13.onnx"
            onnx.save(version_converter.convert_version(onnx.load(str(model_path)), 13), str(path))
        quantize_static(str(path), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8 if act == "s8" else QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=getattr(CalibrationMethod, method),
                        extra_options={"ActivationSymmetric": act == "s8", "WeightSymmetric": True})

    return measured(run)


def load_inputs(manifest: Mapping[str, Any], samples: int) -> Any:
    """The model's samples (``corpus.samples.Inputs``), read by ``corpus.data`` (images, audio with its front end and
    recurrent state, tokens, bytes) as the corpus suite reads them."""
    from corpus.samples import load_inputs as corpus_inputs

    return corpus_inputs(manifest, samples=samples)


def part(inputs: Any, start: int, count: int) -> Any:
    """Samples ``start`` .. ``start + count`` of ``inputs`` as another ``Inputs`` (a sequence model's sample is
    ``run_length`` consecutive entries of the sample axis, one model run)."""
    from corpus.samples import Inputs

    stop = min(inputs.samples, start + count)
    run = inputs.run_length
    arrays = {k: (v if inputs.axes[k] is None else np.take(v, np.arange(start * run, stop * run), axis=inputs.axes[k]))
              for k, v in inputs.arrays.items()}
    out = Inputs(arrays, dict(inputs.axes), stop - start, inputs.source, inputs.real, list(inputs.notes), run)
    out._step = getattr(inputs, "_step", 1)  # type: ignore[attr-defined]
    return out


def write_calib(calib: Any, work: Path) -> None:
    """The calibration samples for the children: ``calib.npz`` (arrays) and ``calib.json`` (sample axes, count,
    the model's run size), so every tool calibrates on the very same arrays; ModelOpt's forms beside them."""
    np.savez(work / "calib.npz", **calib.arrays)
    (work / "calib.json").write_text(json.dumps({"axes": calib.axes, "samples": calib.samples,
                                                 "step": getattr(calib, "_step", 1), "run_length": calib.run_length,
                                                 "source": calib.source}))
    runs = calib.runs()
    # ModelOpt INT8: each input's runs concatenated on axis 0, which its data provider splits back into one model run
    # per calibration step (it splits every input on axis 0; a 0-d input stays stacked)
    np.savez(work / "modelopt_calib.npz", **{
        k: (np.concatenate([r[k] for r in runs]) if np.ndim(v) else np.stack([r[k] for r in runs]))
        for k, v in runs[0].items()})
    # ...and the shape of one run (its calibration_shapes), which a sequence model's dynamic axis needs
    (work / "modelopt_shapes.txt").write_text(",".join(f"{k}:{'x'.join(map(str, v.shape))}"
                                                       for k, v in runs[0].items() if np.ndim(v)))
    # AutoCast: a folder of .npz files, one model run each (its multi-batch form)
    (work / "autocast_runs").mkdir(exist_ok=True)
    for i, feeds in enumerate(runs):
        np.savez(work / "autocast_runs" / f"run_{i:04d}.npz", **feeds)


def read_calib(work: Path) -> Any:
    """What :func:`write_calib` wrote, as ``corpus.samples.Inputs``."""
    from corpus.samples import Inputs

    meta = json.loads((work / "calib.json").read_text())
    with np.load(work / "calib.npz") as z:
        arrays = {k: z[k] for k in z.files}
    out = Inputs(arrays, meta["axes"], meta["samples"], meta["source"], True, [], meta["run_length"])
    out._step = meta["step"]  # type: ignore[attr-defined]
    return out


def worker(family: str, jobs_file: str) -> None:
    """Run one family's tools (ours | ort) on every job of ``jobs_file`` ({model, path, work, tools} each), a forked
    process per tool, on the calibration samples in the job's ``work``; print one JSON line per tool: {model, tool,
    seconds, peak_mb, peak_total_mb}, {model, tool, refused} or {model, tool, error}. The library is imported once,
    before any clock starts."""
    from corpus.samples import as_workbench_data

    if family == "ours":
        import workbench.workflows.quantize  # noqa: F401 - imported before the clock, as the anchors' are
    else:
        import onnxruntime.quantization  # noqa: F401
    for job in json.loads(Path(jobs_file).read_text()):
        path, work = Path(job["path"]), Path(job["work"])
        inputs = read_calib(work)
        data = as_workbench_data(inputs) if family == "ours" else None

        for tool in job["tools"]:
            r = forked(lambda t=tool, p=path, d=data, i=inputs, w=work: _one(family, t, p, d, i, w))
            print(json.dumps({"model": job["model"], "tool": tool, **r}), flush=True)


def _one(family: str, tool: str, path: Path, data: Any, inputs: Any, work: Path) -> dict[str, Any]:
    try:
        return _ours(path, data, tool, work) if family == "ours" else _ort(path, inputs, tool, work)
    except Exception as exc:  # noqa: BLE001 - the tool's own failure, reported in a line
        return {"error": ("internal error: " if family == "ours" else "") + failure(exc)}


MODELOPT = r"""
import json, sys
import numpy as np
jobs_file, here = sys.argv[1:3]
sys.path.insert(0, here)
from bench_corpus import failure, forked, measured
import onnx
from modelopt.onnx.autocast import convert_to_mixed_precision
from modelopt.onnx.quantization import quantize

def one(src, work, tool):
    try:
        if tool == "modelopt_int8":
            data = dict(np.load(f"{work}/modelopt_calib.npz"))
            shapes = open(f"{work}/modelopt_shapes.txt").read() or None
            return measured(lambda: quantize(src, quantize_mode="int8", calibration_data=data,
                                             calibration_shapes=shapes, calibration_eps=["cpu"],
                                             high_precision_dtype="fp32", output_path=f"{work}/modelopt_int8.onnx"))
        onnx.save(convert_to_mixed_precision(onnx_path=src, low_precision_type="fp16",
                                             calibration_data=f"{work}/autocast_runs", keep_io_types=True),
                  f"{work}/modelopt_autocast.onnx")
        return {"ok": True}
    except Exception as exc:
        return {"error": failure(exc)}

for job in json.load(open(jobs_file)):
    for tool in job["tools"]:
        r = forked(lambda: one(job["path"], job["work"], tool))
        print(json.dumps({"model": job["model"], "tool": tool, **r}), flush=True)
"""


def _child(cmd: list[str], tool_timeout: float, rss_limit_mb: float) -> tuple[dict[tuple[str, str], Any], str]:
    """Run ``cmd`` (a family's interpreter, which forks a process per tool) in a scratch folder (ONNX Runtime's
    quantization tools write sym_shape_infer_temp.onnx and <uuid>.data into the working directory). A tool's
    process past ``tool_timeout`` s or ``rss_limit_mb`` MB of RSS is stopped (its result says so) and the family
    goes on. Returns {(model, tool): its JSON line} and, when the interpreter itself did not end cleanly, why."""
    import psutil

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    stopped: dict[int, str] = {}
    with tempfile.TemporaryDirectory(prefix="bench_corpus_cwd_") as scratch, \
            tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env, cwd=scratch)
        proc = psutil.Process(p.pid)
        while p.poll() is None:
            try:
                tools = proc.children(recursive=False)
            except psutil.NoSuchProcess:
                tools = []
            for q in tools:
                if q.pid in stopped:
                    continue
                try:
                    rss = max(x.memory_info().rss for x in [q, *q.children(recursive=True)]) / 2**20
                    age = time.time() - q.create_time()
                except psutil.NoSuchProcess:  # it ended between the listing and the reading
                    continue
                why = (f"stopped: RSS over {rss_limit_mb / 1024:.0f} GB" if rss > rss_limit_mb else
                       f"stopped: over {tool_timeout:.0f} s" if age > tool_timeout else "")
                if why:
                    stopped[q.pid] = why
                    for x in [*q.children(recursive=True), q]:
                        x.kill()
            time.sleep(0.2)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    results: dict[tuple[str, str], Any] = {}
    for line in stdout.splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if isinstance(r, dict) and "tool" in r and "model" in r:
            key = (r.pop("model"), r.pop("tool"))
            if "error" in r:
                m = re.search(r"died \(.*pid (\d+)\)", r["error"])
                r["error"] = stopped.get(int(m.group(1)), r["error"]) if m else short_reason(r["error"])
            results[key] = r
    why = "" if p.returncode == 0 else f"failed: exit {p.returncode}: {short_reason(stderr or stdout)}"
    return results, why


def modelopt_status() -> str:
    """'' when ModelOpt's ONNX PTQ imports in its interpreter, else why not."""
    if not Path(MODELOPT_PYTHON).exists():
        return (f"ModelOpt not run: no interpreter at {MODELOPT_PYTHON} (pip install 'nvidia-modelopt[onnx]' in a "
                "venv of its own: it pins onnx and onnxruntime-gpu versions that would replace this venv's)")
    p = subprocess.run([MODELOPT_PYTHON, "-c", "from modelopt.onnx.quantization import quantize"], capture_output=True,
                       text=True, timeout=600)
    return f"ModelOpt not run: it does not import ({short_reason(p.stderr)})" if p.returncode else ""


# --- parent: run, measure, compare ----------------------------------------------------------------------------


def _session(path: Path, threads: int = 2) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def outputs(path: Path, inputs: Any) -> dict[str, np.ndarray]:
    """Every float/int output of ``path`` over the runs of ``inputs``, concatenated run after run."""
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


def _batch_feeds(manifest: Mapping[str, Any], model_path: Path, inputs: Any, batch: int
                 ) -> tuple[dict[str, Any], int]:
    """Feeds of ``batch`` samples when the model's sample axis is dynamic, else of one run (its fixed batch)."""
    import onnx

    from corpus.samples import batch_of

    m = onnx.load(str(model_path), load_external_data=False)
    dynamic = True
    for vi in m.graph.input:
        ax = (manifest["inputs"].get(vi.name) or {}).get("sample_axis")
        dims = vi.type.tensor_type.shape.dim
        if ax is not None and ax < len(dims) and dims[ax].HasField("dim_value") and dims[ax].dim_value > 0:
            dynamic = False
    if inputs.run_length > 1:  # a sequence model: one run is one sample
        return inputs.runs()[0], 1
    if dynamic and inputs.samples >= batch:
        return batch_of(inputs, 0, batch), batch
    return inputs.runs()[0], inputs.step


def _finite(outs: Mapping[str, np.ndarray]) -> bool:
    return all(bool(np.isfinite(v).all()) for v in outs.values() if np.issubdtype(v.dtype, np.floating))


def data_digest(*parts: Any) -> str:
    """sha256 (16 hex digits) of the samples' arrays: a saved row is reused only on the very same samples."""
    h = hashlib.sha256()
    for p in parts:
        for k in sorted(p.arrays):
            v = np.ascontiguousarray(p.arrays[k])
            h.update(f"{k}:{v.dtype}:{v.shape}".encode())
            h.update(v.tobytes())
    return h.hexdigest()[:16]


def _reason(r: Mapping[str, Any]) -> str:
    if "refused" in r:
        return f"refused: {r['refused']}"
    e = r["error"]
    return e if e.startswith(("stopped:", "failed:")) else f"failed: {e}"


def run_tools(jobs: Sequence[Job], args: argparse.Namespace, tmp: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Every job's tools, one interpreter per family over all jobs (ours; ORT's four; ModelOpt's INT8 and
    AutoCast): {(model, tool): its JSON result}; a tool the family did not reach gets the family's reason."""
    families = {"ours": ("ours_trt", "ours_ort", "ours_fp16"), "ort": tuple(ORT_TOOLS),
                "modelopt": ("modelopt_int8", "modelopt_autocast")}
    results: dict[tuple[str, str], dict[str, Any]] = {}
    for family, members in families.items():
        todo = [{"model": j.mid, "path": str(j.path), "work": str(j.work),
                 "tools": [t for t in j.tools if t in members]} for j in jobs]
        todo = [t for t in todo if t["tools"]]
        if not todo:
            continue
        jobs_file = tmp / f"jobs_{family}.json"
        jobs_file.write_text(json.dumps(todo))
        if family == "modelopt":
            cmd = [MODELOPT_PYTHON, "-c", MODELOPT, str(jobs_file), HERE]
        else:
            cmd = [sys.executable, __file__, "--worker", family, str(jobs_file)]
        print(f"  {family}: {sum(len(t['tools']) for t in todo)} runs", flush=True)
        got, why = _child(cmd, args.timeout, args.rss_limit)
        for t in todo:
            for tool in t["tools"]:
                key = (t["model"], tool)
                results[key] = got[key] if key in got else {"error": why or "failed: no result"}
    return results


@dataclass
class Job:
    """One model's samples, its work folder (the calibration samples for the children, the tools' models), the
    tools to run and its row so far."""

    manifest: Mapping[str, Any]
    path: Path
    work: Path
    inputs: Any
    evals: Any
    tools: list[str]
    row: dict[str, Any]

    @property
    def mid(self) -> str:
        """The model's corpus id."""
        return str(self.manifest["id"])


def prepare(manifest: Mapping[str, Any], args: argparse.Namespace, mo_ok: bool, work: Path,
            old: Mapping[str, Any] | None = None) -> Job:
    """A model's job: calibration samples written for the children, evaluation samples after them where the data
    hold both; with ``args.only_ours`` and ``old`` (its saved row) on the same samples, only :data:`ONLY_OURS`
    run again and the anchors' cells are kept (each tool's commit in ``commits``)."""
    from corpus.samples import model_file

    mid = manifest["id"]
    path = model_file(manifest)
    inputs = load_inputs(manifest, args.calib + args.eval)
    calib = part(inputs, 0, args.calib)
    # evaluation samples after the calibration ones (fewer where the data end, down to half); else the same
    held_out = inputs.samples - args.calib >= max(1, args.eval // 2)
    evals = part(inputs, args.calib, args.eval) if held_out else part(inputs, 0, args.eval)
    work.mkdir(parents=True, exist_ok=True)
    write_calib(calib, work)
    row: dict[str, Any] = {"model": mid, "metric": manifest.get("metric") or "rel_l2", "calib": calib.samples,
                           "eval": evals.samples, "held_out": held_out, "data": data_digest(calib, evals),
                           "accuracy": {}, "rel_l2": {}, "qdq_nodes": {}, "cost": {}, "fp16": {}, "throughput": {},
                           "commits": {}}
    tools = [t for t in RUNS if mo_ok or not t.startswith("modelopt")]
    if args.only_ours:
        if old and old.get("data") == row["data"]:  # the anchors' cells stand: same samples, anchors unchanged
            tools = list(ONLY_OURS)
            for key in ("accuracy", "rel_l2", "qdq_nodes", "cost", "commits"):
                row[key] = {t: v for t, v in (old.get(key) or {}).items() if t not in tools}
            row["fp16"] = {k: v for k, v in (old.get("fp16") or {}).items() if k.startswith("modelopt")}
        else:
            print(f"  {mid}: every tool runs (no saved row on the same samples to keep the anchors' cells of)")
    commit = _commit()
    row["commits"].update(dict.fromkeys(tools, commit))
    return Job(manifest, path, work, inputs, evals, tools, row)


def finish(job: Job, results: Mapping[tuple[str, str], Mapping[str, Any]], args: argparse.Namespace
           ) -> dict[str, Any]:
    """The job's row from its tools' results: each model scored against FP32 on the evaluation samples, ours minus
    the best anchor, fp16 finiteness, and the ONNX Runtime throughput of FP32, ours and ORT's u8."""
    from corpus.metrics import task_metric

    manifest, path, work, evals, row, tools = job.manifest, job.path, job.work, job.evals, job.row, job.tools
    mid = job.mid
    ref = outputs(path, evals)
    metric, out_name = row["metric"], manifest.get("output")
    opts = manifest.get("metric_options") or {}

    def score(p: Path) -> tuple[float, float]:
        """The task metric and the output's rel L2 (the metric's output; all outputs' worst without one): on a
        few samples near a decision boundary the task metric flips with noise the rel L2 shows as such."""
        got = outputs(p, evals)
        return (task_metric(metric, ref, got, output=out_name, **opts).value,
                task_metric("rel_l2", ref, got, output=out_name).value)

    paths: dict[str, Path] = {}
    def failed(tool: str, text: str) -> None:
        """A tool's cell holds its refusal or failure (the accuracy table, or the fp16 table's finite column)."""
        if tool in TOOLS:
            row["accuracy"][tool] = text
        else:
            row["fp16"][f"{tool.split('_')[0]}_finite"] = text
        print(f"  {mid} {tool}: {text}", flush=True)

    for tool in tools:
        r = results[(mid, tool)]
        if "refused" in r or "error" in r:
            failed(tool, _reason(r))
            continue
        out = work / f"{tool}.onnx"
        if tool in TOOLS:
            row["cost"][tool] = {"seconds": round(r["seconds"], 3), "peak_mb": round(r["peak_mb"], 1),
                                 "peak_total_mb": round(r["peak_total_mb"], 1)}
        try:
            if tool in TOOLS:
                value, rel = score(out)
            else:  # fp16: inf/NaN and the task metric
                got = outputs(out, evals)
                finite = _finite(got)
                value = task_metric(metric, ref, got, output=out_name, **opts).value
        except Exception as exc:  # noqa: BLE001 - a tool's model that ONNX Runtime cannot run is that tool's failure
            failed(tool, "failed: its model does not run: " + short_reason(f"{type(exc).__name__}: {exc}"))
            continue
        if tool in TOOLS:
            row["accuracy"][tool] = round(value, 5)
            row["rel_l2"][tool] = round(rel, 5)
            row["qdq_nodes"][tool] = _qdq_nodes(out)
            paths[tool] = out
        else:
            who = tool.split("_")[0]
            row["fp16"][f"{who}_finite"] = finite
            row["fp16"][f"{who}_metric"] = round(value, 5)
    row.update(shortfalls(row))
    # throughput (ONNX Runtime, optimised; interleaved, fastest run)
    if "ours_ort" in paths and "ort_minmax_u8" in paths:
        feeds, b = _batch_feeds(manifest, path, job.inputs, args.batch)
        t = {"batch": b, **throughput({"fp32": path, "ours": paths["ours_ort"], "ort_u8": paths["ort_minmax_u8"]},
                                      feeds, b, args.seconds, args.threads)}
        t.update(ours_vs_fp32=t["ours"] / t["fp32"], ort_vs_fp32=t["ort_u8"] / t["fp32"],
                 ours_vs_ort=t["ours"] / t["ort_u8"])
        row["throughput"] = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in t.items()}
    return row


def _merged(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """This run's rows merged into the saved file's: a model measured now replaces its old row, the others stay
    (rows written by an older version of this benchmark, without the samples' digest, are dropped)."""
    try:
        old = json.loads(OUT.read_text()).get("models", []) if OUT.is_file() else []
    except ValueError:
        old = []
    # rows of this version only: with the samples' digest (an older version's rows scored on other samples)
    old = [r for r in old if r.get("data") or r.get("error")]
    new = {r["model"]: r for r in rows}
    merged = [new.pop(r["model"], r) for r in old]
    return merged + list(new.values())


def _commit() -> str:
    """``git rev-parse --short HEAD``, with ``+dirty`` when workbench/ has uncommitted changes (what ran is then
    not exactly that commit)."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no", "--", "workbench") else "")
    except (OSError, subprocess.CalledProcessError):
        return ""


def _save(rows: list[dict[str, Any]], args: argparse.Namespace, unavailable: list[str]) -> dict[str, Any]:
    """Merge this run's rows into the file (each row keeps the commit and time it was measured at)."""
    rows = _merged(rows)
    s = summary(rows)
    commits = sorted({c for r in rows for c in (r.get("commits") or {}).values() if c})
    result = {"generated": time.strftime("%Y-%m-%d %H:%M:%S"), "commit": _commit(), "row_commits": commits,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "note": f"calibration / evaluation samples per model in its row (this run: {args.calib} / {args.eval}; "
                      "evaluation samples follow the calibration ones where the data hold both); throughput: "
                      f"fastest of interleaved runs, {args.threads} thread(s), {args.batch}-sample batches where "
                      "the sample axis is dynamic",
              "tools": TOOLS, "unavailable": unavailable, "models": rows, "summary": s,
              "mean_shortfall": s["ours_trt"]["mean"], "worse_than_best": s["ours_trt"]["below"],
              "compared": s["ours_trt"]["compared"]}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=float))
    tmp.replace(OUT)
    return result


def _print(result: Mapping[str, Any], ids: set[str]) -> None:
    rows = [r for r in result["models"] if r["model"] in ids]
    print(f"\n{'model':<30} {'metric':<9} " + " ".join(f"{t:>14}" for t in TOOLS) + "  TRT-best  ORT-best")
    for r in rows:
        print(f"{r['model']:<30} {r['metric'] or '':<9} " + " ".join(
            f"{cell(r['accuracy'].get(t))[:14]:>14}" for t in TOOLS)
            + "".join(f"  {r[k]:+.4f}" if r.get(k) is not None else "        -" for k in PLACEMENTS))
    print("\nreasons:")
    for r in rows:
        for t in TOOLS:
            if isinstance(r["accuracy"].get(t), str):
                print(f"  {r['model']} {t}: {r['accuracy'][t]}")
    print("\nfp16 finite (ours / ModelOpt AutoCast):")
    for r in rows:
        f = r["fp16"]
        print(f"  {r['model']:<30} {f.get('ours_finite')} / {f.get('modelopt_finite', '-')}")
    print("\nINT8 for ONNX Runtime, samples/s (ratio to FP32; ours / ORT u8):")
    for r in rows:
        t = r["throughput"]
        if t:
            print(f"  {r['model']:<30} b{t['batch']} fp32 {t['fp32']:.1f}  ours {t['ours']:.1f} "
                  f"({t['ours_vs_fp32']:.2f}x)  ort_u8 {t['ort_u8']:.1f} ({t['ort_vs_fp32']:.2f}x)  "
                  f"ours/ort {t['ours_vs_ort']:.2f}")
    print("\ncalibrate+quantize seconds / peak RSS growth MB:")
    for r in rows:
        print(f"  {r['model']:<30} " + "  ".join(f"{t} {c['seconds']:.1f}s/{c['peak_mb']:.0f}MB"
                                                 for t, c in r["cost"].items()))
    for tool, s in result["summary"].items():
        if s["compared"]:
            print(f"\n{tool} - best anchor over the {s['compared']} models compared in {OUT.name}: mean "
                  f"{s['mean']:+.4f}; below the best on {s['below']}"
                  + (": " + ", ".join(f"{m} {v:+.3g}" for m, v in s["below_by"].items()) if s["below"] else ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ci", action="store_true", help="only the CI subset")
    ap.add_argument("--models", nargs="+", default=[], metavar="ID")
    ap.add_argument("--calib", type=int, default=16, help="calibration samples (default 16)")
    ap.add_argument("--eval", type=int, default=16, help="evaluation samples (default 16)")
    ap.add_argument("--batch", type=int, default=4, help="throughput batch for a dynamic sample axis")
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per throughput measurement")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads for the throughput runs")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds one tool's run may take")
    ap.add_argument("--rss-limit", type=float, default=6144, help="MB of RSS one tool's child may reach")
    ap.add_argument("--only-ours", action="store_true",
                    help="run ours (and ORT u8 for the throughput) again; keep the anchors' saved cells where the "
                         "model's samples are the same")
    ap.add_argument("--worker", nargs=2, metavar=("FAMILY", "JOBS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(*args.worker)
        return 0
    try:
        from corpus.fetch import manifests
    except ImportError as exc:
        print(f"no corpus: corpus.fetch is not importable ({exc})")
        return 0
    chosen = [m for m in manifests(ci_only=args.ci) if m.get("data")
              and (not args.models or m["id"] in args.models)]
    unknown = set(args.models) - {m["id"] for m in chosen}
    if unknown:
        print(f"not benchmarked (no manifest with real data): {', '.join(sorted(unknown))}")
    why_mo = modelopt_status()
    unavailable = [why_mo] if why_mo else []
    for msg in unavailable:
        print(msg)
    rows: list[dict[str, Any]] = []
    commit = _commit()
    saved = {r["model"]: r for r in _merged([])}
    result: Mapping[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench_corpus_") as tmp:
        jobs: list[Job] = []
        for m in chosen:
            print(f"== {m['id']} ({m.get('metric')}): samples", flush=True)
            try:
                jobs.append(prepare(dict(m), args, not why_mo, Path(tmp) / m["id"], saved.get(m["id"])))
            except Exception as exc:  # noqa: BLE001 - a model that cannot be fetched or read: say so, go on
                reason = short_reason(f"{type(exc).__name__}: {exc}")
                print(f"  not run: {reason}")
                rows.append({"model": m["id"], "metric": m.get("metric"), "accuracy": {}, "cost": {}, "fp16": {},
                             "throughput": {}, "error": reason, "commit": commit})
        start = time.perf_counter()
        results = run_tools(jobs, args, Path(tmp))
        per_model = (time.perf_counter() - start) / max(1, len(jobs))
        for job in jobs:
            print(f"== {job.mid}: scores", flush=True)
            t0 = time.perf_counter()
            try:
                row = finish(job, results, args)
            except Exception as exc:  # noqa: BLE001 - its FP32 model does not run on its samples: say so, go on
                row = {**job.row, "error": short_reason(f"{type(exc).__name__}: {exc}")}
                print(f"  not scored: {row['error']}")
            row.update(commit=commit, measured=time.strftime("%Y-%m-%d %H:%M:%S"),
                       bench_seconds=round(per_model + time.perf_counter() - t0, 1))
            rows.append(row)
            result = _save(rows, args, unavailable)  # after every model: a stopped run keeps what it measured
            shutil.rmtree(job.work, ignore_errors=True)
            job.inputs = job.evals = None
    if result:
        _print(result, {r["model"] for r in rows})
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
