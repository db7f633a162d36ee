"""Calibration: streamed histograms, the four methods, data sources, bad input, the scale cache and the CLI."""

from __future__ import annotations

import json
import subprocess
import threading
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

from workbench.backends.ort import OrtEngine, with_outputs
from workbench.calibration import (
    RunningHistogram,
    calibrate,
    compute_thresholds,
)
from workbench.cli import main as cli_main
from workbench.data import random_data
from workbench.errors import CalibrationError, DataError, EditError
from workbench.graph import load_model, model_bytes
from workbench.precision import ScaleCache, activation_tensors, quantize_model

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"
CALIB = SAMPLES / "digits_calib.npz"


@pytest.fixture(scope="module")
def cnn() -> onnx.ModelProto:
    return load_model("digits_cnn")


@pytest.fixture(scope="module")
def calib() -> np.ndarray:
    return np.load(CALIB)["input"]


# --- histograms and methods ----------------------------------------------------------------------------


def test_running_histogram_regrows_exactly() -> None:
    rng = np.random.default_rng(0)
    parts = [rng.standard_normal(5000) * s for s in (0.5, 1.0, 3.0, 2.0)]  # range grows twice
    h = RunningHistogram(512)
    for p in parts:
        h.update(p)
    allv = np.abs(np.concatenate(parts))
    assert h.amax == pytest.approx(allv.max())
    assert h.hist_max >= allv.max() and h.count == allv.size == h.counts.sum()
    ref, _ = np.histogram(allv, bins=512, range=(0, h.hist_max))
    # doubling merges whole bins, so the streamed histogram equals the one over all data up to edge rounding
    assert np.abs(h.counts - ref).sum() <= 4
    assert h.min == pytest.approx(np.concatenate(parts).min())


def test_methods_on_a_distribution_with_outliers() -> None:
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.standard_normal(200_000), [40.0, -35.0]]).astype(np.float32)
    h = RunningHistogram(2048)
    h.update(x)
    th = compute_thresholds(h, percentile=99.9)
    assert th["max"] == pytest.approx(40.0)
    width = h.hist_max / h.num_bins
    assert abs(th["percentile"] - np.percentile(np.abs(x), 99.9)) <= width
    # entropy clips the two outliers: well below the max, above the bulk of a unit Gaussian
    assert 2.5 < th["entropy"] < 10.0, th["entropy"]

    def mse(t: float) -> float:
        s = t / 127.0
        return float(np.mean((np.clip(np.rint(x / s), -127, 127) * s - x) ** 2))

    # mse: within 5 % of the best error over a fine brute-force grid on the raw values
    best = min(mse(t) for t in np.linspace(1.0, 40.0, 400))
    assert mse(th["mse"]) <= 1.05 * best
    assert mse(th["mse"]) < mse(th["max"])  # (entropy minimises a divergence, not this error)


def test_calibrate_matches_onnxruntime_ranges(cnn: onnx.ModelProto, calib: np.ndarray) -> None:
    cache = calibrate(cnn, CALIB, method="max")
    names = activation_tensors(cnn)
    assert sorted(cache.tensors) == sorted(names)
    inner = [t for t in names if t != "input"]
    outs = OrtEngine(with_outputs(cnn, inner)).run({"input": calib}, inner)
    outs["input"] = calib
    for t in names:
        s = cache.tensors[t]
        assert s.amax == pytest.approx(float(np.abs(outs[t]).max()), rel=1e-6)
        assert s.min == pytest.approx(float(outs[t].min()), rel=1e-6, abs=1e-7)
        assert sum(s.hist) == outs[t].size and len(s.hist) == 128
        assert set(s.thresholds) == {"max", "percentile", "entropy", "mse", "auto"}
        assert all(0 < v <= s.thresholds["max"] * (1 + 1e-6) for v in s.thresholds.values())
    assert cache.samples == len(calib) == 300 and cache.warnings == []


# --- data sources -------------------------------------------------------------------------------------


def test_sources_agree_and_report_progress(cnn: onnx.ModelProto, calib: np.ndarray, tmp_path: Path) -> None:
    seen: list[tuple[int, int | None]] = []
    from_file = calibrate(cnn, CALIB, progress=lambda done, total, phase="": seen.append((done, total)))
    assert seen[-1] == (300, 300) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    from_dict = calibrate(cnn, {"input": calib})
    from_iter = calibrate(cnn, [{"input": calib[i : i + 16]} for i in range(0, 300, 16)])
    for other in (from_dict, from_iter):
        assert other.amax() == pytest.approx(from_file.amax())
    # other batch sizes see the same values (max agrees exactly); histogram-based methods may move a bin or two
    by50 = calibrate(cnn, (({"input": calib[i : i + 50]}) for i in range(0, 300, 50)), method="max")
    assert by50.amax() == pytest.approx(from_file.with_method("max").amax())
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(120):
        np.save(folder / f"{i:03d}.npy", calib[i])  # a folder of .npy files: one sample each, read lazily
    from_imgs = calibrate(cnn, folder, batch_size=32)
    assert from_imgs.samples == 120
    assert from_imgs.tensors["input"].amax == pytest.approx(float(calib[:120].max()))


def test_random_data_and_few_samples_are_warned(cnn: onnx.ModelProto) -> None:
    with pytest.warns(UserWarning, match="RANDOM data"):
        data = random_data(cnn, samples=20)
    assert data.shape("input") == (20, 1, 8, 8)
    with pytest.warns(UserWarning, match="only 20 calibration samples"):
        cache = calibrate(cnn, data)
    assert any("100-500" in w for w in cache.warnings)


@pytest.mark.parametrize("feeds, words", [
    ({"image": np.zeros((4, 1, 8, 8), np.float32)}, "image"),
    ({"input": np.zeros((4, 1, 9, 9), np.float32)}, "shape"),
    ({"input": np.zeros((4, 1, 8, 8), np.float64)}, "dtype float64"),
    ({"input": np.full((4, 1, 8, 8), np.nan, np.float32)}, "NaN"),
    ({"input": np.zeros((0, 1, 8, 8), np.float32)}, "no samples"),
])
def test_bad_data_names_the_problem(cnn: onnx.ModelProto, feeds: dict, words: str, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=words) as info:
        calibrate(cnn, feeds, cache_dir=tmp_path)
    assert info.value.hint
    assert not (tmp_path / "scales").exists()  # nothing written


def test_bad_npz_and_bad_requests(cnn: onnx.ModelProto, tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, pixels=np.zeros((4, 1, 8, 8), np.float32))
    with pytest.raises(DataError, match=r"no array for model input\(s\) \['input'\]"):
        calibrate(cnn, bad)
    with pytest.raises(DataError, match="not found"):
        calibrate(cnn, tmp_path / "missing.npz")
    with pytest.raises(EditError, match="'ghost'"):
        calibrate(cnn, CALIB, exclude=["ghost"])
    with pytest.raises(EditError, match="unknown quantization dtype 'fp4'"):
        calibrate(cnn, CALIB, dtype="fp4")
    with pytest.raises(CalibrationError, match="unknown calibration method 'kl'"):
        calibrate(cnn, CALIB, method="kl")


def test_cancel_stops_between_batches(cnn: onnx.ModelProto, tmp_path: Path) -> None:
    stop = threading.Event()
    done: list[int] = []

    def progress(n: float, total: float, phase: str = "") -> None:
        done.append(int(n))
        if n >= 32:
            stop.set()

    with pytest.raises(CalibrationError, match="cancelled after 32 samples"):
        calibrate(cnn, CALIB, progress=progress, cancel=stop, cache_dir=tmp_path)
    assert done == [16, 32] and not (tmp_path / "scales").exists()


def test_all_zero_activation_is_reported_and_refused(calib: np.ndarray) -> None:
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])
    w1 = numpy_helper.from_array(-np.abs(np.ones((4, 4), np.float32)), "w1")
    w2 = numpy_helper.from_array(np.ones((4, 3), np.float32), "w2")
    nodes = [helper.make_node("MatMul", ["input", "w1"], ["h"], name="mm1"),
             helper.make_node("Relu", ["h"], ["dead"], name="relu"),
             helper.make_node("MatMul", ["dead", "w2"], ["y"], name="mm2")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w1, w2]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model = load_model(model)
    with pytest.warns(UserWarning, match="tensor 'dead' was all zeros"):
        cache = calibrate(model, {"input": np.abs(np.random.default_rng(0).standard_normal((120, 4)))
                                  .astype(np.float32)})
    with pytest.raises(CalibrationError, match="tensor 'dead' .*node 'mm2'") as info:
        quantize_model(model, cache)
    assert "--exclude mm2" in info.value.hint
    q = quantize_model(model, cache, exclude=["mm2"])  # the fix the hint names works
    assert sum(n.op_type == "QuantizeLinear" for n in q.graph.node) == 1


# --- scale cache ----------------------------------------------------------------------------------------


def test_scale_cache_roundtrip_reuse_and_hand_override(cnn: onnx.ModelProto, tmp_path: Path) -> None:
    first = calibrate(cnn, CALIB, cache_dir=tmp_path)
    files = sorted((tmp_path / "scales").glob("*.json"))
    digest = first.digest()
    assert tmp_path / "scales" / f"{digest}.json" in files
    loaded = ScaleCache.load(tmp_path / "scales" / f"{digest}.json")
    assert loaded.amax() == first.amax() and loaded.digest() == digest
    assert loaded.model_digest and loaded.data_digest.startswith("file:") and loaded.method == "auto"  # the default method
    calls: list[int] = []
    again = calibrate(cnn, CALIB, cache_dir=tmp_path, progress=lambda n, t, phase="": calls.append(n))
    assert calls == [] and again.amax() == first.amax()  # reused, not recomputed
    other = calibrate(cnn, CALIB, cache_dir=tmp_path, method="max")
    assert other.digest() != digest
    # hand edit: override one tensor's amax in the JSON file, reload, quantize with it
    path = tmp_path / "scales" / f"{digest}.json"
    data = json.loads(path.read_text())
    data["tensors"]["input"]["override"] = 2.54
    path.write_text(json.dumps(data))
    edited = ScaleCache.load(path)
    q = quantize_model(cnn, edited)
    scale = next(i for i in q.graph.initializer if i.name == "input__scale")
    assert onnx.numpy_helper.to_array(scale) == pytest.approx(0.02)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(CalibrationError, match="broken.json"):
        ScaleCache.load(tmp_path / "broken.json")


def test_with_method_switches_thresholds(cnn: onnx.ModelProto) -> None:
    cache = calibrate(cnn, CALIB, method="entropy")
    mx = cache.with_method("max")
    assert all(mx.tensors[t].amax == cache.tensors[t].thresholds["max"] for t in cache.tensors)
    assert calibrate(cnn, CALIB, method="max").amax() == pytest.approx(mx.amax())


# --- CLI --------------------------------------------------------------------------------------------------


def test_cli_quantize_json_and_recipe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, recipe = tmp_path / "q.onnx", tmp_path / "r.json"
    code = cli_main(["quantize", "digits_cnn", "--calib", str(CALIB), "--method", "percentile", "--exclude",
                     "/fc/Gemm", "-o", str(out), "--recipe-out", str(recipe), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert result["output"] == str(out) and result["excluded"] == ["/fc/Gemm"]
    assert "/fc/Gemm" not in result["quantized"] and "/stem/stem.0/Conv" in result["quantized"]
    assert result["calibration"]["method"] == "percentile" and result["calibration"]["samples"] == 300
    assert result["calibration"]["seconds"] > 0 and result["calibration"]["peak_rss_mb"] > 0
    written = onnx.load(out)
    from workbench.edits import apply_edit
    from workbench.recipe import FuseBatchNorm

    assert result["fused_batchnorm"] == 4  # BatchNorm folded into the convs before quantizing (as TensorRT does)
    fused = apply_edit(load_model("digits_cnn"), FuseBatchNorm())
    assert not [n for n in written.graph.node if n.op_type == "BatchNormalization"]
    assert sum(n.op_type == "QuantizeLinear" for n in written.graph.node) == len(
        activation_tensors(fused, exclude=["/fc/Gemm"]))
    from workbench.session import Session

    replay = Session.load(recipe)  # scale cache copied beside the recipe
    assert model_bytes(replay.model) == model_bytes(load_model(written))


def test_cli_errors_exit_1_and_write_nothing(tmp_path: Path, cli_path: Path) -> None:
    out = tmp_path / "q.onnx"
    bad = tmp_path / "bad.npz"
    np.savez(bad, input=np.full((8, 1, 8, 8), np.inf, np.float32))
    for args, words in [
        (["--calib", str(bad)], "NaN or Inf"),
        (["--calib", str(CALIB), "--exclude", "ghost"], "ghost"),
        (["--calib", str(CALIB), "--dtype", "fp8"], "FP8 leaves float"),  # every conv of it has <= 16 channels
    ]:
        proc = subprocess.run([str(cli_path), "quantize", "digits_cnn", *args, "-o", str(out), "--json"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1, proc.stderr
        err = json.loads(proc.stdout)
        assert words in err["error"] and err["hint"] and "Traceback" not in proc.stderr
        assert not out.exists()


def test_cli_convert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "f.onnx"
    code = cli_main(["convert", "digits_transformer", "--precision", "fp16", "--keep", "op:Gemm", "-o", str(out),
                     "--json"])
    r = json.loads(capsys.readouterr().out)
    assert code == 0 and r["output"] == str(out)
    assert "/head/Gemm" in r["kept"] and "/head/Gemm" not in r["converted"]
    assert any("Softmax" in n for n in r["kept"])  # guarded
    assert "/embed/MatMul" in r["converted"]
    test = np.load(SAMPLES / "digits_test_seq.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logits = OrtEngine(onnx.load(out)).run({"input": test["input"]})["logits"]
    assert (logits.argmax(1) == test["label"]).mean() >= 0.965
