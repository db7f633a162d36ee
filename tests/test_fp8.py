"""FP8 (float8e4m3fn) Q/DQ end to end in its smallest forms: an old opset converted and said so, amax/448 scales,
the convs FP8 leaves float, MSE on the FP8 grid, ONNX Runtime sessions of FP8 models, the CLI."""

from __future__ import annotations

import json
import subprocess
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from workbench.backends.ort import OrtEngine
from workbench.calibration import RunningHistogram, compute_thresholds, fp8_round
from workbench.graph import SAMPLES_DIR
from workbench.precision import quantize_model
from workbench.precision.qdq import fp8_float_convs

RNG = np.random.default_rng(0)


def _conv(name: str, x: str, out: str, cin: int, cout: int, k: int = 1, group: int = 1) -> tuple[onnx.NodeProto,
                                                                                                 list[TensorProto]]:
    w = (RNG.standard_normal((cout, cin // group, k, k)) * 0.2).astype(np.float32)
    b = (RNG.standard_normal(cout) * 0.1).astype(np.float32)
    node = helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [out], name=name, group=group,
                            pads=[k // 2] * 4)
    return node, [numpy_helper.from_array(w, f"{name}.w"), numpy_helper.from_array(b, f"{name}.b")]


def _model(mid: list[onnx.NodeProto], mid_inits: list[TensorProto], opset: int = 13) -> onnx.ModelProto:
    """x [1,32,8,8] -> Conv 32->32 (a) -> mid ... -> 'm' -> Conv 32->32 (b) -> y: two FP8-eligible convs."""
    a, ia = _conv("a", "x", "ya", 32, 32)
    b, ib = _conv("b", "m", "y", 32, 32)
    g = helper.make_graph([a, *mid, b], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 8, 8])], [*ia, *mid_inits, *ib])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _relu6() -> onnx.ModelProto:
    lo, hi = numpy_helper.from_array(np.array(0.0, np.float32), "lo"), numpy_helper.from_array(np.array(6.0, np.float32), "hi")
    return _model([helper.make_node("Clip", ["ya", "lo", "hi"], ["m"], name="relu6")], [lo, hi])


def _x() -> dict[str, np.ndarray]:
    return {"x": (RNG.standard_normal((1, 32, 8, 8)) * 2).astype(np.float32)}


def test_fp8_converts_an_old_opset_and_sets_amax_over_448_scales() -> None:
    model = _relu6()  # opset 13
    with pytest.warns(UserWarning, match="opset 13; converted to opset 19 with onnx's version converter for fp8"):
        q = quantize_model(model, {"x": 7.0, "m": 6.0}, dtype="fp8")
    assert q.opset_import[0].version == 19
    inits = {i.name: i for i in q.graph.initializer}
    # activations: one scale per tensor, amax / 448, float8e4m3fn zero points
    assert numpy_helper.to_array(inits["m__scale"]) == np.float32(6.0 / 448)
    assert numpy_helper.to_array(inits["x__scale"]) == np.float32(7.0 / 448)
    assert inits["m__zero_point"].data_type == TensorProto.FLOAT8E4M3FN
    # weights: per output channel, the channel's amax / 448, stored as float8e4m3fn
    w = numpy_helper.to_array(model.graph.initializer[0])
    np.testing.assert_allclose(numpy_helper.to_array(inits["a.w__scale"]), np.abs(w).max(axis=(1, 2, 3)) / 448,
                               rtol=1e-6)
    assert inits["a.w__fp8"].data_type == TensorProto.FLOAT8E4M3FN
    wq = numpy_helper.to_array(inits["a.w__fp8"]).astype(np.float32)
    assert np.abs(wq).max(axis=(1, 2, 3)).tolist() == [448.0] * 32  # each channel's largest weight maps to 448


def test_fp8_model_with_relu6_runs_in_onnx_runtime_as_the_graph_says() -> None:
    """ONNX Runtime's extended-level ClipQuantRewrite fails the session on a Clip before a float8 Q ("Unexpected data
    type for QuantizeLinear input y_zero_point of 17"); ReluQuantRewrite drops a Relu before one. OrtEngine keeps a
    float8 model at the basic level: it loads and computes exactly the unoptimized results."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = quantize_model(_relu6(), {"x": 7.0, "m": 6.0}, dtype="fp8")
    relu = _model([helper.make_node("Relu", ["ya"], ["m"], name="relu")], [])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qr = quantize_model(relu, {"x": 7.0, "m": 6.0}, dtype="fp8")
    x = _x()
    for model in (q, qr):
        engine = OrtEngine(model)
        assert engine.session.get_session_options().graph_optimization_level.name == "ORT_ENABLE_BASIC"
        np.testing.assert_array_equal(engine.run(x)["y"], OrtEngine(model, optimize=False).run(x)["y"])
    # and FP8 stays close to FP32 on this net (the Relu/Clip were not dropped)
    ref = OrtEngine(relu).run(x)["y"]
    got = OrtEngine(qr).run(x)["y"]
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.1


def test_fp8_leaves_small_channel_depthwise_and_large_filter_convs_float() -> None:
    dw, idw = _conv("dw", "ya", "d", 32, 32, k=3, group=32)  # depthwise: 1 input channel per group
    big, ibig = _conv("big", "d", "m", 32, 32, k=7)  # 49 taps
    model = _model([dw, big], [*idw, *ibig])
    assert fp8_float_convs(model) == ["dw", "big"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fp8 = quantize_model(model, {"x": 7.0, "ya": 3.0, "d": 3.0, "m": 3.0}, dtype="fp8")
        int8 = quantize_model(model, {"x": 7.0, "ya": 3.0, "d": 3.0, "m": 3.0})
        named = quantize_model(model, {"x": 7.0, "ya": 3.0, "d": 3.0, "m": 3.0}, dtype="fp8", nodes=["dw"])

    def quantized(m: onnx.ModelProto) -> list[str]:
        dq = {n.output[0] for n in m.graph.node if n.op_type == "DequantizeLinear"}
        return [n.name for n in m.graph.node if n.op_type == "Conv" and n.input[0] in dq]

    assert quantized(fp8) == ["a", "b"]
    assert quantized(int8) == ["a", "dw", "big", "b"]
    assert quantized(named) == ["dw"]  # a node the user names is quantized


def test_fp8_round_is_onnx_float8e4m3fn_rounding() -> None:
    x = np.abs(RNG.standard_normal(5000) * np.exp(RNG.uniform(-12, 7, 5000))).astype(np.float32)
    x = np.concatenate([x, np.array([0.0, 2.0**-10, 1.5 * 2.0**-9, 2.0**-6, 447.0, 448.0, 460.0, 1e4], np.float32)])
    onnx_fp8 = helper.make_tensor("t", TensorProto.FLOAT8E4M3FN, [x.size], np.minimum(x, 448.0).tolist())
    np.testing.assert_array_equal(fp8_round(x), numpy_helper.to_array(onnx_fp8).astype(np.float64))


def test_mse_threshold_follows_the_fp8_grid() -> None:
    """FP8 keeps 3 mantissa bits at every magnitude, so clipping a heavy tail buys it little; int8's even steps make
    clipping pay. MSE on each grid picks accordingly."""
    h = RunningHistogram(2048)
    h.update(np.random.default_rng(0).laplace(size=200_000).astype(np.float32))
    int8 = compute_thresholds(h)["mse"]
    fp8 = compute_thresholds(h, dtype="fp8")["mse"]
    assert int8 < 0.8 * h.amax  # int8 clips the tail (10.2 of 13.5)
    assert fp8 > 1.2 * int8  # fp8 keeps nearly all of it (13.1)


def test_cli_quantize_dtype_fp8(tmp_path: Path, cli_path: Path) -> None:
    out = tmp_path / "fp8.onnx"
    proc = subprocess.run([str(cli_path), "quantize", "digits_transformer", "--calib",
                           str(SAMPLES_DIR / "digits_calib_seq.npz"), "--dtype", "fp8", "-o", str(out), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(proc.stdout)
    assert r["dtype"] == "fp8" and r["quantized"]
    m = onnx.load(str(out))
    assert m.opset_import[0].version == 19  # the opset 17 model converted
    zps = [i for i in m.graph.initializer if i.name.endswith("__zero_point")]
    assert zps and all(z.data_type == TensorProto.FLOAT8E4M3FN for z in zps)
    test = dict(np.load(SAMPLES_DIR / "digits_test_seq.npz"))
    feeds = {k: v for k, v in test.items() if k != "label"}
    got = OrtEngine(m).run(feeds)
    logits = next(iter(got.values()))
    assert (logits.argmax(1) == test["label"]).mean() >= 0.9


def test_auto_is_max_for_fp8() -> None:
    """FP8's default method is max (TensorRT's FP8 recipe); int8's auto stays entropy-or-mse, which clips."""
    h = RunningHistogram(2048)
    h.update(np.random.default_rng(0).laplace(size=200_000).astype(np.float32))
    fp8, int8 = compute_thresholds(h, dtype="fp8"), compute_thresholds(h)
    assert fp8["auto"] == fp8["max"] == h.amax
    assert int8["auto"] < 0.9 * h.amax
