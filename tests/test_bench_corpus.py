"""benchmarks/bench_corpus.py's pure parts: ours minus the best anchor, the summary over the merged rows, the short
reasons in error cells, and the peak-RSS measurement."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():  # benchmarks/ is a folder of scripts, not a package
    spec = importlib.util.spec_from_file_location("bench_corpus", ROOT / "benchmarks" / "bench_corpus.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_corpus"] = module
    spec.loader.exec_module(module)
    return module


def _row(model, metric, **acc):
    return {"model": model, "metric": metric, "accuracy": acc, "qdq_nodes": {k: 1 for k in acc}}


def test_shortfalls_take_the_best_anchor_in_the_metrics_direction(bench):
    top1 = _row("a", "top1", ours_trt=0.75, ours_ort=1.0, ort_minmax_u8=0.875, modelopt_int8=0.5)
    assert bench.shortfalls(top1) == {"shortfall": -0.125, "shortfall_ort": 0.125}
    rel = _row("b", "rel_l2", ours_trt=0.02, ours_ort=0.05, ort_minmax_u8=0.04, modelopt_int8=0.03)
    out = bench.shortfalls(rel)
    assert out["shortfall"] == pytest.approx(0.01) and out["shortfall_ort"] == pytest.approx(-0.02)


def test_shortfalls_skip_anchors_that_failed_or_quantized_nothing(bench):
    row = _row("a", "top1", ours_trt=0.5, ours_ort="refused: nothing to quantize", ort_minmax_u8=1.0,
               modelopt_int8=0.25, ort_entropy_u8="failed: ValueError: x")
    row["qdq_nodes"]["ort_minmax_u8"] = 0  # its model is still FP32: not an INT8 result
    assert bench.shortfalls(row) == {"shortfall": 0.25}
    only_fp32 = _row("b", "top1", ours_trt=0.5, ort_minmax_u8=1.0)
    only_fp32["qdq_nodes"]["ort_minmax_u8"] = 0
    assert bench.shortfalls(only_fp32) == {}


def test_summary_counts_models_below_among_the_rows_compared(bench):
    rows = [{"model": "a", "shortfall": -0.25, "shortfall_ort": 0.5}, {"model": "b", "shortfall": 0.125},
            {"model": "c"}, {"model": "d", "shortfall": 0.0, "shortfall_ort": -0.5}]
    s = bench.summary(rows)
    assert s["ours_trt"]["compared"] == 3 and s["ours_trt"]["below"] == 1
    assert s["ours_trt"]["mean"] == pytest.approx((-0.25 + 0.125 + 0.0) / 3)
    assert s["ours_trt"]["below_by"] == {"a": -0.25}
    assert s["ours_ort"] == {"compared": 2, "mean": 0.0, "below": 1, "below_by": {"d": -0.5}}
    assert bench.summary([{"model": "c"}])["ours_trt"] == {"compared": 0, "mean": None, "below": 0, "below_by": {}}


def test_short_reason_is_the_exception_line_of_a_traceback(bench):
    tb = ('Traceback (most recent call last):\n  File "/x/onnxruntime/quantization/quantize.py", line 3, in q\n'
          '    raise ValueError(msg)\nonnxruntime.capi.onnxruntime_pybind11_state.Fail: [ONNXRuntimeError] : 1 : '
          'FAIL : Type Error: Type (tensor(float16)) of input parameter (x) of operator (Mul) is invalid.\n'
          '\n')
    assert bench.short_reason(tb) == ("onnxruntime.capi.onnxruntime_pybind11_state.Fail: Type Error: Type "
                                      "(tensor(float16)) of input parameter (x) of operator (Mul) is invalid.")
    assert bench.short_reason("just a line\n\n  the last one  ") == "the last one"
    long = bench.short_reason("ValueError: " + "x" * 500, limit=40)
    assert len(long) == 40 and long.endswith("…")


def test_failure_names_the_innermost_frame(bench):
    def inner():
        raise KeyError(12345)

    try:
        inner()
    except KeyError as exc:
        text = bench.failure(exc)
    assert text.startswith("KeyError: 12345 (in ") and text.endswith(" inner)")


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux /proc only")
def test_measured_peak_is_not_hidden_by_an_earlier_larger_peak(bench):
    before = np.ones(300 * 2**20 // 8)  # a 300 MB high-water mark before the measured call
    before[::512] = 2.0
    del before
    r = bench.measured(lambda: np.ones(100 * 2**20 // 8).sum())
    assert 80 < r["peak_mb"] < 200  # the call's own ~100 MB, not 0 (ru_maxrss stays at the earlier 300 MB)


def test_part_takes_whole_runs_of_a_sequence_model_and_keeps_fixed_inputs(bench):
    from corpus.samples import Inputs

    frames = np.arange(12, dtype=np.float32).reshape(6, 2)  # 3 samples of 2 frames each (one model run per sample)
    state = np.zeros((1, 4), np.float32)
    inputs = Inputs({"x": frames, "h": state}, {"x": 0, "h": None}, 3, "test", True, [], 2)
    rest = bench.part(inputs, 1, 5)  # samples 1 and 2 (the data end there)
    assert rest.samples == 2 and rest.run_length == 2
    assert rest.arrays["x"][:, 0].tolist() == [4.0, 6.0, 8.0, 10.0] and rest.arrays["h"] is state
    assert [r["x"].shape for r in rest.runs()] == [(2, 2), (2, 2)]
