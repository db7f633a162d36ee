"""ONNX Runtime per-node profiling: real ORT sessions, optimisations off (ONNX names) and on (fused names mapped back)."""

from __future__ import annotations

import onnx
import onnxruntime as ort
import pytest
from models import conv_bn_relu_model, integer_ops_model, random_feeds

from workbench.backends.ort import OrtEngine
from workbench.backends.ort_profile import lowest_precision, map_optimized_nodes, profile_model
from workbench.errors import DataError
from workbench.profile import TIMING_COLUMNS, node_times, total_ms


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return conv_bn_relu_model()


def test_optimisations_off_names_are_onnx_nodes(model):
    table = profile_model(model, random_feeds(model), optimize=False, iterations=3)
    assert table.columns == TIMING_COLUMNS
    assert table.column("name") == [n.name for n in model.graph.node]
    assert table.column("type") == [n.op_type for n in model.graph.node]
    assert table.column("onnx_nodes") == [[n.name] for n in model.graph.node]
    assert set(table.column("precision")) == {"fp32"}
    assert sum(table.column("pct")) == pytest.approx(100.0)
    assert all(m > 0 for m in table.column("mean_ms"))


def test_optimisations_on_fused_names_map_back(model):
    table = profile_model(model, random_feeds(model), optimize=True, iterations=3)
    rows = table.records()
    assert len(rows) < len(model.graph.node)  # ORT fused something
    for block in ("block1", "block2", "block3"):
        holder = [r for r in rows if f"{block}.conv" in r["onnx_nodes"]]
        assert len(holder) == 1
        assert holder[0]["onnx_nodes"] == [f"{block}.conv", f"{block}.bn", f"{block}.relu"]
        assert holder[0]["type"] in ("Conv", "FusedConv")
    covered = [n for r in rows for n in r["onnx_nodes"]]
    assert sorted(covered) == sorted(n.name for n in model.graph.node)  # each node once, none lost
    assert sum(node_times(table).values()) <= total_ms(table) + 1e-9


def test_mapping_against_orts_own_extended_graph(model, tmp_path):
    """ORT_ENABLE_EXTENDED writes FusedConv nodes named after the conv but producing the Relu's tensor."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(tmp_path / "opt.onnx"))
    mapping = map_optimized_nodes(model, optimized)
    assert set(mapping) == {n.name for n in optimized.graph.node}
    fused = [n for n in optimized.graph.node if n.op_type == "FusedConv"]
    assert fused
    for n in fused:
        prefix = n.name.split(".")[0]
        assert mapping[n.name] == [f"{prefix}.conv", f"{prefix}.bn", f"{prefix}.relu"]


def test_integer_ops_precision_and_fusion():
    m = integer_ops_model()
    table = profile_model(m, random_feeds(m), optimize=True, iterations=2)
    by_type = {r["type"]: r for r in table.records()}
    assert by_type["ConvInteger"]["precision"] == "int8"
    covered = sorted(n for ns in table.column("onnx_nodes") for n in ns)
    assert covered == sorted(n.name for n in m.graph.node)


def test_engine_profile_delegates(model):
    engine = OrtEngine(model, optimize=False)
    table = engine.profile(random_feeds(model), iterations=2)
    assert table.column("name") == [n.name for n in model.graph.node]


def test_bad_input(model):
    with pytest.raises(DataError, match="do not match the model's inputs"):
        profile_model(model, {"nope": random_feeds(model)["input"]}, iterations=1)
    with pytest.raises(DataError, match="iterations"):
        profile_model(model, random_feeds(model), iterations=0)


def test_lowest_precision():
    assert lowest_precision(["fp32", "fp16", None]) == "fp16"
    assert lowest_precision(["fp16", "uint8"]) == "int8"
    assert lowest_precision(["int64", "fp32"]) == "fp32"
    assert lowest_precision(["int64"]) == "int64"
    assert lowest_precision([]) is None


def test_int8_for_onnx_runtime_each_qlinearconv_owns_its_relu_and_requantize():
    """DQ -> Conv -> Relu -> Q fuses into one QLinearConv that applies the Relu and requantizes itself: the
    profile gives it its own Relu and Q (not the next conv's), and the DequantizeLinear to the op reading it."""
    import warnings

    import numpy as np

    from workbench.calibration import calibrate
    from workbench.edits import apply_edit
    from workbench.graph import SAMPLES_DIR, load_model
    from workbench.precision import activation_tensors, quantize_model
    from workbench.recipe import FuseBatchNorm

    folded = apply_edit(load_model("digits_cnn"), FuseBatchNorm())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scales = calibrate(folded, SAMPLES_DIR / "digits_calib.npz",
                           tensors=activation_tensors(folded, target="onnxruntime"))
    q = quantize_model(folded, scales, target="onnxruntime")
    table = profile_model(q, {"input": np.load(SAMPLES_DIR / "digits_test.npz")["input"][:32]}, iterations=2)
    rows = {r["type"]: [] for r in table.records()}
    for r in table.records():
        rows[r["type"]].append(r["onnx_nodes"])
    convs = rows["QLinearConv"]
    assert len(convs) == 4
    for block in ("stem", "res1", "res2"):
        own = next(nodes for nodes in convs if f"/{block}/{block}.0/Conv" in nodes)
        assert {f"/{block}/{block}.2/Relu", f"/{block}/{block}.2/Relu_output_0__QuantizeLinear"} <= set(own)
        assert f"/{block}/{block}.2/Relu_output_0__DequantizeLinear" not in own
    res1 = next(nodes for nodes in convs if "/res1/res1.0/Conv" in nodes)
    assert "/stem/stem.2/Relu_output_0__DequantizeLinear" in res1 and "/stem/stem.2/Relu" not in res1
    claimed = [n for r in table.records() for n in r["onnx_nodes"]]
    twice = {n for n in claimed if claimed.count(n) > 1}
    assert twice and all(n.endswith("__DequantizeLinear") for n in twice)  # ORT copies a shared DQ per reader
