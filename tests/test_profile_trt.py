"""TensorRT timing import: the real A100 trtexec artefacts, a TensorRT 11 inspector fixture, real TensorRT-RTX layers."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from workbench.errors import DataError
from workbench.profile import (
    TIMING_COLUMNS,
    compare_profiles,
    from_layer_times,
    from_trtexec,
    group_times,
    layer_details,
    node_times,
    onnx_nodes_of,
    precision_counts,
    profile_summary,
    read_layer_info,
    read_profile_json,
    total_ms,
)

ART = Path(__file__).resolve().parents[1] / "sample_models" / "trt_artifacts"  # real A100 trtexec exports
ENGINES = {
    "fp32": ART / "resnet18_a100_fp32" / "resnet.onnx.engine",
    "fp16": ART / "resnet18_a100_fp16" / "resnet.onnx.engine",
    "int8": ART / "resnet18_a100_qat" / "resnet-qat.onnx.engine",
    "int8-residual": ART / "resnet18_a100_qat-residual" / "resnet-qat-residual.onnx.engine",
}


def graph(label: str) -> Path:
    return Path(f"{ENGINES[label]}.graph.json")


def prof(label: str) -> Path:
    return Path(f"{ENGINES[label]}.profile.json")


@pytest.fixture(scope="module")
def tables():
    return {label: from_trtexec(graph(label), prof(label)) for label in ENGINES}


def raw_profile(label: str) -> list[dict]:
    return [e for e in json.loads(prof(label).read_text()) if "name" in e]


def test_schema_and_row_order_follow_the_profile_file(tables):
    for label, t in tables.items():
        assert t.columns == TIMING_COLUMNS
        assert t.column("name") == [e["name"] for e in raw_profile(label)]


def test_exact_mappings_of_fused_layers(tables):
    rec = {r["name"]: r for r in tables["fp32"].records()}
    assert rec["Conv_0 + Relu_1"]["onnx_nodes"] == ["Conv_0", "Relu_1"]
    assert rec["Conv_5 + Add_6 + Relu_7"]["onnx_nodes"] == ["Conv_5", "Add_6", "Relu_7"]
    assert rec["reshape_after_Gemm_48"]["onnx_nodes"] == ["Gemm_48"]
    # a reformat layer is charged to the ONNX nodes of the layer it feeds
    assert rec["Reformatting CopyNode for Input Tensor 0 to Conv_43 + Add_44 + Relu_45"]["onnx_nodes"] == [
        "Conv_43", "Add_44", "Relu_45"]
    qat = {r["name"]: r for r in tables["int8"].records()}
    assert qat["layer1.0.conv2.weight + QuantizeLinear_32 + Conv_34 + Add_36 + Relu_37"]["onnx_nodes"] == [
        "QuantizeLinear_32", "Conv_34", "Add_36", "Relu_37"]
    fc = next(n for n in qat if n.startswith("fc.weight + "))
    assert qat[fc]["onnx_nodes"] == ["QuantizeLinear_255", "Gemm_257"]
    assert qat["copied_squeeze_after_(Unnamed Layer* 307) [ElementWise]"]["onnx_nodes"] == []
    residual = {r["name"]: r for r in tables["int8-residual"].records()}
    assert residual["conv1.weight + QuantizeLinear_7 + Conv_9 + MaxPool_12"]["onnx_nodes"] == [
        "QuantizeLinear_7", "Conv_9", "MaxPool_12"]


def test_pointwise_and_foreign_node_names():
    assert onnx_nodes_of("features.0.0.weight + QuantizeLinear_8 + Conv_12 + PWN(Clip_16)") == [
        "QuantizeLinear_8", "Conv_12", "Clip_16"]
    assert onnx_nodes_of("PWN(PWN(Sigmoid_3, Mul_4), Add_5)") == ["Sigmoid_3", "Mul_4", "Add_5"]
    nodes = [helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}"], name=f"n{i}") for i in range(5)]
    model = helper.make_model(helper.make_graph(nodes, "g", [helper.make_tensor_value_info("t0", 1, [1])],
                                                [helper.make_tensor_value_info("t5", 1, [1])]))
    assert onnx_nodes_of("{ForeignNode[n1...n3]}", model) == ["n1", "n2", "n3"]
    assert onnx_nodes_of("{ForeignNode[n1...n3]}") == ["n1", "n3"]


def test_totals_and_shares_match_the_files_own_numbers(tables):
    for label, t in tables.items():
        raw = raw_profile(label)
        assert total_ms(t) == pytest.approx(sum(e["medianMs"] for e in raw), rel=1e-9)
        assert t.column("mean_ms") == pytest.approx([e["averageMs"] for e in raw])
        # these files profile one iteration (count 1), so time share by median = trtexec's percentage
        assert t.column("pct") == pytest.approx([e["percentage"] for e in raw], abs=1e-3)
    summary = {r["label"]: r for r in profile_summary(tables).records()}
    assert summary["fp16"]["speedup"] == pytest.approx(
        sum(e["medianMs"] for e in raw_profile("fp32")) / sum(e["medianMs"] for e in raw_profile("fp16")))


def test_precision_counts_fp32_fp16_int8(tables):
    def formats(layer):
        return [t["Format/Datatype"] for t in layer["Inputs"] + layer["Outputs"]]

    for label in ("fp32", "fp16", "int8"):
        layers = json.loads(graph(label).read_text())["Layers"]
        counts = precision_counts(tables[label])
        assert sum(counts.values()) == len(layers)
        # independent rule on the raw strings: a layer touching Int8 is int8, else FP16 -> fp16, else fp32
        want_int8 = sum(any("Int8" in f for f in formats(x)) for x in layers)
        want_fp16 = sum(not any("Int8" in f for f in formats(x)) and any("FP16" in f for f in formats(x))
                        for x in layers)
        assert counts.get("int8", 0) == want_int8
        assert counts.get("fp16", 0) == want_fp16
        assert counts.get("fp32", 0) == len(layers) - want_int8 - want_fp16
    assert precision_counts(tables["fp32"]) == {"fp32": 32}
    assert set(precision_counts(tables["int8"])) == {"int8", "fp16", "fp32"}


def test_tactics_and_details_from_layer_info():
    info = read_layer_info(graph("fp16"))
    assert info.generation == "tensorrt-10" and info.io_tensors[0]["Name"] == "input.1"
    raw = {x["Name"]: x for x in json.loads(graph("fp16").read_text())["Layers"]}
    details = {r["name"]: r for r in layer_details(info).records()}
    assert details["Conv_3 + Relu_4"]["tactic"] == raw["Conv_3 + Relu_4"]["TacticName"]
    assert details["MaxPool_2"]["tactic"] is None  # no TacticName in the file for this layer
    assert details["Conv_3 + Relu_4"]["type"] == "CaskConvolution"


def test_profile_from_another_engine_is_refused():
    with pytest.raises(DataError) as exc:
        from_trtexec(graph("fp32"), prof("fp16"))
    assert "different engines" in exc.value.message and "fp16" in exc.value.message
    assert "--exportLayerInfo" in exc.value.hint


def test_bad_files_raise_data_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        from_trtexec(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('[{"count": 1}, {"name": "a", "timeMs"')
    with pytest.raises(DataError, match="not valid JSON"):
        read_profile_json(broken)
    with pytest.raises(DataError, match="no 'Layers' list"):
        read_layer_info({"Bindings": []})


def test_profile_alone_and_graph_alone(tables):
    only_profile = from_trtexec(profile=prof("fp32"))
    assert only_profile.column("onnx_nodes") == tables["fp32"].column("onnx_nodes")
    assert set(only_profile.column("precision")) == {None}
    only_graph = from_trtexec(graph("fp32"))
    assert total_ms(only_graph) == 0 and len(only_graph) == 32


def test_compare_fp32_fp16_int8(tables):
    three = {k: tables[k] for k in ("fp32", "fp16", "int8")}
    cmp = {r["group"]: r for r in compare_profiles(three).records()}
    # every layer's time lands in exactly one row, per engine
    for label in three:
        assert sum(r[f"{label}_ms"] for r in cmp.values()) == pytest.approx(total_ms(three[label]))
    row = cmp["Conv_5 + Add_6 + Relu_7"]
    fp32 = {r["name"]: r["median_ms"] for r in tables["fp32"].records()}
    fp16 = {r["name"]: r["median_ms"] for r in tables["fp16"].records()}
    assert row["fp32_ms"] == pytest.approx(fp32["Conv_5 + Add_6 + Relu_7"])
    # fp16 needs two reformat layers in front of this conv: they are charged to the same ONNX nodes
    assert row["fp16_ms"] == pytest.approx(fp16["Conv_5 + Add_6 + Relu_7"]
                                           + fp16["Reformatting CopyNode for Input Tensor 0 to Conv_5 + Add_6 + Relu_7"]
                                           + fp16["Reformatting CopyNode for Input Tensor 1 to Conv_5 + Add_6 + Relu_7"])
    # the QAT export renumbers nodes: matched by op order, its 3rd conv is the one with the first residual Add
    assert "Conv_34" in row["onnx_nodes"] and row["int8_ms"] > 0
    assert row["delta_ms"] == pytest.approx(row["int8_ms"] - row["fp32_ms"])
    # fp32 vs fp16 share an export: matched by name, every row has both
    two = compare_profiles({"fp32": tables["fp32"], "fp16": tables["fp16"]})
    assert all(r["fp32_ms"] > 0 and r["fp16_ms"] > 0 for r in two.records())  # a group one engine lacks has 0.0
    assert sorted(n for r in two.records() for n in r["onnx_nodes"]) == sorted(
        {n for ns in tables["fp32"].column("onnx_nodes") + tables["fp16"].column("onnx_nodes") for n in ns})


def test_group_by_op_type_and_node_times(tables):
    t = tables["fp16"]
    groups = {r["group"]: r for r in group_times(t, "op_type").records()}
    names = t.column("name")
    reformats = [n for n in names if n.startswith("Reformatting CopyNode")]
    assert groups["Reformat"]["layers"] == len(reformats)
    assert sum(r["median_ms"] for r in groups.values()) == pytest.approx(total_ms(t))
    per_node = node_times(t)
    assert sum(per_node.values()) == pytest.approx(total_ms(t))
    rec = {r["name"]: r for r in t.records()}
    assert per_node["MaxPool_2"] == pytest.approx(rec["MaxPool_2"]["median_ms"])
    by_prec = {r["group"]: r["layers"] for r in group_times(tables["int8"], "precision").records()}
    assert by_prec == precision_counts(tables["int8"])


# --- TensorRT 11 generation --------------------------------------------------------------------------------------
# Shape taken from NVIDIA's "Migrating IEngineInspector Usage from TensorRT 10.x to 11.x" page
# (https://docs.nvidia.com/deeplearning/tensorrt/11.0.0/api/migration/tensorrt-10x-to-11x-IEngineInspector.html):
# `Bindings` replaced by structured `I/O Tensors` (Name, IOMode, DataType, Dimensions, Location,
# IsShapeInferenceIO, ProfileInfo[MinShape/OptShape/MaxShape/Format]); per-tensor `Format/Datatype` split into
# `Format` and `DataType`; layers carry `Metadata` with "[ONNX Layer: name]" entries separated by \x1f.
# Layer names, tactics and values below are made up for the test; the field names are the documented ones.
TRT11 = {
    "Layers": [
        {"Name": "/q", "LayerType": "Reformat", "Origin": "QDQ",
         "Inputs": [{"Name": "input_0", "Location": "Device", "Dimensions": [1, 3, 8, 8],
                     "Format": "Row major linear FP32 format (kLINEAR)", "DataType": "Float"}],
         "Outputs": [{"Name": "q_out", "Location": "Device", "Dimensions": [1, 3, 8, 8],
                      "Format": "Channel major format (kHWC)", "DataType": "Int8"}],
         "Metadata": "[ONNX Layer: /q]", "TacticValue": "0x00000000000003e8"},
        {"Name": "__myl_ConvRelu_myl0_1", "LayerType": "kgen",
         "Inputs": [{"Name": "q_out", "Location": "Device", "Dimensions": [1, 3, 8, 8],
                     "Format": "Channel major format (kHWC)", "DataType": "Int8"}],
         "Outputs": [{"Name": "output_0", "Location": "Device", "Dimensions": [1, 4, 8, 8],
                      "Format": "Channel major format where channel % 8 == 0 (kHWC8)", "DataType": "Half"}],
         "Metadata": "[ONNX Layer: /conv1/Conv]\x1f[ONNX Layer: /relu/Relu]",
         "TacticName": "sm80_xmma_fprop_implicit_gemm_interleaved_i8f16_fixture"},
    ],
    "I/O Tensors": [
        {"Name": "input_0", "IOMode": "Input", "DataType": "Float", "Dimensions": [1, 3, 8, 8], "Location": "Device",
         "IsShapeInferenceIO": False, "ProfileInfo": [{"MinShape": [1, 3, 8, 8], "OptShape": [1, 3, 8, 8],
                                                       "MaxShape": [1, 3, 8, 8],
                                                       "Format": "Row major linear FP32 format (kLINEAR)"}]},
        {"Name": "output_0", "IOMode": "Output", "DataType": "Half", "Dimensions": [1, 4, 8, 8], "Location": "Device",
         "IsShapeInferenceIO": False},
    ],
}


def qdq_model() -> onnx.ModelProto:
    """input -> /q -> /dq -> /conv1/Conv (weights int8 -> /w_dq) -> /relu/Relu, named like a torch export."""
    w = np.arange(4 * 3 * 3 * 3, dtype=np.int8).reshape(4, 3, 3, 3) % 7
    inits = [numpy_helper.from_array(w, "conv1.weight_q"), numpy_helper.from_array(np.float32(0.02), "s"),
             numpy_helper.from_array(np.int8(0), "z")]
    nodes = [
        helper.make_node("QuantizeLinear", ["input_0", "s", "z"], ["q_out"], name="/q"),
        helper.make_node("DequantizeLinear", ["q_out", "s", "z"], ["dq_out"], name="/dq"),
        helper.make_node("DequantizeLinear", ["conv1.weight_q", "s", "z"], ["w"], name="/w_dq"),
        helper.make_node("Conv", ["dq_out", "w"], ["c"], name="/conv1/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["output_0"], name="/relu/Relu"),
    ]
    g = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("input_0", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("output_0", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_tensorrt11_layer_info(tmp_path):
    path = tmp_path / "trt11.graph.json"
    path.write_text(json.dumps(TRT11))
    info = read_layer_info(path)
    assert info.generation == "tensorrt-11"
    assert [t["IOMode"] for t in info.io_tensors] == ["Input", "Output"]
    conv = info.layer("__myl_ConvRelu_myl0_1")
    assert conv.onnx_nodes == ("/conv1/Conv", "/relu/Relu")  # from Metadata: the Myelin name says nothing
    assert conv.precision == "int8"  # DataType Int8 in, Half out: the narrowest is the compute precision
    assert conv.outputs[0].format.endswith("(kHWC8)") and conv.outputs[0].dtype == "Half"
    assert conv.tactic.endswith("_fixture")
    # with the model: the silent DequantizeLinear nodes join the layer that consumes them
    with_model = read_layer_info(path, model=qdq_model())
    assert with_model.layer("__myl_ConvRelu_myl0_1").onnx_nodes == ("/dq", "/w_dq", "/conv1/Conv", "/relu/Relu")
    assert with_model.layer("/q").onnx_nodes == ("/q",)
    times = {"/q": [0.010, 0.012, 0.011], "__myl_ConvRelu_myl0_1": [0.050, 0.040, 0.060, 0.045]}
    table = from_layer_times(times, with_model)
    rec = {r["name"]: r for r in table.records()}
    assert rec["__myl_ConvRelu_myl0_1"]["median_ms"] == pytest.approx(statistics.median(times["__myl_ConvRelu_myl0_1"]))
    assert rec["/q"]["mean_ms"] == pytest.approx(np.mean(times["/q"]))
    assert rec["/q"]["precision"] == "int8"


def test_layer_info_from_another_model_is_refused(tmp_path):
    other = qdq_model()
    for n in other.graph.node:
        n.name = "other" + n.name
    with pytest.raises(DataError, match="names none of the model"):
        read_layer_info(TRT11, model=other)


def test_layer_times_from_another_engine_are_refused():
    with pytest.raises(DataError, match="different engines"):
        from_layer_times({"not_a_layer": [1.0]}, TRT11)


def test_real_tensorrt_rtx_engine_layers(tmp_path):
    """A real TensorRT-RTX build of the digits CNN: its Myelin layers map to the model's nodes through Metadata."""
    pytest.importorskip("tensorrt_rtx", reason="the rtx extra is not installed (make test installs it)")
    from workbench.build import build_engine
    from workbench.graph import load_model
    from workbench.recipe import BuildSettings

    model = load_model("digits_cnn")
    result = build_engine(model, BuildSettings(), out=tmp_path / "digits.engine")
    layers = json.loads(Path(result.metadata_path).read_text())["engine_layers"]
    info = read_layer_info(layers, model=model)
    names = {n.name for n in model.graph.node}
    mapped = {n for layer in info.layers for n in layer.onnx_nodes}
    assert mapped <= names
    convs = {n.name for n in model.graph.node if n.op_type == "Conv"}
    assert convs <= mapped  # every conv of the model is in some engine layer
    fused = [layer for layer in info.layers if len(layer.onnx_nodes) > 1]
    assert fused and all(layer.name not in names for layer in fused)
    # IProfiler-style samples for these real layer names aggregate into the one schema
    samples = {layer.name: [0.01 * (i + 1), 0.01 * (i + 2)] for i, layer in enumerate(info.layers)}
    table = from_layer_times(samples, info)
    assert table.columns == TIMING_COLUMNS
    assert total_ms(table) == pytest.approx(sum(statistics.median(v) for v in samples.values()))


def test_iprofiler_samples_from_the_runtime_collector():
    """The GPU runtime's LayerTimes collects report_layer_time calls; from_layer_times turns them into the schema."""
    from workbench.backends.trt_runtime import LayerTimes

    collected = LayerTimes()
    samples = {"/q": [0.02, 0.01, 0.03], "__myl_ConvRelu_myl0_1": [0.10, 0.12, 0.11]}
    for i in range(3):  # TensorRT reports every layer once per enqueue, in execution order
        for name, values in samples.items():
            collected.report_layer_time(name, values[i])
    table = from_layer_times(collected.times, TRT11)  # the inspector JSON as the runtime returns it (a dict)
    rec = {r["name"]: r for r in table.records()}
    assert rec["__myl_ConvRelu_myl0_1"]["onnx_nodes"] == ["/conv1/Conv", "/relu/Relu"]
    assert rec["__myl_ConvRelu_myl0_1"]["median_ms"] == pytest.approx(0.11)
    assert rec["/q"]["median_ms"] == pytest.approx(0.02) and rec["/q"]["type"] == "Reformat"
    assert total_ms(table) == pytest.approx(0.13)


def test_myelin_names_without_metadata():
    """Without Metadata, generated Myelin names name no ONNX node; `X_myl0_5` is the ONNX node X."""
    assert onnx_nodes_of("__myl_CorrMulAddRelu_myl0_2") == []
    assert onnx_nodes_of("__mye30225+__mye30213+__mye30201_myl0_3") == []
    assert onnx_nodes_of("/pool/MaxPool_myl0_5") == ["/pool/MaxPool"]
    assert onnx_nodes_of("__myl_Fc_myl0_1", metadata="[ONNX Layer: /fc/Gemm]") == ["/fc/Gemm"]


def test_layers_of_a_second_optimisation_profile_match_their_layer_info():
    times = {"__myl_ConvRelu_myl0_1 [profile 1]": [0.2, 0.4], "/q [profile 1]": [0.1]}
    rec = {r["name"]: r for r in from_layer_times(times, TRT11).records()}
    assert rec["__myl_ConvRelu_myl0_1 [profile 1]"]["onnx_nodes"] == ["/conv1/Conv", "/relu/Relu"]
    assert rec["__myl_ConvRelu_myl0_1 [profile 1]"]["median_ms"] == pytest.approx(0.3)


def test_timings_round_trip(tmp_path, tables):
    from workbench.profile import load_timings, save_timings

    path = save_timings(tables["int8"], tmp_path / "t" / "int8.json", source="trtexec", label="int8")
    table, meta = load_timings(path)
    assert table == tables["int8"] and meta == {"source": "trtexec", "label": "int8"}
    (tmp_path / "bad.json").write_text('{"rows": []}')
    with pytest.raises(DataError, match="not a workbench timing table"):
        load_timings(tmp_path / "bad.json")


def test_layer_names_only_verbosity(tables):
    """trtexec without --profilingVerbosity=detailed writes "Layers" as plain names: mapping still works."""
    detailed = json.loads(graph("fp32").read_text())
    names_only = {"Layers": [x["Name"] for x in detailed["Layers"]], "Bindings": detailed["Bindings"]}
    table = from_trtexec(names_only, prof("fp32"))
    assert table.column("onnx_nodes") == tables["fp32"].column("onnx_nodes")
    assert set(table.column("precision")) == {None}  # no formats at this verbosity
    assert total_ms(table) == pytest.approx(total_ms(tables["fp32"]))
