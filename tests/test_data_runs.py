"""Runs: a sample axis the model computes across (a sequence model's time axis) is fed in runs of exactly
``run_length`` consecutive entries, never split nor merged, by every consumer.

The smallest form of Silero VAD's sequence exports (``input`` [sequence_length, 576] -> an LSTM over the whole
sequence): ``x`` [T, 3] -> CumSum over axis 0 (frame t depends on every frame before it in its run) -> MatMul ->
Relu -> MatMul -> ``y`` [T, 2]. The data layer used to concatenate the runs and cut them into batches of its own
size, so compare, calibration and debug measured sequences of other lengths than the model is run on.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper, numpy_helper

from workbench.backends.ort import OrtEngine, with_outputs
from workbench.calibration import calibrate
from workbench.cli import main as cli_main
from workbench.compare import ErrorStats, compare
from workbench.data import load_data, parse_run_length, random_data, timing_feeds
from workbench.debug import debug_precision, sensitivity
from workbench.errors import DataError
from workbench.graph import load_model
from workbench.precision import quantize_model

pytestmark = pytest.mark.filterwarnings(r"ignore:only \d+ calibration samples:UserWarning")
RUN, FRAMES = 4, 12


def cumsum_model(dim: str) -> onnx.ModelProto:
    """x [dim, 3] -> CumSum(axis 0) -> MatMul mm1 -> Relu -> MatMul mm2 -> y [dim, 2]."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((3, 8)).astype(np.float32)
    w2 = rng.standard_normal((8, 2)).astype(np.float32)
    nodes = [helper.make_node("CumSum", ["x", "axis"], ["c"], name="cumsum"),
             helper.make_node("MatMul", ["c", "w1"], ["h"], name="mm1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT, [dim, 3])],
                          [helper.make_tensor_value_info("y", T.FLOAT, [dim, 2])],
                          [numpy_helper.from_array(np.array(0, np.int64), "axis"),
                           numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    return onnx.shape_inference.infer_shapes(m)


def frames() -> dict[str, np.ndarray]:
    """Positive frames: a cumulative sum over 12 frames reaches far beyond one over 4."""
    return {"x": np.abs(np.random.default_rng(1).standard_normal((FRAMES, 3))).astype(np.float32) + 0.1}


def per_run(model: onnx.ModelProto, data: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """``names`` of ``model`` run on each run of RUN frames alone, concatenated: what the model computes."""
    engine = OrtEngine(with_outputs(model, [n for n in names if n != "y"]))
    got = [engine.run({"x": data["x"][i:i + RUN]}) for i in range(0, FRAMES, RUN)]
    return {n: np.concatenate([g[n] for g in got]) for n in names}


def rel_l2(ref: np.ndarray, cand: np.ndarray) -> float:
    """The output error as compare sums it (ErrorStats), one run after another."""
    stats = ErrorStats()
    for i in range(0, FRAMES, RUN):
        part = ErrorStats()
        part.update(ref[i:i + RUN], cand[i:i + RUN], RUN)
        stats.merge(part)
    got = stats.metrics().rel_l2
    r, c = ref.astype(np.float64), cand.astype(np.float64)
    assert got == pytest.approx(math.sqrt(((c - r) ** 2).sum() / (r**2).sum()), rel=1e-6)
    return got


@pytest.fixture(scope="module")
def models() -> tuple[onnx.ModelProto, onnx.ModelProto, onnx.ModelProto, onnx.ModelProto]:
    """(sequence-named reference, its INT8 candidate, the same two with a plain dynamic dim 'n')."""
    seq = cumsum_model("sequence_length")
    cache = calibrate(seq, frames(), method="max", run_length=RUN)
    plain = cumsum_model("n")
    return seq, load_model(quantize_model(seq, cache)), plain, load_model(quantize_model(plain, cache))


def test_a_sequence_axis_without_a_run_length_is_refused_and_never_guessed() -> None:
    seq = cumsum_model("sequence_length")
    with pytest.raises(DataError, match="input 'x' has its samples on axis 0, declared 'sequence_length'") as e:
        load_data(frames(), seq)
    assert "--run-length" in e.value.hint and "12 runs the data as one sequence" in e.value.hint
    for name in ("seq_len", "time", "num_frames", "T_frames", "audioLength"):
        with pytest.raises(DataError, match="sequence/time axis"):
            load_data(frames(), cumsum_model(name))
    ds = load_data(frames(), seq, run_length=RUN)
    assert ds.run_length == RUN and ds.given_run_length == RUN and ds.samples == FRAMES
    assert ds.describe().to_dict()["run_length"] == RUN
    said: list[str] = []
    odd = load_data({"x": frames()["x"][:10]}, seq, run_length=RUN)  # 10 frames: two runs, the last 2 left out
    assert [b.feeds["x"].shape for b in odd.batches(64, warnings=said)] == [(4, 3), (4, 3)]
    assert len(said) == 1 and "run length 4" in said[0] and "2 of 10 samples were dropped" in said[0]
    with pytest.raises(DataError, match="fewer than one run of 4"):
        list(ds.batches(64, max_samples=3))
    # made-up data for a sequence model is one sequence, and says so
    rnd = random_data(seq, samples=6, warn=False)
    assert rnd.run_length == 6 and "one sequence of 6" in rnd.description
    # a plain dynamic axis needs no run length (batches may cut it), and a given one is kept across binds
    assert load_data(frames(), cumsum_model("n")).run_length is None
    assert load_data(ds, cumsum_model("n")).run_length == RUN
    for bad in ("0", "-3", "four"):
        with pytest.raises(DataError, match="--run-length"):
            parse_run_length(bad)


def test_compare_and_layerwise_compare_feed_whole_runs(models) -> None:
    seq, seq_q, plain, plain_q = models
    data = frames()
    ref, cand = per_run(seq, data, ["y", "c"]), per_run(seq_q, data, ["y", "c"])
    want = rel_l2(ref["y"], cand["y"])
    report = compare(seq, seq_q, data, run_length=RUN, batch_size=32, workers=2)
    assert report.samples == FRAMES
    assert report.outputs["y"]["rel_l2"] == want
    assert report.outputs["y"]["max_abs"] == float(np.abs(cand["y"] - ref["y"]).max())
    layer = compare(seq, seq_q, data, run_length=RUN, layerwise=True, workers=1)
    assert layer.outputs["y"]["rel_l2"] == want
    rows = {r["tensor"]: r for r in layer.layers.records()}
    assert rows["y"]["rel_l2"] == want
    # the same data without runs (a plain dynamic axis: allowed) is one sequence of 12: another number
    free = compare(plain, plain_q, data, batch_size=32, workers=1)
    assert abs(free.outputs["y"]["rel_l2"] - want) > 1e-3 * want
    assert compare(plain, plain_q, data, run_length=RUN, workers=1).outputs["y"]["rel_l2"] == \
        want


def test_calibration_ranges_are_those_of_per_run_feeding(models) -> None:
    seq, _, plain, _ = models
    data = frames()
    ref = per_run(seq, data, ["c", "y"])
    cache = calibrate(seq, data, method="max", run_length=RUN, batch_size=16)
    assert cache.samples == FRAMES
    c = cache.tensors["c"]
    assert (c.min, c.max) == (float(ref["c"].min()), float(ref["c"].max()))
    assert cache.settings["run_length"] == RUN
    whole = calibrate(plain, data, method="max", batch_size=16).tensors["c"]  # one sequence of 12: a wider range
    assert whole.max > 1.5 * c.max


def test_debug_and_profile_honour_runs(models) -> None:
    seq, seq_q, _, _ = models
    data = frames()
    ref, cand = per_run(seq, data, ["y"]), per_run(seq_q, data, ["y"])
    r, q = ref["y"].astype(np.float64), cand["y"].astype(np.float64)
    per_frame = np.sqrt(((q - r) ** 2).sum(axis=1)) / np.sqrt((r**2).sum(axis=1))
    sens = sensitivity(seq, seq_q, data, run_length=RUN, batch_size=64, workers=2)
    assert sens.samples == FRAMES and {"mm1", "mm2"} <= set(sens.ranking)
    assert sens.metric_before == pytest.approx(float(per_frame.mean()), rel=1e-12)
    result = debug_precision(seq, seq_q, data, run_length=RUN, tolerance=1e-9, batch_size=64)
    assert result.sensitivity.metric_before == pytest.approx(float(per_frame.mean()), rel=1e-12)
    assert result.plan.met
    feeds = timing_feeds(seq, data, batch=8, run_length=RUN)  # one run, whatever --batch says
    assert feeds["x"].shape == (RUN, 3)
    assert timing_feeds(seq, None, batch=8, run_length=RUN)["x"].shape == (RUN, 3)


def test_a_cluster_compare_in_runs_equals_the_local_one(models) -> None:
    pytest.importorskip("distributed", reason="the cluster extra (dask.distributed)")
    from workbench.cluster import connect

    seq, seq_q, _, _ = models
    data = frames()
    local = compare(seq, seq_q, data, run_length=RUN, batch_size=8, workers=2)
    with connect("local:2") as c:
        remote = compare(seq, seq_q, data, run_length=RUN, batch_size=8, workers=2, cluster=c)
    assert remote.samples == local.samples == FRAMES
    assert remote.outputs == local.outputs


def test_the_run_length_flag_round_trip(models, tmp_path: Path, capsys) -> None:
    seq, seq_q, _, _ = models
    data = frames()
    src, cand, npz = tmp_path / "seq.onnx", tmp_path / "int8.onnx", tmp_path / "frames.npz"
    onnx.save(seq, src)
    onnx.save(seq_q, cand)
    np.savez(npz, **data)
    want = compare(seq, seq_q, data, run_length=RUN).outputs["y"]["rel_l2"]
    assert cli_main(["compare", str(src), str(cand), "--inputs", str(npz), "--run-length", str(RUN), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["samples"] == FRAMES and out["outputs"]["y"]["rel_l2"] == pytest.approx(want, rel=1e-12)
    assert out["data"]["run_length"] == RUN
    # without it: the refusal names the input and the flag, no traceback
    assert cli_main(["compare", str(src), str(cand), "--inputs", str(npz), "--json"]) != 0
    err = capsys.readouterr()
    assert "'x'" in err.out + err.err and "--run-length" in err.out + err.err
    assert cli_main(["compare", str(src), str(cand), "--inputs", str(npz), "--run-length", "0", "--json"]) != 0
    capsys.readouterr()
    # the recipe records the run length with the calibration
    recipe = tmp_path / "recipe.json"
    assert cli_main(["quantize", str(src), "--calib", str(npz), "--run-length", str(RUN), "--method", "max",
                     "-o", str(tmp_path / "q.onnx"), "--recipe-out", str(recipe), "--json"]) == 0
    capsys.readouterr()
    assert json.loads(recipe.read_text())["calibration"]["run_length"] == RUN
    # profile takes one run; an .npz may carry its run length itself
    assert cli_main(["profile", str(src), "--inputs", str(npz), "--run-length", str(RUN), "--iterations", "1",
                     "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["shapes"] == {"x": [RUN, 3]}
    own = tmp_path / "own.npz"
    np.savez(own, __run_length__=np.array(RUN), **data)
    assert load_data(own, seq).run_length == RUN
