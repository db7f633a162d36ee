"""The calibrate-then-quantize workflow (workbench.workflows.quantize), written once for the CLI and the tabs:
calibration batches merged in batch order give the local run's histograms bit for bit, also as Dask tasks on a real
LocalCluster; typed results give the CLI's JSON; the Precision tab's allowed precisions come from the core."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from workbench.calibration import RunningHistogram, batch_part, calibrate
from workbench.cli import main as cli_main
from workbench.graph import SAMPLES_DIR, load_model
from workbench.precision import TensorStats, activation_tensors
from workbench.precision.allowed import allowed_precisions
from workbench.session import Session
from workbench.workflows import quantize as wq

CALIB = SAMPLES_DIR / "digits_calib.npz"


def _batches(seed: int) -> list[np.ndarray]:
    """Batches with the cases that make merging hard: a value exactly at the first batch's amax (the clamped last
    bin), ranges that double several times and then shrink, all-zero and empty batches."""
    rng = np.random.default_rng(seed)
    first = (rng.standard_normal(300) * 0.5).astype(np.float32)
    first[0] = 6.0
    out = [first]
    for scale in rng.choice([0.05, 1.0, 3.0, 40.0, 0.0, -1.0], size=8):
        if scale < 0:
            out.append(np.zeros(0, np.float32))
            continue
        x = (rng.standard_normal(300) * scale).astype(np.float32)
        x[:3] = 6.0  # exactly the first grid's top: bin num_bins at that grid, clamped only where it is the top
        out.append(x)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_batch_parts_merge_to_the_sequential_histogram(seed: int) -> None:
    batches = _batches(seed)
    here = RunningHistogram(2048)
    for x in batches:
        here.update(x)
    merged = RunningHistogram(2048)
    merged.merge(batch_part(batches[0], 2048, None, own_grid=True))
    base = merged.hist_max
    assert base == 6.0
    for x in batches[1:]:
        merged.merge(batch_part(x, 2048, base))
    assert here.hist_max > 6.0  # the range grew: parts were re-binned
    assert np.array_equal(merged.counts, here.counts) and merged.hist_max == here.hist_max
    assert (merged.min, merged.max, merged.count) == (here.min, here.max, here.count)


def test_a_tensor_zero_on_the_first_batch_merges_from_its_values() -> None:
    later = np.linspace(-3, 5, 400, dtype=np.float32)
    here = RunningHistogram(2048)
    merged = RunningHistogram(2048)
    for x in (np.zeros(50, np.float32), later, later * 2):
        here.update(x)
    merged.merge(batch_part(np.zeros(50, np.float32), 2048, None, own_grid=True))
    parts = [batch_part(later, 2048, None), batch_part(later * 2, 2048, None)]  # no grid known when sent
    assert parts[0].values is not None and parts[0].counts is None
    for p in parts:
        merged.merge(p)
    assert np.array_equal(merged.counts, here.counts) and merged.hist_max == here.hist_max == 5.0 * 2


def _late_tensor_model() -> onnx.ModelProto:
    """x [N, 4] -> Gemm -> Relu -> Gemm -> y: calibrated tensors x and the Relu output."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((8, 3)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Gemm", ["x", "w1"], ["h"], name="fc1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "w2"], ["y"], name="fc2")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("distributed", reason="the cluster extra (dask.distributed), which make test installs")
    from workbench.cluster import connect

    c = connect("local:2")
    yield c
    c.close()


def _same(a, b) -> dict:
    da, db = a.to_dict(), b.to_dict()
    da.pop("seconds"), db.pop("seconds")
    assert da == db
    return da


def test_calibration_on_a_cluster_gives_the_local_scales_bit_for_bit(cluster) -> None:
    cnn = load_model("digits_cnn")
    seen: list[tuple[float, float, str]] = []
    here = calibrate(cnn, CALIB, method="entropy")
    there = calibrate(cnn, CALIB, method="entropy", cluster=cluster, progress=lambda *a: seen.append(a))
    d = _same(here, there)  # every threshold, histogram, min/max and clipped share: not approximately
    assert d["samples"] == 300 and seen[-1] == (300, 300, "calibrating") and len(seen) == 19
    # ranges grew after the first batch for some tensor, so parts really were re-binned on the workers' grids
    first = calibrate(cnn, {"input": np.load(CALIB)["input"][:16]}, method="max")
    assert any(there.tensors[t].hist_max > first.tensors[t].hist_max for t in there.tensors)
    # a tensor all zero on the first batch (x: the first 16 samples are zeros) comes back as values, same bits
    model = _late_tensor_model()
    x = np.random.default_rng(1).standard_normal((64, 4)).astype(np.float32)
    x[:16] = 0.0
    _same(calibrate(model, {"x": x}, tensors=["x", "r"]), calibrate(model, {"x": x}, tensors=["x", "r"],
                                                                     cluster=cluster))


def test_a_worker_error_names_the_tensor_and_batch(cluster) -> None:
    from workbench.errors import CalibrationError

    x = np.random.default_rng(1).standard_normal((64, 4)).astype(np.float32)
    x[40] = 3e38  # finite input, infinite activation: found on the worker, raised here as the local run raises it
    with pytest.raises(CalibrationError, match="tensor 'r' holds NaN or Inf on batch 2 of arrays") as raised:
        calibrate(_late_tensor_model(), {"x": x}, tensors=["r"], cluster=cluster)
    assert "preprocessing" in raised.value.hint


def test_cli_quantize_on_a_local_cluster_gives_the_local_answer(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("distributed", reason="the cluster extra (dask.distributed), which make test installs")
    runs = []
    for i, extra in enumerate(([], ["--cluster", "local:2"])):
        out = tmp_path / f"q{i}.onnx"
        code = cli_main(["quantize", "digits_cnn", "--calib", str(CALIB), "-o", str(out), "--json", *extra])
        r = json.loads(capsys.readouterr().out)
        assert code == 0, r
        runs.append((r, out.read_bytes()))
    (here, here_bytes), (there, there_bytes) = runs
    assert there.pop("cluster") == {"address": "local:2", "workers": 2, "events": []} and "cluster" not in here
    assert here_bytes == there_bytes  # the same scales in the same graph
    for r in (here, there):
        r.pop("output")
        for k in ("seconds", "peak_rss_mb"):
            r["calibration"].pop(k)
    assert there == here and here["calibration"]["scales"]


def test_quantize_result_is_the_cli_json(tmp_path: Path) -> None:
    session = Session("digits_cnn", cache_dir=tmp_path / "cache")
    settings = wq.QuantizeSettings(method="max", exclude=("/fc/Gemm",))
    result = wq.quantize(session, CALIB, settings, output=tmp_path / "q.onnx")
    d = result.to_dict()
    assert set(d) == {"output", "dtype", "target", "quantized", "excluded", "float_heads", "fused_batchnorm",
                      "calibration"}
    assert d["excluded"] == ["/fc/Gemm"] and "/fc/Gemm" not in d["quantized"] and d["fused_batchnorm"] == 4
    assert set(d["calibration"]) == {"scales", "method", "samples", "seconds", "peak_rss_mb", "warnings", "data",
                                     "diagnostics"}
    assert d["calibration"]["samples"] == 300 and d["calibration"]["diagnostics"]["samples"] == 300
    json.dumps(d)  # plain JSON types
    assert result.calibration is not None and result.calibration.cache.method == "max"
    edit = session.recipe.edits[-1]
    assert edit.kind == "quantize" and edit.scales == result.calibration.scales
    assert session.recipe.calibration.data == str(CALIB)


def test_quant_params_are_those_quantize_model_writes(tmp_path: Path) -> None:
    session = Session("digits_cnn", cache_dir=tmp_path / "cache")
    result = wq.quantize(session, CALIB, wq.QuantizeSettings(target="onnxruntime"))
    assert result.calibration is not None
    cache = result.calibration.cache
    model = session.model
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    checked = 0
    for t, stats in cache.tensors.items():
        if f"{t}__zero_point" not in inits:
            continue
        p = wq.quant_params(stats, stats.value, target="onnxruntime")
        assert (float(inits[f"{t}__scale"]), int(inits[f"{t}__zero_point"])) == (p.scale, p.zero_point)
        checked += 1
    assert checked >= 5
    s = TensorStats(amax=2.0, min=-1.0, max=3.0)
    assert wq.quant_params(s, 2.0).scale == 2.0 / 127 and wq.quant_params(s, 2.0, dtype="fp8").scale == 2.0 / 448


def test_allowed_precisions_decide_in_the_core() -> None:
    model = load_model("digits_transformer")
    choices = allowed_precisions(model)
    assert choices.options["/embed/MatMul"] == ("fp32", "fp16", "bf16", "int8", "fp8")
    softmax = next(n for n in choices.options if choices.ops[n] == "Softmax")
    assert choices.guards[softmax] and choices.allows(softmax, "fp16") and not choices.allows(softmax, "int8")
    assert "Constant" not in {choices.ops[n] for n in choices.options}


def test_convert_measures_ranges_through_the_workflow(tmp_path: Path) -> None:
    from tests.test_convert_ranges import X, growing_model

    session = Session(growing_model(), cache_dir=tmp_path / "cache")
    result = wq.convert(session, "fp16", data={"x": X})
    assert set(result.range_kept) == {"m2", "m3"} and "m1" in result.converted and result.output is None
    assert result.data is not None and result.data.samples == 2 and "recipe" not in result.to_dict()
    assert {"m2", "m3"} <= set(session.recipe.edits[-1].keep)


def test_calibrate_reads_folders_and_tab_data_through_load_inputs(tmp_path: Path) -> None:
    cnn = load_model("digits_cnn")
    calib = np.load(CALIB)["input"]
    for i in range(20):
        np.save(tmp_path / f"{i:03d}.npy", calib[i])
    ds = wq.load_inputs(tmp_path, cnn)
    assert ds.samples == 20 and wq.find_inputs(cnn, SAMPLES_DIR)[0] == CALIB
    with pytest.raises(Exception, match="preprocessing flags"):
        wq.load_inputs(CALIB, cnn, preprocessing={"size": (8, 8)})
    assert activation_tensors(cnn)  # the model has tensors to calibrate
