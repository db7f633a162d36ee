"""The joined view (headless): a node selected in any tab shows, in one place beside the tabs, its ONNX node
(attributes, weight statistics), the engine layers it fused into with their times, its calibrated range and its
layerwise error; the Calibrate tab's placeholder and the graph's calibration overlay; the repair panel's shapes box."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_shape_ifs import shape_if_model

from workbench import Session
from workbench.graph import load_model
from workbench.plots.node_facts import HIST_BINS, node_facts
from workbench.ui.common import Status
from workbench.ui.dashboard import Workbench
from workbench.ui.repair_panel import RepairPanel

ART = Path(__file__).resolve().parents[1] / "sample_models" / "trt_artifacts" / "resnet18_a100_fp16"


@pytest.fixture
def wb(tmp_path):
    return Workbench("digits_cnn", cache_dir=tmp_path / "cache")


def _conv(wb: Workbench) -> onnx.NodeProto:
    return next(n for n in wb.session.model.graph.node if n.op_type == "Conv")


def test_model_tab_selection_shows_attributes_and_weight_statistics(wb):
    conv = _conv(wb)
    assert wb.node_view.facts is None and "select a node" in wb.node_view.html.value
    wb.tabs["Model"].rows.value = conv.name  # the user picks the row
    assert wb.selection.names == [conv.name] and wb.selection.source == "Model"
    facts = wb.node_view.facts
    assert facts.name == conv.name and facts.op == "Conv" and facts.precision == "fp32"
    assert dict(facts.attributes)["kernel_shape"] == "[3, 3]"
    weight = next(t for t in wb.session.model.graph.initializer if t.name == conv.input[1])
    w = numpy_helper.to_array(weight)
    (stats,) = [s for s in facts.weights if s.tensor == weight.name]
    assert stats.shape == w.shape and stats.source == "initializer"
    assert (stats.min, stats.max) == (pytest.approx(float(w.min())), pytest.approx(float(w.max())))
    assert stats.mean == pytest.approx(float(w.mean()), rel=1e-5) and stats.std == pytest.approx(float(w.std()), rel=1e-5)
    assert len(stats.hist) == HIST_BINS and sum(stats.hist) == w.size
    html = wb.node_view.html.value
    assert conv.name in html and "kernel_shape" in html and f"{w.max():.4g}" in html and "<svg" in html
    # a click in the graph widget (the front end sets `selected`) publishes too
    relu = next(n.name for n in wb.session.model.graph.node if n.op_type == "Relu")
    wb.tabs["Model"].graph.selected = [relu]
    assert wb.node_view.facts.name == relu and wb.node_view.facts.weights == ()


def test_constant_node_weights_and_dequantized_weights():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 2, 3, 3)).astype(np.float32)
    wq = np.clip(np.round(w / 0.02), -127, 127).astype(np.int8)
    nodes = [helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w, "w"), name="wconst"),
             helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("DequantizeLinear", ["wq", "s"], ["wd"], name="dq"),
             helper.make_node("Conv", ["y", "wd"], ["z"], name="qconv")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])],
                          [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4, 5, 5])],
                          [numpy_helper.from_array(wq, "wq"), numpy_helper.from_array(np.float32(0.02), "s")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    model = load_model(m)
    (stats,) = node_facts("conv", model).weights
    assert stats.source == "Constant node wconst" and stats.shape == (4, 2, 3, 3)
    assert stats.max == pytest.approx(float(w.max())) and stats.std == pytest.approx(float(w.std()), rel=1e-5)
    facts = node_facts("qconv", model)
    assert [s.tensor for s in facts.weights] == ["wq"] and facts.weights[0].source == "via DequantizeLinear dq"
    assert facts.weights[0].dtype == "int8" and facts.weights[0].max == float(wq.max())
    assert facts.precision == "int8"


def test_engine_layer_selection_shows_fused_layer_and_time(wb):
    tab = wb.tabs["Profile"]
    tab.layers_path.value = str(ART / "resnet.onnx.engine.graph.json")
    tab.profile_path.value = str(ART / "resnet.onnx.engine.profile.json")
    tab.label.value = "a100-fp16"
    tab.import_button.click()
    assert wb.status.state == "ok", wb.status.message
    tab.view.value = "engine graph"
    tab.engine_graph.selected = ["Conv_5 + Add_6 + Relu_7"]  # a click on the fused conv + residual add
    assert wb.selection.names == ["Conv_5", "Add_6", "Relu_7"] and wb.selection.source == "Profile"
    assert wb.node_view.nodes.options == ("Conv_5", "Add_6", "Relu_7")
    facts = wb.node_view.facts
    assert facts.name == "Conv_5" and not facts.in_model  # the A100 ResNet is not the digits model
    row = next(r for r in tab.profiles["a100-fp16"].records() if r["name"] == "Conv_5 + Add_6 + Relu_7")
    covering = [r["name"] for r in tab.profiles["a100-fp16"].records() if "Conv_5" in r["onnx_nodes"]]
    assert [x.layer for x in facts.layers] == covering and len(covering) > 1  # the layer and its input reformats
    (layer,) = [x for x in facts.layers if x.layer == row["name"]]
    assert layer.layer == row["name"] and layer.median_ms == row["median_ms"] and layer.precision == "fp16"
    assert layer.fused == ("Add_6", "Relu_7") and layer.tactic
    html = wb.node_view.html.value
    assert "Conv_5 + Add_6 + Relu_7" in html and f"{row['median_ms']:.4g}" in html and "a100-fp16" in html
    wb.node_view.nodes.value = "Add_6"  # step to another node of the layer
    assert wb.node_view.facts.name == "Add_6" and wb.node_view.facts.layers[-1].layer == row["name"]


def test_calibration_shows_range_and_colours_the_graph(wb):
    tab = wb.tabs["Calibrate"]
    assert tab.figure is None and tab._chart_box.children == (tab.chart_placeholder,)  # no empty plotly axes
    relu = next(n for n in wb.session.model.graph.node if n.op_type == "Relu")
    wb.tabs["Model"].rows.value = relu.name
    assert wb.node_view.facts.ranges == ()
    tab.run_button.click()
    tab.wait()
    assert wb.status.state == "ok", wb.status.message
    assert tab._chart_box.children == (tab.figure,) and len(tab.figure.data) >= 2
    stats = tab.cache.tensors[relu.output[0]]
    (out,) = [r for r in wb.node_view.facts.ranges if r.role == "output"]  # refreshed when the calibration ended
    assert out.tensor == relu.output[0] and out.amax == stats.value and out.hist == tuple(stats.hist)
    assert "calibration" in wb.node_view.html.value and f"{stats.value:.4g}" in wb.node_view.html.value
    graph = wb.tabs["Model"].graph
    overlay = graph.overlays["calibration amax"]
    assert overlay["values"][relu.name] == pytest.approx(stats.value, rel=1e-3)
    assert set(overlay["values"]) <= set(graph.node_names)


def test_layerwise_error_in_the_joined_view(wb):
    from workbench.compare import compare
    from workbench.precision import convert_precision

    model = wb.session.model
    fp16 = convert_precision(model, "fp16")
    data = dict(np.load(Path(__file__).resolve().parents[1] / "sample_models" / "digits_test.npz"))
    report = compare(model, fp16, {"input": data["input"][:16]}, layerwise=True)
    conv = _conv(wb)
    facts = node_facts(conv.name, model, layer_errors=report.layers)
    row = next(r for r in report.layers.records() if r["node"] == conv.name)
    (err,) = facts.errors
    assert err.tensor == row["tensor"] and err.rel_l2 == pytest.approx(row["rel_l2"]) and err.rel_l2 > 0


def test_static_shapes_repair_takes_its_shapes_from_the_box(tmp_path):
    session, status = Session(shape_if_model(), cache_dir=tmp_path / "c"), Status()
    panel = RepairPanel(session, status)
    panel.show(session.model)
    i = next(k for k, r in enumerate(panel.repairs) if r.kind == "static_shapes")
    box = panel.shapes[i]
    assert box.placeholder == "e.g. x:1x3" and box in panel.widget.children[i + 1].children
    panel.buttons[i].click()  # no shapes yet: a user error naming the input, nothing applied
    assert status.state == "error" and "'x'" in status.message and session.recipe.edits == ()
    box.value = "x:1xz"
    panel.buttons[i].click()
    assert status.state == "error" and "1xz" in status.message and session.recipe.edits == ()
    panel.show(session.model)
    panel.shapes[i].value = "1x3"  # one input: the name may be left out
    panel.buttons[i].click()
    assert status.state == "ok", status.message
    assert [e.to_dict() for e in session.recipe.edits][0] == {"kind": "set_shapes", "shapes": {"x": [1, 3]}}
    assert "If" not in {n.op_type for n in session.model.graph.node}  # the shape-dependent Ifs folded away


def test_export_html_embeds_the_graph_with_its_overlay(wb, tmp_path):
    import json
    import re

    graph = wb.tabs["Model"].graph
    graph.overlay = graph.overlays["precision"]  # picked in the widget's colour menu
    doc = wb.export_html(tmp_path / "r.html").read_text()
    assert "<h2>Graph coloured by precision</h2>" in doc and doc.count('class="wb-graph-static"') == 1
    state = json.loads(re.search(r"const state = (\{.*?\});\n", doc).group(1))
    assert state["overlay"]["title"] == "precision" and state["overlay"] == graph.overlay
    drawn = {n["id"] for n in state["graph"]["nodes"]}
    assert {n.name for n in wb.session.model.graph.node} <= drawn
    assert "<script src=" not in doc  # the bundle is inline: it opens offline
