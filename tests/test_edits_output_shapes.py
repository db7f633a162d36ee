"""A graph output whose shape inference cannot give (an If whose branches differ in rank) keeps its declared type
through every edit: ONNX requires a shape on graph outputs ("Field 'shape' of 'type' is required but missing")."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from workbench import recipe as R
from workbench.backends.ort import OrtEngine
from workbench.edits import apply_edit
from workbench.graph import load_model


def rank_changing_if_model() -> onnx.ModelProto:
    then = helper.make_graph([helper.make_node("Identity", ["x"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("ReduceSum", ["x"], ["e"], keepdims=0)], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Identity", ["x_in"], ["x"], name="id"),
             helper.make_node("If", ["c"], ["y"], name="if", then_branch=then, else_branch=other)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [2, 3]),
                                       helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b"])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("edit", [R.RemoveIdentity(), R.FoldConstants(), R.FuseBatchNorm(), R.RemoveDeadNodes(),
                                  R.DequantizeIntegerOps(), R.BypassNode(node="id"), R.RenameNode(node="if", new_name="g")],
                         ids=lambda e: e.kind)
def test_edits_keep_a_declared_output_shape_inference_cannot_give(edit: R.Edit) -> None:
    model = load_model(rank_changing_if_model())
    out = apply_edit(model, edit)
    onnx.checker.check_model(out)
    y = out.graph.output[0].type.tensor_type
    assert y.elem_type == TensorProto.FLOAT and [d.dim_param for d in y.shape.dim] == ["a", "b"]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert OrtEngine(out, optimize=False).run({"x_in": x, "c": np.array(False)})["y"] == pytest.approx(15.0)



def zipmap_model() -> onnx.ModelProto:
    """An sklearn-style classifier tail: Identity -> Softmax -> ZipMap, a sequence-of-maps output; no default-domain
    opset at all (onnxmltools' logistic regression has only ai.onnx.ml)."""
    nodes = [helper.make_node("Normalizer", ["x"], ["p"], domain="ai.onnx.ml", name="norm", norm="L1"),
             helper.make_node("ZipMap", ["p"], ["probabilities"], domain="ai.onnx.ml", name="zipmap",
                              classlabels_int64s=[0, 1, 2])]
    out = helper.make_value_info("probabilities", helper.make_sequence_type_proto(
        helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, []))))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])], [out])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("ai.onnx.ml", 1)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("edit", [R.FoldConstants(), R.RemoveIdentity(), R.FuseBatchNorm()], ids=lambda e: e.kind)
def test_a_sequence_of_maps_output_keeps_its_type(edit: R.Edit) -> None:
    model = load_model(zipmap_model())
    out = apply_edit(model, edit)
    assert out.graph.output[0].type == model.graph.output[0].type  # graphsurgeon exports it as elem_type 0
    x = np.array([[1, 1, 2], [3, 0, 1]], np.float32)
    got = OrtEngine(out, optimize=False).run({"x": x})["probabilities"]
    assert got[0] == pytest.approx({0: 0.25, 1: 0.25, 2: 0.5})


def test_quantizing_a_model_without_weighted_ops_or_default_opset_changes_nothing() -> None:
    from workbench.precision import quantize_model

    model = load_model(zipmap_model())
    q = quantize_model(model, {})
    assert [n.op_type for n in q.graph.node] == ["Normalizer", "ZipMap"] and len(q.opset_import) == 1
