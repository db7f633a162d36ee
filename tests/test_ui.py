"""Headless tests of the dashboard, the Model tab and its graph widget: set widget values, click, assert state."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from models import conv_bn_relu_model, dynamic_model, integer_ops_model
from onnx import TensorProto, helper

from workbench.graph import load_model
from workbench.plots.graph_data import MISSING
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


def _click(tab, name: str) -> None:
    """Deliver a click on node ``name`` as the graph widget's front end does: a state update of ``selected``
    arriving from the browser (tests/test_graph_widget_browser.py clicks a real box)."""
    tab.graph.set_state({"selected": [name]})


@pytest.mark.parametrize("name", ["digits_cnn", "digits_transformer", "fcn_dynamic"])
def test_workbench_opens_each_sample(name: str, tmp_path: Path):
    wb = Workbench(name, cache_dir=tmp_path / "c")
    model = load_model(name)
    assert wb.status.state == "ok" and f"{name}.onnx" in wb.name.value
    tab = wb.tabs["Model"]
    constants = sum(n.op_type == "Constant" for n in model.graph.node)  # folded into their readers
    drawn = [n["id"] for n in tab.graph.graph["nodes"] if not n["id"].startswith(("in:", "out:"))]
    assert drawn == [n.name for n in model.graph.node if n.op_type != "Constant"]
    assert [v for _, v in tab.rows.options] == drawn  # the layer table folds them the same way
    assert tab.graph.graph["counts"] == {**tab.graph.graph["counts"], "nodes": len(model.graph.node), "folded": constants}
    assert list(wb.tabs)[:1] == ["Model"] and len(wb.tab.children) == len(wb.tabs)


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


def test_selecting_a_row_of_a_big_model_selects_its_node_in_the_graph(tmp_path: Path):
    session = Session(_big_model(100), cache_dir=tmp_path / "c")
    wb = Workbench(session)
    tab = wb.tabs["Model"]
    assert len(tab.graph.graph["nodes"]) == 500 + 2 and tab.graph.selected == []
    tab.rows.value = "o90"  # far down: the front end centres on it (tests/test_graph_widget_browser.py)
    assert tab.graph.selected == ["o90"]


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
    assert tab.graph.selected == ["block1.conv"]
    tab.rows.value = None
    assert tab.graph.selected == []


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
    assert tab.graph.selected == ["fc"]


def test_highlight_and_color_by_hooks(wb: Workbench):
    tab = wb.tabs["Model"]
    tab.highlight(["block1.conv", "fc", "not-a-node"])
    assert tab.graph.highlight == ["block1.conv", "fc"]
    figure = tab.graph
    tab.color_by({"fc": 2.5, "block1.conv": 0.5}, "ms")
    assert tab.graph is figure  # one widget for the tab's life
    assert tab.graph.overlay["title"] == "ms" and tab.graph.overlay["kind"] == "numeric"
    assert tab.graph.colour_of("fc") != tab.graph.colour_of("block1.conv")
    assert tab.graph.colour_of("block1.relu") == MISSING  # no value
    assert tab.graph.highlight == ["block1.conv", "fc"]  # the rings survive the overlay
    _click(tab, "block1.relu")
    assert tab.selected == "block1.relu"
    tab.color_by(None)
    assert tab.graph.overlay == {} and tab.graph.colour_of("fc") == tab.graph.graph["colors"]["Gemm"]


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
    assert tab.graph.graph["counts"]["nodes"] == before  # the one graph widget got the model back
    assert "block2.bn" in tab.graph.node_names
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
    assert report is not None and report.backend == "tensorrt-rtx"
    assert report.parsable is True and report.buildable is True
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
    unsupported = {u.op for u in tab.last_report.unsupported}
    assert unsupported & {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"}
    assert "unsupported node(s)" in wb.status.message
    for op in unsupported:
        assert f"<td>{op}</td>" in tab.report.value
    # the unsupported nodes are ringed in the graph
    nodes = sorted({u.node for u in tab.last_report.unsupported})
    assert sorted(tab.graph.highlight) == nodes and len(nodes) > 0


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
    assert tab.last_report is not None and tab.last_report.buildable is True and tab.phase.value == "builds"
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
    # a dependency missing inside a tab's module is our bug: not skipped like a tab not written yet, not raised as a
    # traceback into the cell; the status says so, with the log holding the traceback, and no model is half-open
    wb = Workbench(str(cnn_path), cache_dir=tmp_path / "c")
    status = wb.status
    assert status.state == "error" and status.internal is not None
    assert status.message == (f"internal error while opening {cnn_path}: ModuleNotFoundError: "
                              "No module named 'somedep'")
    assert "report it" in status.hint and status.internal.log in status.hint
    assert "internal error" in status.widget.value and "somedep" in status.widget.value
    log = Path(status.internal.log).read_text()
    assert "Traceback" in log and "_tab_classes" in log and "ModuleNotFoundError: No module named 'somedep'" in log
    assert wb.session is None and list(wb.tabs) == [] and wb.tab.children == ()
    assert "no model open" in wb.name.value


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
    wb.tab.selected_index = 1  # the user clicks the tab: an internal error (not the user's fault), with its log
    assert wb.status.state == "error" and wb.status.internal is not None
    assert wb.status.message == "internal error while opening the Buggy tab: KeyError: 'internal bug'"
    assert "KeyError: 'internal bug'" in Path(wb.status.internal.log).read_text()
    page = wb.tab.children[1].children[0].value
    assert "failed to open" in page and "internal bug" in page and wb.status.internal.log in page
    with pytest.raises(KeyError, match="internal bug"):  # looked up from Python: raised, not dressed up
        wb.tabs["Buggy"]


def test_tabs_after_model_are_built_when_first_shown(wb: Workbench):
    titles = list(wb.tabs)
    assert titles[0] == "Model" and len(titles) == len(wb.tab.children)
    assert [wb.tabs.built(t) for t in titles] == [True] + [False] * (len(titles) - 1)
    if len(titles) < 2:
        return
    pages = wb.tab.children
    (placeholder,) = pages[1].children
    assert "opening the" in placeholder.value
    wb.tab.selected_index = 1  # the user clicks the second tab
    assert wb.tabs.built(titles[1]) and pages[1].children == (wb.tabs[titles[1]].widget,)
    assert placeholder.comm is None and wb.tabs[titles[1]].session is wb.session  # the placeholder is closed
    assert wb.tab.get_title(1) == titles[1]
    # the build filled its page: the Tab's pages stay the same objects (a new Tab.children re-creates, in the
    # browser, the view of every page after the replaced one, plotly charts included)
    assert wb.tab.children == pages
    wb.tabs[titles[-1]]
    assert wb.tab.children == pages and pages[-1].children == (wb.tabs[titles[-1]].widget,)


# --- wiring between tabs (the dashboard's job) -------------------------------------------------------


def _ringed(tab) -> list[str]:
    return sorted(tab.graph.highlight)


def _points_of(tab, names) -> list[str]:
    known = set(tab.graph.node_names)
    return sorted(n for n in names if n in known)


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
    added = list(edit.last_change.added)
    assert added == ["extra.relu"] and edit.last_change.removed == ()
    assert _ringed(model) == _points_of(model, added) and len(_ringed(model)) == 1
    assert "1 node(s) added (ringed), 0 removed" in model.highlight_note.value

    edit.select(["block2.relu"])
    edit.action.value = "bypass node"
    edit.apply_button.click()
    change = edit.last_change
    assert change.added == () and change.removed == ("block2.relu",)
    assert _ringed(model) == []  # exactly the added nodes: none
    assert "0 node(s) added, 1 removed" in model.highlight_note.value
    assert "1 removed" in wb.status.message

    edit.undo_button.click()  # undo brings the Relu back: that is the change now
    assert edit.last_change.added == ("block2.relu",)
    assert _ringed(model) == _points_of(model, ["block2.relu"])
    assert "last undo: 1 node(s) added" in model.highlight_note.value
    wb.session.set_build(BuildSettings(opt_level=2))  # a settings change leaves the rings alone
    assert _ringed(model) == _points_of(model, ["block2.relu"]) and "last undo" in model.highlight_note.value


def test_edits_are_ringed_before_the_edit_tab_is_built(wb: Workbench):
    model = wb.tabs["Model"]
    wb.session.apply(FuseBatchNorm())
    assert not wb.tabs.built("Edit")
    assert wb.session.last_change.added == () and _ringed(model) == []
    assert "0 node(s) added, 3 removed" in model.highlight_note.value
    model.highlight([])  # a caller without a note clears it
    assert model.highlight_note.value == ""
