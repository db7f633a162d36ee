"""compare: output and layerwise metrics against numpy/ORT's own numbers, first divergence, local error, bad input."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from workbench.compare import ErrorMetrics, ErrorStats, Tolerance, accuracy, compare, joined_tensors
from workbench.data import load_data
from workbench.debug import outlier_channel_model
from workbench.errors import DataError, ModelError
from workbench.graph import load_model, sample_path
from workbench.precision import activation_tensors, convert_precision, quantize_model

TEST = sample_path("digits_cnn").parent / "digits_test.npz"
CALIB = sample_path("digits_cnn").parent / "digits_calib.npz"
OUTLIERS = {"/res1/res1.1/BatchNormalization": "/res2/res2.0/Conv", "/down/down.1/BatchNormalization": "/fc/Gemm"}


def max_scales(model: onnx.ModelProto) -> dict[str, float]:
    """amax = max |x| over the calibration split, from ORT's own run of the FP32 model."""
    acts = activation_tensors(model)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for t in acts:
        m.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    values = sess.run(acts, {"input": np.load(CALIB)["input"]})
    return {t: float(np.abs(v).max()) for t, v in zip(acts, values)}


@pytest.fixture(scope="module")
def models() -> dict[str, onnx.ModelProto]:
    ref = load_model("digits_cnn")
    broken = load_model(outlier_channel_model(ref, OUTLIERS, channel=3, factor=64.0))
    return {"ref": ref, "outlier": broken, "q": load_model(quantize_model(broken, max_scales(broken))),
            "q_plain": load_model(quantize_model(ref, max_scales(ref)))}


def ort_outputs(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(["logits"], {"input": x})[0]


def test_output_metrics_equal_numpy_on_ort_outputs(models):
    data = np.load(TEST)
    r_out = ort_outputs(models["outlier"], data["input"]).astype(np.float64)
    c_out = ort_outputs(models["q"], data["input"]).astype(np.float64)
    report = compare(models["outlier"], models["q"], TEST, metrics=[accuracy()], batch_size=50)
    m = report.outputs["logits"]
    d = c_out - r_out
    assert m["max_abs"] == pytest.approx(np.abs(d).max(), rel=1e-5)
    assert m["mean_abs"] == pytest.approx(np.abs(d).mean(), rel=1e-5)
    assert m["rel_l2"] == pytest.approx(np.linalg.norm(d) / np.linalg.norm(r_out), rel=1e-5)
    cos = (r_out * c_out).sum() / (np.linalg.norm(r_out) * np.linalg.norm(c_out))
    assert m["cosine"] == pytest.approx(cos, rel=1e-6)
    assert m["snr_db"] == pytest.approx(10 * np.log10((r_out**2).sum() / (d**2).sum()), rel=1e-5)
    assert m["top1_agreement"] == pytest.approx((r_out.argmax(1) == c_out.argmax(1)).mean())
    acc_ref = (r_out.argmax(1) == data["label"]).mean()
    acc_cand = (c_out.argmax(1) == data["label"]).mean()
    assert report.metrics["accuracy"] == pytest.approx({"reference": acc_ref, "candidate": acc_cand})
    assert acc_cand < acc_ref - 0.02  # the outlier channel really breaks INT8
    assert report.samples == len(data["label"])
    assert report.passed is (m["rel_l2"] <= 0.1)


def test_error_stats_streamed_equal_one_shot():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((100, 7)).astype(np.float32)
    cand = ref + 0.01 * rng.standard_normal((100, 7)).astype(np.float32)
    whole, parts = ErrorStats(), ErrorStats()
    whole.update(ref, cand, 100)
    for i in range(0, 100, 13):
        parts.update(ref[i:i + 13], cand[i:i + 13], len(ref[i:i + 13]))
    a, b = whole.metrics().to_dict(), parts.metrics().to_dict()
    for k in ("max_abs", "mean_abs", "rel_l2", "cosine", "snr_db"):
        assert a[k] == pytest.approx(b[k], rel=1e-9)
    assert parts.metrics().samples == 100
    assert parts.metrics().rel_l2 == pytest.approx(np.linalg.norm(cand - ref) / np.linalg.norm(ref), rel=1e-6)


def test_layerwise_first_divergence_is_the_conv_reading_the_outlier(models):
    report = compare(models["outlier"], models["q"], TEST, layerwise=True)
    fd = report.first_divergence
    assert fd["node"] == "/res2/res2.0/Conv" and fd["tensor"] == "/res2/res2.0/Conv_output_0"
    rows = {r["tensor"]: r for r in report.layers.records()}
    # its own (local) error is the whole error: it is not inherited
    assert rows["/res2/res2.0/Conv_output_0"]["local_rel_l2"] > 0.3
    assert rows["/res1/res1.2/Relu_output_0"]["rel_l2"] < 0.05
    # BatchNormalization runs in float in both: its local error is rounding only, its error is inherited
    bn = rows["/res2/res2.1/BatchNormalization_output_0"]
    assert bn["local_rel_l2"] < 1e-5 < 0.3 < bn["rel_l2"]
    # layers are in graph order and every float node output of the reference was joined
    ref_order = [o for n in models["outlier"].graph.node for o in n.output]
    assert report.layers.column("tensor") == ref_order
    assert report.node_errors()["/res2/res2.0/Conv"] == rows["/res2/res2.0/Conv_output_0"]["rel_l2"]


def test_layerwise_matches_ort_on_an_intermediate_tensor(models):
    t = "/res2/res2.0/Conv_output_0"
    x = np.load(TEST)["input"][:64]

    def value(model):
        m = onnx.ModelProto()
        m.CopyFrom(model)
        m.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
        s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return s.run([t], {"input": x})[0].astype(np.float64)

    r, c = value(models["outlier"]), value(models["q"])
    report = compare(models["outlier"], models["q"], {"input": x}, layerwise=True, tensors=[t], local=False)
    row = report.layers.records()[0]
    assert row["tensor"] == t and len(report.layers) == 1
    assert row["rel_l2"] == pytest.approx(np.linalg.norm(c - r) / np.linalg.norm(r), rel=1e-4)


def test_identical_models_have_zero_error_everywhere(models):
    report = compare(models["ref"], models["ref"], TEST, layerwise=True, max_samples=64)
    assert report.samples == 64
    assert report.first_divergence is None
    assert set(report.layers.column("rel_l2")) == {0.0}
    assert max(report.layers.column("local_rel_l2")) < 1e-6  # only ORT fusion rounding (Conv+BN fused or not)


def test_fp16_candidate_joins_through_cast_names(models):
    cand = load_model(convert_precision(models["ref"], "fp16"))
    joined, only_ref, _ = joined_tensors(models["ref"], cand)
    float_outputs = [o for n in models["ref"].graph.node for o in n.output]
    assert list(joined) == float_outputs and not only_ref
    assert any(v.endswith("__fp16") for v in joined.values())  # some only exist in fp16
    report = compare(models["ref"], cand, TEST, layerwise=True, max_samples=64)
    assert 0 < report.outputs["logits"]["rel_l2"] < 0.01
    assert all(r["rel_l2"] < 0.01 for r in report.layers.records())


def test_nan_in_candidate_is_located(models):
    bad = onnx.ModelProto()
    bad.CopyFrom(models["ref"])
    for init in bad.graph.initializer:
        if init.name == "res1.1.running_var":  # a negative variance: sqrt(<0) = NaN in that BatchNorm
            arr = onnx.numpy_helper.to_array(init).copy()
            arr[2] = -1.0
            init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    report = compare(models["ref"], bad, TEST, layerwise=True, max_samples=32)
    assert report.nan["node"] == "/res1/res1.1/BatchNormalization"
    assert report.nan["tensor"] == "/res1/res1.1/BatchNormalization_output_0"
    assert report.outputs["logits"]["passed"] is False
    assert report.first_divergence["node"] == "/res1/res1.1/BatchNormalization"
    assert any("NaN" in w for w in report.warnings)
    # without --layerwise the origin is still found
    assert compare(models["ref"], bad, TEST, max_samples=32).nan["node"] == "/res1/res1.1/BatchNormalization"


def test_tensor_only_in_one_model_is_reported_not_fatal(models):
    cand = onnx.ModelProto()
    cand.CopyFrom(models["q_plain"])
    old = "/pool/MaxPool_output_0"
    for n in cand.graph.node:
        n.output[:] = ["renamed_pool" if o == old else o for o in n.output]
        n.input[:] = ["renamed_pool" if i == old else i for i in n.input]
    report = compare(models["ref"], load_model(cand), TEST, layerwise=True, max_samples=32)
    assert report.only_in_reference == [old]
    assert "renamed_pool" in report.only_in_candidate
    assert old not in report.layers.column("tensor")
    assert any(old in w for w in report.warnings)


def test_bad_input_raises_clear_errors(models, tmp_path):
    from tests.models import conv_bn_relu_model

    with pytest.raises(ModelError, match="inputs differ|lacks output|shape"):
        compare(models["ref"], conv_bn_relu_model(), TEST)
    with pytest.raises(DataError, match="input") as e:
        compare(models["ref"], models["q"], {"image": np.zeros((4, 1, 8, 8), np.float32)})
    assert "input" in e.value.hint
    with pytest.raises(DataError, match="zero samples"):
        compare(models["ref"], models["q"], {"input": np.zeros((0, 1, 8, 8), np.float32)})
    with pytest.raises(DataError, match="not found"):
        load_data(tmp_path / "missing.npz")
    with pytest.raises(DataError, match="float64"):
        compare(models["ref"], models["q"], {"input": np.zeros((4, 1, 8, 8))})
    few = compare(models["ref"], models["q"], {"input": np.load(TEST)["input"][:5]})
    assert any("only 5 samples" in w for w in few.warnings)
    with pytest.raises(DataError, match="tolerance"):
        Tolerance.parse("rel=0.1")


def test_tolerance_parse_and_pass_fail():
    t = Tolerance.parse("rel_l2=0.05,cosine=0.99")
    assert t.rel_l2 == 0.05 and t.cosine == 0.99 and t.max_abs is None
    def m(rel_l2, cosine, nan=0, max_abs=0.1):
        return ErrorMetrics(max_abs=max_abs, mean_abs=0.01, rel_l2=rel_l2, cosine=cosine, snr_db=None, nan=nan,
                            samples=1)

    assert t.passed(m(0.04, 0.995))
    assert not t.passed(m(0.04, 0.98))
    assert not t.passed(m(0.0, 1.0, nan=3))
    assert not t.passed(m(None, 0.995))  # rel_l2 undefined (a zero reference) with a nonzero difference
    assert t.passed(m(None, 0.995, max_abs=0.0))  # ... and with none
    assert Tolerance.parse("0.2").rel_l2 == 0.2


def test_cli_compare_json(models, tmp_path, cli_path):
    ref, cand = tmp_path / "ref.onnx", tmp_path / "q.onnx"
    onnx.save(models["outlier"], ref)
    onnx.save(models["q"], cand)
    proc = subprocess.run([str(cli_path), "compare", str(ref), str(cand), "--inputs", str(TEST), "--layerwise",
                           "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out["outputs"]["logits"]) >= {"max_abs", "mean_abs", "rel_l2", "cosine", "snr_db"}
    assert out["first_divergence"]["node"] == "/res2/res2.0/Conv"
    assert len(out["layers"]) == len(models["outlier"].graph.node)
    assert out["metrics"]["accuracy"]["candidate"] < out["metrics"]["accuracy"]["reference"]
    bad = subprocess.run([str(cli_path), "compare", str(ref), str(cand), "--inputs", str(tmp_path / "no.npz"),
                          "--json"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    err = json.loads(bad.stdout)
    assert "no.npz" in err["error"] and err["hint"]
    one = subprocess.run([str(cli_path), "compare", str(ref), str(cand), "--inputs", str(TEST), "--workers", "1",
                          "--json"], capture_output=True, text=True, timeout=120)
    assert json.loads(one.stdout)["metrics"] == out["metrics"]  # accuracy counts do not depend on workers


def test_candidate_as_an_engine_compares_outputs_only(models):
    from workbench.backends.ort import OrtEngine

    as_engine = compare(models["outlier"], OrtEngine(models["q"]), TEST, max_samples=64)
    as_model = compare(models["outlier"], models["q"], TEST, max_samples=64)
    assert as_engine.outputs["logits"]["rel_l2"] == pytest.approx(as_model.outputs["logits"]["rel_l2"], rel=1e-6)
    with pytest.raises(DataError, match="layerwise"):
        compare(models["outlier"], OrtEngine(models["q"]), TEST, layerwise=True)


def test_max_samples_is_exact_with_a_dynamic_batch(models):
    report = compare(models["outlier"], models["q"], TEST, max_samples=50, batch_size=32)
    assert report.samples == 50 and report.outputs["logits"]["samples"] == 50


def test_local_error_of_a_selected_tensor_equals_the_full_run(models):
    conv, bn = "/res2/res2.0/Conv_output_0", "/res2/res2.1/BatchNormalization_output_0"
    full = {r["tensor"]: r for r in compare(models["outlier"], models["q"], TEST, layerwise=True,
                                            max_samples=64).layers.records()}
    one = compare(models["outlier"], models["q"], TEST, layerwise=True, tensors=[conv, bn], max_samples=64)
    rows = {r["tensor"]: r for r in one.layers.records()}
    assert rows[conv]["local_rel_l2"] == pytest.approx(full[conv]["local_rel_l2"], rel=1e-5)
    assert rows[conv]["local_rel_l2"] > 0.3
    assert rows[bn]["local_rel_l2"] < 1e-5 < 0.3 < rows[bn]["rel_l2"]  # BatchNorm only inherits its error


def test_worker_threads_give_the_same_report_up_to_the_rounding_of_sums(models):
    """3 workers share a batch of 32 (11 samples each); every metric matches one worker's to float rounding,
    maxima and counts exactly, and one worker is bit-identical to the batch loop it replaced (sums per batch)."""
    data = np.load(TEST)
    ds = {"input": data["input"][:150], "label": data["label"][:150]}
    one, three = (compare(models["outlier"], models["q"], ds, layerwise=True, metrics=[accuracy()], batch_size=32,
                          workers=w) for w in (1, 3))
    assert one.samples == three.samples == 150
    def close(a: dict, b: dict) -> bool:
        return a.keys() == b.keys() and all(
            (a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-12)) if isinstance(a[k], float) else a[k] == b[k]
            for k in a)

    assert close(one.first_divergence, three.first_divergence)
    assert one.metrics == three.metrics  # per-sample values summed: counts of correct samples, exact
    for o in one.outputs:
        assert close(one.outputs[o], three.outputs[o])
        assert one.outputs[o]["max_abs"] == three.outputs[o]["max_abs"]
    for a, b in zip(one.layers.records(), three.layers.records()):
        assert close(a, b)
        assert a["max_abs"] == b["max_abs"] and a["nan"] == b["nan"]
    # one worker == one ErrorStats fed batch by batch on the main thread (outputs only: the same ORT graph)
    plain = compare(models["outlier"], models["q"], ds, batch_size=32, workers=1)
    direct = ErrorStats()
    for i in range(0, 150, 32):
        x = ds["input"][i:i + 32]
        direct.update(ort_outputs(models["outlier"], x), ort_outputs(models["q"], x), len(x))
    expected = direct.metrics().to_dict()
    assert {k: plain.outputs["logits"][k] for k in expected} == expected


def test_cancel_stops_between_batches_with_what_was_compared(models):
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 3  # three batches get through

    report = compare(models["outlier"], models["q"], TEST, layerwise=True, batch_size=32, workers=2, cancel=cancel)
    assert report.samples == 3 * 16  # 2 workers share each batch of 32
    assert "cancelled after 48 samples" in report.warnings
    assert report.layers is not None and report.first_divergence["node"] == "/res2/res2.0/Conv"


def test_non_tensor_outputs_are_left_out_with_a_warning(tmp_path):
    """A ZipMap output (a sequence of maps, as onnxmltools/skl2onnx classifiers end) has no element-wise error:
    compare measures the tensor outputs and says which it left out (it crashed in float() on the dicts)."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2])
    probs = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["n", 2])
    seq = helper.make_value_info("zipped", helper.make_sequence_type_proto(
        helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, []))))
    g = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["probs"], axis=1),
         helper.make_node("ZipMap", ["probs"], ["zipped"], domain="ai.onnx.ml", classlabels_int64s=[0, 1])],
        "zm", [x], [probs, seq])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("ai.onnx.ml", 1)])
    data = {"x": np.random.default_rng(0).standard_normal((8, 2)).astype(np.float32)}
    report = compare(m, m, data)
    assert list(report.outputs) == ["probs"]
    assert any("zipped" in w and "not tensors" in w for w in report.warnings)
