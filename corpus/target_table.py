"""The target-mode table of docs/corpus.md, from ``benchmarks/out/bench_target.json`` (benchmarks/bench_target.py):
per model, whether FP16 reaches the tolerance and whether ``quantize --target-metric`` does, per placement, with
the layers it kept (INT8/FP16/FP32), the estimated cost against all-INT8 and the ONNX Runtime latency."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["target_lines"]

PLACEMENTS = (("tensorrt", "TRT"), ("onnxruntime", "ORT"))


def _num(v: Any, spec: str = ".4g") -> str:
    return "-" if not isinstance(v, (int, float)) or isinstance(v, bool) else format(v, spec)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "/")


def _placement(p: Mapping[str, Any] | None) -> tuple[str, str, str]:
    """(reached with the metric, kept INT8/FP16/FP32, cost and its ratio to all-INT8)."""
    if p is None:
        return "not run", "", ""
    if "error" in p:
        return f"error: {_cell(p['error'])[:80]}", "", ""
    mark = "**yes**" if p.get("reached") else "no"
    lay = p.get("layers") or {}
    kept = f"{lay.get('int8', 0)}/{lay.get('fp16', 0)}/{lay.get('fp32', 0)}"
    cost, c8 = p.get("cost"), p.get("cost_all_int8")
    ratio = f" ({cost / c8:.2f}x)" if isinstance(cost, (int, float)) and isinstance(c8, (int, float)) and c8 else ""
    return f"{mark} {_num(p.get('metric'))}", kept, f"{_num(cost, '.3f')}{ratio}"


def _latency(p: Mapping[str, Any] | None) -> str:
    lat = (p or {}).get("latency_ms") or {}
    if not all(isinstance(lat.get(k), (int, float)) for k in ("fp32", "all_int8", "target")):
        return "-"
    return f"{lat['target'] / lat['fp32']:.2f} / {lat['all_int8'] / lat['fp32']:.2f}"


def target_lines(bench: Mapping[str, Any]) -> list[str]:
    """Markdown lines: a summary sentence per placement, then the table (one row per model)."""
    rows: Sequence[Mapping[str, Any]] = bench.get("models") or []
    if not rows:
        return ["No target-mode results yet (run `benchmarks/bench_target.py`)."]
    lines = []
    for placement, short in PLACEMENTS:
        s = (bench.get("summary") or {}).get(placement)
        if s:
            missed = f"; missed: {', '.join(f'`{m}`' for m in s['missed'])}" if s["missed"] else ""
            errors = s.get("errors") or []
            failed = f"; did not run (error or refusal): {', '.join(f'`{m}`' for m in errors)}" if errors else ""
            lines.append(f"- {short} placement: FP16 reaches the tolerance on {s['fp16_reaches']} models; the target "
                         f"mode reaches it on {s['target_reaches']} of them{missed}{failed}.")
    lines += ["",
              "| model | metric (target) | FP16 | all INT8 TRT | target TRT | kept TRT INT8/FP16/FP32 | cost TRT "
              "(x all INT8) | all INT8 ORT | target ORT | kept ORT INT8/FP16/FP32 | cost ORT (x all INT8) | ORT "
              "latency target / all INT8 (x FP32) | seconds TRT / ORT |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| `{r['model']}` | {r.get('metric') or ''} | error: {_cell(r['error'])[:120]} |"
                         + " |" * 10)
            continue
        f = r.get("fp16") or {}
        fp16 = (f"error: {_cell(f['error'])[:60]}" if "error" in f else
                f"{'**yes**' if f.get('reaches') else 'no'} {_num(f.get('metric'))}")
        places = r.get("placements") or {}
        cells = []
        for placement, _short in PLACEMENTS:
            p = places.get(placement)
            reached, kept, cost = _placement(p)
            cells += [_num((p or {}).get("all_int8_metric")), reached, kept, cost]
        secs = " / ".join(_num((places.get(k) or {}).get("seconds"), ".0f") for k, _ in PLACEMENTS)
        lines.append(f"| `{r['model']}` | {r['metric']} ({r.get('target', '')}) | {fp16} | " + " | ".join(cells)
                     + f" | {_latency(places.get('onnxruntime'))} | {secs} |")
    return lines
