"""Sensitivity tails with an If whose branches read an outer-scope tensor the tail recomputes (oww_hey_jarvis: the
tails model failed to load, 'Nodes in a graph must be topologically sorted, however input x.1 of node If_32__s1')."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from workbench.backends.ort import OrtEngine
from workbench.calibration import calibrate
from workbench.debug import restore_layers, sensitivity
from workbench.precision import activation_tensors, quantize_model


def _if_on_outer_tensor() -> onnx.ModelProto:
    """x -> fc (Gemm) -> r = Sigmoid; y = If(cond, then: Identity(r), else: Neg(r)): the branches read r from outside."""
    rng = np.random.default_rng(0)
    then = helper.make_graph([helper.make_node("Identity", ["r"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Neg", ["r"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Gemm", ["x", "w"], ["h"], name="fc"),
             helper.make_node("Sigmoid", ["h"], ["r"], name="act"),
             helper.make_node("ReduceSum", ["x"], ["total"], name="sum", keepdims=0),
             helper.make_node("Greater", ["total", "floor"], ["cond"], name="gt"),
             helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then, else_branch=other)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
                          [numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "w"),
                           numpy_helper.from_array(np.array(-1e9, np.float32), "floor")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_a_tail_if_reads_the_restored_tensor() -> None:
    model = _if_on_outer_tensor()
    x = {"x": np.random.default_rng(1).standard_normal((32, 8)).astype(np.float32)}
    cand = quantize_model(model, calibrate(model, x, tensors=activation_tensors(model)))
    s = sensitivity(model, cand, x)
    assert s.ranking == ["fc"]
    # the tails' number is that of a full run of the candidate with fc restored (which is the FP32 model)
    restored = OrtEngine(restore_layers(cand, model, ["fc"])).run(x)["y"]
    ref = OrtEngine(model).run(x)["y"]
    full = float(np.mean(np.linalg.norm(restored - ref, axis=1) / np.linalg.norm(ref, axis=1)))
    assert s.table.records()[0]["metric_restored"] == full == 0.0
    assert s.metric_before > 0.001
