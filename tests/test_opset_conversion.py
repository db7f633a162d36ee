"""Per-channel Q/DQ on models older than opset 13 (PaddlePaddle opset 11, TensorFlow opset 9-12 exports): the model is
converted with onnx's version converter and the user told; an invalid graph is never written, and the node it
would break is named."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from workbench.backends.ort import OrtEngine
from workbench.calibration import calibrate
from workbench.errors import EditError
from workbench.graph import load_model
from workbench.precision import activation_tensors, quantize_model
from workbench.precision._common import _finish


def conv_model(opset: int) -> onnx.ModelProto:
    """x -> Conv(8) -> Relu -> Conv(4, bias) -> y at the given opset."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "w1"),
             numpy_helper.from_array((rng.standard_normal((4, 8, 1, 1)) * np.arange(1, 5).reshape(4, 1, 1, 1))
                                     .astype(np.float32), "w2"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b2")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["y"], name="conv2", kernel_shape=[1, 1])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4, 8, 8])], initializer=inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    return model


@pytest.mark.filterwarnings("ignore:only 1 calibration")
@pytest.mark.parametrize("opset", [9, 11, 12])
@pytest.mark.parametrize("target", ["tensorrt", "onnxruntime"])
def test_old_opset_is_converted_for_per_channel_qdq(opset: int, target: str) -> None:
    model = load_model(conv_model(opset))
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    scales = calibrate(model, {"x": x}, method="max", tensors=activation_tensors(model, target=target))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        q = quantize_model(model, scales, target=target)
    notes = [str(w.message) for w in caught if "version converter" in str(w.message)]
    assert notes and f"opset {opset}" in notes[0] and "opset 13" in notes[0]
    assert next(o.version for o in q.opset_import if o.domain == "") == 13
    onnx.checker.check_model(q, full_check=True)
    weight_dq = {n.input[0]: n for n in q.graph.node if n.op_type == "DequantizeLinear"}
    axis = [a.i for a in weight_dq["w2__int8"].attribute if a.name == "axis"]
    assert axis == [0]  # per output channel, which opset 9-12 cannot express
    scale = numpy_helper.to_array(next(i for i in q.graph.initializer if i.name == "w2__scale"))
    assert scale.shape == (4,) and scale[3] > 3 * scale[0]  # the channels' own ranges (weights scaled 1..4)
    ref = OrtEngine(model, optimize=False).run({"x": x})["y"]
    got = OrtEngine(q).run({"x": x})["y"]
    assert np.abs(got - ref).max() / np.abs(ref).max() < 0.05


def test_a_model_at_opset_13_is_not_converted() -> None:
    model = load_model(conv_model(13))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q = quantize_model(model, {"x": 3.0, "r1": 3.0})
    assert q.opset_import[0].version == 13


@pytest.mark.parametrize("target", ["tensorrt", "onnxruntime"])
def test_per_tensor_qdq_stays_at_opset_10_to_12(target: str) -> None:
    model = load_model(conv_model(11))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q = quantize_model(model, {"x": (-3.0, 3.0), "r1": (0.0, 3.0), "y": (-9.0, 9.0)} if target == "onnxruntime"
                           else {"x": 3.0, "r1": 3.0}, per_channel=False, target=target)
    assert q.opset_import[0].version == 11
    onnx.checker.check_model(q, full_check=True)
    assert all(not n.attribute for n in q.graph.node if n.op_type == "DequantizeLinear")  # no axis at opset 11
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    OrtEngine(q).run({"x": x})


def test_an_invalid_qdq_graph_is_refused_naming_the_node() -> None:
    model = load_model(conv_model(11))
    bad = onnx.ModelProto()
    bad.CopyFrom(model)
    bad.graph.initializer.extend([numpy_helper.from_array(np.ones(8, np.int8), "w1__int8"),
                                  numpy_helper.from_array(np.ones(8, np.float32), "w1__scale")])
    bad.graph.node.insert(0, helper.make_node("DequantizeLinear", ["w1__int8", "w1__scale"], ["w1_dq"],
                                              name="w1__DequantizeLinear", axis=0))
    bad.graph.node[1].input[1] = "w1_dq"
    with pytest.raises(EditError, match="w1__DequantizeLinear") as info:
        _finish(bad, "quantize_model")
    assert "w1__DequantizeLinear" in info.value.hint
