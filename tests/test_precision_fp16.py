"""fp16 conversion on what real models hold: Constant-node weights, If bodies reading outer initializers, int64 shape
inputs and bool masks, a BatchNorm variance beyond the fp16 range, and activations beyond it (measured ranges)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from workbench.backends.ort import OrtEngine, with_outputs
from workbench.calibration import calibrate
from workbench.graph import load_model
from workbench.precision import convert_precision, float_tensors, plan_conversion

F = TensorProto.FLOAT


def _model(nodes: list, inputs: list, outputs: list, inits: list = (), opset: int = 17) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return load_model(model)


def mixed_model() -> onnx.ModelProto:
    """Paddle/TF-like: Constant-node weights; a Reshape to an int64 shape input; a bool mask; an If whose body reads
    a main-graph initializer nothing else reads."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((6, 4)) * 0.5).astype(np.float32), "w")
    body = helper.make_graph([helper.make_node("Add", ["h", "only_body"], ["t"], name="body_add")], "then", [],
                             [helper.make_tensor_value_info("t", F, None)])
    other = helper.make_graph([helper.make_node("Neg", ["h"], ["e"], name="body_neg")], "else", [],
                              [helper.make_tensor_value_info("e", F, None)])
    nodes = [
        helper.make_node("Constant", [], ["w"], name="w_const", value=w),
        helper.make_node("MatMul", ["x", "w"], ["m"], name="matmul"),
        helper.make_node("Relu", ["m"], ["h"], name="relu"),
        helper.make_node("If", ["c"], ["b"], name="if", then_branch=body, else_branch=other),
        helper.make_node("Where", ["mask", "b", "zero"], ["wh"], name="where"),
        helper.make_node("Reshape", ["wh", "shape"], ["y"], name="reshape"),
    ]
    inits = [numpy_helper.from_array(np.full(4, 0.25, np.float32), "only_body"),
             numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    inputs = [helper.make_tensor_value_info("x", F, [3, 6]), helper.make_tensor_value_info("c", TensorProto.BOOL, []),
              helper.make_tensor_value_info("mask", TensorProto.BOOL, [3, 4]),
              helper.make_tensor_value_info("shape", TensorProto.INT64, [2])]
    return _model(nodes, inputs, [helper.make_tensor_value_info("y", F, [4, 3])], inits)


def test_fp16_with_constant_weights_bodies_and_integer_inputs_runs() -> None:
    model = mixed_model()
    out = convert_precision(model, "fp16")
    onnx.checker.check_model(out, full_check=True)
    assert "only_body" in {i.name for i in out.graph.initializer}  # read only inside the If body
    plan = plan_conversion(model, "fp16")
    assert plan["matmul"]["precision"] == "fp16" and plan["reshape"]["precision"] == "fp16"
    rng = np.random.default_rng(1)
    feeds = {"x": rng.standard_normal((3, 6)).astype(np.float32), "mask": rng.random((3, 4)) > 0.3,
             "shape": np.array([4, 3], np.int64)}
    for c in (True, False):
        feeds["c"] = np.array(c)
        ref = OrtEngine(model, optimize=False).run(feeds)["y"]
        got = OrtEngine(out, optimize=False).run(feeds)["y"]
        assert got.dtype == np.float32 and got.shape == (4, 3)
        np.testing.assert_allclose(got, ref, atol=2e-3, rtol=2e-3)


def test_batchnorm_variance_beyond_fp16_stays_float32() -> None:
    c = 4
    inits = [numpy_helper.from_array(np.ones(c, np.float32), "scale"),
             numpy_helper.from_array(np.zeros(c, np.float32), "bias"),
             numpy_helper.from_array(np.zeros(c, np.float32), "mean"),
             numpy_helper.from_array(np.full(c, 1e7, np.float32), "var")]  # a real detector's BatchNorm
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("BatchNormalization", ["r", "scale", "bias", "mean", "var"], ["y"], name="bn")]
    model = _model(nodes, [helper.make_tensor_value_info("x", F, [1, c, 2, 2])],
                   [helper.make_tensor_value_info("y", F, [1, c, 2, 2])], inits)
    out = convert_precision(model, "fp16")
    assert plan_conversion(model, "fp16")["bn"]["precision"] == "fp32"
    x = np.full((1, c, 2, 2), 3000.0, np.float32)
    got = OrtEngine(out, optimize=False).run({"x": x})["y"]
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, 3000.0 / np.sqrt(1e7 + 1e-5), rtol=1e-3)


@pytest.mark.filterwarnings("ignore:only 16 calibration")
def test_activations_beyond_fp16_stay_float32_with_measured_ranges() -> None:
    """A Mul whose constant is in range but whose output reaches ~1e5: constants alone cannot tell."""
    inits = [numpy_helper.from_array(np.array(400.0, np.float32), "k"),
             numpy_helper.from_array(np.array(1e-3, np.float32), "small")]
    nodes = [helper.make_node("Mul", ["x", "k"], ["big"], name="scale_up"),
             helper.make_node("Mul", ["big", "small"], ["m"], name="scale_down"),
             helper.make_node("Relu", ["m"], ["y"], name="relu")]
    model = _model(nodes, [helper.make_tensor_value_info("x", F, ["n", 8])],
                   [helper.make_tensor_value_info("y", F, ["n", 8])], inits)
    x = np.random.default_rng(0).uniform(100.0, 300.0, (16, 8)).astype(np.float32)
    ref = OrtEngine(model, optimize=False).run({"x": x})["y"]
    blind = convert_precision(model, "fp16")  # the graph declares 'big' fp16 (ORT's CPU computes the Mul in fp32,
    big = OrtEngine(with_outputs(blind, ["big__fp16"]), optimize=False).run({"x": x})["big__fp16"]  # TensorRT would not)
    assert big.dtype == np.float16 and not np.isfinite(big).all()
    ranges = calibrate(model, {"x": x}, method="max", tensors=float_tensors(model))
    plan = plan_conversion(model, "fp16", ranges=ranges)
    assert plan["scale_up"]["precision"] == plan["scale_down"]["precision"] == "fp32"
    assert "'big'" in plan["scale_up"]["reason"] and "beyond the fp16 maximum" in plan["scale_up"]["reason"]
    assert plan["relu"]["precision"] == "fp16"
    out = convert_precision(model, "fp16", ranges=ranges)
    assert "big__fp16" not in {o for n in out.graph.node for o in n.output}
    got = OrtEngine(out, optimize=False).run({"x": x})["y"]
    np.testing.assert_allclose(got, ref, rtol=2e-3)
    # a plain {tensor: amax} works too
    assert plan_conversion(model, "fp16", ranges={"big": 1.2e5})["scale_up"]["precision"] == "fp32"


def test_an_attention_mask_filled_with_float32_min_stays_finite() -> None:
    """scores + (1 - mask) * float32.min: the Mul's constant is beyond fp16 and so is everything carrying its value
    (ORT's int8 T5 encoder gave NaN in fp16 where a row was fully masked)."""
    nodes = [helper.make_node("Cast", ["mask"], ["mf"], name="cast", to=F),
             helper.make_node("Sub", ["one", "mf"], ["inv"], name="invert"),
             helper.make_node("Mul", ["inv", "fmin"], ["bias"], name="fill"),
             helper.make_node("Unsqueeze", ["bias", "axis1"], ["bias3"], name="unsqueeze"),
             helper.make_node("MatMul", ["q", "kt"], ["scores"], name="scores"),
             helper.make_node("Add", ["scores", "bias3"], ["masked"], name="mask_add"),
             helper.make_node("Softmax", ["masked"], ["p"], name="softmax", axis=-1),
             helper.make_node("MatMul", ["p", "v"], ["y"], name="mix")]
    inits = [numpy_helper.from_array(np.array(1.0, np.float32), "one"),
             numpy_helper.from_array(np.array(np.finfo(np.float32).min, np.float32), "fmin"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    model = _model(nodes, [helper.make_tensor_value_info("q", F, [2, 3, 4]), helper.make_tensor_value_info("kt", F, [2, 4, 3]),
                           helper.make_tensor_value_info("v", F, [2, 3, 4]),
                           helper.make_tensor_value_info("mask", TensorProto.INT64, [2, 3])],
                   [helper.make_tensor_value_info("y", F, [2, 3, 4])], inits)
    rng = np.random.default_rng(0)
    feeds = {"q": rng.standard_normal((2, 3, 4)).astype(np.float32), "kt": rng.standard_normal((2, 4, 3)).astype(np.float32),
             "v": rng.standard_normal((2, 3, 4)).astype(np.float32), "mask": np.array([[1, 1, 0], [0, 0, 0]], np.int64)}
    plan = plan_conversion(model, "fp16")
    assert plan["fill"]["precision"] == plan["unsqueeze"]["precision"] == plan["mask_add"]["precision"] == "fp32"
    assert "'bias'" in plan["unsqueeze"]["reason"] and plan["scores"]["precision"] == "fp16"
    ref = OrtEngine(model, optimize=False).run(feeds)["y"]
    got = OrtEngine(convert_precision(model, "fp16"), optimize=False).run(feeds)["y"]
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, ref, atol=5e-3, rtol=5e-3)
