"""Precision tab, headless: set row / op-type choices, click Apply, assert widgets and the session's model."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.calibration import calibrate
from workbench.graph import SAMPLES_DIR
from workbench.precision import node_precisions, precision_guards, weight_bytes
from workbench.session import Session
from workbench.ui.common import Status
from workbench.ui.precision_tab import PrecisionTab


@pytest.fixture
def tab(tmp_path: Path) -> PrecisionTab:
    return PrecisionTab(Session("digits_transformer", cache_dir=tmp_path / "cache"), Status())


def test_rows_guards_and_summary(tab: PrecisionTab) -> None:
    model = tab.session.model
    guarded = {g["node"] for g in precision_guards(model)}
    assert guarded and guarded <= set(tab.rows)
    assert all("⚠" in tab.guards[n].value for n in guarded)
    assert "Constant" not in {tab.ops[n] for n in tab.rows}  # only nodes whose precision can change
    assert tab.rows["/embed/MatMul"].options == ("fp32", "fp16", "bf16", "int8", "fp8")
    fp32 = weight_bytes(model)
    assert f"now {fp32 / 2**20:.3f} MiB" in tab.summary.value
    assert f"fp32: {len(model.graph.node)}" in tab.summary.value


def test_op_type_bulk_keeps_guarded_and_apply_converts(tab: PrecisionTab) -> None:
    tab.op_type.value = "(all)"
    tab.op_precision.value = "fp16"
    tab.set_op_button.click()
    softmax = next(n for n in tab.rows if tab.ops[n] == "Softmax")
    assert tab.rows[softmax].value == "fp32"  # guarded: kept by the bulk change
    assert tab.rows["/embed/MatMul"].value == "fp16"
    assert "guarded node(s) kept fp32" in tab.status.message
    assert "fp16: " in tab.summary.value
    tab.rows[softmax].value = "fp16"  # per-row override of a guard
    tab.apply_button.click()
    assert tab.status.state == "ok", tab.status.message
    precisions = node_precisions(tab.session.model)
    assert precisions["/embed/MatMul"] == "fp16" and precisions[softmax] == "fp16"
    ln = next(n for n in precisions if "LayerNormalization" in n)
    assert precisions[ln] == "fp32"
    assert tab.session.recipe.edits[-1].kind == "convert_precision"
    # the rows now show the model's precisions
    assert tab.rows["/embed/MatMul"].value == "fp16"


def test_int8_needs_calibration_then_quantizes(tab: PrecisionTab) -> None:
    tab.rows["/embed/MatMul"].value = "int8"
    tab.apply_button.click()
    assert tab.status.state == "error" and "calibrated scales" in tab.status.message
    assert "Calibrate tab" in tab.status.hint and tab.session.recipe.edits == ()
    calibrate(tab.session.model, SAMPLES_DIR / "digits_calib_seq.npz", cache_dir=tab.session.cache_dir)
    tab.op_type.value = "MatMul"
    tab.op_precision.value = "int8"
    tab.set_op_button.click()
    tab.apply_button.click()
    assert tab.status.state == "ok", tab.status.message
    edit = tab.session.recipe.edits[-1]
    assert edit.kind == "quantize" and "/embed/MatMul" in edit.nodes
    assert node_precisions(tab.session.model)["/embed/MatMul"] == "int8"
    assert "/head/Gemm" not in edit.nodes and node_precisions(tab.session.model)["/head/Gemm"] == "fp32"
