"""ONNX Runtime placement rules that keep a quantized chain on integers (issue 13: blazeface_front ran at 0.96x
FP32 where ORT's own u8 ran at 1.37x), each on the smallest graph that shows it: what ORT's optimizer turns the
model into (real sessions, ``optimized_model_filepath``) and the outputs against FP32."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from workbench.calibration import calibrate
from workbench.precision import activation_tensors, quantization_targets, quantize_model

ORT = "onnxruntime"


def _optimized_ops(model: onnx.ModelProto, tmp: Path) -> Counter:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.optimized_model_filepath = str(tmp / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(tmp / "optimized.onnx").graph.node)


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    s = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})[0]


def _conv(name: str, x: str, cin: int, cout: int, rng: np.random.Generator) -> tuple[list, list]:
    w = numpy_helper.from_array((rng.standard_normal((cout, cin, 3, 3)) / np.sqrt(9 * cin)).astype(np.float32),
                                f"{name}_W")
    b = numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32) * 0.1, f"{name}_B")
    return [helper.make_node("Conv", [x, f"{name}_W", f"{name}_B"], [f"{name}_out"], name=name, pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"{name}_out"], [f"{name}_relu"], name=f"{name}_Relu")], [w, b]


def _blaze_block() -> tuple[onnx.ModelProto, np.ndarray]:
    """BlazeFace's shape in miniature (tf2onnx): an NHWC input Transposed to NCHW, a Conv+Relu, a residual Add
    whose identity input is the Relu padded with zero channels by a Concat with a ConstantOfShape, a Conv over the
    sum and a float output."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Transpose", ["x"], ["x_nchw"], name="to_nchw", perm=[0, 3, 1, 2])]
    n1, i1 = _conv("c1", "x_nchw", 3, 8, rng)
    n2, i2 = _conv("c2", "c1_relu", 8, 12, rng)
    shape = numpy_helper.from_array(np.array([1, 4, 8, 8], np.int64), "pad_shape")
    nodes += n1 + n2[:1] + [
        helper.make_node("ConstantOfShape", ["pad_shape"], ["zeros"], name="pad_zeros",
                         value=numpy_helper.from_array(np.zeros(1, np.float32))),
        helper.make_node("Concat", ["c1_relu", "zeros"], ["padded"], name="pad_concat", axis=1),
        helper.make_node("Add", ["c2_out", "padded"], ["sum"], name="residual"),
        helper.make_node("Relu", ["sum"], ["sum_relu"], name="sum_Relu")]
    n3, i3 = _conv("c3", "sum_relu", 12, 6, rng)
    nodes += n3[:1] + [helper.make_node("Identity", ["c3_out"], ["y"], name="out")]
    g = helper.make_graph(nodes, "blaze", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 8, 8])], i1 + i2 + i3 + [shape])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return model, rng.uniform(0, 1, (16, 1, 8, 8, 3)).astype(np.float32)


def _quantized(model: onnx.ModelProto, xs: np.ndarray) -> onnx.ModelProto:
    data = {"x": xs[:, 0]}  # samples on axis 0, one per run (the model takes a batch of 1)
    cache = calibrate(model, data, tensors=activation_tensors(model, target=ORT), method="max")
    return quantize_model(model, cache, target=ORT)


def test_concat_feeding_a_quantized_add_runs_as_qlinearconcat(tmp_path: Path) -> None:
    model, xs = _blaze_block()
    targets = quantization_targets(model, target=ORT)
    assert targets["pad_concat"] == [0, 1]
    # the zeros are quantized with the Concat output's scale (a concatenation's range is its inputs' union):
    # they need no calibration of their own (an all-zero tensor has no scale)
    assert "zeros" not in activation_tensors(model, target=ORT)
    q = _quantized(model, xs)
    ops = _optimized_ops(q, tmp_path)
    assert ops["QLinearConcat"] == 1 and ops["QLinearAdd"] == 1 and ops["QLinearConv"] == 3
    assert ops["Concat"] == 0 and ops["Add"] == 0
    ref = np.concatenate([_run(model, x) for x in xs])
    out = np.concatenate([_run(q, x) for x in xs])
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 0.03


def test_the_input_q_moves_before_a_layout_transpose(tmp_path: Path) -> None:
    """The NHWC input's Transpose gets the Q before it (same values, same range): ORT's layout pass then cancels
    it against its own NHWC QLinearConv, and no float Transpose is left in the graph."""
    model, xs = _blaze_block()
    assert "x" in activation_tensors(model, target=ORT)
    q = _quantized(model, xs)
    qnodes = {n.input[0]: n for n in q.graph.node if n.op_type == "QuantizeLinear"}
    assert "x" in qnodes and "x_nchw" in qnodes
    assert qnodes["x"].input[1] == qnodes["x_nchw"].input[1]  # one scale: the Transpose runs on uint8
    _optimized_ops(q, tmp_path)
    opt = onnx.load(tmp_path / "optimized.onnx").graph.node
    (q_x,) = [n for n in opt if n.op_type == "QuantizeLinear"]  # the only float -> uint8 step left: the input's
    readers = [n.op_type for n in opt if q_x.output[0] in n.input]
    assert q_x.input[0] == "x" and readers == ["QLinearConv"]  # the Transpose is gone, not run in float


def test_a_layout_op_whose_input_is_read_in_float_elsewhere_keeps_its_q_after() -> None:
    """Moving the Q before the Transpose would quantize what another (float) reader sees: not done."""
    model, _ = _blaze_block()
    model.graph.node.append(helper.make_node("Identity", ["x"], ["x_copy"], name="copy"))
    model.graph.output.append(helper.make_tensor_value_info("x_copy", TensorProto.FLOAT, [1, 8, 8, 3]))
    assert "x" not in activation_tensors(model, target=ORT)


def _mel_like() -> tuple[onnx.ModelProto, np.ndarray]:
    """openWakeWord's mel spectrogram in miniature: a Gemm + Relu, squared (powers), a MatMul of those powers
    (filter bank), then 10 log10 of it: the filters' gains span decades (as a spectrum's bands do), so the MatMul's
    output does too, and only a Log reads it."""
    rng = np.random.default_rng(1)
    w1 = numpy_helper.from_array(rng.standard_normal((32, 64)).astype(np.float32), "W1")
    gains = np.logspace(-4, 0, 16)[None, :]
    mel = numpy_helper.from_array((np.abs(rng.standard_normal((64, 16))) * gains).astype(np.float32), "MEL")
    floor = numpy_helper.from_array(np.array(1e-10, np.float32), "floor")
    ten = numpy_helper.from_array(np.array(10 / np.log(10), np.float32), "ten")
    nodes = [helper.make_node("Gemm", ["x", "W1"], ["h"], name="stft"),
             helper.make_node("Mul", ["h", "h"], ["power"], name="square"),
             helper.make_node("MatMul", ["power", "MEL"], ["melspec"], name="filterbank"),
             helper.make_node("Max", ["melspec", "floor"], ["clipped"], name="floor_max"),
             helper.make_node("Log", ["clipped"], ["ln"], name="log"),
             helper.make_node("Mul", ["ln", "ten"], ["y"], name="db")]
    g = helper.make_graph(nodes, "mel", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])], [w1, mel, floor, ten])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return model, rng.standard_normal((64, 32)).astype(np.float32)


def test_a_matmul_read_only_in_float_keeps_a_float_output() -> None:
    """Rule 5: a MatMul whose output reaches no quantized input gets no output Q (integer MatMul, float output):
    a uint8 output of a filter bank spanning decades rounds every quiet band to a few levels before the Log."""
    model, x = _mel_like()
    tensors = activation_tensors(model, target=ORT)
    assert "power" in tensors and "melspec" not in tensors
    assert "h" in tensors  # a Gemm output that reaches a quantized input (power, through the Mul) keeps its Q
    cache = calibrate(model, {"x": x}, tensors=tensors, method="max")
    q = quantize_model(model, cache, target=ORT)
    assert not any(n.op_type == "QuantizeLinear" and n.input[0] == "melspec" for n in q.graph.node)
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    sq = ort.InferenceSession(q.SerializeToString(), providers=["CPUExecutionProvider"])
    ref, out = s.run(None, {"x": x})[0], sq.run(None, {"x": x})[0]
    # with the output Q this was 3.6 (the quiet bands at uint8 0, floored to 1e-10: -100 dB); without it 0.0014
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 0.05


def test_a_matmul_and_its_bias_add_run_as_one_qgemm(tmp_path: Path) -> None:
    """tf2onnx/keras2onnx split a Dense layer into MatMul + Add(bias): the output Q goes after the bias Add, so
    ORT fuses MatMul + Add into a Gemm and then DQ -> Gemm -> Q into QGemm (MTCNN O-Net's dense_3 ran as a float
    Gemm with the Q between MatMul and Add). A PRelu between it and the next MatMul does not stop it: its output
    still reaches a quantized input."""
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(rng.standard_normal((64, 32)).astype(np.float32) / 8, "W1"),
             numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "B1"),
             numpy_helper.from_array(np.full((32,), 0.25, np.float32), "slope"),
             numpy_helper.from_array(rng.standard_normal((32, 8)).astype(np.float32) / 4, "W2"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "B2")]
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["m1"], name="dense1"),
             helper.make_node("Add", ["m1", "B1"], ["a1"], name="dense1_bias"),
             helper.make_node("PRelu", ["a1", "slope"], ["p1"], name="prelu"),
             helper.make_node("MatMul", ["p1", "W2"], ["m2"], name="dense2"),
             helper.make_node("Add", ["m2", "B2"], ["y"], name="dense2_bias")]
    g = helper.make_graph(nodes, "dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    tensors = activation_tensors(model, target=ORT)
    assert "a1" in tensors and "m1" not in tensors
    x = rng.standard_normal((64, 64)).astype(np.float32)
    q = quantize_model(model, calibrate(model, {"x": x}, tensors=tensors, method="max"), target=ORT)
    ops = _optimized_ops(q, tmp_path)
    assert ops["QGemm"] >= 1 and ops["MatMul"] == 0
    assert np.linalg.norm(_run(q, x) - _run(model, x)) / np.linalg.norm(_run(model, x)) < 0.03


def test_no_dead_qdq_before_float_heads() -> None:
    """A body conv whose output only float heads read gets no output Q/DQ (nothing would read its DQ; Silero
    VAD's encoder had one before its head)."""
    rng = np.random.default_rng(3)
    n1, i1 = _conv("c1", "x", 3, 8, rng)
    n2, i2 = _conv("c2", "c1_relu", 8, 8, rng)
    n3, i3 = _conv("c3", "c2_relu", 8, 4, rng)
    g = helper.make_graph(n1 + n2 + n3[:1], "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("c3_out", TensorProto.FLOAT, [1, 4, 8, 8])], i1 + i2 + i3)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    tensors = activation_tensors(model, target=ORT, float_heads=True)
    assert "c1_relu" in tensors and "c2_relu" not in tensors
    x = rng.standard_normal((8, 3, 8, 8)).astype(np.float32)
    q = quantize_model(model, calibrate(model, {"x": x}, tensors=tensors, method="max"), target=ORT, float_heads=True)
    assert [n.input[0] for n in q.graph.node if n.op_type == "QuantizeLinear"] == ["x", "c1_relu"]
