"""`workbench convert --precision fp16` measures activation ranges on a reference run (as ModelOpt's AutoCast does):
a Mul whose output leaves the fp16 range only on real inputs (no constant beyond 65504, so no static guard sees it)
stays float32, by name in the recipe, and the fp16 model's output is finite; without --inputs the run uses random data
and says so; a tensor holding inf already on the reference run (T5's Log of a zero distance) keeps its nodes fp32."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from workbench.backends.ort import OrtEngine
from workbench.cli import main as cli_main
from workbench.session import Session


def growing_model() -> onnx.ModelProto:
    """y = ((x * 300) * 300) * 1e-4 and b = (x * 300) * 300 as outputs: b reaches ~2e5 for |x| ~ 2."""
    inits = [numpy_helper.from_array(np.array(300.0, np.float32), "k300"),
             numpy_helper.from_array(np.array(1e-4, np.float32), "k_small")]
    nodes = [helper.make_node("Mul", ["x", "k300"], ["a"], name="m1"),
             helper.make_node("Mul", ["a", "k300"], ["b"], name="m2"),
             helper.make_node("Mul", ["b", "k_small"], ["y"], name="m3")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4]),
                           helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 4])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def infinite_model() -> onnx.ModelProto:
    """Log(|x|) is -inf where x is 0 on the reference run; then Exp brings it back to 0 (finite output)."""
    nodes = [helper.make_node("Abs", ["x"], ["ax"], name="abs"),
             helper.make_node("Log", ["ax"], ["l"], name="log"),
             helper.make_node("Neg", ["l"], ["nl"], name="neg"),
             helper.make_node("Neg", ["nl"], ["l2"], name="neg2"),
             helper.make_node("Exp", ["l2"], ["y"], name="exp")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def run(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """The model run by onnx's reference evaluator: fp16 arithmetic really is fp16 there (ONNX Runtime's CPU
    provider computes elementwise fp16 ops in float32 between its own casts, hiding an overflow)."""
    from onnx.reference import ReferenceEvaluator

    with np.errstate(over="ignore"):
        model = onnx.load(path)
        return dict(zip([o.name for o in model.graph.output], ReferenceEvaluator(model).run(None, {"x": x})))


def _convert(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = cli_main(["convert", *args, "--json"])
    r = json.loads(capsys.readouterr().out)
    assert code == 0, r
    return r


X = np.array([[2.0, -1.5, 0.5, 1.8], [-2.2, 0.1, 1.0, -0.3]], dtype=np.float32)


def test_measured_range_keeps_the_overflowing_mul_fp32(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "m.onnx"
    onnx.save(growing_model(), src)
    np.savez(tmp_path / "data.npz", x=X)
    want = OrtEngine(growing_model(), optimize=False).run({"x": X})

    raw = tmp_path / "raw.onnx"  # the guards alone see no constant beyond fp16: everything converts, b overflows
    _convert([str(src), "--no-guard", "-o", str(raw)], capsys)
    assert not np.isfinite(run(raw, X)["y"]).all()

    out, recipe = tmp_path / "fp16.onnx", tmp_path / "r.json"
    r = _convert([str(src), "--inputs", str(tmp_path / "data.npz"), "-o", str(out), "--recipe-out", str(recipe)],
                 capsys)
    assert set(r["range_kept"]) == {"m2", "m3"} and "m1" in r["converted"]  # m2 writes b, m3 reads it (~2e5)
    assert "reaches" in r["kept_reasons"]["m2"] and r["warnings"] == [] and r["data"]["samples"] == 2
    got = run(out, X)
    for name in ("y", "b"):
        assert np.isfinite(got[name]).all()
        np.testing.assert_allclose(got[name], want[name], rtol=2e-3)
    # the recipe keeps the measured nodes by name: it replays without the data
    session = Session.load(recipe)
    assert {"m2", "m3"} <= set(session.recipe.edits[-1].keep)
    replayed = session.model
    np.testing.assert_array_equal(OrtEngine(replayed, optimize=False).run({"x": X})["b"], got["b"])


def test_without_data_random_inputs_are_used_and_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "m.onnx"
    onnx.save(growing_model(), src)
    r = _convert([str(src), "-o", str(tmp_path / "fp16.onnx")], capsys)
    assert r["data"]["data"] == "random data" and any("RANDOM data" in w for w in r["warnings"])
    assert "m2" in r["range_kept"]  # standard-normal x reaches |x| > 0.73 among 32 values: b beyond 65504


def test_infinite_reference_value_keeps_its_nodes_fp32(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "m.onnx"
    onnx.save(infinite_model(), src)
    x = np.array([[0.0, 1.0, 2.0, 3.0]], dtype=np.float32)
    np.savez(tmp_path / "data.npz", x=x)
    out = tmp_path / "fp16.onnx"
    r = _convert([str(src), "--inputs", str(tmp_path / "data.npz"), "-o", str(out)], capsys)
    assert {"log", "neg", "neg2", "exp"} <= set(r["range_kept"]) and "abs" in r["converted"]
    got = run(out, x)["y"]
    np.testing.assert_allclose(got, np.abs(x), rtol=1e-3)
