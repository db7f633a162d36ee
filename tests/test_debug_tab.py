"""Debug tab, headless: set widget values, click, wait for the background job, assert widgets and session."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.test_compare import OUTLIERS, TEST
from workbench.calibration import calibrate
from workbench.debug import outlier_channel_model
from workbench.graph import load_model, save_model
from workbench.plots.compare import node_error_colours, pareto_front
from workbench.recipe import Quantize
from workbench.session import Session
from workbench.ui.common import Status
from workbench.ui.debug_tab import DebugTab


def accuracy_of(model: onnx.ModelProto) -> float:
    data = np.load(TEST)
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return float((s.run(["logits"], {"input": data["input"]})[0].argmax(1) == data["label"]).mean())


@pytest.fixture
def tab(tmp_path):
    path = save_model(outlier_channel_model(load_model("digits_cnn"), OUTLIERS, channel=3, factor=64.0),
                      tmp_path / "outlier.onnx")
    session = Session(path, cache_dir=tmp_path / "cache")
    cache = calibrate(session.model, TEST.parent / "digits_calib.npz", method="max")
    session.apply(Quantize(method="max", scales=cache.save(session.cache_dir)))
    status = Status()
    t = DebugTab(session, status)
    t.data.value = str(TEST)
    return t


def test_compare_then_debug_then_apply(tab):
    session, status = tab.session, tab.status
    fp32 = accuracy_of(session.original)
    before = accuracy_of(session.model)
    assert before < fp32 - 0.02
    tab.compare_button.click()
    tab.wait()
    assert status.state == "ok", status.message
    assert "/res2/res2.0/Conv" in tab.summary.value and "first divergence" in tab.summary.value
    assert f"{fp32:.4f}" in tab.summary.value and f"{before:.4f}" in tab.summary.value
    total = next(t for t in tab.errors_fig.data if t.name.startswith("rel_l2 (total)"))
    assert len(total.y) == len(session.original.graph.node)
    assert tab.progress.value == 100
    overlay = tab.graph_fig.overlay  # the graph widget coloured by log10 rel L2 per node
    assert overlay["title"] == "log10 rel L2" and "/res2/res2.0/Conv" in overlay["colors"]
    assert tab.graph_fig.highlight == [tab.report.first_divergence["node"]]

    tab.metric.value = "accuracy"
    tab.tolerance.value = 0.001
    tab.debug_button.click()
    tab.wait()
    assert status.state == "ok", status.message
    keep = tab.result.plan.keep
    assert "/res2/res2.0/Conv" in keep and tab.result.plan.met
    assert "keep in high precision" in tab.plan.value and "/res2/res2.0/Conv" in tab.plan.value
    sens = tab.result.sensitivity
    assert (f"ranked {len(sens.table)} layers on {sens.samples} samples in {sens.seconds:.1f} s; "
            f"{len(tab.result.plan.tried)} plans measured") in tab.plan.value
    bars = tab.sensitivity_fig.data[0]
    assert bars.y[-1] == "/res2/res2.0/Conv"  # most sensitive on top
    ranked = tab.graph_fig.overlays["sensitivity"]  # offered in the graph's colour menu, highest score brightest
    assert ranked["colors"][sens.table.column("node")[0]] == "#fde725"
    assert len(tab.pareto_fig.data[0].x) == len(tab.result.plan.tried)
    assert tab.apply_button.disabled is False

    tab.apply_button.click()
    assert status.state == "ok", status.message
    assert session.recipe.edits[-1].exclude == tuple(keep)
    assert accuracy_of(session.model) >= fp32 - 0.001  # the session's own model now recovers FP32 accuracy
    assert tab.apply_button.disabled is True
    session.undo()
    assert accuracy_of(session.model) == pytest.approx(before)


def test_rank_by_the_damage_of_quantizing_one_layer_alone(tab):
    """The direction dropdown reaches debug_precision: each layer scored by the FP32 model with only it
    quantized; the outlier-reading conv still comes first and its score is that variant's own error."""
    tab.metric.value = "accuracy"
    tab.direction.value = "quantize_only"
    tab.debug_button.click()
    tab.wait()
    assert tab.status.state == "ok", tab.status.message
    sens = tab.result.sensitivity
    assert sens.direction == "quantize_only" and sens.ranking[0] == "/res2/res2.0/Conv"
    first = sens.table.records()[0]
    assert first["score"] == first["rel_l2_restored"] > 0  # quantize_only + rel_l2: the score is that error
    assert "only this layer quantized" in tab.sensitivity_fig.layout.title.text
    assert tab.result.plan.met and "/res2/res2.0/Conv" in tab.result.plan.keep


def test_bad_input_shows_error_and_keeps_session(tab):
    digest = tab.session.digest
    tab.data.value = "/nonexistent/data.npz"
    tab.debug_button.click()
    tab.wait()
    assert tab.status.state == "error" and "/nonexistent/data.npz" in tab.status.message and tab.status.hint
    tab.data.value = str(TEST)
    tab.candidate.value = "file"
    tab.compare_button.click()
    tab.wait()
    assert tab.status.state == "error" and "no candidate file" in tab.status.message
    assert tab.session.digest == digest and tab.apply_button.disabled


def test_plot_helpers():
    pts = [(0.25, 0.95), (0.5, 0.99), (0.6, 0.98), (1.0, 0.995), (0.3, 0.90)]
    assert pareto_front(pts) == [0, 1, 3]
    assert pareto_front([(1.0, 0.1), (0.5, 0.2), (0.7, 0.3)], higher_is_better=False) == [1, 0]
    colours = node_error_colours({"a": 0.1, "b": 0.001, "c": 0.0, "d": None})
    assert colours == {"a": pytest.approx(-1.0), "b": pytest.approx(-3.0), "c": pytest.approx(-3.0)}


def test_figures_are_created_on_first_use_and_refilled_by_later_runs(tab):
    """Each FigureWidget ships plotly.js to the browser: none before a run, then the same four (three figures and
    the graph widget) for the tab's life."""
    assert (tab.errors_fig, tab.graph_fig, tab.sensitivity_fig, tab.pareto_fig) == (None, None, None, None)
    assert tab._compare_figs.children == () and tab._debug_figs.children == ()

    def total(fig):
        return next(t for t in fig.data if t.name.startswith("rel_l2 (total)"))

    tab.compare_button.click()
    tab.wait()
    assert tab.status.state == "ok", tab.status.message
    errors, graph = tab.errors_fig, tab.graph_fig
    assert tab._compare_figs.children == (errors, graph) and tab.sensitivity_fig is None
    first_y = list(total(errors).y)
    assert first_y == pytest.approx(tab.report.layers.column("rel_l2"))
    tab.max_samples.value = 7
    tab.compare_button.click()
    tab.wait()
    assert tab.status.state == "ok", tab.status.message
    assert tab.errors_fig is errors and tab.graph_fig is graph and tab._compare_figs.children == (errors, graph)
    assert "<p>7 samples</p>" in tab.summary.value
    second_y = list(total(errors).y)
    assert second_y == pytest.approx(tab.report.layers.column("rel_l2")) and second_y != pytest.approx(first_y)
    assert [t.name for t in errors.data].count("rel_l2 (total)") == 1  # refilled, not appended to
    assert graph.graph["title"] == "Graph coloured by log10 rel L2 error"

    runs = []
    for metric, tolerance, samples in (("accuracy", 0.001, 0), ("rel_l2", 0.5, 7)):
        tab.metric.value, tab.tolerance.value, tab.max_samples.value = metric, tolerance, samples
        tab.debug_button.click()
        tab.wait()
        assert tab.status.state == "ok", tab.status.message
        runs.append((tab.sensitivity_fig, tab.pareto_fig, tab.result))
    (sens, par, _), (sens2, par2, second) = runs
    assert sens2 is sens and par2 is par and tab._debug_figs.children == (sens, par)
    expected = list(reversed(second.sensitivity.table.records()[:30]))
    assert list(sens.data[0].y) == [r["node"] for r in expected]
    assert list(sens.data[0].x) == pytest.approx([r["score"] for r in expected])  # the second run's scores
    first = list(reversed(runs[0][2].sensitivity.table.records()[:30]))
    assert second.sensitivity.metric != runs[0][2].sensitivity.metric
    assert [r["score"] for r in first] != pytest.approx([r["score"] for r in expected])  # so the check above bites
    assert len(par.data[0].x) == len(second.plan.tried)


def test_the_charts_limit_is_the_rel_l2_box_and_each_box_says_what_it_bounds(tab):
    """The chart drew "tolerance 0.1" (a fixed rel L2) beside a "tolerance" box holding the accuracy drop 0.001."""
    assert tab.tolerance.description == "accuracy drop" and tab.layer_limit.description == "rel L2 limit"
    tab.metric.value = "rel_l2"
    assert tab.tolerance.description == "output rel L2" and tab.tolerance.value == 0.05
    tab.metric.value = "accuracy"
    assert tab.tolerance.description == "accuracy drop" and tab.tolerance.value == 0.001
    tab.layer_limit.value = 0.02
    tab.max_samples.value = 16
    tab.compare_button.click()
    tab.wait()
    assert tab.status.state == "ok", tab.status.message
    assert tab.report.tolerance.rel_l2 == 0.02
    line = next(s for s in tab.errors_fig.layout.shapes if s.line.dash == "dash")
    assert line.y0 == line.y1 == 0.02
    assert [a.text for a in tab.errors_fig.layout.annotations] == ["rel L2 limit 0.02"]
    fd = tab.report.first_divergence  # the first tensor past the box's limit
    assert fd is not None and fd["rel_l2"] > 0.02
