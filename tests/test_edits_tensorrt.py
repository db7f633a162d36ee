"""Edits that make a model TensorRT-parsable, checked with the real TensorRT(-RTX) parser and builder."""

from __future__ import annotations

from tests.models import integer_ops_model
from workbench import recipe as R
from workbench.check import check_model
from workbench.edits import apply_edit
from workbench.graph import load_model


def test_dequantize_integer_ops_makes_the_model_buildable() -> None:
    model = load_model(integer_ops_model())
    before = check_model(model).to_dict()
    assert before["parsable"] is False
    assert {u["node"] for u in before["unsupported"]} == {"input_QuantizeLinear", "conv_quant",
                                                          "flat_QuantizeLinear", "fc_quant"}
    after = check_model(apply_edit(model, R.DequantizeIntegerOps())).to_dict()
    assert after["parsable"] is True and after["buildable"] is True and after["unsupported"] == []
