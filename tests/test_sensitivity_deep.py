"""Sensitivity on a network deeper than Python's recursion limit (a real ResNet-50 export hit it)."""

from __future__ import annotations

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from workbench.debug import sensitivity
from workbench.graph import load_model
from workbench.precision import quantize_model


def _deep(depth: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 4, 1, 1)).astype(np.float32), f"w{i}")
             for i in range(2)]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], name="conv0")]
    prev = "c0"
    for i in range(depth):  # a long float tail between the two quantized convs
        nodes.append(helper.make_node("Relu", [prev], [f"r{i}"], name=f"relu{i}"))
        prev = f"r{i}"
    nodes.append(helper.make_node("Conv", [prev, "w1"], ["y"], name="conv1"))
    graph = helper.make_graph(nodes, "deep", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4, 3, 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_sensitivity_ranks_a_network_deeper_than_the_recursion_limit():
    depth = sys.getrecursionlimit() + 200
    ref = load_model(_deep(depth))
    x = np.random.default_rng(1).standard_normal((4, 4, 3, 3)).astype(np.float32)
    cand = load_model(quantize_model(ref, {t: 4.0 for t in ["x", "c0", f"r{depth - 1}", "y"]}))
    result = sensitivity(ref, cand, {"x": x}, batch_size=4, workers=1)
    assert sorted(r["node"] for r in result.table.records()) == ["conv0", "conv1"]
