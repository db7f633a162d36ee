"""Profile tab, headless: set widget values, click buttons, assert widget and tab state."""

from __future__ import annotations

import json

import pytest
from test_profile_trt import graph, prof

from workbench.profile import from_trtexec, total_ms
from workbench.session import Session
from workbench.ui.common import Status
from workbench.ui.profile_tab import ProfileTab


@pytest.fixture
def tab(tmp_path):
    session = Session("digits_cnn", cache_dir=tmp_path / "cache")
    return ProfileTab(session, Status())


def test_ort_profile_on_and_off(tab):
    tab.iterations.value = 2
    tab.ort_button.click()
    tab.wait()
    assert tab.status.state == "ok", tab.status.message
    assert tab.shown.value == "ort-cpu"
    table = tab.profiles["ort-cpu"]
    assert f"total {total_ms(table):.4g} ms" in tab.summary.value
    assert len(tab.chart.data) >= 1 and tab.table_html.value.count("<tr>") == min(20, len(table)) + 1
    tab.optimize.value = False
    tab.ort_button.click()
    tab.wait()
    off = tab.profiles["ort-cpu-noopt"]
    assert off.column("name") == [n.name for n in tab.session.model.graph.node]
    tab.view.value = "graph"  # the graph widget coloured by each node's time
    assert tab._chart_box.children == (tab.graph,)
    assert tab.graph.overlay["title"] == "ms" and tab.graph.overlay["kind"] == "numeric"
    timed = set(tab.graph.overlay["values"])
    assert timed and timed <= set(tab.graph.node_names)
    for view in ("op type", "precision", "treemap"):
        tab.view.value = view
        assert len(tab.chart.data) >= 1 and tab._chart_box.children == (tab.chart,)


def test_import_and_compare_a100_engines(tab):
    for label in ("fp32", "fp16"):
        tab.layers_path.value, tab.profile_path.value, tab.label.value = str(graph(label)), str(prof(label)), label
        tab.import_button.click()
        assert tab.status.state == "ok", tab.status.message
    assert list(tab.profiles) == ["fp32", "fp16"]
    assert tab.profiles["fp16"].column("name") == from_trtexec(graph("fp16"), prof("fp16")).column("name")
    raw = {x["Name"]: x for x in json.loads(graph("fp16").read_text())["Layers"]}
    assert raw["Conv_0 + Relu_1"]["TacticName"] in tab.table_html.value  # the slowest layer's tactic is listed
    tab.compare_with.value = ("fp32",)
    tab.compare_button.click()
    assert tab.status.state == "error" and "at least two" in tab.status.message
    tab.compare_with.value = ("fp32", "fp16")
    tab.compare_button.click()
    assert tab.status.state == "ok"
    totals = tab.compare_totals_chart.data[0]
    assert list(totals.y) == pytest.approx([total_ms(tab.profiles["fp32"]), total_ms(tab.profiles["fp16"])])
    assert "fp32" in tab.compare_html.value and "speedup" in tab.compare_html.value
    assert "<td>Conv_0 + Relu_1</td>" in tab.compare_html.value and "delta_ms" in tab.compare_html.value
    assert sum(tab.comparison.column("fp16_ms")) == pytest.approx(total_ms(tab.profiles["fp16"]))


def test_mismatched_import_shows_error_and_keeps_state(tab):
    tab.layers_path.value, tab.profile_path.value, tab.label.value = str(graph("fp32")), str(prof("fp32")), "ok"
    tab.import_button.click()
    tab.layers_path.value, tab.profile_path.value, tab.label.value = str(graph("fp32")), str(prof("fp16")), "bad"
    tab.import_button.click()
    assert tab.status.state == "error" and "different engines" in tab.status.message
    assert "--exportProfile" in tab.status.hint
    assert list(tab.profiles) == ["ok"] and tab.shown.value == "ok"
    tab.map_to_model.value = True  # the A100 ResNet layers do not name the digits model's nodes
    tab.profile_path.value = str(prof("fp32"))
    tab.import_button.click()
    assert tab.status.state == "error" and "names none of the model" in tab.status.message


def test_engine_without_build_is_an_error(tab):
    tab.engine_button.click()
    assert tab.status.state == "error" and "Build tab" in tab.status.message


def test_engine_built_here_shows_its_layers(tab):
    pytest.importorskip("tensorrt_rtx", reason="the rtx extra is not installed (make test installs it)")
    from workbench.build import build_engine
    from workbench.recipe import BuildSettings

    build_engine(tab.session.model, BuildSettings(), cache_dir=tab.session.cache_dir)
    tab.refresh_engines()
    assert len(tab.engines.options) == 1
    tab.engine_button.click()
    assert tab.status.state == "ok", tab.status.message
    label = tab.shown.value
    assert label.startswith("engine:")
    table = tab.profiles[label]
    names = {n.name for n in tab.session.model.graph.node}
    mapped = {n for ns in table.column("onnx_nodes") for n in ns}
    assert mapped and mapped <= names and total_ms(table) == 0


def test_ort_profiles_are_saved_and_reloaded_by_digest(tab):
    tab.iterations.value = 2
    tab.ort_button.click()
    tab.wait()
    saved = sorted((tab.session.cache_dir / "timings").glob(f"{tab.session.digest}-*.json"))
    assert [p.name for p in saved] == [f"{tab.session.digest}-ort-cpu.json"]
    again = ProfileTab(tab.session, Status())
    assert list(again.profiles) == ["ort-cpu"]
    assert again.profiles["ort-cpu"] == tab.profiles["ort-cpu"]
    assert again.status.state == "idle"


def test_dynamic_model_with_shapes(tmp_path):
    tab = ProfileTab(Session("fcn_dynamic", cache_dir=tmp_path / "c"), Status())
    tab.iterations.value = 1
    tab.shapes.value = "input:2x3x40x40x9"
    tab.ort_button.click()
    tab.wait()
    assert tab.status.state == "error" and "input" in tab.status.message and not tab.profiles
    tab.shapes.value = "input:2x3x40x40"
    tab.ort_button.click()
    tab.wait()
    assert tab.status.state == "ok", tab.status.message
    assert len(tab.profiles["ort-cpu"]) >= 1
    from workbench.profile import load_timings

    _, meta = load_timings(tab.session.cache_dir / "timings" / f"{tab.session.digest}-ort-cpu.json")
    assert meta["shapes"] == {"input": [2, 3, 40, 40]}  # the feeds ORT ran had the requested shape


def _bar_names(fig) -> set[str]:
    return {name for trace in fig.data for name in trace.customdata}


def test_charts_are_created_once_and_refilled_in_place(tab):
    """Each FigureWidget ships plotly.js to the browser: one per chart for the tab's life, refilled per action."""
    assert tab.chart is None and tab.compare_chart is None  # nothing shown yet: no FigureWidget
    tab.layers_path.value, tab.profile_path.value, tab.label.value = str(graph("fp32")), str(prof("fp32")), "fp32"
    tab.import_button.click()
    chart = tab.chart
    assert chart is not None and tab._chart_box.children == (chart,)
    top = tab.top.value
    slowest = {r["name"] for r in tab.profiles["fp32"].sort_by("median_ms", descending=True).head(top).records()}
    assert _bar_names(chart) == slowest
    tab.layers_path.value, tab.profile_path.value, tab.label.value = str(graph("fp16")), str(prof("fp16")), "fp16"
    tab.import_button.click()
    assert tab.chart is chart and tab._chart_box.children == (chart,)
    fp16 = tab.profiles["fp16"]
    slowest16 = {r["name"] for r in fp16.sort_by("median_ms", descending=True).head(top).records()}
    assert slowest16 != slowest and _bar_names(chart) == slowest16  # the second profile's bars, not the first's
    assert f"total {total_ms(fp16):.4g} ms" in chart.layout.title.text
    tab.view.value = "treemap"
    assert tab.chart is chart and chart.data[0].type == "treemap" and len(chart.data) == 1
    tab.view.value = "layers"
    assert tab.chart is chart and {t.type for t in chart.data} == {"bar"} and _bar_names(chart) == slowest16

    tab.compare_with.value = ("fp32", "fp16")
    tab.compare_button.click()
    assert tab.status.state == "ok", tab.status.message
    charts = (tab.compare_totals_chart, tab.precision_chart, tab.compare_chart)
    assert all(c is not None for c in charts) and tab._compare_box.children == charts
    assert list(charts[0].data[0].x) == ["fp32", "fp16"]
    tab.layers_path.value, tab.profile_path.value, tab.label.value = str(graph("fp32")), str(prof("fp32")), "again"
    tab.import_button.click()
    tab.compare_with.value = ("fp16", "again")
    tab.compare_button.click()
    assert tab.status.state == "ok", tab.status.message
    assert all(a is b for a, b in zip((tab.compare_totals_chart, tab.precision_chart, tab.compare_chart), charts))
    assert tab._compare_box.children == charts
    assert list(charts[0].data[0].x) == ["fp16", "again"]
    assert list(charts[0].data[0].y) == pytest.approx([total_ms(fp16), total_ms(tab.profiles["again"])])
