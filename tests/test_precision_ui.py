"""Precision tab, headless: set row / op-type choices, click Apply, assert widgets and the session's model."""

from __future__ import annotations

from pathlib import Path

import ipywidgets as W
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import workbench.precision.allowed as allowed
import workbench.workflows.quantize as quantize_workflow
from workbench.calibration import calibrate
from workbench.errors import EditError
from workbench.graph import SAMPLES_DIR
from workbench.precision import node_precisions, precision_guards, weight_bytes
from workbench.session import Session
from workbench.ui.common import Status
from workbench.ui.precision_tab import PAGE_SIZE, PrecisionTab


@pytest.fixture
def tab(tmp_path: Path) -> PrecisionTab:
    return PrecisionTab(Session("digits_transformer", cache_dir=tmp_path / "cache"), Status())


def test_rows_guards_and_summary(tab: PrecisionTab) -> None:
    model = tab.session.model
    guarded = {g["node"] for g in precision_guards(model)}
    assert guarded and guarded <= set(tab.options)
    assert all(tab.guards[n] for n in guarded) and not any(tab.guards[n] for n in set(tab.options) - guarded)
    assert "Constant" not in {tab.ops[n] for n in tab.options}  # only nodes whose precision can change
    assert tab.options["/embed/MatMul"] == ("fp32", "fp16", "bf16", "int8", "fp8")
    # the visible row of a guarded node shows its reason
    softmax = next(n for n in guarded if tab.ops[n] == "Softmax")
    tab.filter.value = softmax
    assert tab.shown()[0] == softmax and tab.page_rows[0][0].value == softmax
    assert "⚠" in tab.page_rows[0][3].value and tab.guards[softmax] in tab.page_rows[0][3].value
    fp32 = weight_bytes(model)
    assert f"now {fp32 / 2**20:.3f} MiB" in tab.summary.value
    assert f"fp32: {len(model.graph.node)}" in tab.summary.value


def test_op_type_bulk_keeps_guarded_and_apply_converts(tab: PrecisionTab) -> None:
    tab.op_type.value = "(all)"
    tab.op_precision.value = "fp16"
    tab.set_op_button.click()
    softmax = next(n for n in tab.options if tab.ops[n] == "Softmax")
    assert tab.choices()[softmax] == "fp32"  # guarded: kept by the bulk change
    assert tab.choices()["/embed/MatMul"] == "fp16"
    assert "guarded node(s) kept fp32" in tab.status.message
    assert "fp16: " in tab.summary.value
    tab.filter.value = softmax  # per-row override of a guard, through the row's dropdown
    assert tab.page_rows[0][0].value == softmax and tab.page_rows[0][2].value == "fp32"
    tab.page_rows[0][2].value = "fp16"
    assert tab.choices()[softmax] == "fp16"
    tab.apply_button.click()
    assert tab.status.state == "ok", tab.status.message
    precisions = node_precisions(tab.session.model)
    assert precisions["/embed/MatMul"] == "fp16" and precisions[softmax] == "fp16"
    ln = next(n for n in precisions if "LayerNormalization" in n)
    assert precisions[ln] == "fp32"
    assert tab.session.recipe.edits[-1].kind == "convert_precision"
    # the rows now show the model's precisions
    assert tab.choices()["/embed/MatMul"] == "fp16"
    tab.filter.value = "/embed/MatMul"
    assert tab.page_rows[0][0].value == "/embed/MatMul" and tab.page_rows[0][2].value == "fp16"


def test_int8_needs_calibration_then_quantizes(tab: PrecisionTab) -> None:
    tab.set_choice("/embed/MatMul", "int8")
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


def test_set_choice_refuses_a_precision_the_node_cannot_take(tab: PrecisionTab) -> None:
    softmax = next(n for n in tab.options if tab.ops[n] == "Softmax")
    assert "int8" not in tab.options[softmax]
    with pytest.raises(EditError, match="cannot run in int8"):
        tab.set_choice(softmax, "int8")
    assert tab.choices()[softmax] == "fp32"


def _chain_model(blocks: int) -> onnx.ModelProto:
    """``blocks`` x [Conv 1x1, Relu, Add(residual)]: every node can change precision, Conv/Add are quantizable."""
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "input"
    for i in range(blocks):
        inits.append(numpy_helper.from_array((rng.standard_normal((4, 4, 1, 1)) * 0.3).astype(np.float32), f"w{i}"))
        nodes += [helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], name=f"conv{i}"),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"),
                  helper.make_node("Add", [f"r{i}", x], [f"a{i}"], name=f"add{i}")]
        x = f"a{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4, 4, 4])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 4, 4, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _construct_and_bulk_set(tmp_path: Path, blocks: int, monkeypatch: pytest.MonkeyPatch) -> tuple[PrecisionTab, dict]:
    """Build the tab for a ``blocks``-block chain and bulk-set fp16, counting widgets and expensive calls."""
    path = tmp_path / f"chain{blocks}.onnx"
    onnx.save(_chain_model(blocks), path)
    session = Session(path, cache_dir=tmp_path / f"cache{blocks}")
    session.model  # noqa: B018 - load before counting
    counts = {"widgets": 0, "weight_bytes": 0, "plan_conversion": 0, "quantizable_nodes": 0}
    real_open = W.Widget.open

    def open_(self: W.Widget) -> None:
        counts["widgets"] += 1
        real_open(self)

    monkeypatch.setattr(W.Widget, "open", open_)
    for module, fn in ((quantize_workflow, "weight_bytes"), (allowed, "plan_conversion"),
                       (allowed, "quantizable_nodes")):
        real = getattr(module, fn)

        def counted(*a: object, _real: object = real, _fn: str = fn, **k: object) -> object:
            counts[_fn] += 1
            return _real(*a, **k)  # type: ignore[operator]

        monkeypatch.setattr(module, fn, counted)
    tab = PrecisionTab(session, Status())
    tab.op_type.value, tab.op_precision.value = "(all)", "fp16"
    tab.set_op_button.click()
    monkeypatch.undo()
    return tab, counts


def test_construction_and_bulk_set_do_not_grow_with_the_model(tmp_path: Path, monkeypatch) -> None:
    """Widgets and expensive analyses per construction + bulk change are O(1) in the node count, not O(n):
    a 30-node and a 1,500-node chain create the same number of widgets and call each analysis as often."""
    small, small_counts = _construct_and_bulk_set(tmp_path, 10, monkeypatch)
    big, big_counts = _construct_and_bulk_set(tmp_path, 500, monkeypatch)
    assert len(small.options) == 30 and len(big.options) == 1500
    assert big_counts == small_counts, (small_counts, big_counts)
    assert big_counts["weight_bytes"] <= 3 and big_counts["plan_conversion"] == 1
    # the bulk change reached every row, also those on pages never shown
    assert set(big.choices().values()) == {"fp16"} and big.choices()["add499"] == "fp16"
    assert big.page.max == -(-1500 // PAGE_SIZE)
    assert "fp16: 1500" in big.summary.value
    big.page.value = big.page.max  # the last page shows the last rows in the same row widgets
    first_dropdown = big.page_rows[0][2]
    assert big.page_rows[0][0].value == big.shown()[0] and big.shown()[-1] == "add499"
    assert first_dropdown.value == "fp16"


def test_picks_survive_session_changes_where_their_nodes_still_exist(tmp_path: Path) -> None:
    """Picks were thrown away by any session change, e.g. the calibration the user ran before applying int8."""
    from workbench.recipe import BypassNode, CalibrationSettings

    path = tmp_path / "chain.onnx"
    onnx.save(_chain_model(3), path)
    tab = PrecisionTab(Session(path, cache_dir=tmp_path / "cache"), Status())
    tab.set_choice("conv0", "fp16")
    tab.set_choice("relu1", "bf16")
    tab.filter.value = "add2"
    tab.page_rows[0][2].value = "fp16"  # a pick made in the row's dropdown
    picks = {"conv0": "fp16", "relu1": "bf16", "add2": "fp16"}
    assert {n: tab.choices()[n] for n in picks} == picks
    tab.session.set_calibration(CalibrationSettings(method="max", samples=8))
    assert {n: tab.choices()[n] for n in picks} == picks  # a calibration keeps them
    assert tab.page_rows[0][0].value == "add2" and tab.page_rows[0][2].value == "fp16"  # the row shows it too
    tab.session.apply(BypassNode(node="relu1"))  # an edit elsewhere: relu1 is gone, the other picks stay
    assert "relu1" not in tab.choices()
    assert tab.choices()["conv0"] == "fp16" and tab.choices()["add2"] == "fp16"
    assert tab.choices()["relu0"] == "fp32"
    assert "fp16: 2" in tab.summary.value
    tab.apply_button.click()  # applied: the rows now show the model's precisions
    assert tab.status.state == "ok", tab.status.message
    assert node_precisions(tab.session.model)["add2"] == "fp16"
    tab.session.undo()  # undoing the apply brings the model's fp32 back, not the applied picks as pending
    assert tab.choices()["conv0"] == "fp32" and tab.choices()["add2"] == "fp32"
