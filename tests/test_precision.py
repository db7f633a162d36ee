"""Precision as graph edits: fp16/bf16 Cast conversion, guards, TensorRT-style Q/DQ placement, recipe edits.

Every converted or quantized model runs in ONNX Runtime (real) and builds with the real TensorRT-RTX
builder in a child process (test_outputs_build_with_tensorrt_rtx).
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from workbench.backends.ort import OrtEngine
from workbench.calibration import calibrate
from workbench.errors import CalibrationError, EditError
from workbench.graph import load_model, model_bytes
from workbench.precision import (
    ScaleCache,
    activation_tensors,
    apply_precision_edit,
    convert_precision,
    node_precisions,
    plan_conversion,
    precision_guards,
    quantizable_nodes,
    quantize_model,
    weight_bytes,
)
from workbench.recipe import ConvertPrecision, Quantize

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"


def _data(name: str) -> dict[str, np.ndarray]:
    z = np.load(SAMPLES / f"{name}.npz")
    return {k: z[k] for k in z.files}


def _accuracy(model: onnx.ModelProto, test: dict[str, np.ndarray]) -> float:
    logits = OrtEngine(model).run({"input": test["input"]})["logits"]
    return float((logits.argmax(1) == test["label"]).mean())


@pytest.fixture(scope="module")
def cnn() -> onnx.ModelProto:
    return load_model("digits_cnn")


@pytest.fixture(scope="module")
def transformer() -> onnx.ModelProto:
    return load_model("digits_transformer")


@pytest.fixture(scope="module")
def cnn_scales(cnn: onnx.ModelProto) -> ScaleCache:
    return calibrate(cnn, SAMPLES / "digits_calib.npz", method="entropy")


@pytest.fixture(scope="module")
def transformer_scales(transformer: onnx.ModelProto) -> ScaleCache:
    return calibrate(transformer, SAMPLES / "digits_calib_seq.npz", method="entropy")


# --- fp16 / bf16 -------------------------------------------------------------------------------------


def test_fp16_cnn_matches_fp32_and_stores_fp16_weights(cnn: onnx.ModelProto) -> None:
    half = convert_precision(cnn, "fp16")
    onnx.checker.check_model(half, full_check=True)
    test = _data("digits_test")
    ref = OrtEngine(cnn).run({"input": test["input"]})["logits"]
    got = OrtEngine(half).run({"input": test["input"]})["logits"]
    assert got.dtype == np.float32  # graph I/O types kept
    assert np.abs(got - ref).max() < 0.02 * np.abs(ref).max()
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.995
    inits = {i.name: i for i in half.graph.initializer}
    convs = [n for n in half.graph.node if n.op_type == "Conv"]
    assert convs and all(inits[n.input[1]].data_type == TensorProto.FLOAT16 for n in convs)
    # every node converts, so one Cast in (graph input) and one out (graph output), none between nodes
    casts = [n for n in half.graph.node if n.op_type == "Cast"]
    assert sorted((c.input[0], c.output[0]) for c in casts) == sorted(
        [("input", "input__fp16"), ("logits__fp16", "logits")])
    assert weight_bytes(half) < 0.55 * weight_bytes(cnn)


def test_fp16_keeps_full_precision_names_for_join(transformer: onnx.ModelProto) -> None:
    half = convert_precision(transformer, "fp16")
    produced = {o for n in half.graph.node for o in n.output}
    for node in transformer.graph.node:
        for o in node.output:
            assert o in produced or f"{o}__fp16" in produced, o
    # a guarded LayerNorm stays fp32 and reads the float32 tensor under its original name
    ln = next(n for n in half.graph.node if n.op_type == "LayerNormalization")
    original_ln = next(n for n in transformer.graph.node if n.name == ln.name)
    assert ln.input[0] == original_ln.input[0]
    assert ln.output[0] == original_ln.output[0]
    # no Cast reads a Cast: adjacent casts are merged
    producers = {o: n for n in half.graph.node for o in n.output}
    for c in (n for n in half.graph.node if n.op_type == "Cast"):
        assert producers.get(c.input[0]) is None or producers[c.input[0]].op_type != "Cast", c.name


def test_guards_flag_transformer_statistics_and_are_overridable(transformer: onnx.ModelProto) -> None:
    guards = precision_guards(transformer)
    ops = {g["op"] for g in guards}
    assert {"LayerNormalization", "Softmax"} <= ops
    softmax = next(g["node"] for g in guards if g["op"] == "Softmax")
    plan = plan_conversion(transformer, "fp16")
    assert plan[softmax]["precision"] == "fp32" and plan[softmax]["reason"].startswith("guard")
    assert node_precisions(convert_precision(transformer, "fp16"))[softmax] == "fp32"
    # named exactly -> converted despite the guard; guard=False converts every guarded op
    forced = convert_precision(transformer, "fp16", nodes=[softmax])
    assert node_precisions(forced)[softmax] == "fp16"
    unguarded = plan_conversion(transformer, "fp16", guard=False)
    assert all(unguarded[g["node"]]["precision"] == "fp16" for g in guards)


def _const_model(value: float) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])
    c = numpy_helper.from_array(np.full((4,), value, np.float32), "c")
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"), helper.make_node("Mul", ["r", "c"], ["y"], name="mul")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [c]), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("value, words", [(1e6, "beyond the fp16 maximum"), (1e-12, "becomes 0 in fp16")])
def test_guard_flags_constants_outside_fp16_range(value: float, words: str) -> None:
    model = _const_model(value)
    guards = precision_guards(model)
    assert [(g["node"], g["op"]) for g in guards] == [("mul", "Mul")]
    assert words in guards[0]["reason"] and "'c'" in guards[0]["reason"]
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    half = convert_precision(model, "fp16")  # guarded Mul stays fp32: exact result
    np.testing.assert_array_equal(OrtEngine(half).run({"x": x})["y"], np.maximum(x, 0) * np.float32(value))
    unguarded = convert_precision(model, "fp16", guard=False)
    y = OrtEngine(unguarded).run({"x": x})["y"]
    assert not np.allclose(y, np.maximum(x, 0) * np.float32(value), rtol=1e-3, atol=0)  # what the guard prevents


def test_keep_and_selectors(cnn: onnx.ModelProto) -> None:
    plan = plan_conversion(cnn, "fp16", keep=["op:Gemm", "/stem/*"])
    assert plan["/fc/Gemm"] == {"precision": "fp32", "reason": "kept by the user"}
    assert all(p["precision"] == "fp32" for n, p in plan.items() if n.startswith("/stem/"))
    assert plan["/res1/res1.0/Conv"]["precision"] == "fp16"
    with pytest.raises(EditError, match="'no_such_node'"):
        convert_precision(cnn, "fp16", keep=["no_such_node"])


def test_low_io_types(cnn: onnx.ModelProto) -> None:
    half = convert_precision(cnn, "fp16", keep_io_types=False)
    assert half.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert half.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert not [n for n in half.graph.node if n.op_type == "Cast"]
    x = _data("digits_test")["input"][:8]
    out = OrtEngine(half).run({"input": x.astype(np.float16)})["logits"]
    ref = OrtEngine(cnn).run({"input": x})["logits"]
    assert out.dtype == np.float16 and np.abs(out.astype(np.float32) - ref).max() < 0.05 * np.abs(ref).max()


def test_bf16_is_valid_onnx_and_respects_opset_schemas(cnn: onnx.ModelProto) -> None:
    plan = plan_conversion(cnn, "bf16")
    # opset 17 defines Conv for float16/float/double only: it must stay fp32
    assert plan["/stem/stem.0/Conv"] == {"precision": "fp32", "reason": "ONNX opset 17 defines no bf16 Conv"}
    assert plan["/stem/stem.2/Relu"]["precision"] == "bf16"
    model = convert_precision(cnn, "bf16")
    onnx.checker.check_model(model, full_check=True)
    assert node_precisions(model)["/stem/stem.2/Relu"] == "bf16"


# --- quantization ------------------------------------------------------------------------------------


def test_quantize_places_qdq_where_tensorrt_fuses(cnn: onnx.ModelProto, cnn_scales: ScaleCache) -> None:
    q = quantize_model(cnn, cnn_scales)
    producers = {o: n for n in q.graph.node for o in n.output}
    qdq_ops = ("QuantizeLinear", "DequantizeLinear")
    weighted = [n for n in q.graph.node if n.op_type in ("Conv", "Gemm")]
    for n in weighted:  # both data and weight inputs come from DequantizeLinear; the bias stays float
        assert producers[n.input[0]].op_type == "DequantizeLinear", n.name
        assert producers[n.input[1]].op_type == "DequantizeLinear", n.name
        if len(n.input) > 2:
            assert n.input[2] not in producers
    # no Q/DQ on outputs of weighted ops, BN or ReLU (TensorRT fuses them into the conv)
    for n in q.graph.node:
        if n.op_type == "QuantizeLinear":
            src = producers.get(n.input[0])
            assert src is None or src.op_type in ("Relu", "MaxPool", "Flatten"), (n.name, src.op_type)
    # the residual Add reads dequantized inputs
    add = next(n for n in q.graph.node if n.op_type == "Add")
    assert any(producers[i].op_type == "DequantizeLinear" for i in add.input)
    # one Q/DQ pair per activation tensor, shared by its consumers
    acts = activation_tensors(cnn)
    assert len([n for n in q.graph.node if n.op_type == "QuantizeLinear"]) == len(acts)
    assert "/Add" in quantizable_nodes(cnn)
    assert not any(n.op_type in qdq_ops for n in q.graph.node if producers.get(n.input[0]) is None
                   and n.input[0] not in {i.name for i in q.graph.initializer} and n.input[0] != "input")


def test_quantize_scales_and_per_channel_weights(cnn: onnx.ModelProto) -> None:
    amax = {t: 2.0 + i for i, t in enumerate(activation_tensors(cnn))}
    q = quantize_model(cnn, amax)
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    for t, a in amax.items():
        assert inits[f"{t}__scale"] == pytest.approx(a / 127.0, rel=1e-7)
        assert inits[f"{t}__zero_point"].dtype == np.int8 and inits[f"{t}__zero_point"] == 0
    original = {i.name: numpy_helper.to_array(i) for i in cnn.graph.initializer}
    w = original["stem.0.weight"]
    dq = next(n for n in q.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == "stem.0.weight")
    assert helper.get_attribute_value(dq.attribute[0]) == 0  # output-channel axis
    wq, scale = inits[dq.input[0]], inits[dq.input[1]]
    assert wq.dtype == np.int8 and scale.shape == (w.shape[0],)
    np.testing.assert_allclose(scale, np.abs(w).reshape(w.shape[0], -1).max(1) / 127.0, rtol=1e-6)
    recon = wq.astype(np.float32) * scale[:, None, None, None]
    assert np.all(np.abs(recon - w) <= scale[:, None, None, None] / 2 + 1e-7)
    assert "stem.0.weight" not in {i.name for i in q.graph.initializer}  # float weights replaced by int8


def _ort_quantize_static(model: onnx.ModelProto, calib: np.ndarray, tmp: Path) -> onnx.ModelProto:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"input": calib[i : i + 16]} for i in range(0, len(calib), 16)])

        def get_next(self) -> dict | None:
            return next(self.it, None)

    src, dst = tmp / "fp32.onnx", tmp / "ort_int8.onnx"
    onnx.save(model, src)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return onnx.load(dst)


@pytest.mark.parametrize("name, test, calib", [("digits_cnn", "digits_test", "digits_calib"),
                                               ("digits_transformer", "digits_test_seq", "digits_calib_seq")])
def test_int8_accuracy_vs_fp32_and_ort_quantize_static(name: str, test: str, calib: str, tmp_path: Path) -> None:
    model = load_model(name)
    data = _data(test)
    fp32 = _accuracy(model, data)
    ours = _accuracy(quantize_model(model, calibrate(model, SAMPLES / f"{calib}.npz")), data)
    ort = _accuracy(_ort_quantize_static(model, np.load(SAMPLES / f"{calib}.npz")["input"], tmp_path), data)
    print(f"{name}: fp32 {fp32:.4f} ours int8 {ours:.4f} ort quantize_static {ort:.4f}")
    assert ours >= fp32 - 0.005
    assert ours >= ort


def test_exclusions_and_bad_requests(cnn: onnx.ModelProto, cnn_scales: ScaleCache) -> None:
    q = quantize_model(cnn, cnn_scales, exclude=["/fc/Gemm"])
    producers = {o: n for n in q.graph.node for o in n.output}
    gemm = next(n for n in q.graph.node if n.op_type == "Gemm")
    assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in gemm.input)
    with pytest.raises(EditError, match="'nope'"):
        quantize_model(cnn, cnn_scales, exclude=["nope"])
    with pytest.warns(UserWarning, match="converted to opset 19 with onnx's version converter for fp8"):
        fp8 = quantize_model(cnn, cnn_scales, dtype="fp8")  # opset 17: converted, and said so
    assert fp8.opset_import[0].version == 19
    assert any(i.data_type == TensorProto.FLOAT8E4M3FN for i in fp8.graph.initializer)
    zero = {**cnn_scales.amax(), "/stem/stem.2/Relu_output_0": 0.0}
    with pytest.raises(CalibrationError, match="/stem/stem.2/Relu_output_0") as info:
        quantize_model(cnn, zero)
    assert "exclude node '/res1/res1.0/Conv'" in info.value.hint
    missing = {k: v for k, v in cnn_scales.amax().items() if k != "input"}
    with pytest.raises(CalibrationError, match="no calibrated scale for tensor 'input'"):
        quantize_model(cnn, missing)


def test_fp8_on_opset19(transformer: onnx.ModelProto, transformer_scales: ScaleCache) -> None:
    m19 = onnx.version_converter.convert_version(transformer, 19)
    q = quantize_model(m19, transformer_scales, dtype="fp8")
    fp8 = [i.name for i in q.graph.initializer if i.data_type == TensorProto.FLOAT8E4M3FN]
    weights = [n.input[1] for n in transformer.graph.node if n.op_type == "MatMul"
               and n.input[1] in {i.name for i in transformer.graph.initializer}]
    assert weights and {f"{w}__fp8" for w in weights} <= set(fp8)
    data = _data("digits_test_seq")
    assert _accuracy(q, data) >= _accuracy(transformer, data) - 0.02


# --- recipe edits and the session ---------------------------------------------------------------------


def test_apply_precision_edit_through_session(tmp_path: Path, cnn_scales: ScaleCache) -> None:
    from workbench.session import Session

    session = Session("digits_cnn", cache_dir=tmp_path / "cache")
    digest = cnn_scales.save(session.cache_dir)
    session.apply(Quantize(scales=digest, exclude=("/fc/Gemm",)))
    quantized = session.model
    assert sum(n.op_type == "QuantizeLinear" for n in quantized.graph.node) == len(
        activation_tensors(session.original, exclude=["/fc/Gemm"]))
    session.apply(ConvertPrecision(precision="fp16", keep=("/fc/Gemm",)))
    assert node_precisions(session.model)["/fc/Gemm"] == "fp32"
    recipe = session.save(tmp_path / "r.json")
    replay = Session.load(recipe)
    assert model_bytes(replay.model) == model_bytes(session.model)
    direct = apply_precision_edit(session.original, Quantize(scales=digest, exclude=("/fc/Gemm",)),
                                  cache_dir=tmp_path / "cache")
    assert model_bytes(direct) == model_bytes(quantized)


# --- TensorRT-RTX builds (real builder, child process) --------------------------------------------------

_BUILD = r"""
import json, sys
import tensorrt_rtx as trt
logger = trt.Logger(trt.Logger.ERROR)
results = {}
for path in sys.argv[1:]:
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(open(path, "rb").read()):
        results[path] = "parse: " + "; ".join(parser.get_error(i).desc() for i in range(parser.num_errors))
        continue
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        t = network.get_input(i)
        lo = [d if d > 0 else 1 for d in t.shape]
        hi = [d if d > 0 else 8 for d in t.shape]
        profile.set_shape(t.name, lo, hi, hi)
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    results[path] = "built" if engine is not None and engine.nbytes > 0 else "build failed"
print(json.dumps(results))
"""


def test_outputs_build_with_tensorrt_rtx(tmp_path: Path, cnn: onnx.ModelProto, transformer: onnx.ModelProto,
                                         cnn_scales: ScaleCache, transformer_scales: ScaleCache) -> None:
    pytest.importorskip("tensorrt_rtx", reason="the rtx extra is not installed (make test installs it)")
    models = {
        "cnn_fp16": convert_precision(cnn, "fp16"),
        "cnn_bf16": convert_precision(cnn, "bf16"),
        "cnn_int8": quantize_model(cnn, cnn_scales),
        "tr_fp16": convert_precision(transformer, "fp16"),
        "tr_int8": quantize_model(transformer, transformer_scales),
        "tr_fp8": quantize_model(onnx.version_converter.convert_version(transformer, 19), transformer_scales,
                                 dtype="fp8"),
    }
    paths = []
    for name, m in models.items():
        paths.append(str(tmp_path / f"{name}.onnx"))
        onnx.save(m, paths[-1])
        if name != "cnn_bf16":  # ORT CPU has no bf16 Conv/BatchNorm/MatMul kernels
            OrtEngine(m).run(
                {"input": _data("digits_test" if name.startswith("cnn") else "digits_test_seq")["input"][:4]})
    proc = subprocess.run([sys.executable, "-c", _BUILD, *paths], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results == dict.fromkeys(paths, "built")


def test_decomposed_layernorm_statistics_chain_is_guarded() -> None:
    inits = [numpy_helper.from_array(np.array(2.0, np.float32), "two"),
             numpy_helper.from_array(np.array(1e-5, np.float32), "eps")]
    nodes = [helper.make_node("ReduceMean", ["x"], ["mean"], name="mean", axes=[-1]),
             helper.make_node("Sub", ["x", "mean"], ["centered"], name="center"),
             helper.make_node("Pow", ["centered", "two"], ["sq"], name="square"),
             helper.make_node("ReduceMean", ["sq"], ["var"], name="variance", axes=[-1]),
             helper.make_node("Add", ["var", "eps"], ["var_eps"], name="add_eps"),
             helper.make_node("Sqrt", ["var_eps"], ["std"], name="std"),
             helper.make_node("Div", ["centered", "std"], ["y"], name="normalise")]
    graph = helper.make_graph(nodes, "ln", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model = load_model(model)
    assert [g["node"] for g in precision_guards(model)] == ["mean", "square", "variance", "add_eps", "std"]
    half = convert_precision(model, "fp16")
    assert {n: p for n, p in node_precisions(half).items() if p == "fp16"} == {"center": "fp16", "normalise": "fp16"}
    # a variance of ~83000 is finite in the fp32 path the guards keep; in fp16 it would be inf
    x = np.random.default_rng(0).uniform(0, 1000, (4, 64)).astype(np.float32)
    ref = OrtEngine(model).run({"x": x})["y"]
    assert np.abs(OrtEngine(half).run({"x": x})["y"] - ref).max() < 0.01
    with np.errstate(over="ignore"):
        assert not np.isfinite(np.float16(np.var(x[0])))


def test_quantize_edit_method_selects_the_cached_threshold(tmp_path: Path, cnn: onnx.ModelProto,
                                                           cnn_scales: ScaleCache) -> None:
    digest = cnn_scales.save(tmp_path)
    by_max = apply_precision_edit(cnn, Quantize(scales=digest, method="max"), cache_dir=tmp_path)
    scale = next(numpy_helper.to_array(i) for i in by_max.graph.initializer
                 if i.name == "/stem/stem.2/Relu_output_0__scale")
    assert scale == pytest.approx(cnn_scales.tensors["/stem/stem.2/Relu_output_0"].thresholds["max"] / 127)
    assert cnn_scales.method == "entropy"


def test_tensors_read_inside_subgraphs_keep_their_float32_name() -> None:
    then = helper.make_graph([helper.make_node("Relu", ["r"], ["o1"], name="in_then")], "then", [],
                             [helper.make_tensor_value_info("o1", TensorProto.FLOAT, [2, 4])])
    other = helper.make_graph([helper.make_node("Neg", ["r"], ["o2"], name="in_else")], "else", [],
                              [helper.make_tensor_value_info("o2", TensorProto.FLOAT, [2, 4])])
    nodes = [helper.make_node("Mul", ["x", "x"], ["r"], name="mul"),
             helper.make_node("If", ["c"], ["y"], name="if", then_branch=then, else_branch=other)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4]),
                                           helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    half = convert_precision(load_model(model))
    assert node_precisions(half) == {"mul": "fp16", "if": "fp32"}
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(OrtEngine(half).run({"x": x, "c": np.array(False)})["y"], -(x * x))


def test_constant_node_weights_are_quantized_offline() -> None:
    w = np.random.default_rng(3).standard_normal((4, 3)).astype(np.float32)
    nodes = [helper.make_node("Constant", [], ["w"], name="const_w", value=numpy_helper.from_array(w, "w")),
             helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model = load_model(model)
    assert activation_tensors(model) == ["x"]
    q = quantize_model(model, {"x": 2.0})
    assert "Constant" not in [n.op_type for n in q.graph.node]
    wq = next(numpy_helper.to_array(i) for i in q.graph.initializer if i.name == "w__int8")
    scale = np.abs(w).max(0) / 127  # per output channel (axis 1 of a K x N MatMul weight)
    np.testing.assert_array_equal(wq, np.clip(np.rint(w / scale), -127, 127).astype(np.int8))
    x = np.random.default_rng(4).uniform(-2, 2, (5, 4)).astype(np.float32)
    y = OrtEngine(q).run({"x": x})["y"]
    assert np.abs(y - x @ w).max() < 0.05 * np.abs(x @ w).max()
