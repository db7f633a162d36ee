"""ONNX Runtime placement, rule 8 (workbench.precision.qdq_ort): a weighted op followed by a float-only activation
(PRelu) whose output is quantized anyway gets no output Q, so the values are rounded once (MTCNN P-Net's
Conv -> PRelu -> Conv chain, docs/int8_accuracy.md)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from workbench.backends.ort import OrtEngine
from workbench.calibration import calibrate
from workbench.precision import activation_tensors, quantize_model


def _prelu_chain() -> tuple[onnx.ModelProto, np.ndarray]:
    """x [N, 8, 12, 12] -> Conv 3x3 -> PRelu (slope 0.25) -> MaxPool -> Conv 3x3 -> PRelu -> Conv 1x1 -> y."""
    rng = np.random.default_rng(3)
    inits, nodes, t = [], [], "x"
    for i, (cin, cout, k) in enumerate([(8, 16, 3), (16, 16, 3), (16, 4, 1)]):
        inits += [numpy_helper.from_array((rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k))
                                          .astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32) * 0.1, f"b{i}")]
        nodes.append(helper.make_node("Conv", [t, f"w{i}", f"b{i}"], [f"c{i}"], name=f"conv{i}",
                                      pads=[k // 2] * 4))
        t = f"c{i}"
        if i < 2:
            inits.append(numpy_helper.from_array(np.full((cout, 1, 1), 0.25, np.float32), f"slope{i}"))
            nodes.append(helper.make_node("PRelu", [t, f"slope{i}"], [f"p{i}"], name=f"prelu{i}"))
            t = f"p{i}"
        if i == 0:
            nodes.append(helper.make_node("MaxPool", [t], ["pool"], name="pool", kernel_shape=[2, 2], strides=[2, 2]))
            t = "pool"
    nodes.append(helper.make_node("Identity", [t], ["y"], name="out"))
    g = helper.make_graph(nodes, "prelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 12, 12])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 6, 6])], inits)
    x = rng.standard_normal((64, 8, 12, 12)).astype(np.float32)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), x


def _rel(model: onnx.ModelProto, ref: np.ndarray, x: np.ndarray) -> float:
    out = OrtEngine(model).run({"x": x})["y"]
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


def test_no_second_rounding_before_a_prelu() -> None:
    model, x = _prelu_chain()
    ref = OrtEngine(model).run({"x": x})["y"]
    rels = {}
    for target in ("tensorrt", "onnxruntime"):
        cache = calibrate(model, {"x": x[:32]}, method="max", tensors=activation_tensors(model, target=target))
        q = quantize_model(model, cache, target=target)
        rels[target] = _rel(q, ref, x)
        if target == "onnxruntime":
            quantized = {n.input[0] for n in q.graph.node if n.op_type == "QuantizeLinear"}
            assert not {"c0", "c1"} & quantized  # the conv outputs the PRelus read are not rounded ...
            assert {"pool", "p1"} <= quantized  # ... the PRelu outputs the next convs read are, once
    # one rounding per tensor, as in the TensorRT placement (uint8 over the range: a little finer than its int8).
    # Measured: TensorRT 0.0133, ONNX Runtime 0.0123; with the conv outputs rounded too it was 0.0142
    assert rels["onnxruntime"] < rels["tensorrt"], rels


def test_float_heads_after_a_prelu_need_no_tensor_that_calibration_left_out() -> None:
    """The default recipe calibrates ``activation_tensors(model, target=...)`` and quantizes with float heads: the
    PRelu before the float head conv2 reads the float conv output (no Q: nothing after it is rounded), so nothing
    outside that list is asked for (it raised "no calibrated range for tensor 'c1'")."""
    model, x = _prelu_chain()
    cache = calibrate(model, {"x": x[:32]}, method="max", tensors=activation_tensors(model, target="onnxruntime"))
    q = quantize_model(model, cache, target="onnxruntime", float_heads=True)
    quantized = {n.input[0] for n in q.graph.node if n.op_type == "QuantizeLinear"}
    assert {"x", "pool"} <= quantized and not {"c0", "c1", "p1"} & quantized
    ref = OrtEngine(model).run({"x": x})["y"]
    assert _rel(q, ref, x) < 0.01  # conv1 -> PRelu -> conv2 in float: only x and pool are rounded
