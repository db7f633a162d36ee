"""Calibrate tab, headless: choose data and method, click Calibrate, wait, assert histograms, thresholds,
overrides and the quantize edit (real ONNX Runtime calibration)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench.precision import ScaleCache, activation_tensors, node_precisions
from workbench.session import Session
from workbench.ui.calibrate_tab import RANDOM, CalibrateTab
from workbench.ui.common import Status


@pytest.fixture
def tab(tmp_path: Path) -> CalibrateTab:
    return CalibrateTab(Session("digits_cnn", cache_dir=tmp_path / "cache"), Status())


def test_calibrate_shows_histograms_and_thresholds(tab: CalibrateTab) -> None:
    assert tab.data.value.endswith("digits_calib.npz") and RANDOM in tab.data.options
    tab.method.value = "percentile"
    tab.run_button.click()
    tab.wait()
    assert tab.status.state == "ok", tab.status.message
    assert tab.progress.value == 1.0 and tab.phase.value == "done: 300 samples"
    assert list(tab.tensor.options) == activation_tensors(tab.session.model)
    names = [t.name for t in tab.figure.data]
    assert names == ["histogram", "threshold:max", "threshold:percentile", "threshold:entropy", "threshold:mse",
                     "threshold:auto"]
    stats = tab.cache.tensors[tab.tensor.value]
    assert tab.figure.data[2].x[0] == pytest.approx(stats.thresholds["percentile"])
    assert sum(tab.figure.data[0].y) == sum(stats.hist)
    assert "◀ used" in tab.thresholds.value and tab.session.recipe.calibration.method == "percentile"
    saved = list((tab.session.cache_dir / "scales").glob("*.json"))
    assert any(p.stem == tab.cache.digest() for p in saved)


def test_override_scale_and_quantize(tab: CalibrateTab) -> None:
    tab.run_button.click()
    tab.wait()
    tab.tensor.value = "/pool/MaxPool_output_0"
    tab.override.value = 3.0
    tab.override_button.click()
    assert tab.status.state == "ok", tab.status.message
    assert tab.tensor.value == "/pool/MaxPool_output_0"
    assert [t.x[0] for t in tab.figure.data if t.name == "threshold:override"] == [3.0]
    digest = tab.cache.digest()
    on_disk = json.loads((tab.session.cache_dir / "scales" / f"{digest}.json").read_text())
    assert on_disk["tensors"]["/pool/MaxPool_output_0"]["override"] == 3.0
    tab.quantize_button.click()
    assert tab.status.state == "ok", tab.status.message
    edit = tab.session.recipe.edits[-1]
    assert edit.kind == "quantize" and edit.scales == digest
    assert node_precisions(tab.session.model)["/down/down.0/Conv"] == "int8"
    scale = next(i for i in tab.session.model.graph.initializer if i.name == "/pool/MaxPool_output_0__scale")
    from onnx import numpy_helper

    assert numpy_helper.to_array(scale) == pytest.approx(3.0 / 127.0)
    assert ScaleCache.load(tab.session.cache_dir / "scales" / f"{digest}.json").tensors[
        "/pool/MaxPool_output_0"].value == 3.0


def test_bad_override_and_cancel(tab: CalibrateTab) -> None:
    tab.override_button.click()
    assert tab.status.state == "error" and "Calibrate first" in tab.status.hint
    original = tab._on_progress

    progress_seen: list[int] = []

    def cancel_after_first(done: float, total: float, phase: str = "") -> None:
        progress_seen.append(int(done))
        original(done, total, phase)
        tab.cancel_button.click()

    tab._on_progress = cancel_after_first  # the user clicks Cancel while it runs
    tab.run_button.click()
    tab.wait()
    # a cancelled job shows "cancelled", not the error its call raised on stopping; nothing was recorded or saved
    assert tab.status.state == "idle" and tab.phase.value == "cancelled" and progress_seen == [16]
    assert not tab.run_button.disabled and tab.cache is None and tab.session.recipe.calibration is None
    assert not (tab.session.cache_dir / "scales").exists()
    tab.data.value = "/nonexistent/data.npz"
    tab._on_progress = original
    tab.run_button.click()
    tab.wait()
    assert tab.status.state == "error" and "not found" in tab.status.message


def test_random_data_is_flagged(tab: CalibrateTab) -> None:
    tab.data.value = RANDOM
    with pytest.warns(UserWarning, match="RANDOM"):
        tab.run_button.click()
        tab.wait()
    assert tab.status.state == "ok", tab.status.message
    assert tab.session.recipe.calibration.data == "random"
    assert "RANDOM data" in tab.warnings.value


def test_methods_figure_ratios() -> None:
    from workbench.plots.calibration import methods_figure

    tensors = {"a": {"thresholds": {"max": 4.0, "entropy": 2.0, "mse": 3.0, "percentile": 3.5}},
               "b": {"thresholds": {"max": 10.0, "entropy": 1.0, "mse": 5.0, "percentile": 9.0}}}
    fig = methods_figure(tensors)
    by = {t.name: dict(zip(t.y, t.x)) for t in fig.data}
    assert by["entropy"] == {"a": 0.5, "b": 0.1} and by["max"] == {"a": 1.0, "b": 1.0}
    assert by["mse"]["b"] == 0.5 and by["percentile"]["a"] == 0.875


def test_python_data_source(tab: CalibrateTab, tmp_path: Path) -> None:
    import numpy as np

    from workbench.data import load_data

    calib = np.load(Path(tab.session.source_path).parent / "digits_calib.npz")["input"]
    for i in range(110):
        np.save(tmp_path / f"{i:03d}.npy", calib[i])
    tab.use_data(load_data(tmp_path, tab.session.model), "my images")
    tab.run_button.click()
    tab.wait()
    assert tab.status.state == "ok", tab.status.message
    assert tab.cache.samples == 110 and tab.session.recipe.calibration.data == "my images"
    assert tab.cache.tensors["input"].amax == float(calib[:110].max())
