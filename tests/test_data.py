"""The data layer (workbench/data.py): per-input sample axes, sources, preprocessing, and every reader using it.

Tiny models built with onnx.helper, run in the real ONNX Runtime. The smallest reproductions of what real models
broke: a scalar sample rate and a recurrent state batched on axis 1 (silero VAD: input [B, n], state [2, B, h],
sr []), a dynamic detector timed at 1x3x1x1, top-k agreement reported where it was never computed, a constant
tensor's zero-width range refused.
"""

from __future__ import annotations

import json
import math
import wave
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper, numpy_helper

from workbench.backends.ort import OrtEngine
from workbench.backends.ort_profile import profile_model
from workbench.calibration import calibrate
from workbench.cli import main as cli_main
from workbench.compare import compare
from workbench.data import (
    Dataset,
    load_data,
    parse_sample_axes,
    preprocessing_for,
    random_data,
    timing_feeds,
)
from workbench.debug import debug_precision, sensitivity
from workbench.errors import DataError
from workbench.graph import load_model
from workbench.precision import activation_tensors, quantize_model
from workbench.recipe import CalibrationSettings, Preprocessing, Recipe

RNG = np.random.default_rng(0)
# the tiny data sets here are below the recommended calibration size on purpose
pytestmark = pytest.mark.filterwarnings(r"ignore:only \d+ calibration samples:UserWarning")


def _model(nodes, inputs, outputs, inits, opset=17) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(m)
    return onnx.shape_inference.infer_shapes(m)


def vad_model(n: int = 16, h: int = 8) -> onnx.ModelProto:
    """silero VAD's interface: input [B, n], state [2, B, h] (batched on axis 1), sr [] (int64, every sample's)."""
    w1 = RNG.standard_normal((n, h)).astype(np.float32)
    w2 = RNG.standard_normal((h, 1)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["input", "w1"], ["x"], name="mm1"),
        helper.make_node("Gather", ["state", "zero"], ["s0"], name="gather", axis=0),
        helper.make_node("Add", ["x", "s0"], ["y0"], name="add"),
        helper.make_node("Relu", ["y0"], ["y"], name="relu"),
        helper.make_node("MatMul", ["y", "w2"], ["logit"], name="mm2"),
        helper.make_node("Cast", ["sr"], ["srf"], name="cast", to=T.FLOAT),
        helper.make_node("Div", ["srf", "rate"], ["k"], name="div"),
        helper.make_node("Mul", ["logit", "k"], ["output"], name="mul"),
        helper.make_node("Unsqueeze", ["y", "axes0"], ["y1"], name="unsq"),
        helper.make_node("Add", ["state", "y1"], ["stateN"], name="add_state"),
    ]
    inputs = [helper.make_tensor_value_info("input", T.FLOAT, ["batch", n]),
              helper.make_tensor_value_info("state", T.FLOAT, [2, "batch", h]),
              helper.make_tensor_value_info("sr", T.INT64, [])]
    outputs = [helper.make_tensor_value_info("output", T.FLOAT, ["batch", 1]),
               helper.make_tensor_value_info("stateN", T.FLOAT, [2, "batch", h])]
    inits = {"w1": w1, "w2": w2, "zero": np.array(0, np.int64), "rate": np.array(16000.0, np.float32),
             "axes0": np.array([0], np.int64)}
    return _model(nodes, inputs, outputs, inits)


def vad_data(samples: int = 40, n: int = 16, h: int = 8) -> dict[str, np.ndarray]:
    return {"input": RNG.standard_normal((samples, n)).astype(np.float32),
            "state": RNG.standard_normal((2, samples, h)).astype(np.float32),
            "sr": np.array(16000, np.int64)}


def classifier(classes: int, out_shape=("batch", None), per_step: int = 0) -> onnx.ModelProto:
    """input [B, 6] -> MatMul -> [B, classes] (or [B, per_step, classes] with per_step)."""
    w = RNG.standard_normal((6, classes * max(1, per_step))).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["input", "w"], ["z"], name="mm")]
    if per_step:
        nodes.append(helper.make_node("Reshape", ["z", "shape"], ["logits"], name="reshape"))
        inits = {"w": w, "shape": np.array([-1, per_step, classes], np.int64)}
        out = helper.make_tensor_value_info("logits", T.FLOAT, ["batch", per_step, classes])
    else:
        nodes.append(helper.make_node("Identity", ["z"], ["logits"], name="id"))
        inits = {"w": w}
        out = helper.make_tensor_value_info("logits", T.FLOAT, ["batch", classes])
    return _model(nodes, [helper.make_tensor_value_info("input", T.FLOAT, ["batch", 6])], [out], inits)


def quantized(model: onnx.ModelProto, data) -> onnx.ModelProto:
    return load_model(quantize_model(model, calibrate(model, data, method="max")))


# --- sample axes ------------------------------------------------------------------------------------


def test_vad_axes_are_inferred_and_batches_concatenate_on_each_inputs_own_axis() -> None:
    model, data = vad_model(), vad_data(40)
    ds = load_data(data, model)
    assert ds.sample_axes == {"input": 0, "state": 1, "sr": None} and ds.samples == 40
    batches = list(ds.batches(16))
    assert [b.samples for b in batches] == [16, 16, 8]
    last = batches[-1].feeds
    assert last["state"].shape == (2, 8, 8) and np.array_equal(last["state"], data["state"][:, 32:40])
    assert np.array_equal(last["input"], data["input"][32:40]) and last["sr"].shape == () and int(last["sr"]) == 16000
    part = ds[5:9]  # slicing keeps each input's axis
    assert part.samples == 4 and np.array_equal(part.array("state"), data["state"][:, 5:9])
    # the batched runs give exactly what one run over all samples gives
    full = OrtEngine(model).run(data)
    joined = np.concatenate([OrtEngine(model).run(b.feeds)["stateN"] for b in batches], axis=1)
    np.testing.assert_array_equal(joined, full["stateN"])


def test_a_state_given_once_is_shared_and_a_wrong_count_is_named() -> None:
    model = vad_model()
    data = vad_data(10)
    assert load_data({**data, "state": data["state"][:, :1]}, model, sample_axes={"state": None}).sample_axes[
        "state"] is None
    with pytest.raises(DataError, match="cannot tell which axis|different numbers of samples") as e:
        load_data({**data, "state": np.zeros((2, 7, 8), np.float32)}, model)
    assert "state" in str(e.value)


def test_ambiguous_axis_asks_with_the_fix_and_counts_decide_when_they_can() -> None:
    a = helper.make_tensor_value_info("a", T.FLOAT, ["batch", 4])
    b = helper.make_tensor_value_info("b", T.FLOAT, [None, None])
    nodes = [helper.make_node("ReduceSum", ["a"], ["ra"], name="ra", keepdims=0),
             helper.make_node("ReduceSum", ["b"], ["rb"], name="rb", keepdims=0),
             helper.make_node("Add", ["ra", "rb"], ["out"], name="add")]
    model = _model(nodes, [a, b], [helper.make_tensor_value_info("out", T.FLOAT, [])], {}, opset=13)
    # b [20, 10]: only axis 1 has a's 10 samples (time-major)
    ds = load_data({"a": np.zeros((10, 4), np.float32), "b": np.zeros((20, 10), np.float32)}, model)
    assert ds.sample_axes["b"] == 1
    with pytest.raises(DataError) as e:  # b [10, 10]: both axes could be the samples
        load_data({"a": np.zeros((10, 4), np.float32), "b": np.zeros((10, 10), np.float32)}, model)
    msg = str(e.value)
    assert "'b'" in msg and "axis 0" in msg and "axis 1" in msg
    assert "sample_axes={'b': 0}" in e.value.hint and "--sample-axis b=0" in e.value.hint
    ok = load_data({"a": np.zeros((10, 4), np.float32), "b": np.zeros((10, 10), np.float32)}, model,
                   sample_axes={"b": 1})
    assert ok.sample_axes["b"] == 1
    assert parse_sample_axes(["state=1", "sr=none"]) == {"state": 1, "sr": None}
    with pytest.raises(DataError, match="NAME=AXIS"):
        parse_sample_axes(["state"])


def test_npz_records_its_axes_and_iterables_of_batches_concatenate(tmp_path: Path) -> None:
    model, data = vad_model(), vad_data(12)
    path = tmp_path / "vad.npz"
    np.savez(path, **data, __sample_axes__=np.array(json.dumps({"state": 1, "sr": None})))
    ds = load_data(path, model)
    assert ds.sample_axes == {"input": 0, "state": 1, "sr": None} and ds.samples == 12
    chunks = [{"input": data["input"][i:i + 4], "state": data["state"][:, i:i + 4], "sr": data["sr"]}
              for i in range(0, 12, 4)]
    again = load_data(chunks, model)
    np.testing.assert_array_equal(again.array("state"), data["state"])


# --- every reader on the VAD interface ---------------------------------------------------------------


def test_vad_through_calibration_compare_debug_and_profile() -> None:
    model, data = vad_model(), vad_data(40)
    cache = calibrate(model, data, method="max")
    assert cache.samples == 40
    assert cache.tensors["input"].amax == pytest.approx(float(np.abs(data["input"]).max()))
    cand = load_model(quantize_model(model, cache))
    same = compare(model, model, data)
    assert same.samples == 40 and same.outputs["stateN"]["max_abs"] == 0.0
    report = compare(model, cand, data, layerwise=True)
    assert report.samples == 40 and 0.0 < report.outputs["output"]["rel_l2"] < 0.5
    assert "top1_agreement" not in report.outputs["output"]  # [B, 1]: one "class", no top-k
    sens = sensitivity(model, cand, data, batch_size=16)
    assert sens.samples == 40 and {"mm1", "mm2"} <= set(sens.ranking)
    result = debug_precision(model, cand, data, tolerance=1e-9, batch_size=16)
    assert result.plan.met and result.plan.metric <= 1e-9  # both MatMuls back in FP32: exact
    feeds = timing_feeds(model, data, batch=4)
    assert {k: v.shape for k, v in feeds.items()} == {"input": (4, 16), "state": (2, 4, 8), "sr": ()}
    table = profile_model(model, feeds, optimize=False, iterations=2)
    assert "mm1" in table.column("name")
    made_up = timing_feeds(model, batch=3)
    assert {k: v.shape for k, v in made_up.items()} == {"input": (3, 16), "state": (2, 3, 8), "sr": ()}


def test_vad_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, data = vad_model(), vad_data(40)
    src = tmp_path / "vad.onnx"
    onnx.save(model, src)
    npz = tmp_path / "vad.npz"
    np.savez(npz, **data)
    recipe = tmp_path / "r.json"
    assert cli_main(["quantize", str(src), "--calib", str(npz), "-o", str(tmp_path / "q.onnx"), "--recipe-out",
                     str(recipe), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["calibration"]["samples"] == 40
    assert out["calibration"]["data"]["inputs"]["state"]["sample_axis"] == 1
    saved = Recipe.from_json(recipe.read_text())
    assert saved.calibration.sample_axes == {"input": 0, "state": 1, "sr": None}
    assert cli_main(["compare", str(src), str(tmp_path / "q.onnx"), "--inputs", str(npz), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 40
    assert cli_main(["debug", str(src), "--recipe", str(recipe), "--inputs", str(npz), "--metric", "rel_l2",
                     "--tolerance", "1e-9", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 40
    assert cli_main(["profile", str(src), "--inputs", str(npz), "--batch", "4", "--iterations", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["shapes"] == {"input": [4, 16], "state": [2, 4, 8], "sr": []}


# --- profile: shapes from the data or --shapes, never a guessed 1 ------------------------------------


def detector() -> onnx.ModelProto:
    w = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
    x = helper.make_tensor_value_info("images", T.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info("y", T.FLOAT, ["N", 4, "H", "W"])
    return _model([helper.make_node("Conv", ["images", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])], [x], [y],
                  {"w": w})


def test_dynamic_detector_is_never_timed_at_guessed_sizes(tmp_path: Path, capsys) -> None:
    model = detector()
    with pytest.raises(DataError, match="'images'.*dynamic") as e:
        timing_feeds(model, batch=2)
    assert "--shapes images:" in e.value.hint
    feeds = timing_feeds(model, batch=2, shapes={"images": (2, 3, 32, 48)})
    assert feeds["images"].shape == (2, 3, 32, 48)
    src = tmp_path / "det.onnx"
    onnx.save(model, src)
    assert cli_main(["profile", str(src), "--json"]) == 1
    assert "dynamic" in json.loads(capsys.readouterr().out)["error"]
    assert cli_main(["profile", str(src), "--shapes", "images:1x3x64x64", "--iterations", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["shapes"] == {"images": [1, 3, 64, 64]} and out["data"] == "random"
    # image files: the shapes come from the data (resized as asked)
    folder = tmp_path / "imgs"
    _write_images(folder, 3, (40, 30))
    assert cli_main(["profile", str(src), "--inputs", str(folder), "--size", "24x20", "--batch", "2",
                     "--iterations", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["shapes"] == {"images": [2, 3, 24, 20]}


# --- compare: top-k only where computed --------------------------------------------------------------


def test_topk_is_reported_only_where_it_was_computed() -> None:
    x = {"input": RNG.standard_normal((32, 6)).astype(np.float32)}
    ten = classifier(10)
    r10 = compare(ten, ten, x)
    assert r10.outputs["logits"]["top1_agreement"] == 1.0 and r10.outputs["logits"]["top5_agreement"] == 1.0
    assert "samples" in r10.top_k and "classes" in r10.top_k
    two = classifier(2)
    r2 = compare(two, two, x)
    assert r2.outputs["logits"]["top1_agreement"] == 1.0 and "top5_agreement" not in r2.outputs["logits"]
    steps = classifier(5, per_step=3)
    rs = compare(steps, steps, x)
    assert not [k for k in rs.outputs["logits"] if k.startswith("top")] and rs.top_k is None
    assert rs.to_dict()["top_k"] is None


# --- calibration: a constant tensor ------------------------------------------------------------------


def test_constant_tensor_range_is_widened_to_zero_not_refused() -> None:
    w = RNG.standard_normal((6, 3)).astype(np.float32)
    nodes = [helper.make_node("Mul", ["input", "zero"], ["z"], name="mul"),
             helper.make_node("Add", ["z", "three"], ["c"], name="add"),  # 3.0 everywhere
             helper.make_node("MatMul", ["c", "w"], ["out"], name="mm")]
    model = _model(nodes, [helper.make_tensor_value_info("input", T.FLOAT, ["batch", 6])],
                   [helper.make_tensor_value_info("out", T.FLOAT, ["batch", 3])],
                   {"zero": np.array(0.0, np.float32), "three": np.array(3.0, np.float32), "w": w})
    data = {"input": RNG.standard_normal((16, 6)).astype(np.float32)}
    for method in ("max", "entropy"):
        cache = calibrate(model, data, method=method, tensors=activation_tensors(model, target="onnxruntime"))
        assert cache.tensors["c"].min == cache.tensors["c"].max == 3.0
        q = load_model(quantize_model(model, cache, target="onnxruntime"))
        got = OrtEngine(q).run(data)["out"]
        want = OrtEngine(model).run(data)["out"]
        np.testing.assert_allclose(got, want, rtol=0.05, atol=0.05 * float(np.abs(want).max()))


# --- sources: images, audio, tokens ------------------------------------------------------------------


def _write_images(folder: Path, count: int, size: tuple[int, int], colour=(10, 20, 30)) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", size, tuple(c + i for c in colour)).save(folder / f"{i:02d}.png")


def image_model(shape, dtype=T.FLOAT) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", dtype, shape)
    return _model([helper.make_node("Identity", ["x"], ["y"], name="id")], [x],
                  [helper.make_tensor_value_info("y", dtype, shape)], {})


def test_image_folder_with_inferred_and_recorded_preprocessing(tmp_path: Path) -> None:
    _write_images(tmp_path / "imgs", 5, (13, 9))
    nchw = image_model(["N", 3, 8, 8])
    ds = load_data(tmp_path / "imgs", nchw)
    assert ds.preprocessing == Preprocessing(size=(8, 8), layout="NCHW", channels="RGB", dtype="float32")
    x = ds.array("x")
    assert x.shape == (5, 3, 8, 8) and x.dtype == np.float32
    np.testing.assert_allclose(x[2, :, 4, 4], np.array([12, 22, 32]) / 255.0, rtol=1e-6)  # constant colour + 2
    nhwc = image_model(["N", 8, 8, 3])
    pre = preprocessing_for(nhwc, kind="image", channels="BGR", mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
    y = load_data(tmp_path / "imgs", nhwc, preprocessing=pre).array("x")
    assert y.shape == (5, 8, 8, 3)
    np.testing.assert_allclose(y[0, 1, 1], (np.array([30, 20, 10]) / 255.0 - 0.5) / np.array([0.25, 0.5, 1.0]),
                               rtol=1e-5)
    grey = load_data(tmp_path / "imgs", image_model(["N", 1, 8, 8])).array("x")
    assert grey.shape == (5, 1, 8, 8) and 0.0 < grey[0, 0, 0, 0] < 30 / 255.0
    u8 = load_data(tmp_path / "imgs", image_model(["N", 3, 8, 8], T.UINT8)).array("x")
    assert u8.dtype == np.uint8 and list(u8[1, :, 0, 0]) == [11, 21, 31]
    # the preprocessing goes into the recipe and back
    r = Recipe(calibration=CalibrationSettings(data="imgs", preprocessing=pre))
    assert Recipe.from_json(r.to_json()).calibration.preprocessing == pre
    assert json.loads(r.to_json())["calibration"]["preprocessing"]["mean"] == [0.5, 0.5, 0.5]


def test_quantize_cli_reads_an_image_folder_with_flags(tmp_path: Path, capsys) -> None:
    w = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
    x = helper.make_tensor_value_info("x", T.FLOAT, ["N", 3, 16, 16])
    model = _model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], [x],
                   [helper.make_tensor_value_info("y", T.FLOAT, ["N", 4, 14, 14])], {"w": w})
    src = tmp_path / "m.onnx"
    onnx.save(model, src)
    _write_images(tmp_path / "imgs", 6, (20, 20))
    recipe = tmp_path / "r.json"
    assert cli_main(["quantize", str(src), "--calib", str(tmp_path / "imgs"), "--mean", "0.5", "--std", "0.25",
                     "--channels", "BGR", "-o", str(tmp_path / "q.onnx"), "--recipe-out", str(recipe),
                     "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["calibration"]["samples"] == 6
    pre = Recipe.from_json(recipe.read_text()).calibration.preprocessing
    assert pre == Preprocessing(size=(16, 16), channels="BGR", mean=(0.5,), std=(0.25,))
    np.savez(tmp_path / "x.npz", x=np.zeros((4, 3, 16, 16), np.float32))
    assert cli_main(["quantize", str(src), "--calib", str(tmp_path / "x.npz"), "--size", "8x8", "-o",
                     str(tmp_path / "q2.onnx"), "--json"]) == 1
    err = json.loads(capsys.readouterr().out)["error"]
    assert "--size" in err and "x.npz" in err  # preprocessing flags on an .npz are refused, not ignored
    assert cli_main(["quantize", str(src), "--calib", str(tmp_path / "none"), "-o", str(tmp_path / "q3.onnx"),
                     "--json"]) == 1
    assert "not found" in json.loads(capsys.readouterr().out)["error"]


def _write_wav(path: Path, x: np.ndarray, rate: int, channels: int = 1) -> None:
    pcm = np.clip(np.rint(x * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def test_audio_files_are_resampled_and_chunked(tmp_path: Path) -> None:
    t = np.arange(800) / 8000.0
    tone = 0.5 * np.sin(2 * math.pi * 200 * t)
    folder = tmp_path / "wav"
    folder.mkdir()
    _write_wav(folder / "a.wav", tone, 8000)
    _write_wav(folder / "b.wav", np.repeat(tone[:400], 2), 8000, channels=2)  # stereo: averaged
    model = vad_model(n=16)
    pre = Preprocessing(kind="audio", sample_rate=16000)
    ds = load_data(folder, model, preprocessing=pre, extra={"state": np.zeros((2, 150, 8), np.float32),
                                                            "sr": np.array(16000, np.int64)})
    # 800 frames at 8 kHz -> 1600 at 16 kHz -> 100 chunks of the model's 16; 400 -> 800 -> 50
    assert ds.samples == 150 and ds.preprocessing.chunk == 16 and ds.preprocessing.sample_rate == 16000
    x = ds.array("input")
    expect = 0.5 * np.sin(2 * math.pi * 200 * np.arange(1600) / 16000.0)
    np.testing.assert_allclose(x[:100].reshape(-1)[:1598], expect[:1598], atol=0.01)
    assert ds.sample_axes == {"input": 0, "state": 1, "sr": None}
    with pytest.raises(DataError, match="also needs"):
        load_data(folder, model, preprocessing=pre)


def test_token_ids_are_padded_with_a_mask(tmp_path: Path) -> None:
    ids = helper.make_tensor_value_info("input_ids", T.INT64, ["batch", "seq"])
    mask = helper.make_tensor_value_info("attention_mask", T.INT64, ["batch", "seq"])
    nodes = [helper.make_node("Mul", ["input_ids", "attention_mask"], ["y"], name="mul")]
    model = _model(nodes, [ids, mask], [helper.make_tensor_value_info("y", T.INT64, ["batch", "seq"])], {})
    path = tmp_path / "tokens.txt"
    path.write_text("101 7 8 102\n101, 9, 102\n\n101 1 2 3 4 5 102\n")
    ds = load_data(path, model, preprocessing=Preprocessing(kind="tokens", length=5))
    assert ds.samples == 3 and ds.sample_axes == {"input_ids": 0, "attention_mask": 0}
    assert ds.array("input_ids").tolist() == [[101, 7, 8, 102, 0], [101, 9, 102, 0, 0], [101, 1, 2, 3, 4]]
    assert ds.array("attention_mask").tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    path.write_text("101 x\n")
    with pytest.raises(DataError, match="line 1"):
        load_data(path, model)


def test_random_data_follows_the_axes_and_is_loud() -> None:
    with pytest.warns(UserWarning, match="RANDOM"):
        ds = random_data(vad_model(), samples=5)
    assert isinstance(ds, Dataset) and ds.sample_axes == {"input": 0, "state": 1, "sr": None} and ds.samples == 5
    assert ds.shape("state") == (2, 5, 8)
