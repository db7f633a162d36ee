"""The committed sample models: provenance (sha256 in the README), accuracy in ONNX Runtime, data splits,
and a real TensorRT-RTX ahead-of-time build of each (in a child process, so a builder crash cannot kill pytest).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from workbench.graph import load_model, summary

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "sample_models"
README = (SAMPLES_DIR / "README.md").read_text()
# model -> (test split, minimum accuracy the issue asks for)
CLASSIFIERS = {"digits_cnn": ("digits_test.npz", 0.97), "digits_transformer": ("digits_test_seq.npz", 0.95)}
FILES = ["digits_cnn.onnx", "digits_transformer.onnx", "fcn_dynamic.onnx", "digits_test.npz",
         "digits_test_seq.npz", "digits_calib.npz", "digits_calib_seq.npz"]


def _session(name: str) -> ort.InferenceSession:
    return ort.InferenceSession(str(SAMPLES_DIR / f"{name}.onnx"), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("file", FILES)
def test_file_matches_the_sha256_in_the_readme(file: str) -> None:
    path = SAMPLES_DIR / file
    assert path.stat().st_size < 5_000_000
    row = re.search(rf"\| `{re.escape(file)}` \| [\d,]+ \| `([0-9a-f]{{64}})` \|", README)
    assert row, f"{file} is not listed in sample_models/README.md"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == row.group(1)


@pytest.mark.parametrize("name", list(CLASSIFIERS))
def test_accuracy_on_the_committed_test_split(name: str) -> None:
    split, minimum = CLASSIFIERS[name]
    data = np.load(SAMPLES_DIR / split)
    logits = _session(name).run(["logits"], {"input": data["input"]})[0]
    accuracy = float((logits.argmax(axis=1) == data["label"]).mean())
    stated = float(re.search(rf"accuracy: {name} = ([0-9.]+)", README).group(1))
    assert accuracy >= minimum
    assert accuracy == pytest.approx(stated, abs=5e-5)  # the README reports what the files do


def test_test_and_calibration_splits_follow_the_contract() -> None:
    test, seq = np.load(SAMPLES_DIR / "digits_test.npz"), np.load(SAMPLES_DIR / "digits_test_seq.npz")
    assert sorted(test.files) == sorted(seq.files) == ["input", "label"]
    n = len(test["label"])
    assert test["input"].shape == (n, 1, 8, 8) and test["input"].dtype == np.float32
    assert seq["input"].shape == (n, 8, 8) and seq["input"].dtype == np.float32
    assert test["label"].dtype == seq["label"].dtype == np.int64
    np.testing.assert_array_equal(test["input"][:, 0], seq["input"])
    np.testing.assert_array_equal(test["label"], seq["label"])
    assert set(test["label"].tolist()) == set(range(10))
    assert 0.0 <= test["input"].min() and test["input"].max() <= 1.0
    calib, calib_seq = np.load(SAMPLES_DIR / "digits_calib.npz"), np.load(SAMPLES_DIR / "digits_calib_seq.npz")
    assert calib.files == calib_seq.files == ["input"]  # one array per model input, nothing else
    assert calib["input"].shape == (300, 1, 8, 8)
    np.testing.assert_array_equal(calib["input"][:, 0], calib_seq["input"])
    held_out = {x.tobytes() for x in test["input"]}
    assert not any(x.tobytes() in held_out for x in calib["input"])  # calibration comes from training data


def test_graph_structure_the_notebooks_rely_on() -> None:
    cnn = summary(load_model("digits_cnn")).ops
    assert cnn["BatchNormalization"] >= 2 and cnn["Conv"] >= 3 and cnn["Add"] >= 1 and cnn["Gemm"] == 1
    tr = summary(load_model("digits_transformer"))
    assert {"MatMul", "Softmax", "LayerNormalization", "Erf"} <= set(tr.ops)
    assert tr.to_dict()["inputs"] == [{"name": "input", "dtype": "float32", "shape": ["batch", 8, 8]}]
    fcn = summary(load_model("fcn_dynamic"))
    assert fcn.inputs[0].shape == ("batch", 3, "height", "width")
    assert fcn.outputs[0].shape == ("batch", 2, "height", "width")


def test_fcn_runs_at_any_height_and_width() -> None:
    sess = _session("fcn_dynamic")
    rng = np.random.default_rng(0)
    for shape in [(1, 3, 17, 23), (2, 3, 64, 48)]:
        out = sess.run(None, {"input": rng.standard_normal(shape).astype(np.float32)})[0]
        assert out.shape == (shape[0], 2, shape[2], shape[3])


def test_cnn_batchnorm_runs_in_eval_mode() -> None:
    """Eval-mode BatchNormalization: a sample's logits do not depend on the rest of the batch."""
    x = np.load(SAMPLES_DIR / "digits_test.npz")["input"][:16]
    sess = _session("digits_cnn")
    together = sess.run(None, {"input": x})[0]
    alone = np.concatenate([sess.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-5)


_BUILD = r"""
import json, sys
import tensorrt_rtx as trt

results = {}
logger = trt.Logger(trt.Logger.ERROR)
for path in sys.argv[1:]:
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(path):
        results[path] = {"error": [str(parser.get_error(i)) for i in range(parser.num_errors)]}
        continue
    config = builder.create_builder_config()
    config.builder_optimization_level = 0
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        t = network.get_input(i)
        dims = list(t.shape)
        lo = [1 if d == -1 else d for d in dims]
        opt = [4 if j == 0 and d == -1 else 16 if d == -1 else d for j, d in enumerate(dims)]
        hi = [8 if j == 0 and d == -1 else 32 if d == -1 else d for j, d in enumerate(dims)]
        profile.set_shape(t.name, lo, opt, hi)
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    results[path] = {"bytes": 0 if engine is None else engine.nbytes, "layers": network.num_layers,
                     "inputs": [list(network.get_input(i).shape) for i in range(network.num_inputs)]}
print(json.dumps(results))
"""


def test_each_sample_builds_with_tensorrt_rtx() -> None:
    pytest.importorskip("tensorrt_rtx", reason="the rtx extra is not installed")
    paths = [str(SAMPLES_DIR / f"{n}.onnx") for n in ("digits_cnn", "digits_transformer", "fcn_dynamic")]
    proc = subprocess.run([sys.executable, "-c", _BUILD, *paths], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"builder child exited {proc.returncode}: {proc.stderr[-3000:]}"
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for path in paths:
        r = results[path]
        assert "error" not in r, r
        assert r["bytes"] > 10_000 and r["layers"] > 0, (path, r)
    assert results[paths[2]]["inputs"] == [[-1, 3, -1, -1]]  # dynamic N, H, W needed the profile
    assert results[paths[1]]["inputs"] == [[-1, 8, 8]]
