"""Headless tests of the dashboard, the Model tab and the graph view: set widget values, click, assert state."""

from __future__ import annotations

import time
from functools import cache
from pathlib import Path

import numpy as np
import onnx
import plotly.colors as pc
import pytest
from models import conv_bn_relu_model, dynamic_model, integer_ops_model
from onnx import TensorProto, helper
from plotly.callbacks import Points

from workbench.graph import load_model, tensor_infos
from workbench.plots.graph_view import graph_figure, graph_layout, layered_layout, points
from workbench.recipe import BuildSettings, FuseBatchNorm
from workbench.session import Session
from workbench.ui import dashboard
from workbench.ui.dashboard import Workbench
from workbench.ui.model_tab import ALL_OPS


@pytest.fixture
def cnn_path(tmp_path: Path) -> Path:
    path = tmp_path / "cnn.onnx"
    onnx.save(conv_bn_relu_model(), path)
    return path


@pytest.fixture
def wb(cnn_path: Path, tmp_path: Path) -> Workbench:
    return Workbench(str(cnn_path), cache_dir=tmp_path / "cache")


def _longest_path_layers(model: onnx.ModelProto) -> dict[str, int]:
    """Independent reference: layer = longest path (in edges) from a graph input, by memoised recursion."""
    producer = {o: n.name for n in model.graph.node for o in n.output}
    preds = {n.name: [producer[i] for i in n.input if i in producer] for n in model.graph.node}

    @cache
    def depth(name: str) -> int:
        return 1 + max((depth(p) for p in preds[name]), default=0)  # graph inputs sit at layer 0

    return {name: depth(name) for name in preds}


def _click(tab, name: str) -> None:
    """Deliver a click on node ``name`` to the graph's node trace, as plotly's front end does."""
    trace = tab._trace("nodes")
    i = list(trace.customdata).index(name)
    trace._dispatch_on_click(Points([i], [trace.x[i]], [trace.y[i]], "nodes", 1), None)


# --- graph view (pure) -----------------------------------------------------------------------------


def test_layout_layers_are_longest_paths():
    model = load_model(conv_bn_relu_model())
    lay = graph_layout(model)
    expected = _longest_path_layers(model)
    got = {n: int(-y) for n, y in zip(lay.names, lay.y)}
    assert got == expected
    # the residual Add waits for the longer branch: block3.relu, 9 nodes down the chain
    assert got["residual.add"] == 10
    # graph input on layer 0, graph output one below its producer
    io = dict(zip(lay.io_names, lay.io_y))
    assert io["input"] == 0 and io["logits"] == -(expected["fc"] + 1)


def test_sources_sit_above_their_first_consumer_on_the_transformer_sample():
    model = load_model("digits_transformer")
    lay = graph_layout(model)
    layer = {n: int(-y) for n, y in zip(lay.names, lay.y)}
    producer = {o: n.name for n in model.graph.node for o in n.output}
    consumers: dict[str, list[str]] = {}
    for n in model.graph.node:
        for i in n.input:
            if i in producer:
                consumers.setdefault(producer[i], []).append(n.name)
    constants = [n.name for n in model.graph.node if n.op_type == "Constant"]
    assert len(constants) > 10
    for c in constants:
        assert layer[c] == min(layer[u] for u in consumers[c]) - 1, c
    # every edge still points down
    for n in model.graph.node:
        for i in n.input:
            if i in producer:
                assert layer[producer[i]] < layer[n.name]
    # and the other nodes keep their longest-path layer from the graph input
    expected = _longest_path_layers(model)
    assert all(layer[n] == expected[n] for n in layer if n not in constants)


@pytest.mark.parametrize("name", ["digits_cnn", "digits_transformer", "fcn_dynamic"])
def test_workbench_opens_each_sample(name: str, tmp_path: Path):
    wb = Workbench(name, cache_dir=tmp_path / "c")
    model = load_model(name)
    assert wb.status.state == "ok" and f"{name}.onnx" in wb.name.value
    tab = wb.tabs["Model"]
    assert [v for _, v in tab.rows.options] == [n.name for n in model.graph.node]
    assert len(tab._trace("nodes").x) == len(model.graph.node)
    assert list(wb.tabs)[:1] == ["Model"] and len(wb.tab.children) == len(wb.tabs)


def test_barycentric_ordering_removes_a_crossing():
    # a -> d and b -> c: in graph order (c before d) the two edges cross; ordering must uncross them
    pos = layered_layout(["a", "b", "c", "d"], [("a", "d"), ("b", "c")])
    assert pos["a"][1] == pos["b"][1] == 0 and pos["c"][1] == pos["d"][1] == 1
    assert (pos["a"][0] - pos["b"][0]) * (pos["d"][0] - pos["c"][0]) > 0
    # nodes of one layer never overlap
    assert abs(pos["a"][0] - pos["b"][0]) >= 1 and abs(pos["c"][0] - pos["d"][0]) >= 1


def test_layout_survives_a_cycle_and_unknown_edges():
    pos = layered_layout(["a", "b", "c"], [("a", "b"), ("b", "a"), ("b", "c"), ("x", "c"), ("c", "c")])
    assert set(pos) == {"a", "b", "c"}
    assert pos["b"][1] < pos["c"][1]  # the edges that are not on the cycle still point down


def test_figure_nodes_edges_and_hover_match_the_model():
    model = load_model(conv_bn_relu_model())
    fig = graph_figure(model, highlight=["block2.conv"], selected="fc")
    traces = {t.name: t for t in fig.data}
    assert list(traces["nodes"].customdata) == [n.name for n in model.graph.node]
    producers = {o for n in model.graph.node for o in n.output} | {"input"}
    n_edges = sum(1 for n in model.graph.node for i in n.input if i in producers) + len(model.graph.output)
    assert sum(v is None for v in traces["edges"].x) == n_edges
    infos = tensor_infos(model)
    conv = next(n for n in model.graph.node if n.name == "block1.conv")
    hover = traces["nodes"].hovertext[0]
    assert "op: Conv" in hover
    assert "x".join(map(str, infos[conv.output[0]].shape)) in hover
    kernel = list(next(a.ints for a in conv.attribute if a.name == "kernel_shape"))
    assert f"kernel_shape = {kernel}" in hover
    lay = graph_layout(model)
    i, j = lay.index("block2.conv"), lay.index("fc")
    assert (traces["highlight"].x, traces["highlight"].y) == ((lay.x[i],), (lay.y[i],))
    assert (traces["selected"].x, traces["selected"].y) == ((lay.x[j],), (lay.y[j],))


def test_color_by_numeric_and_categorical_values():
    model = load_model(conv_bn_relu_model())
    names = [n.name for n in model.graph.node]
    times = {names[0]: 1.0, names[1]: 3.0}
    colors = graph_figure(model, color_by=times, color_title="ms").data[1].marker.color
    viridis = pc.sample_colorscale("Viridis", [0.0, 1.0])
    assert colors[0] == viridis[0] and colors[1] == viridis[1]
    assert set(colors[2:]) == {"#c8c8c8"}  # no value: grey
    colors = graph_figure(model, color_by={**times, names[2]: float("nan"), names[3]: 2.0}).data[1].marker.color
    assert colors[2] == "#c8c8c8" and colors[3] == pc.sample_colorscale("Viridis", [0.5])[0]  # NaN: no value
    fig = graph_figure(model, color_by={names[0]: "fp16", names[1]: "fp32", names[2]: "fp16"}, color_title="precision")
    node_colors = fig.data[1].marker.color
    assert node_colors[0] == node_colors[2] != node_colors[1]
    assert {t.name for t in fig.data[5:]} == {"fp16", "fp32"}  # one legend entry per value


def _big_model(blocks: int) -> onnx.ModelProto:
    nodes, x = [], "input"
    for b in range(blocks):  # swish-like block with a parallel branch: 5 nodes, 4 layers deep
        nodes += [
            helper.make_node("Relu", [x], [f"a{b}"], name=f"a{b}"),
            helper.make_node("Sigmoid", [f"a{b}"], [f"s{b}"], name=f"s{b}"),
            helper.make_node("Mul", [f"a{b}", f"s{b}"], [f"m{b}"], name=f"m{b}"),
            helper.make_node("Neg", [x], [f"n{b}"], name=f"n{b}"),
            helper.make_node("Add", [f"m{b}", f"n{b}"], [f"o{b}"], name=f"o{b}"),
        ]
        x = f"o{b}"
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_five_thousand_nodes_lay_out_in_one_pass():
    model = load_model(_big_model(1000))
    t0 = time.perf_counter()
    fig = graph_figure(model)
    print(f"\n5,000-node graph figure: {time.perf_counter() - t0:.2f} s")
    nodes = next(t for t in fig.data if t.name == "nodes")
    assert len(nodes.x) == 5000 and fig.data[0].type == "scattergl" and nodes.type == "scattergl"
    y = dict(zip(nodes.customdata, nodes.y))
    assert y["o999"] == -4000 and y["n999"] == -3997 and y["a0"] == -1  # 4 layers per block
    x = dict(zip(nodes.customdata, nodes.x))
    assert x["n500"] != x["a500"]  # the two branches of a block sit side by side
    assert fig.layout.yaxis.range == (-59.5, 0.8)  # opens on the first 60 layers


def test_selecting_a_node_out_of_view_scrolls_the_graph(tmp_path: Path):
    session = Session(_big_model(100), cache_dir=tmp_path / "c")
    wb = Workbench(session)
    tab = wb.tabs["Model"]
    assert tab.graph.layout.yaxis.range == (-59.5, 0.8)
    tab.rows.value = "o90"  # layer 364
    low, high = tab.graph.layout.yaxis.range
    assert low < -364 < high and high - low == pytest.approx(60.3)


# --- dashboard and Model tab (headless widgets) ----------------------------------------------------


def test_dashboard_header_tabs_and_display(wb: Workbench, cnn_path: Path):
    assert wb.session is not None and wb.session.source_path == cnn_path.resolve()
    assert list(wb.tabs)[0] == "Model" and wb.tab.get_title(0) == "Model"
    assert wb.tab.children[0] is wb.tabs["Model"].widget
    assert "cnn.onnx" in wb.name.value
    model = wb.session.model
    assert f"{len(model.graph.node)} nodes" in wb.line.value
    assert wb.status.state == "ok" and "cnn.onnx" in wb.status.message
    bundle = wb._repr_mimebundle_()
    view = bundle[0] if isinstance(bundle, tuple) else bundle
    assert view["application/vnd.jupyter.widget-view+json"]["model_id"] == wb.widget.model_id
    # tabs of other engineers that exist come after Model, in the agreed order
    titles = [t for t in wb.tabs]
    order = [m for m, _ in dashboard.TAB_MODULES]
    present = [type(wb.tabs[t]).__module__.rsplit(".", 1)[1] for t in titles[1:]]
    assert present == [m for m in order if m in present]


def test_summary_shows_onnx_counts(wb: Workbench):
    tab = wb.tabs["Model"]
    model = wb.session.model
    params = sum(int(np.prod(i.dims)) for i in model.graph.initializer)
    assert f"<b>params</b> {params:,}" in tab.summary.value
    assert f"<b>opset</b> {model.opset_import[0].version}" in tab.summary.value
    convs = sum(n.op_type == "Conv" for n in model.graph.node)
    assert f"Conv ×{convs}" in tab.summary.value
    assert "<code>input</code>" in tab.summary.value and "[2, 3, 16, 16]" in tab.summary.value


def test_filters_select_rows(wb: Workbench):
    tab = wb.tabs["Model"]
    model = wb.session.model
    all_names = [n.name for n in model.graph.node]
    assert [v for _, v in tab.rows.options] == all_names
    assert tab.count.value == f"{len(all_names)} of {len(all_names)} layers"
    assert tab.op.options == (ALL_OPS, *sorted({n.op_type for n in model.graph.node}))

    tab.op.value = "Conv"
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    assert [v for _, v in tab.rows.options] == convs
    assert tab.count.value == f"{len(convs)} of {len(all_names)} layers"

    tab.filter.value = "block2"
    assert [v for _, v in tab.rows.options] == ["block2.conv"]

    tab.op.value = ALL_OPS
    tab.filter.value = "relu"  # matches the op type as well as names
    assert [v for _, v in tab.rows.options] == [n.name for n in model.graph.node if n.op_type == "Relu"]

    tab.filter.value = "no such layer"
    assert tab.rows.options == () and tab.count.value == f"0 of {len(all_names)} layers"


def test_row_selection_shows_details_and_marks_the_graph(wb: Workbench):
    tab = wb.tabs["Model"]
    tab.rows.value = "block1.conv"
    assert '<b class="wb-node-name">block1.conv</b>' in tab.details.value
    assert "kernel_shape = <code>[3, 3]</code>" in tab.details.value
    i = tab.layout.index("block1.conv")
    assert tab._trace("selected").x == (tab.layout.x[i],) and tab._trace("selected").y == (tab.layout.y[i],)


def test_graph_click_selects_row_and_shows_details(wb: Workbench):
    tab = wb.tabs["Model"]
    tab.op.value = "Conv"  # fc is filtered out: the click must bring it back into view
    _click(tab, "fc")
    assert tab.rows.value == "fc" and tab.selected == "fc"
    assert tab.op.value == ALL_OPS and "fc" in [v for _, v in tab.rows.options]
    assert '<b class="wb-node-name">fc</b>' in tab.details.value
    assert '<span class="wb-node-op">Gemm</span>' in tab.details.value
    assert "transB = <code>1</code>" in tab.details.value
    fc = next(n for n in wb.session.model.graph.node if n.name == "fc")
    assert f"<code>{fc.output[0]}</code>" in tab.details.value
    i = tab.layout.index("fc")
    assert tab._trace("selected").x == (tab.layout.x[i],)


def test_highlight_and_color_by_hooks(wb: Workbench):
    tab = wb.tabs["Model"]
    tab.highlight(["block1.conv", "fc", "not-a-node"])
    xs, ys = points(tab.layout, ["block1.conv", "fc"])
    assert list(tab._trace("highlight").x) == xs and list(tab._trace("highlight").y) == ys
    figure = tab.graph
    tab.color_by({"fc": 2.5}, "ms")
    assert tab.graph is figure  # refilled in place: a new FigureWidget would ship plotly.js again
    i = tab.layout.index("fc")
    assert tab._trace("nodes").marker.color[i] != "#c8c8c8"
    assert list(tab._trace("highlight").x) == xs  # highlight survives the new figure
    _click(tab, "block1.relu")  # click handler re-attached to the new figure
    assert tab.selected == "block1.relu"


def test_session_change_refreshes_model_tab_and_header(wb: Workbench):
    tab = wb.tabs["Model"]
    before = len(wb.session.model.graph.node)
    tab.rows.value = "fc"
    wb.session.apply(FuseBatchNorm())
    after = wb.session.model
    assert not any(n.op_type == "BatchNormalization" for n in after.graph.node)
    assert [v for _, v in tab.rows.options] == [n.name for n in after.graph.node]
    assert len(tab.rows.options) < before
    assert "BatchNormalization" not in tab.op.options
    assert f"{len(after.graph.node)} nodes" in wb.line.value
    assert tab.selected == "fc"  # the selection survives an edit that keeps the node
    tab.rows.value = "block1.conv"
    fused = next(n for n in after.graph.node if n.name == "block1.conv")
    assert f"<code>{fused.input[1]}</code>" in tab.details.value
    wb.session.undo()
    assert len(tab.rows.options) == before
    assert len(tab._trace("nodes").x) == before  # the one graph widget was refilled
    original = next(n for n in wb.session.model.graph.node if n.name == "block1.conv")
    assert fused.input[1] != original.input[1]  # fusing gave the Conv new weights...
    assert f"<code>{original.input[1]}</code>" in tab.details.value  # ...and undo shows the original again
    figure = tab.graph
    wb.session.set_build(BuildSettings(opt_level=2))  # a settings change keeps the graph as it is
    assert tab.graph is figure and tab.selected == "block1.conv"


def test_workbench_on_a_session_and_in_memory_model(tmp_path: Path):
    session = Session(conv_bn_relu_model(), cache_dir=tmp_path / "c")
    wb = Workbench(session)
    assert wb.session is session and wb.tabs["Model"].session is session
    assert "conv_bn_relu" in wb.name.value  # no path: the graph's name
    wb = Workbench(conv_bn_relu_model(), cache_dir=tmp_path / "c")  # a ModelProto works too
    assert wb.status.state == "ok" and wb.session.source_path is None
    assert len(wb.tabs["Model"].rows.options) == len(conv_bn_relu_model().graph.node)


def test_workbench_opens_a_saved_recipe(cnn_path: Path, tmp_path: Path):
    session = Session(str(cnn_path), cache_dir=tmp_path / "c")
    session.apply(FuseBatchNorm())
    recipe = session.save(tmp_path / "fused.json")
    wb = Workbench(str(recipe), cache_dir=tmp_path / "c2")
    assert wb.status.state == "ok" and wb.session.source_path == cnn_path.resolve()
    assert [e.kind for e in wb.session.recipe.edits] == ["fuse_batchnorm"]
    assert [v for _, v in wb.tabs["Model"].rows.options] == [n.name for n in session.model.graph.node]
    assert "BatchNormalization" not in wb.tabs["Model"].op.options
    (tmp_path / "broken.json").write_text("{not json")
    wb.path.value = str(tmp_path / "broken.json")
    wb.open_button.click()
    assert wb.status.state == "error" and "broken.json" in wb.status.message
    assert wb.session.recipe.edits  # the open model is kept


def test_check_button_reports_dynamic_dims(tmp_path: Path):
    path = tmp_path / "dyn.onnx"
    onnx.save(dynamic_model(), path)
    wb = Workbench(str(path), cache_dir=tmp_path / "cache")
    tab = wb.tabs["Model"]
    tab.check_button.click()
    tab.job.wait()
    report = tab.last_report
    assert report is not None and report["backend"] == "tensorrt-rtx"
    assert report["parsable"] is True and report["buildable"] is True
    assert wb.status.state == "ok" and wb.status.message.startswith("TensorRT check: the model builds")
    assert "<b>buildable</b> yes" in tab.report.value
    assert tab.phase.value == "builds" and tab.progress.value == 1.0 and not tab.check_button.disabled
    assert "input &#x27;input&#x27; has dynamic dims" in tab.report.value  # the suggestion, escaped


def test_check_button_reports_unsupported_integer_ops(tmp_path: Path):
    path = tmp_path / "int.onnx"
    onnx.save(integer_ops_model(), path)
    wb = Workbench(str(path), cache_dir=tmp_path / "cache")
    tab = wb.tabs["Model"]
    tab.check_button.click()
    tab.job.wait()
    unsupported = {u["op"] for u in tab.last_report["unsupported"]}
    assert unsupported & {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"}
    assert "unsupported node(s)" in wb.status.message
    for op in unsupported:
        assert f"<td>{op}</td>" in tab.report.value
    # the unsupported nodes are ringed in the graph
    nodes = sorted({u["node"] for u in tab.last_report["unsupported"]})
    xs, ys = points(tab.layout, nodes)
    assert sorted(zip(tab._trace("highlight").x, tab._trace("highlight").y)) == sorted(zip(xs, ys))
    assert len(xs) == len(nodes) > 0


def test_cancelled_check_stops_the_child_and_leaves_the_tab_usable(wb: Workbench, monkeypatch):
    """Cancel right after the check's child process was taken: the child is gone, the tab says cancelled, no
    report is shown, and the next check runs to the end."""
    import threading

    from workbench.backends import worker

    started, procs = threading.Event(), []
    real_take = worker._take

    def take(*args, **kwargs):  # the real child, recorded
        proc = real_take(*args, **kwargs)
        procs.append(proc)
        started.set()
        return proc

    monkeypatch.setattr(worker, "_take", take)
    tab = wb.tabs["Model"]
    assert tab.cancel_button.layout.display != "none" and tab.cancel_button.disabled
    tab.check_button.click()
    assert tab.cancel_button.disabled is False and tab.check_button.disabled is True
    assert started.wait(300), "the check never started its child process"
    tab.cancel_button.click()
    tab.job.wait()
    assert len(procs) == 1 and procs[0].poll() is not None  # the child is gone
    assert tab.phase.value == "cancelled"
    assert wb.status.state == "idle" and wb.status.message == "checking the model with TensorRT: cancelled"
    assert tab.last_report is None and tab.report.value == ""
    assert tab.check_button.disabled is False and tab.cancel_button.disabled is True
    tab.check_button.click()  # still usable: the next check runs to the end
    tab.job.wait()
    assert wb.status.state == "ok", wb.status.message
    assert tab.last_report is not None and tab.last_report["buildable"] is True and tab.phase.value == "builds"
    assert len(procs) == 2 and procs[1].poll() is not None


def test_check_with_bad_shapes_shows_the_error(wb: Workbench):
    tab = wb.tabs["Model"]
    tab.shapes.value = "nosuchinput:1x3x16x16"
    tab.check_button.click()
    tab.job.wait()
    assert wb.status.state == "error"
    assert "nosuchinput" in wb.status.message and wb.status.hint
    assert tab.report.value == ""
    assert wb.session is not None and len(tab.rows.options) > 0  # the dashboard is still usable


def test_bad_path_shows_error_state_then_open_works(tmp_path: Path, cnn_path: Path):
    missing = tmp_path / "missing.onnx"
    wb = Workbench(str(missing), cache_dir=tmp_path / "cache")
    assert wb.session is None and wb.tabs == {} and wb.tab.children == ()
    assert wb.status.state == "error" and str(missing) in wb.status.message and wb.status.hint
    assert "no model open" in wb.name.value and wb.path.value == str(missing)

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not protobuf" * 10)
    wb.path.value = str(garbage)
    wb.open_button.click()
    assert wb.status.state == "error" and str(garbage) in wb.status.message and wb.session is None

    wb.path.value = str(cnn_path)
    wb.open_button.click()
    assert wb.status.state == "ok" and wb.session is not None
    assert wb.session.source_path == cnn_path.resolve()
    assert list(wb.tabs)[0] == "Model" and len(wb.tabs["Model"].rows.options) == len(wb.session.model.graph.node)


def test_failed_open_keeps_the_current_model(wb: Workbench, tmp_path: Path):
    session = wb.session
    wb.path.value = str(tmp_path / "nope.onnx")
    wb.open_button.click()
    assert wb.status.state == "error" and wb.session is session and "Model" in wb.tabs


def test_missing_tab_module_is_skipped_other_import_errors_surface(monkeypatch, cnn_path: Path, tmp_path: Path):
    real = dashboard.importlib.import_module

    def fake_import(name: str, *args):
        if name.endswith(".precision_tab"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        if name.endswith(".debug_tab"):
            raise ModuleNotFoundError("No module named 'somedep'", name="somedep")
        return real(name, *args)

    monkeypatch.setattr(dashboard.importlib, "import_module", fake_import)
    monkeypatch.setattr(dashboard, "TAB_MODULES", (("precision_tab", "PrecisionTab"),))
    wb = Workbench(str(cnn_path), cache_dir=tmp_path / "c")
    assert list(wb.tabs) == ["Model"]
    monkeypatch.setattr(dashboard, "TAB_MODULES", (("debug_tab", "DebugTab"),))
    with pytest.raises(ModuleNotFoundError, match="somedep"):
        Workbench(str(cnn_path), cache_dir=tmp_path / "c")


def test_a_tab_that_refuses_the_model_shows_why_others_work(monkeypatch, cnn_path: Path, tmp_path: Path):
    from workbench.errors import BackendUnavailable
    from workbench.ui.model_tab import ModelTab

    class RefusingTab:
        title = "Refusing"

        def __init__(self, session, status):
            raise BackendUnavailable(f"no engine for {session.source_path.name}", hint="install the thing")

    class BuggyTab:
        title = "Buggy"

        def __init__(self, session, status):
            raise KeyError("internal bug")

    monkeypatch.setattr(dashboard, "_tab_classes", lambda: [ModelTab, RefusingTab])
    wb = Workbench(str(cnn_path), cache_dir=tmp_path / "c")
    assert list(wb.tabs) == ["Model", "Refusing"] and wb.tab.get_title(1) == "Refusing"
    assert "no engine for cnn.onnx" in wb.tabs["Refusing"].widget.value
    assert "hint: install the thing" in wb.tabs["Refusing"].widget.value
    assert len(wb.tabs["Model"].rows.options) == len(wb.session.model.graph.node)
    monkeypatch.setattr(dashboard, "_tab_classes", lambda: [ModelTab, BuggyTab])
    wb = Workbench(str(cnn_path), cache_dir=tmp_path / "c")
    with pytest.raises(KeyError, match="internal bug"):  # internal bugs are not dressed up as user errors
        wb.tab.selected_index = 1
    assert "failed to open" in wb.tab.children[1].value and "internal bug" in wb.tab.children[1].value


def test_tabs_after_model_are_built_when_first_shown(wb: Workbench):
    titles = list(wb.tabs)
    assert titles[0] == "Model" and len(titles) == len(wb.tab.children)
    assert [wb.tabs.built(t) for t in titles] == [True] + [False] * (len(titles) - 1)
    if len(titles) < 2:
        return
    placeholder = wb.tab.children[1]
    assert "opening the" in placeholder.value
    wb.tab.selected_index = 1  # the user clicks the second tab
    assert wb.tabs.built(titles[1]) and wb.tab.children[1] is wb.tabs[titles[1]].widget
    assert wb.tab.children[1] is not placeholder and wb.tabs[titles[1]].session is wb.session
    assert wb.tab.get_title(1) == titles[1]


# --- wiring between tabs (the dashboard's job) -------------------------------------------------------


def _ringed(tab) -> list[tuple[float, float]]:
    ring = tab._trace("highlight")
    return list(zip(ring.x or (), ring.y or ()))


def _points_of(tab, names) -> list[tuple[float, float]]:
    return list(zip(*points(tab.layout, names))) if names else []


def test_a_node_picked_in_the_model_tab_is_selected_in_the_edit_tab(wb: Workbench):
    model = wb.tabs["Model"]
    titles = list(wb.tabs)
    assert "Edit" in wb.tabs and not wb.tabs.built("Edit")  # `in` does not build the tab
    model.rows.value = "block2.conv"  # picked before the Edit tab exists...
    assert not wb.tabs.built("Edit")
    wb.tab.selected_index = titles.index("Edit")  # ...and the user opens it
    edit = wb.tabs["Edit"]
    assert edit.selection == ["block2.conv"]
    _click(model, "fc")  # once built, a click in the graph goes straight through
    assert edit.selection == ["fc"]
    model.rows.value = "block1.relu"
    assert edit.selection == ["block1.relu"]
    model.filter.value = "no-such-layer"  # hiding the row in the table is not a new pick
    assert model.selected is None and edit.selection == ["block1.relu"]
    edit.select(["block1.conv", "fc"])  # the Edit tab's own multi-selection is its own
    assert model.selected is None


def test_pending_pick_goes_to_the_edit_tab_when_looked_up(wb: Workbench):
    _click(wb.tabs["Model"], "residual.add")
    _click(wb.tabs["Model"], "block3.conv")  # the last pick wins
    assert wb.tabs["Edit"].selection == ["block3.conv"]


def test_an_applied_edit_is_ringed_in_the_model_tab(wb: Workbench):
    model = wb.tabs["Model"]
    model.highlight(["fc"], note="slowest")  # e.g. another tab's rings: replaced by the next change
    edit = wb.tabs["Edit"]
    edit.select(["block1.conv"])
    edit.action.value = "insert node after output"
    edit.op.value, edit.name.value = "Relu", "extra.relu"
    edit.apply_button.click()
    assert wb.status.state == "ok", wb.status.message
    added = edit.last_change["added"]
    assert added == ["extra.relu"] and edit.last_change["removed"] == []
    assert _ringed(model) == _points_of(model, added) and len(_ringed(model)) == 1
    assert "1 node(s) added (ringed), 0 removed" in model.highlight_note.value

    edit.select(["block2.relu"])
    edit.action.value = "bypass node"
    edit.apply_button.click()
    change = edit.last_change
    assert change["added"] == [] and change["removed"] == ["block2.relu"]
    assert _ringed(model) == []  # exactly the added nodes: none
    assert "0 node(s) added, 1 removed" in model.highlight_note.value
    assert "1 removed" in wb.status.message

    edit.undo_button.click()  # undo brings the Relu back: that is the change now
    assert edit.last_change["added"] == ["block2.relu"]
    assert _ringed(model) == _points_of(model, ["block2.relu"])
    assert "last undo: 1 node(s) added" in model.highlight_note.value
    wb.session.set_build(BuildSettings(opt_level=2))  # a settings change leaves the rings alone
    assert _ringed(model) == _points_of(model, ["block2.relu"]) and "last undo" in model.highlight_note.value


def test_edits_are_ringed_before_the_edit_tab_is_built(wb: Workbench):
    model = wb.tabs["Model"]
    wb.session.apply(FuseBatchNorm())
    assert not wb.tabs.built("Edit")
    assert wb.session.last_change["added"] == [] and _ringed(model) == []
    assert "0 node(s) added, 3 removed" in model.highlight_note.value
    model.highlight([])  # a caller without a note clears it
    assert model.highlight_note.value == ""
