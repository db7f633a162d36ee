"""dequantize_integer_ops on ONNX Runtime's dynamic quantisation where one DynamicQuantizeLinear feeds several
MatMulInteger (a transformer's q/k/v projections; the T5 encoder quantized by ORT failed with a dangling tensor)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from workbench import recipe as R
from workbench.backends.ort import OrtEngine
from workbench.edits import apply_edit
from workbench.graph import load_model


def shared_dql_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = []
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"], name="dql")]
    outs = []
    for k in ("q", "k", "v"):
        inits += [numpy_helper.from_array(rng.integers(0, 255, (4, 3)).astype(np.uint8), f"w_{k}"),
                  numpy_helper.from_array(np.array(128, np.uint8), f"wz_{k}")]
        nodes += [helper.make_node("MatMulInteger", ["xq", f"w_{k}", "xz", f"wz_{k}"], [f"i_{k}"], name=f"mm_{k}"),
                  helper.make_node("Cast", [f"i_{k}"], [f"f_{k}"], name=f"cast_{k}", to=TensorProto.FLOAT),
                  helper.make_node("Mul", [f"f_{k}", "xs"], [f"s_{k}"], name=f"scale_{k}")]
        outs.append(f"s_{k}")
    nodes += [helper.make_node("Sum", outs, ["y"], name="sum")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], initializer=inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return load_model(model)


def test_one_dynamic_quantize_feeding_three_integer_matmuls() -> None:
    model = shared_dql_model()
    out = apply_edit(model, R.DequantizeIntegerOps())
    ops = [n.op_type for n in out.graph.node]
    assert "MatMulInteger" not in ops and "DynamicQuantizeLinear" not in ops
    assert ops.count("ReduceMax") == 1  # emulated once, shared by the three MatMuls
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    ref = OrtEngine(model, optimize=False).run({"x": x})["y"]
    np.testing.assert_allclose(OrtEngine(out, optimize=False).run({"x": x})["y"], ref, rtol=1e-5)
