"""dequantize_integer_ops on ONNX Runtime's dynamically quantized convolutions (IS-Net quint8: one
DynamicQuantizeLinear feeding two ConvInteger with uint8 weights and zero points, each scaled back by a Mul): the
result is in topological order, has no integer op left and computes what ONNX Runtime's integer kernels do."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from workbench import recipe as R
from workbench.backends.ort import OrtEngine
from workbench.edits import apply_edit
from workbench.graph import load_model


def conv_integer_model() -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(np.array(0.02, np.float32), "w_scale")]
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"], name="dql"),
             helper.make_node("Mul", ["xs", "w_scale"], ["s"], name="scale")]
    outs = []
    for k in ("a", "b"):
        inits += [numpy_helper.from_array(rng.integers(0, 255, (4, 3, 3, 3)).astype(np.uint8), f"w_{k}"),
                  numpy_helper.from_array(np.array(131, np.uint8), f"wz_{k}"),
                  numpy_helper.from_array(rng.standard_normal((1, 4, 1, 1)).astype(np.float32), f"bias_{k}")]
        nodes += [helper.make_node("ConvInteger", ["xq", f"w_{k}", "xz", f"wz_{k}"], [f"i_{k}"], name=f"conv_{k}",
                                   pads=[1, 1, 1, 1]),
                  helper.make_node("Cast", [f"i_{k}"], [f"f_{k}"], name=f"cast_{k}", to=TensorProto.FLOAT),
                  helper.make_node("Mul", [f"f_{k}", "s"], [f"m_{k}"], name=f"rescale_{k}"),
                  helper.make_node("Add", [f"m_{k}", f"bias_{k}"], [f"y_{k}"], name=f"bias_add_{k}")]
        outs.append(f"y_{k}")
    nodes.append(helper.make_node("Concat", outs, ["y"], name="concat", axis=1))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 6, 6])], initializer=inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return load_model(model)


def test_conv_integer_dequantized_in_order_and_equal_to_onnx_runtime() -> None:
    model = conv_integer_model()
    out = apply_edit(model, R.DequantizeIntegerOps())
    ops = [n.op_type for n in out.graph.node]
    assert not {"ConvInteger", "DynamicQuantizeLinear"} & set(ops) and ops.count("Conv") == 2
    seen = {i.name for i in out.graph.input} | {i.name for i in out.graph.initializer}
    for n in out.graph.node:  # every read is written before it
        assert all(not i or i in seen for i in n.input), n.name
        seen.update(n.output)
    x = np.random.default_rng(2).standard_normal((1, 3, 6, 6)).astype(np.float32) * 3
    want = OrtEngine(model, optimize=False).run({"x": x})["y"]
    got = OrtEngine(out, optimize=False).run({"x": x})["y"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
