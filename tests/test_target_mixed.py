"""The target mode's mixed plans (TensorRT placement: a kept layer tries FP16 first, FP32 only where FP16 misses the
target; ONNX Runtime placement: FP32) and a task metric (any per-sample Metric) as the target."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from workbench.backends.ort import OrtEngine
from workbench.compare.metrics import Metric
from workbench.recipe import ConvertPrecision
from workbench.session import Session
from workbench.workflows import quantize as wq


def _stiff(a: float) -> onnx.ModelProto:
    """x -> body -> Concat(h, h) -> stiff -> tail. x's channel 0 spans +-200 (weight 0.01) while the others are
    N(0, 1): one per-tensor INT8 scale for x loses them (no clipping helps, channel 0 matters too), FP16 keeps
    them. stiff's weights are +-a plus N(0, 1) on a duplicated input: the +-a cancel exactly, so its output is the
    small part alone, which INT8 and (for a = 1000) FP16 weights destroy; FP32 keeps it."""
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((16, 8)) / 4).astype(np.float32)
    w1[0] = 0.01
    sign = np.concatenate([np.ones(8), -np.ones(8)])[:, None]
    w2 = (a * sign + rng.standard_normal((16, 8))).astype(np.float32)
    w3 = (rng.standard_normal((8, 8)) / 3).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "w1"], ["h"], name="body"),
             helper.make_node("Concat", ["h", "h"], ["hh"], name="dup", axis=1),
             helper.make_node("Gemm", ["hh", "w2"], ["s"], name="stiff"),
             helper.make_node("Gemm", ["s", "w3"], ["y"], name="tail")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
                          [numpy_helper.from_array(w, n) for w, n in ((w1, "w1"), (w2, "w2"), (w3, "w3"))])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _data(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((128, 16)).astype(np.float32)
    x[:, 0] = rng.uniform(-200, 200, 128)
    return {"x": x}


def _rel(model: onnx.ModelProto, reference: onnx.ModelProto, x: dict[str, np.ndarray]) -> float:
    """The target's rel_l2: the mean over samples of each sample's relative L2 error."""
    out, ref = OrtEngine(model).run(x)["y"], OrtEngine(reference).run(x)["y"]
    return float(np.mean(np.linalg.norm(out - ref, axis=1) / np.linalg.norm(ref, axis=1)))


def _fp16(model: onnx.ModelProto, node: str) -> onnx.ModelProto:
    s = Session(model)
    s.apply(ConvertPrecision(precision="fp16", nodes=(node,)))
    return s.model


def test_the_graph_is_what_the_mixed_plan_test_needs() -> None:
    """FP16 serves body (and tail), not stiff at a = 1000: the answer below is known from this."""
    m = _stiff(1000.0)
    x = _data(1)
    assert _rel(_fp16(m, "body"), m, x) < 0.005 and _rel(_fp16(m, "tail"), m, x) < 0.005
    assert _rel(_fp16(m, "stiff"), m, x) > 0.1  # measured 0.14


def _target(tmp_path: Path, model: onnx.ModelProto, target: str, metric: str | Metric = "rel_l2",
            tolerance: float = 0.03) -> tuple[Session, wq.TargetResult]:
    session = Session(model, cache_dir=tmp_path / target)
    r = wq.quantize(session, _data(0), wq.QuantizeSettings(target=target, float_heads=False, target_metric=metric,
                                                           tolerance=tolerance), eval_data=_data(1))
    assert r.target_metric is not None
    return session, r.target_metric


def test_tensorrt_plan_keeps_body_in_fp16_and_only_stiff_in_fp32(tmp_path: Path) -> None:
    model = _stiff(1000.0)
    session, t = _target(tmp_path, model, "tensorrt")
    assert t.before > 1.0 and t.met and t.after <= 0.03
    assert set(t.kept) == {"body", "stiff"} and t.kept_fp16 == ("body",)
    assert dict(t.layers) == {"int8": 1, "fp16": 1, "fp32": 1}
    # cost: FLOPs per sample body 2*16*8, stiff 2*16*8, tail 2*8*8 at fp16 2, fp32 4, int8 1 (all FP32 = 4 each)
    assert t.estimated_cost == pytest.approx((2 * 256 + 4 * 256 + 1 * 128) / (4 * 640))
    assert t.cost_all_int8 == pytest.approx(0.25)
    *_, quantize, half = session.recipe.edits  # one recipe: the Quantize keeps both out, a Cast region for body
    assert set(quantize.exclude) == {"body", "stiff"} and half.kind == "convert_precision" and half.nodes == ("body",)
    from workbench.precision import node_precisions

    assert {k: v for k, v in node_precisions(session.model).items() if k in ("body", "stiff", "tail")} == {
        "body": "fp16", "stiff": "fp32", "tail": "int8"}
    assert _rel(session.model, model, _data(1)) == pytest.approx(t.after, rel=1e-6)


def test_fp16_is_enough_when_no_layer_needs_fp32(tmp_path: Path) -> None:
    """At a = 0 stiff is a plain layer: FP16 serves every kept layer, the search stops there (no FP32 search)."""
    _, t = _target(tmp_path, _stiff(0.0), "tensorrt", tolerance=0.03)
    assert t.before > 0.3 and t.met and "body" in t.kept and t.kept_fp16 == t.kept and t.layers["fp32"] == 0
    flops = {"body": 256, "stiff": 256, "tail": 128}  # FP16 costs half of FP32, twice INT8
    assert t.estimated_cost == pytest.approx(sum(f * (2 if k in t.kept else 1) for k, f in flops.items()) / 2560)


def test_onnxruntime_placement_keeps_fp32(tmp_path: Path) -> None:
    _, t = _target(tmp_path, _stiff(1000.0), "onnxruntime")
    assert t.met and {"body", "stiff"} <= set(t.kept) and t.kept_fp16 == () and t.layers["fp16"] == 0


def _agreement() -> Metric:
    """A task metric: per sample, 1.0 when the arg-max class matches FP32's."""

    def fn(outputs: dict[str, np.ndarray], batch: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> np.ndarray:
        return (outputs["y"].argmax(axis=1) == ref["y"].argmax(axis=1)).astype(np.float64)

    return Metric("top1", fn, True)


def test_a_task_metric_is_the_target(tmp_path: Path) -> None:
    """A per-sample Metric (higher is better) with a drop of 0.005: every evaluation sample must keep its class."""
    model = _stiff(1000.0)
    session, t = _target(tmp_path, model, "tensorrt", metric=_agreement(), tolerance=0.005)
    assert t.metric == "top1" and t.fp32 == 1.0 and t.before < 0.9 and t.met and t.after == 1.0
    x = _data(1)
    got, ref = OrtEngine(session.model).run(x)["y"], OrtEngine(model).run(x)["y"]
    assert np.array_equal(got.argmax(axis=1), ref.argmax(axis=1))


def test_cli_reports_the_mixed_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from workbench.cli import main as cli_main

    onnx.save(_stiff(1000.0), tmp_path / "m.onnx")
    np.savez(tmp_path / "c.npz", **_data(0))
    np.savez(tmp_path / "e.npz", **_data(1))
    code = cli_main(["quantize", str(tmp_path / "m.onnx"), "--calib", str(tmp_path / "c.npz"), "--eval",
                     str(tmp_path / "e.npz"), "--quantize-heads", "--target-metric", "rel_l2", "--tolerance", "0.03",
                     "-o", str(tmp_path / "q.onnx")])
    out = capsys.readouterr().out
    assert code == 0 and "kept 2 layers in high precision (1 FP16, 1 FP32)" in out and "(met)" in out


def test_methods_that_meet_the_target_skip_the_sensitivity_pass(tmp_path: Path) -> None:
    session, t = _target(tmp_path, _stiff(0.0), "tensorrt", tolerance=1.0)
    assert t.met and t.kept == () and t.plans_tried == 0 and "alone meet" in t.message
    assert t.after == t.before == pytest.approx(t.methods[t.method], abs=1e-6) and dict(t.layers) == {"int8": 3, "fp16": 0, "fp32": 0}
    assert t.estimated_cost == t.cost_all_int8 == pytest.approx(0.25)
    quantize = session.recipe.edits[-1]
    assert quantize.kind == "quantize" and quantize.exclude == () and quantize.method == t.method
