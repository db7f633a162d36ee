"""Q/DQ placed for ONNX Runtime's CPU provider (``quantize_model(target="onnxruntime")``): real calibration, real
ONNX Runtime sessions and the graphs its optimizer writes, the recipe, the CLI, the Calibrate tab and the accuracy
debugger on those models. No mocks."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, numpy_helper

from workbench.backends.ort import OrtEngine
from workbench.calibration import calibrate
from workbench.cli import main as cli_main
from workbench.debug import low_precision_layers, restore_layers, sensitivity
from workbench.edits import apply_edit
from workbench.errors import CalibrationError, EditError, RecipeError
from workbench.graph import infer_shapes, load_model, model_bytes
from workbench.precision import (
    ScaleCache,
    activation_tensors,
    apply_precision_edit,
    quantization_targets,
    quantize_model,
)
from workbench.recipe import FuseBatchNorm, Quantize, Recipe

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"
CALIB = SAMPLES / "digits_calib.npz"
ORT = "onnxruntime"
# ops of ORT's optimized graph that run a weighted op / an Add on integers
INTEGER_OPS = {"QLinearConv", "ConvInteger", "QGemm", "QLinearMatMul", "MatMulInteger", "QLinearAdd"}


def _generators():  # benchmarks/generators.py is a script-side module, not a package
    spec = importlib.util.spec_from_file_location("generators", ROOT / "benchmarks" / "generators.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _data(name: str) -> dict[str, np.ndarray]:
    z = np.load(SAMPLES / f"{name}.npz")
    return {k: z[k] for k in z.files}


def _optimized_ops(model: onnx.ModelProto, tmp: Path) -> Counter:
    """Op types of the graph ONNX Runtime (CPU, all optimizations) actually runs."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.optimized_model_filepath = str(tmp / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(tmp / "optimized.onnx").graph.node)


def _accuracy(model: onnx.ModelProto, test: dict[str, np.ndarray]) -> float:
    logits = OrtEngine(model).run({"input": test["input"]})["logits"]
    return float((logits.argmax(1) == test["label"]).mean())


def _quiet_calibrate(model: onnx.ModelProto, data: object, **kw: object) -> ScaleCache:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few-samples notes
        return calibrate(model, data, **kw)


@pytest.fixture(scope="module")
def digits() -> onnx.ModelProto:
    """The digits CNN with BatchNorm folded (as ``workbench quantize`` does by default)."""
    return apply_edit(load_model("digits_cnn"), FuseBatchNorm())


@pytest.fixture(scope="module")
def digits_ort_scales(digits: onnx.ModelProto) -> ScaleCache:
    return _quiet_calibrate(digits, CALIB, tensors=activation_tensors(digits, target=ORT))


@pytest.fixture(scope="module")
def small_resnet() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    model = infer_shapes(_generators().resnet(widths=(8, 16, 16, 32), image=32, classes=10), where="resnet")
    rng = np.random.default_rng(3)
    return model, {"input": rng.standard_normal((32, 3, 32, 32)).astype(np.float32)}


# --- placement: what ONNX Runtime makes of it ------------------------------------------------------------


@pytest.mark.parametrize("which", ["digits", "resnet"])
def test_ort_fuses_every_conv_add_and_gemm_into_integer_ops(which: str, digits: onnx.ModelProto,
                                                            digits_ort_scales: ScaleCache, small_resnet: tuple,
                                                            tmp_path: Path) -> None:
    if which == "digits":
        model, ort_scales, trt_scales = digits, digits_ort_scales, _quiet_calibrate(digits, CALIB)
    else:
        model, calib = small_resnet
        ort_scales = _quiet_calibrate(model, calib, tensors=activation_tensors(model, target=ORT), batch_size=8)
        trt_scales = _quiet_calibrate(model, calib, batch_size=8)
    original = Counter(n.op_type for n in model.graph.node)
    ours = _optimized_ops(quantize_model(model, ort_scales, target=ORT), tmp_path)
    trt = _optimized_ops(quantize_model(model, trt_scales), tmp_path)
    print(which, "onnxruntime target:", dict(ours), "\ntensorrt target:", dict(trt))
    assert ours["QLinearConv"] + ours["ConvInteger"] == original["Conv"] > 0
    assert ours["QLinearAdd"] == original["Add"] > 0  # every residual Add
    assert ours["QGemm"] == original["Gemm"] == 1  # the classifier, float output
    assert ours["QLinearGlobalAveragePool"] == original["GlobalAveragePool"] == 1
    assert ours["Conv"] == ours["FusedConv"] == ours["Add"] == ours["Relu"] == ours["GlobalAveragePool"] == 0
    # a standalone Q only for the graph input, no DequantizeLinear left: uint8 from the input to the classifier
    assert ours["QuantizeLinear"] == 1 and ours["DequantizeLinear"] == 0
    assert not INTEGER_OPS & set(trt)  # TensorRT's placement runs as float ops between Q/DQ pairs in ORT


def test_activations_uint8_weights_int8_bias_int32(digits: onnx.ModelProto, digits_ort_scales: ScaleCache) -> None:
    q = quantize_model(digits, digits_ort_scales, target=ORT)
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    producers = {o: n for n in q.graph.node for o in n.output}
    acts = activation_tensors(digits, target=ORT)
    # inputs and outputs of the weighted ops / the Add / the average pool (the stem conv's Relu output, the Add
    # output, ...) and the MaxPool and Flatten outputs, which borrow their input's scale unless an exclusion leaves
    # that input float
    assert acts == ["input", "/stem/stem.2/Relu_output_0", "/res1/res1.2/Relu_output_0",
                    "/res2/res2.2/Relu_output_0", "/Add_output_0", "/pool/MaxPool_output_0",
                    "/down/down.2/Relu_output_0", "/gap/GlobalAveragePool_output_0", "/Flatten_output_0"]
    assert set(activation_tensors(digits)) < set(acts)  # tensorrt: weighted ops' and the Add's inputs only
    for t in (a for a in acts if a not in ("/pool/MaxPool_output_0", "/Flatten_output_0")):  # these two borrow
        stats = digits_ort_scales.tensors[t]
        lo, hi = max(stats.min, -stats.amax), min(stats.max, stats.amax)
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        scale, zp = inits[f"{t}__scale"], inits[f"{t}__zero_point"]
        assert zp.dtype == np.uint8
        assert scale == pytest.approx((hi - lo) / 255.0, rel=1e-6)
        assert int(zp) == int(np.rint(-lo / scale))
        if t.endswith("Relu_output_0"):
            assert int(zp) == 0  # min 0: ORT removes the Relu before this Q
    assert inits["input__scale"] == pytest.approx(1.0 / 255.0)  # pixels in [0, 1]: all 256 levels used
    # a signed range gets an asymmetric zero point; a plain amax means [-amax, amax]
    hand = quantize_model(digits, {**{t: 2.0 for t in acts}, "input": (-1.0, 3.0)}, target=ORT)
    hand_inits = {i.name: numpy_helper.to_array(i) for i in hand.graph.initializer}
    assert int(hand_inits["input__zero_point"]) == 64 and hand_inits["input__scale"] == pytest.approx(4.0 / 255.0)
    assert int(hand_inits["/Add_output_0__zero_point"]) in (127, 128)  # [-2, 2]: the middle of 0..255
    # MaxPool is wrapped in Q/DQ that share the Add output's scale and zero point (ORT runs it on uint8)
    q_pool = next(n for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "/pool/MaxPool_output_0")
    assert list(q_pool.input[1:]) == ["/Add_output_0__scale", "/Add_output_0__zero_point"]
    # the average pool gets its own (calibrated) output scale, which Flatten then shares
    q_flat = next(n for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "/Flatten_output_0")
    assert list(q_flat.input[1:]) == ["/gap/GlobalAveragePool_output_0__scale",
                                      "/gap/GlobalAveragePool_output_0__zero_point"]
    # each conv reads a DQ'd uint8 input, int8 per-channel weights and an int32 bias of scale in_scale * w_scale
    for conv in (n for n in q.graph.node if n.op_type == "Conv"):
        x_dq, w_dq, b_dq = (producers[i] for i in conv.input)
        assert x_dq.op_type == "DequantizeLinear" and inits[x_dq.input[2]].dtype == np.uint8
        assert inits[w_dq.input[0]].dtype == np.int8 and inits[w_dq.input[2]].dtype == np.int8
        assert inits[b_dq.input[0]].dtype == np.int32
        np.testing.assert_allclose(inits[b_dq.input[1]], inits[x_dq.input[1]] * inits[w_dq.input[1]], rtol=1e-6)
        bias = numpy_helper.to_array(next(i for i in digits.graph.initializer if i.name == conv.input[2]))
        assert np.abs(inits[b_dq.input[0]] * inits[b_dq.input[1]] - bias).max() <= inits[b_dq.input[1]].max()
        readers = [u.op_type for u in q.graph.node if conv.output[0] in u.input]
        assert readers in (["Relu"], ["QuantizeLinear"])  # nothing reads the conv output in float: it fuses
    # the TensorRT placement is unchanged by the new target: int8 zero points, no Q on conv outputs
    trt = quantize_model(digits, _quiet_calibrate(digits, CALIB))
    zps = [numpy_helper.to_array(i) for i in trt.graph.initializer if i.name.endswith("__zero_point")]
    assert zps and all(z.dtype == np.int8 for z in zps)
    assert not any(i.data_type == TensorProto.INT32 for i in trt.graph.initializer)


def test_accuracy_within_half_a_point_of_fp32(digits: onnx.ModelProto, digits_ort_scales: ScaleCache) -> None:
    test = _data("digits_test")
    fp32 = _accuracy(digits, test)
    int8 = _accuracy(quantize_model(digits, digits_ort_scales, target=ORT), test)
    print(f"digits CNN test accuracy: fp32 {fp32:.4f}, int8 placed for onnxruntime {int8:.4f}")
    assert int8 >= fp32 - 0.005


def test_errors_name_the_tensor_and_the_fix(digits: onnx.ModelProto, digits_ort_scales: ScaleCache) -> None:
    trt_scales = _quiet_calibrate(digits, CALIB)  # inputs only: the conv outputs are missing
    with pytest.raises(CalibrationError, match=r"'/Add_output_0' \(output of node '/Add'\)") as info:
        quantize_model(digits, trt_scales, target=ORT)
    assert "tensors=activation_tensors(model, target='onnxruntime')" in info.value.hint
    with pytest.raises(EditError, match="'gpu'") as info:
        quantize_model(digits, digits_ort_scales, target="gpu")
    assert "onnxruntime" in info.value.hint and "tensorrt" in info.value.hint
    with pytest.raises(EditError, match="int8"):
        quantize_model(digits, digits_ort_scales, target=ORT, dtype="fp8")
    zero = ScaleCache({**digits_ort_scales.tensors})
    zero.tensors["/Add_output_0"] = type(zero.tensors["/Add_output_0"])(amax=0.0)
    with pytest.raises(CalibrationError, match="'/Add_output_0'"):
        quantize_model(digits, zero, target=ORT)
    with pytest.warns(UserWarning, match="BatchNormalization"):  # unfolded BN: the convs cannot fuse
        unfolded = load_model("digits_cnn")
        quantize_model(unfolded, _quiet_calibrate(unfolded, CALIB, tensors=activation_tensors(unfolded, target=ORT)),
                       target=ORT)


def test_exclude_keeps_the_node_float_and_reading_float(digits: onnx.ModelProto,
                                                        digits_ort_scales: ScaleCache, tmp_path: Path) -> None:
    q = quantize_model(digits, digits_ort_scales, target=ORT, exclude=["/res2/res2.0/Conv"])
    conv = next(n for n in q.graph.node if n.name == "/res2/res2.0/Conv")
    assert conv.input[0] == "/res1/res1.2/Relu_output_0"  # the float tensor, not its __dq
    weight = next(n for n in digits.graph.node if n.name == conv.name).input[1]
    assert conv.input[1] == weight and weight in {i.name for i in q.graph.initializer}  # float weights
    assert "/fc/Gemm" in quantization_targets(digits, target=ORT)
    ops = _optimized_ops(q, tmp_path)
    assert ops["QLinearConv"] == 2 and ops["QLinearAdd"] == 1  # stem and down fuse; res1 feeds a float reader
    # excluding the Add (as the debugger's plans do): the MaxPool output gets its own calibrated scale
    q = quantize_model(digits, digits_ort_scales, target=ORT, exclude=["/Add"])
    add = next(n for n in q.graph.node if n.name == "/Add")
    assert list(add.input) == ["/stem/stem.2/Relu_output_0", "/res2/res2.2/Relu_output_0"]
    q_pool = next(n for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "/pool/MaxPool_output_0")
    assert q_pool.input[1] == "/pool/MaxPool_output_0__scale"


# --- recipe, session, CLI, tab -----------------------------------------------------------------------------


def test_recipe_round_trip_and_old_recipes(tmp_path: Path, digits_ort_scales: ScaleCache) -> None:
    from workbench.session import Session

    session = Session("digits_cnn", cache_dir=tmp_path / "cache")
    session.apply(FuseBatchNorm())
    before = session.model
    digest = digits_ort_scales.save(session.cache_dir)
    session.apply(Quantize(scales=digest, target=ORT))
    assert any(i.data_type == TensorProto.UINT8 for i in session.model.graph.initializer)
    path = session.save(tmp_path / "r.json")
    saved = json.loads(Path(path).read_text())
    assert saved["edits"][-1]["target"] == ORT
    replay = Session.load(path)
    assert model_bytes(replay.model) == model_bytes(session.model)
    direct = apply_precision_edit(before, Quantize(scales=digest, target=ORT), cache_dir=tmp_path / "cache")
    assert model_bytes(direct) == model_bytes(session.model)
    # the default target is not written: recipes from before the field keep their bytes and digest
    old = {"kind": "quantize", "dtype": "int8", "nodes": [], "exclude": [], "method": "entropy",
           "per_channel": True, "scales": digest}
    assert Quantize(scales=digest).to_dict() == old
    assert Recipe.from_dict({"schema_version": 1, "edits": [old]}).edits[0].target == "tensorrt"
    with pytest.raises(RecipeError, match="'gpu'") as info:
        Recipe.from_dict({"schema_version": 1, "edits": [{**old, "target": "gpu"}]}, where="r.json")
    assert "r.json.edits[0]" in info.value.message and "onnxruntime" in info.value.hint


def test_cli_writes_model_and_recipe_with_target(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 cli_path: Path) -> None:
    out, recipe = tmp_path / "q.onnx", tmp_path / "r.json"
    code = cli_main(["quantize", "digits_cnn", "--calib", str(CALIB), "--target", ORT, "-o", str(out),
                     "--recipe-out", str(recipe), "--json", "--quantize-heads"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["target"] == ORT
    assert set(result["quantized"]) == {"/stem/stem.0/Conv", "/res1/res1.0/Conv", "/res2/res2.0/Conv",
                                        "/down/down.0/Conv", "/fc/Gemm", "/Add", "/gap/GlobalAveragePool"}
    written = onnx.load(out)
    assert any(i.data_type == TensorProto.UINT8 for i in written.graph.initializer)
    assert sum(n.op_type == "QuantizeLinear" for n in written.graph.node) == 9  # one per placed tensor
    assert json.loads(recipe.read_text())["edits"][-1]["target"] == ORT
    from workbench.session import Session

    assert model_bytes(Session.load(recipe).model) == model_bytes(load_model(written))
    ops = _optimized_ops(written, tmp_path)
    assert ops["QLinearConv"] == 4
    bad = tmp_path / "bad.onnx"
    proc = subprocess.run([str(cli_path), "quantize", "digits_cnn", "--calib", str(CALIB), "--target", "gpu",
                           "-o", str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and not bad.exists()
    assert "--target" in proc.stderr and "'gpu'" in proc.stderr and "onnxruntime" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_calibrate_tab_places_for_onnxruntime(tmp_path: Path) -> None:
    from workbench.session import Session
    from workbench.ui.calibrate_tab import CalibrateTab
    from workbench.ui.common import Status

    session = Session("digits_cnn", cache_dir=tmp_path / "cache")
    session.apply(FuseBatchNorm())
    tab = CalibrateTab(session, Status())
    assert tab.target.value == "tensorrt" and dict(tab.target.options)["ONNX Runtime CPU"] == ORT
    tab.target.value = ORT
    tab.run_button.click()
    tab.wait()
    assert tab.status.state == "ok", tab.status.message
    assert list(tab.tensor.options) == activation_tensors(session.model, target=ORT)
    tab.tensor.value = "/stem/stem.2/Relu_output_0"
    stats = tab.cache.tensors[tab.tensor.value]
    assert "uint8 scale" in tab.thresholds.value
    assert f"{stats.amax / 255.0:.4g} (zero point 0)" in tab.thresholds.value  # a Relu output: [0, amax]
    tab.target.value = "tensorrt"
    assert "int8 scale" in tab.thresholds.value and f"{stats.amax / 127.0:.4g}" in tab.thresholds.value
    tab.target.value = ORT
    tab.quantize_button.click()
    assert tab.status.state == "ok", tab.status.message
    edit = session.recipe.edits[-1]
    assert edit.kind == "quantize" and edit.target == ORT
    zp = next(i for i in session.model.graph.initializer if i.name == "/down/down.2/Relu_output_0__zero_point")
    assert zp.data_type == TensorProto.UINT8
    # the ONNX Runtime placement's tensors include TensorRT's: the same scales serve both placements
    session.undo()
    tab.target.value = "tensorrt"
    tab.quantize_button.click()
    assert tab.status.state == "ok", tab.status.message
    assert session.recipe.edits[-1].target == "tensorrt"
    # the other way round, TensorRT's scales lack the conv outputs: the tab says to calibrate again
    session.undo()
    tab.run_button.click()
    tab.wait()
    tab.target.value = ORT
    tab.quantize_button.click()
    assert tab.status.state == "error" and "/Add_output_0" in tab.status.message
    assert "placement" in tab.status.hint and session.recipe.edits[-1].kind == "fuse_batchnorm"


# --- the accuracy debugger on these models ---------------------------------------------------------------


def test_sensitivity_ranks_every_quantized_layer(digits: onnx.ModelProto, digits_ort_scales: ScaleCache) -> None:
    q = quantize_model(digits, digits_ort_scales, target=ORT)
    layers = low_precision_layers(digits, q)
    assert set(quantization_targets(digits, target=ORT)) <= set(layers)
    x = {"input": _data("digits_test")["input"][:96]}
    sens = sensitivity(digits, q, x, workers=1)
    assert sorted(sens.ranking) == sorted(layers)
    assert sens.metric_before > 0 and all(np.isfinite(v) for v in sens.table.column("rel_l2_restored"))
    assert max(sens.table.column("score")) > 0  # restoring some layer helps
    # restoring every quantized layer leaves no reader of a DQ'd activation: the FP32 model again
    restored = restore_layers(q, digits, layers)
    assert not [n for n in restored.graph.node if n.op_type == "QuantizeLinear"]
    ref = OrtEngine(digits).run(x)["logits"]
    np.testing.assert_allclose(OrtEngine(restored).run(x)["logits"], ref, rtol=1e-4, atol=1e-4)
    only = sensitivity(digits, q, x, workers=1, direction="quantize_only")
    assert sorted(only.ranking) == sorted(layers)


def _conv_clip_model(clip_min: float) -> onnx.ModelProto:
    """x -> Conv -> Clip(0, 6) -> Conv -> Clip(clip_min, 6) -> GlobalAveragePool (a MobileNet-like ReLU6 pair)."""
    from onnx import helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in [
        ("w1", rng.standard_normal((8, 3, 3, 3)) * 0.3), ("b1", rng.standard_normal(8) * 0.1),
        ("w2", rng.standard_normal((8, 8, 3, 3)) * 0.2), ("b2", rng.standard_normal(8) * 0.1),
        ("zero", np.array(0.0)), ("low", np.array(clip_min)), ("six", np.array(6.0))]]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1] * 4),
             helper.make_node("Clip", ["c1", "zero", "six"], ["r1"], name="clip1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1] * 4),
             helper.make_node("Clip", ["c2", "low", "six"], ["r2"], name="clip2"),
             helper.make_node("GlobalAveragePool", ["r2"], ["y"], name="gap")]
    graph = helper.make_graph(nodes, "relu6", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return infer_shapes(model, where="relu6 model")


@pytest.mark.parametrize("clip_min, points, clips_left", [(0.0, ["x", "r1", "r2"], 0), (-1.0, ["x", "r1", "c2"], 1)])
def test_relu6_is_removed_when_it_clips_at_zero(clip_min: float, points: list[str], clips_left: int,
                                               tmp_path: Path) -> None:
    model = _conv_clip_model(clip_min)
    assert activation_tensors(model, target=ORT) == points  # the output Q goes past Clip(0, 6), not past Clip(-1, 6)
    x = np.random.default_rng(1).standard_normal((32, 3, 16, 16)).astype(np.float32)
    q = quantize_model(model, _quiet_calibrate(model, {"x": x}, tensors=points), target=ORT)
    ops = _optimized_ops(q, tmp_path)
    assert ops["QLinearConv"] == 2 and ops["Conv"] == 0 and ops["Clip"] == clips_left
    ref, out = OrtEngine(model).run({"x": x})["y"], OrtEngine(q).run({"x": x})["y"]
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 0.05


def test_precision_tab_places_int8_rows_for_onnxruntime(tmp_path: Path) -> None:
    from workbench.session import Session
    from workbench.ui.common import Status
    from workbench.ui.precision_tab import PrecisionTab

    session = Session("digits_cnn", cache_dir=tmp_path / "cache")
    session.apply(FuseBatchNorm())
    tab = PrecisionTab(session, Status())
    tab.target.value = ORT
    tab.op_type.value, tab.op_precision.value = "Conv", "int8"
    tab.set_op_button.click()
    _quiet_calibrate(session.model, CALIB, cache_dir=session.cache_dir)  # TensorRT's tensors only
    tab.apply_button.click()
    assert tab.status.state == "error" and "/down/down.2/Relu_output_0" in tab.status.message
    assert "target='onnxruntime'" in tab.status.hint and session.recipe.edits[-1].kind == "fuse_batchnorm"
    _quiet_calibrate(session.model, CALIB, cache_dir=session.cache_dir,
                     tensors=activation_tensors(session.model, target=ORT))
    tab.apply_button.click()
    assert tab.status.state == "ok", tab.status.message
    edit = session.recipe.edits[-1]
    assert edit.target == ORT and len(edit.nodes) == 4 and all("Conv" in n for n in edit.nodes)
    ops = _optimized_ops(session.model, tmp_path)
    # the Add left in fp32 reads the stem's and res2's float outputs, so those two convs cannot fuse
    assert ops["QLinearConv"] == 2 and ops["QGemm"] == ops["QLinearAdd"] == 0
    session.undo()  # the rows are fp32 again
    for op in ("Conv", "Add"):
        tab.op_type.value = op
        tab.set_op_button.click()
    tab.apply_button.click()
    assert tab.status.state == "ok", tab.status.message
    ops = _optimized_ops(session.model, tmp_path)
    assert ops["QLinearConv"] == 4 and ops["QLinearAdd"] == 1 and ops["QGemm"] == 0  # the Gemm row stays fp32


def test_onnxruntime_only_qdq_names_what_tensorrt_would_refuse() -> None:
    """The transformer's LayerNorm outputs are signed: the ONNX Runtime placement gives them non-zero uint8 zero
    points, and its classifier bias is int32; the TensorRT placement of the same scales has neither."""
    from workbench.precision import onnxruntime_only_qdq

    m = load_model("digits_transformer")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scales = calibrate(m, SAMPLES / "digits_calib_seq.npz", tensors=activation_tensors(m, target=ORT))
    found = onnxruntime_only_qdq(quantize_model(m, scales, target=ORT))
    reasons = Counter(found.values())
    assert reasons["has a non-zero zero point (asymmetric quantization)"] > 0
    assert reasons["dequantizes an int32 tensor (an ONNX Runtime-style quantized bias)"] >= 1
    assert all(name.endswith(("QuantizeLinear", "DequantizeLinear")) for name in found)
    assert onnxruntime_only_qdq(quantize_model(m, scales)) == {}
