"""Nodes out of topological order (ORT accepts some; ONNX requires order): load_model sorts them, subgraphs too."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from workbench import recipe as R
from workbench.backends.ort import OrtEngine
from workbench.edits import apply_edit
from workbench.graph import load_model


def unsorted_model() -> onnx.ModelProto:
    """Relu listed before the Add that feeds it; inside an If body, a node reading an outer tensor made after the If."""
    then = helper.make_graph([helper.make_node("Mul", ["a", "late"], ["t"], name="then_mul")], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Neg", ["a"], ["e"], name="else_neg")], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    nodes = [
        helper.make_node("Relu", ["s"], ["r"], name="relu"),
        helper.make_node("If", ["c"], ["y"], name="if", then_branch=then, else_branch=other),
        helper.make_node("Add", ["x", "b"], ["s"], name="add"),
        helper.make_node("Identity", ["r"], ["a"], name="id"),
        helper.make_node("Sigmoid", ["x"], ["late"], name="late"),
    ]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
                                       helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
                          initializer=[numpy_helper.from_array(np.full((2, 3), -0.5, np.float32), "b")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def test_load_sorts_nodes_and_keeps_results() -> None:
    raw = unsorted_model()
    x = np.linspace(-1, 2, 6, dtype=np.float32).reshape(2, 3)
    model = load_model(raw)  # the checker refused it before sorting
    assert [n.name for n in model.graph.node] == ["add", "relu", "id", "late", "if"]
    onnx.checker.check_model(model)
    for c in (True, False):
        feeds = {"x": x, "c": np.array(c)}
        expected = np.maximum(x - 0.5, 0) * (1 / (1 + np.exp(-x))) if c else -np.maximum(x - 0.5, 0)
        np.testing.assert_allclose(OrtEngine(model, optimize=False).run(feeds)["y"], expected, rtol=1e-6)


def test_edits_work_on_a_model_loaded_out_of_order() -> None:
    model = load_model(unsorted_model())
    out = apply_edit(model, R.RemoveIdentity())
    assert "Identity" not in [n.op_type for n in out.graph.node]
    onnx.checker.check_model(out)


def test_sorted_models_are_left_as_they_are() -> None:
    model = load_model("digits_cnn")
    assert [n.name for n in model.graph.node] == [n.name for n in onnx.load("sample_models/digits_cnn.onnx").graph.node]
