"""The graph widget's data (workbench/plots/graph_data.py) and its kernel-side API, without a browser."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from models import conv_bn_relu_model
from onnx import TensorProto, helper, numpy_helper

from workbench.graph import load_model
from workbench.plots.graph_data import (
    MISSING,
    engine_graph,
    engine_graph_json,
    graph_json,
    key_attributes,
    op_color,
    overlay,
    scope_of,
)
from workbench.ui.graph_widget import STATIC, GraphWidget


def _constant_weights_model() -> onnx.ModelProto:
    """PaddlePaddle style: Conv weight and bias come from Constant nodes; a Constant shape feeds a Reshape."""
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "conv2d_0.w_0")
    b = numpy_helper.from_array(np.zeros(4, np.float32), "conv2d_0.b_0")
    shape = numpy_helper.from_array(np.array([1, -1], np.int64), "shape_0")
    nodes = [
        helper.make_node("Constant", [], [w.name], name="constant_0", value=w),
        helper.make_node("Constant", [], [b.name], name="constant_1", value=b),
        helper.make_node("Conv", ["image", w.name, b.name], ["conv_out"], name="/backbone/stem/conv2d_0",
                         kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], dilations=[1, 1], group=1),
        helper.make_node("Relu", ["conv_out"], ["relu_out"], name="/backbone/stem/relu_0"),
        helper.make_node("Constant", [], [shape.name], name="constant_2", value=shape),
        helper.make_node("Reshape", ["relu_out", shape.name], ["flat"], name="/head/reshape_0"),
        helper.make_node("Transpose", ["flat"], ["out"], name="transpose_0", perm=[1, 0]),
    ]
    graph = helper.make_graph(nodes, "paddle_like",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 8, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model)


def test_constant_nodes_are_folded_into_their_consumers():
    model = _constant_weights_model()
    g = graph_json(model)
    ops = [n["op"] for n in g["nodes"]]
    assert "Constant" not in ops
    assert ops == ["Input", "Conv", "Relu", "Reshape", "Transpose", "Output"]
    nodes = {n["id"]: n for n in g["nodes"]}
    assert nodes["/backbone/stem/conv2d_0"]["w"] == [["conv2d_0.w_0", "4x3x3x3", "f32"], ["conv2d_0.b_0", "4", "f32"]]
    assert nodes["/head/reshape_0"]["w"] == [["shape_0", "2", "i64"]]
    assert "w" not in nodes["/backbone/stem/relu_0"]
    assert g["counts"] == {"nodes": 7, "folded": 3, "weights": 3}
    tensors = [e[2] for e in g["edges"]]  # no edge carries a weight
    assert tensors == ["image", "conv_out", "relu_out", "flat", "out"]


def test_initializer_weights_are_folded_too():
    model = load_model(conv_bn_relu_model())
    g = graph_json(model)
    conv = next(n for n in g["nodes"] if n["id"] == "block1.conv")
    w = next(i for i in model.graph.initializer if i.name == next(x for x in model.graph.node
                                                                  if x.name == "block1.conv").input[1])
    assert conv["w"][0] == [w.name, "x".join(map(str, w.dims)), "f32"]
    assert len(g["nodes"]) == len(model.graph.node) + 2  # + graph input and output
    assert not any(e[2] == w.name for e in g["edges"])


def test_edges_are_labelled_with_shape_and_dtype():
    g = graph_json(_constant_weights_model())
    ids = [n["id"] for n in g["nodes"]]
    label = {e[2]: e[3] for e in g["edges"]}
    assert label["image"] == "batchx3x8x8 f32"  # a symbolic dim shows its name
    assert label["conv_out"] == "batchx4x4x4 f32"  # stride 2, pad 1 on 8x8
    edge = next(e for e in g["edges"] if e[2] == "conv_out")
    assert (ids[edge[0]], ids[edge[1]]) == ("/backbone/stem/conv2d_0", "/backbone/stem/relu_0")
    assert ids[0] == "in:image" and ids[-1] == "out:out"


def test_name_scopes():
    assert scope_of("/backbone/layer1/layer1.0/conv1/Conv") == "backbone/layer1/layer1.0/conv1"
    assert scope_of("/Relu") == "" and scope_of("conv2d_12") == ""
    g = graph_json(_constant_weights_model())
    scopes = {n["id"]: n.get("sc", "") for n in g["nodes"]}
    assert scopes["/backbone/stem/conv2d_0"] == "backbone/stem" and scopes["/head/reshape_0"] == "head"
    assert scopes["transpose_0"] == ""


def test_key_attributes_are_short_and_skip_no_op_values():
    model = _constant_weights_model()
    conv, transpose = model.graph.node[2], model.graph.node[6]
    assert key_attributes(conv) == [["k", "3x3"], ["s", "2x2"], ["p", "1x1x1x1"]]  # dilations 1, group 1 left out
    assert key_attributes(transpose) == [["perm", "1x0"]]
    cast = helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT16)
    assert key_attributes(cast) == [["to", "f16"]]


def test_op_colours_are_stable_across_models_and_edits():
    a = graph_json(_constant_weights_model())["colors"]
    b = graph_json(load_model(conv_bn_relu_model()))["colors"]
    assert a["Conv"] == b["Conv"] == op_color("Conv") and a["Relu"] == b["Relu"]
    assert op_color("Conv") != op_color("Relu")
    # an op outside the fixed palette gets the same hashed colour in every process (str hashes are salted per
    # process, so a colour from hash() would change between sessions and in an exported page)
    code = "from workbench.plots.graph_data import op_color; print(op_color('MyCustomOp'))"
    seen = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip() for seed in ("1", "2")}
    assert seen == {op_color("MyCustomOp")} and op_color("MyCustomOp") != op_color("OtherOp")
    assert op_color("MyCustomOp").startswith("#") and len(op_color("MyCustomOp")) == 7


def test_numeric_overlay_scale_legend_and_missing_values():
    ov = overlay({"a": 1.0, "b": 3.0, "c": 2.0, "d": float("nan"), "e": None}, "ms")
    assert ov["kind"] == "numeric" and ov["title"] == "ms"
    assert ov["colors"]["a"] == "#440154" and ov["colors"]["b"] == "#fde725"  # low and high ends of the scale
    assert ov["colors"]["c"] not in ("#440154", "#fde725")
    assert "d" not in ov["colors"] and "e" not in ov["colors"]  # NaN and None: no value (drawn MISSING)
    assert [x[0] for x in ov["legend"]] == ["1", "2", "3"]
    log = overlay({"a": 0.001, "b": 0.1}, "rel L2", log=True)
    assert [x[0] for x in log["legend"]] == ["0.001", "0.01", "0.1"]


def test_category_overlay_has_one_colour_per_value():
    ov = overlay({"a": "fp16", "b": "fp32", "c": "fp16", "d": "int8"}, "precision")
    assert ov["kind"] == "category"
    assert ov["colors"]["a"] == ov["colors"]["c"] != ov["colors"]["b"] != ov["colors"]["d"]
    assert ov["legend"] == [["fp16", op_color("fp16")], ["fp32", op_color("fp32")], ["int8", op_color("int8")]]


def test_widget_api_keeps_known_names_and_colours():
    model = load_model(conv_bn_relu_model())
    w = GraphWidget(model)
    w.select(["fc", "not-a-node"])
    assert w.selected == ["fc"]
    w.highlight = ["block1.conv", "fc"]
    smaller = onnx.ModelProto()
    smaller.CopyFrom(model)
    del smaller.graph.node[-1]  # fc gone
    smaller.graph.output[0].name = smaller.graph.node[-1].output[0]
    w.set_model(smaller)
    assert w.selected == [] and w.highlight == ["block1.conv"]
    w.set_overlay({"block1.conv": 2.0, "block2.conv": 1.0}, "ms")
    assert w.colour_of("block1.conv") == "#fde725" and w.colour_of("pool") == MISSING
    w.set_overlay(None)
    assert w.overlay == {} and w.colour_of("pool") == op_color("GlobalAveragePool")
    assert "render" in w._esm and (STATIC / "graph.js").read_text() == w._esm  # the bundle, read from the package


def test_engine_graph_links_layers_to_onnx_nodes():
    layers = [
        {"name": "conv1 + relu1", "type": "CaskConvolution", "inputs": ["x"], "outputs": ["r1"],
         "precision": "fp16", "onnx_nodes": ["conv1", "relu1"]},
        {"name": "Reformat", "type": "Reformat", "inputs": ["r1"], "outputs": ["r1f"], "precision": "fp32"},
        {"name": "fc", "type": "Gemm", "inputs": ["r1f"], "outputs": ["y"], "onnx_nodes": ["fc"]},
    ]
    g = engine_graph_json(layers)
    assert [n["op"] for n in g["nodes"]] == ["CaskConvolution", "Reformat", "Gemm", "Input", "Output"]
    assert [n["id"] for n in g["nodes"]] == ["conv1 + relu1", "Reformat", "fc", "in:x", "out:y"]
    assert [(e[0], e[1], e[2]) for e in g["edges"]] == [(3, 0, "x"), (0, 1, "r1"), (1, 2, "r1f"), (2, 4, "y")]
    assert g["links"] == {"conv1 + relu1": ["conv1", "relu1"], "fc": ["fc"]}
    assert ["prec", "fp16"] in g["nodes"][0]["at"]
    assert set(g["colors"]) == {"CaskConvolution", "Reformat", "Gemm", "Input", "Output"}


def test_engine_graph_of_real_a100_layer_info():
    from workbench.profile import read_layer_info

    folder = Path(__file__).resolve().parents[1] / "sample_models" / "trt_artifacts" / "resnet18_a100_fp16"
    info = read_layer_info(folder / "resnet.onnx.engine.graph.json")
    g = engine_graph(info)
    layers = [n for n in g["nodes"] if n["op"] not in ("Input", "Output")]
    assert [n["id"] for n in layers] == [x.name for x in info.layers]
    assert layers[0]["op"] == "Reformat" and ["prec", "fp16"] in layers[0]["at"]
    conv = next(n for n in layers if n["id"] == "Conv_0 + Relu_1")
    assert g["links"]["Conv_0 + Relu_1"] == ["Conv_0", "Relu_1"] and conv["op"] == "CaskConvolution"
    label = {e[2]: e[3] for e in g["edges"]}
    assert label["onnx::MaxPool_125"] == "32x64x112x112 fp16"
    ids = [n["id"] for n in g["nodes"]]
    assert "in:input.1" in ids and sum(i.startswith("out:") for i in ids) == 1
    # every layer but the first reads what an earlier layer wrote: one connected chain from the input
    assert {e[1] for e in g["edges"]} >= {k for k, n in enumerate(g["nodes"]) if n["op"] != "Input"}


def test_profile_tab_engine_graph_coloured_by_time_and_linked_to_onnx_nodes(tmp_path):
    from test_profile_trt import graph, prof

    from workbench.session import Session
    from workbench.ui.common import Status
    from workbench.ui.profile_tab import ProfileTab

    tab = ProfileTab(Session("digits_cnn", cache_dir=tmp_path / "cache"), Status())
    tab.layers_path.value, tab.profile_path.value, tab.label.value = str(graph("fp16")), str(prof("fp16")), "fp16"
    tab.import_button.click()
    assert tab.status.state == "ok", tab.status.message
    tab.view.value = "engine graph"
    eg = tab.engine_graph
    assert tab._chart_box.children == (eg, tab.linked)
    table = tab.profiles["fp16"]
    layers = [n["id"] for n in eg.graph["nodes"] if n["op"] not in ("Input", "Output")]
    assert layers == table.column("name")  # one box per fused layer and reformat
    slowest = max(table.records(), key=lambda r: r["median_ms"])
    assert eg.overlay["title"] == "median ms" and eg.colour_of(slowest["name"]) == "#fde725"  # top of the scale
    eg.set_state({"selected": ["Conv_0 + Relu_1"]})  # a click in the browser
    assert tab.linked_nodes == ["Conv_0", "Relu_1"]
    assert "<code>Conv_0</code>" in tab.linked.value and "<code>Relu_1</code>" in tab.linked.value
    tab.view.value = "layers"
    assert tab._chart_box.children == (tab.chart,) and tab.linked.value == ""
    tab.shown.value = None  # an ONNX Runtime profile has no engine layers: the view says so
    tab.iterations.value = 2
    tab.ort_button.click()
    tab.wait()
    tab.view.value = "engine graph"
    assert tab._chart_box.children == (tab.linked,) and "no engine layer information" in tab.linked.value


def test_named_overlays_for_the_colour_menu(tmp_path):
    from workbench.precision import convert_precision
    from workbench.session import Session
    from workbench.ui.common import Status
    from workbench.ui.model_tab import ModelTab

    w = GraphWidget(load_model(conv_bn_relu_model()))
    w.add_overlay("ms", {"fc": 2.0, "pool": 1.0})
    assert list(w.overlays) == ["ms"] and w.overlay == {}  # offered, not shown
    w.add_overlay("error", {"fc": "high"}, show=True)
    assert w.overlay["title"] == "error" and w.colour_of("fc") == op_color("high")
    w.add_overlay("error", {"fc": "low"})  # replacing the shown overlay refreshes it
    assert w.colour_of("fc") == op_color("low")
    w.remove_overlay("error")
    assert w.overlay == {} and list(w.overlays) == ["ms"]

    fp16 = convert_precision(load_model(conv_bn_relu_model()), "fp16")
    tab = ModelTab(Session(fp16, cache_dir=tmp_path / "c"), Status())
    precision = tab.graph.overlays["precision"]  # the Model tab offers precision per node
    assert precision["values"]["block1.conv"] == "fp16" and precision["kind"] == "category"
    assert not any(n.startswith("Cast") or "cast" in n.lower() for n in precision["values"])
