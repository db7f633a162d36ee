"""The Model tab's check panel: after a real TensorRT-RTX check, a button per repair applies its recipe edits."""

from __future__ import annotations

import onnx
import pytest
from test_repairs import if_on_sample_rate_model, shared_dims_model

from workbench import Session
from workbench.ui.common import Status
from workbench.ui.model_tab import ModelTab
from workbench.workflows.model import CheckResult

pytest.importorskip("tensorrt_rtx", reason="the check builds with TensorRT-RTX (the rtx extra)")


def _tab(tmp_path, model: onnx.ModelProto) -> tuple[ModelTab, Status, Session]:
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    session, status = Session(str(path), cache_dir=tmp_path / "c"), Status()
    return ModelTab(session, status), status, session


def _check(tab: ModelTab) -> CheckResult:
    tab.check_button.click()
    tab.job.wait(120)
    assert tab.last_report is not None, tab.status.message
    return tab.last_report


def test_repair_button_splits_shared_dims_and_the_next_check_builds(tmp_path):
    tab, status, session = _tab(tmp_path, shared_dims_model())
    tab.shapes.value = "input:1x3x32x64,1x3x64x128,1x3x128x256"
    report = _check(tab)
    assert report.buildable is False and "Dimensions with name x must be equal" in tab.report.value
    (button,) = tab.repair_panel.buttons
    assert button.description == "repair: split_shared_dims" and button in tab.repair_panel.widget.children[1].children
    button.click()
    assert status.state == "ok" and "split_shared_dims" in status.message
    assert [e.kind for e in session.recipe.edits] == ["split_shared_dims"]
    dims = session.model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims[2:]] == ["x", "x_3"]
    assert tab.repair_panel.buttons == [] and tab.repair_panel.widget.children == ()  # stale once the model changed
    assert _check(tab).buildable is True
    session.undo()  # one undoable step
    assert session.recipe.edits == ()


def test_freeze_repair_takes_its_value_from_the_box(tmp_path):
    tab, status, session = _tab(tmp_path, if_on_sample_rate_model())
    assert _check(tab).buildable is False
    (button,) = tab.repair_panel.buttons
    box = tab.repair_panel.values[0]
    assert box.description == "sr" and box.placeholder == "e.g. 16000"
    button.click()  # no value yet: a user error with a hint, nothing applied
    assert status.state == "error" and status.internal is None and "'sr'" in status.message
    assert session.recipe.edits == ()
    box.value = "16000"
    button.click()
    assert status.state == "ok", status.message
    assert [e.to_dict() for e in session.recipe.edits] == [{"kind": "freeze_input", "input": "sr", "value": 16000},
                                                           {"kind": "fold_constant_if"}]
    assert not any(n.op_type == "If" for n in session.model.graph.node)
    assert _check(tab).buildable is True
