"""precision.allowed: which precisions each node may take."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from workbench.errors import EditError
from workbench.precision import quantize_model
from workbench.precision.allowed import allowed_precisions


def _conv_only_in_if_bodies() -> onnx.ModelProto:
    """An If whose two branches each hold the model's only Conv (as VAD models select by sample rate)."""
    w = numpy_helper.from_array(np.ones((2, 1, 1, 1), np.float32), "W")

    def branch(name: str) -> onnx.GraphProto:
        conv = helper.make_node("Conv", ["X", "W"], [f"{name}_y"], name=f"{name}_conv")
        return helper.make_graph([conv], name, [], [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT,
                                                                                  [1, 2, 4, 4])])

    node = helper.make_node("If", ["cond"], ["Y"], name="select", then_branch=branch("then"),
                            else_branch=branch("else"))
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 1, 4, 4]),
                                            helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 2, 4, 4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def test_a_model_with_nothing_to_quantize_still_gets_its_choices_without_int8():
    """Every Conv inside If bodies: quantizing refuses (with the flatten command), but the Precision tab's
    choices must not: before, allowed_precisions raised that refusal and the whole tab was unavailable."""
    model = _conv_only_in_if_bodies()
    with pytest.raises(EditError, match="inside an If/Loop/Scan body"):
        quantize_model(model, {"X": 1.0})
    choices = allowed_precisions(model)
    assert not any(choices.allows(n, "int8") for n in choices.options)
    assert choices.ops == {"select": "If"}
