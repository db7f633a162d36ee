"""Per-tensor calibration methods: the Calibrate tab's 'method for this tensor', Quantize.methods, ScaleCache.with_methods
(real ONNX Runtime calibration on the digits CNN, headless)."""

from __future__ import annotations

from pathlib import Path

import pytest
from onnx import numpy_helper

from workbench.errors import CalibrationError
from workbench.precision import apply_precision_edit
from workbench.recipe import Quantize
from workbench.session import Session
from workbench.ui.calibrate_tab import CalibrateTab
from workbench.ui.common import Status

POOL = "/pool/MaxPool_output_0"


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> CalibrateTab:
    tab = CalibrateTab(Session("digits_cnn", cache_dir=tmp_path_factory.mktemp("c")), Status())
    tab.method.value = "entropy"  # the tab's method for every tensor; the tests override one tensor against it
    tab.run_button.click()
    tab.wait()
    assert tab.status.state == "ok", tab.status.message
    return tab


def _scale(model, tensor: str) -> float:
    init = next(i for i in model.graph.initializer if i.name == f"{tensor}__scale")
    return float(numpy_helper.to_array(init))


def test_a_tensor_gets_its_own_method_and_quantize_uses_it(calibrated: CalibrateTab, tmp_path: Path) -> None:
    tab = calibrated
    assert tab.cache.method == "entropy" and tab.methods == {} and tab.tensor_method.value == ""
    stats = tab.cache.tensors[POOL]
    assert stats.thresholds["max"] != pytest.approx(stats.thresholds["entropy"])  # else the test would prove nothing
    tab.tensor.value = POOL
    tab.tensor_method.value = "max"
    assert tab.status.state == "ok", tab.status.message
    assert tab.methods == {POOL: "max"}
    assert POOL in tab.methods_table.value and "max" in tab.methods_table.value
    used = [row for row in tab.thresholds.value.split("<tr>") if "◀ used" in row]
    assert len(used) == 1 and used[0].startswith("<td>max</td>")
    assert tab.override.value == pytest.approx(stats.thresholds["max"])
    other = next(t for t in tab.tensor.options if t != POOL)
    tab.tensor.value = other
    assert tab.tensor_method.value == "" and tab.methods == {POOL: "max"}  # showing another tensor changes nothing
    tab.tensor.value = POOL
    assert tab.tensor_method.value == "max"

    tab.quantize_button.click()
    assert tab.status.state == "ok", tab.status.message
    edit = tab.session.recipe.edits[-1]
    assert edit.kind == "quantize" and edit.methods == {POOL: "max"} and edit.method == "entropy"
    assert edit.to_dict()["methods"] == {POOL: "max"}
    model = tab.session.model
    assert _scale(model, POOL) == pytest.approx(stats.thresholds["max"] / 127.0)
    assert _scale(model, other) == pytest.approx(tab.cache.tensors[other].thresholds["entropy"] / 127.0)

    saved = tab.session.save(tmp_path / "r.json")  # the choice is in the recipe and replays
    again = Session.load(saved)
    assert again.recipe.edits[-1].methods == {POOL: "max"}
    assert _scale(again.model, POOL) == pytest.approx(stats.thresholds["max"] / 127.0)
    tab.session.undo()


def test_back_to_the_tabs_method_and_refusals(calibrated: CalibrateTab) -> None:
    tab = calibrated
    tab.tensor.value = POOL
    tab.tensor_method.value = "mse"
    assert tab.methods == {POOL: "mse"}
    tab.tensor_method.value = ""
    assert tab.methods == {} and tab.methods_table.value == ""
    with pytest.raises(CalibrationError, match="was not calibrated"):
        tab.set_tensor_method("no_such_tensor", "max")
    with pytest.raises(CalibrationError, match="not calibrated"):
        tab.cache.with_methods({"no_such_tensor": "max"})
    with pytest.raises(CalibrationError, match="no 'nope' threshold"):
        tab.cache.with_methods({POOL: "nope"})


def test_hand_override_wins_over_a_per_tensor_method(calibrated: CalibrateTab) -> None:
    tab = calibrated
    digest = tab.cache.save(tab.session.cache_dir)
    cache = tab.cache.with_methods({POOL: "max"})
    assert cache.amax()[POOL] == pytest.approx(tab.cache.tensors[POOL].thresholds["max"])
    cache.tensors[POOL].override = 2.5
    assert cache.with_methods({POOL: "mse"}).amax()[POOL] == 2.5
    edit = Quantize(scales=digest, methods={POOL: "percentile"})
    out = apply_precision_edit(tab.session.model, edit, cache_dir=tab.session.cache_dir)
    assert _scale(out, POOL) == pytest.approx(tab.cache.tensors[POOL].thresholds["percentile"] / 127.0)
