"""Who an invalid edit result blames: a targeted edit (a node the user chose) is the user's EditError naming it; a
whole-graph edit (fold_constants, fuse_batchnorm, the repairs...) that breaks a valid model is our bug, an internal
error carrying the checker's message; a model already invalid before the edit is the model's fault."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from workbench import recipe as R
from workbench.edits import WHOLE_GRAPH_EDITS, InvalidEditResult, apply_edit
from workbench.edits._gs import finish
from workbench.errors import EditError, WorkbenchError
from workbench.internal import report_internal


def cast_model() -> onnx.ModelProto:
    """x (float) -> Cast to int64 'to_int' -> Gather indices of a float table."""
    table = helper.make_tensor("table", TensorProto.FLOAT, [4, 2], [float(i) for i in range(8)])
    nodes = [helper.make_node("Cast", ["x"], ["i"], name="to_int", to=TensorProto.INT64),
             helper.make_node("Gather", ["table", "i"], ["y"], name="gather")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])], [table])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def broken(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its Gather reading a tensor nothing defines (what a buggy rewrite would leave)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.node[1].input[1] = "vanished"
    return out


def test_targeted_edit_blames_the_node_the_user_chose() -> None:
    # Relu takes one input, the Gather it replaces reads two: the user's choice, named in the error
    with pytest.raises(EditError) as info:
        apply_edit(cast_model(), R.ReplaceNode(node="gather", op="Relu"))
    assert "gather" in info.value.message and "pick another node" in info.value.hint


def test_whole_graph_edit_that_breaks_a_valid_model_is_an_internal_error() -> None:
    good = cast_model()
    with pytest.raises(InvalidEditResult) as info:
        finish(broken(good), "fold_constants", good, targeted=False)
    assert not isinstance(info.value, WorkbenchError)
    assert "fold_constants leaves an invalid ONNX graph" in str(info.value) and "vanished" in str(info.value)
    report = report_internal(info.value, "applying fold_constants")
    assert report.type == "InvalidEditResult" and "vanished" in report.message and report.log
    assert "pick another node" not in report.line


def test_same_result_of_a_targeted_edit_is_the_users_error() -> None:
    good = cast_model()
    with pytest.raises(EditError) as info:
        finish(broken(good), "remove_node(node='gather')", good, targeted=True)
    assert "remove_node(node='gather')" in info.value.message and "vanished" in info.value.message


def test_model_invalid_before_the_edit_is_blamed_on_the_model() -> None:
    bad = broken(cast_model())
    with pytest.raises(EditError) as info:
        finish(broken(cast_model()), "fold_constants", bad, targeted=False)
    assert "invalid before this edit" in info.value.message and "re-export" in info.value.hint


def test_whole_graph_edits_are_the_ones_without_a_user_choice() -> None:
    assert {R.FoldConstants, R.FuseBatchNorm, R.RemoveIdentity, R.DequantizeIntegerOps,
            R.FoldConstantIf} <= WHOLE_GRAPH_EDITS
    assert not {R.BypassNode, R.RemoveNode, R.ReplaceNode, R.InsertNode, R.SetShapes, R.FreezeInput} & WHOLE_GRAPH_EDITS
