"""Repairs: check quotes the builder (TensorRT-RTX, real builds on the CPU) and fixes what it can as recipe edits.

Each model is the smallest form of what real models do: a detector/Paddle input [1,3,'x','x'] whose two dims share a
name; an If that branches on a sample-rate input (silero VAD's 'sr') into branches of different ranks; ONNX Runtime
integer ops.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import onnx
import pytest
from models import integer_ops_model
from onnx import TensorProto, helper, numpy_helper

from workbench import recipe as R
from workbench.backends.ort import OrtEngine
from workbench.check import check_model, repair_model
from workbench.edits import apply_edit, apply_edits
from workbench.edits.repairs import find_repairs, shared_dims
from workbench.errors import EditError

pytest.importorskip("tensorrt_rtx", reason="the builder's own words need TensorRT-RTX (the rtx extra)")

NON_SQUARE = "input:1x3x32x64,1x3x64x128,1x3x128x256"


def shared_dims_model(dims: tuple = (1, 3, "x", "x")) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    g = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["y"], name="conv", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["y"], ["out"], name="relu")], "shared",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(dims))],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [dims[0], 4, dims[2], dims[3]])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def if_on_sample_rate_model() -> onnx.ModelProto:
    """y = Relu(If(sr == 16000, Conv(x), Flatten(x))): branches of different ranks, as TensorRT does not take."""
    w = numpy_helper.from_array(np.random.default_rng(1).standard_normal((4, 1, 3)).astype(np.float32), "w")
    k = numpy_helper.from_array(np.array(16000, np.int64), "k16")
    then_g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["t"], name="conv16")], "then", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    else_g = helper.make_graph([helper.make_node("Flatten", ["x"], ["e"], name="flat8")], "else", [],
                               [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    g = helper.make_graph(
        [helper.make_node("Equal", ["sr", "k16"], ["is16"], name="eq"),
         helper.make_node("If", ["is16"], ["y0"], name="branch", then_branch=then_g, else_branch=else_g),
         helper.make_node("Relu", ["y0"], ["y"], name="relu")], "vad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 64]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, None])], [w, k])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


# --- B: the builder's own words, then our hint ------------------------------------------------------------


def test_failed_build_quotes_the_builder_verbatim_and_hints_after():
    r = check_model(shared_dims_model(), shapes=NON_SQUARE)
    assert r.parsable and r.buildable is False
    (quote,) = r.builder_errors
    assert "Dimensions with name x must be equal" in quote and "64 != 128" in quote
    assert f"tensorrt-rtx builder: {quote}" in r.errors  # verbatim, not replaced by a guess
    assert not any("produced no engine with these profiles" in e for e in r.errors)
    (hint,) = [s for s in r.suggestions if "named 'x' be equal" in s]
    assert "split_shared_dims" in hint


def test_check_on_an_if_quotes_the_conditional_error():
    r = check_model(if_on_sample_rate_model())
    assert r.parsable and r.buildable is False
    assert any("Must have inputs with equal ranks when condition is not a build-time constant" in e
               for e in r.builder_errors)


# --- repair 1: dims that share one symbolic name ------------------------------------------------------------


@pytest.mark.parametrize("dims", [(1, 3, "x", "x"), (-1, 3, "h", "h")])
def test_split_shared_dims_repair_builds_non_square(dims):
    model = shared_dims_model(dims)
    sym = dims[2]
    assert shared_dims(model) == {"input": {sym: [2, 3]}}
    (rep,) = [x for x in find_repairs(model) if x.kind == "split_shared_dims"]
    assert rep.edits == (R.SplitSharedDims(inputs=("input",)),) and rep.ready
    shapes = NON_SQUARE if dims[0] == 1 else "input:1x3x32x64,2x3x64x128,4x3x128x256"
    r = check_model(model, shapes=shapes, repair=True)
    assert r.buildable is False and r.repaired["buildable"] is True
    assert r.repaired["edits"] == [{"kind": "split_shared_dims", "inputs": ["input"]}]
    fixed = r.repaired_model
    dim = fixed.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dim[2:]] == [sym, f"{sym}_3"]
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 12)).astype(np.float32)
    np.testing.assert_array_equal(OrtEngine(fixed).run({"input": x})["out"], OrtEngine(model).run({"input": x})["out"])


def test_split_shared_dims_is_a_no_op_template_without_shared_dims():
    model = shared_dims_model((1, 3, "h", "w"))
    assert find_repairs(model) == [] and shared_dims(model) == {}
    out = apply_edit(model, R.SplitSharedDims())
    assert out.graph.input[0] == model.graph.input[0]
    with pytest.raises(EditError, match="'nope' is not a graph input"):
        apply_edit(model, R.SplitSharedDims(inputs=("nope",)))


# --- repair 2: an If on an input the user can freeze ------------------------------------------------------------


def test_freeze_input_repair_needs_a_value_then_builds_and_keeps_the_outputs():
    model = if_on_sample_rate_model()
    (rep,) = find_repairs(model)
    assert rep.kind == "freeze_input" and rep.needs_value == "sr" and rep.examples == (16000,) and not rep.ready
    assert rep.edits == (R.FreezeInput(input="sr", value=None), R.FoldConstantIf())
    r = check_model(model, repair=True)  # no value: nothing applied, and it says what to give
    assert r.repaired["edits"] == [] and "--freeze sr=VALUE" in r.repaired["skipped"][0]["reason"]
    r = check_model(model, repair=True, values={"sr": 16000})
    assert r.buildable is False and r.repaired["buildable"] is True and r.repaired["parsable"] is True
    fixed = r.repaired_model
    assert [i.name for i in fixed.graph.input] == ["x"] and not any(n.op_type == "If" for n in fixed.graph.node)
    x = np.random.default_rng(2).standard_normal((1, 1, 64)).astype(np.float32)
    for sr in (16000, 8000):  # each frozen value takes its own branch, with the original's outputs
        frozen, _, _ = repair_model(model, values={"sr": sr})
        want = OrtEngine(model).run({"x": x, "sr": np.array(sr, np.int64)})["y"]
        got = OrtEngine(frozen).run({"x": x})["y"]
        assert got.shape == want.shape == ((1, 4, 62) if sr == 16000 else (1, 64))
        np.testing.assert_array_equal(got, want)


def test_freeze_input_refuses_what_does_not_fit():
    model = if_on_sample_rate_model()
    with pytest.raises(EditError, match="no value given for input 'sr'"):
        apply_edit(model, R.FreezeInput(input="sr"))
    with pytest.raises(EditError, match=r"shape \[2\] does not fit input 'sr'"):
        apply_edit(model, R.FreezeInput(input="sr", value=[1, 2]))
    with pytest.raises(EditError, match="'k16' is not a graph input"):
        apply_edit(model, R.FreezeInput(input="k16", value=1))
    with pytest.raises(EditError, match="only input"):
        apply_edit(shared_dims_model(), R.FreezeInput(input="input", value=0))
    with pytest.raises(EditError, match="is not a int64 value"):
        apply_edit(model, R.FreezeInput(input="sr", value="fast"))


def test_new_edit_kinds_round_trip_through_recipe_json():
    recipe = R.Recipe(edits=(R.SplitSharedDims(inputs=("input",)), R.FreezeInput(input="state", value=[[0.5, 1.0]])))
    again = R.Recipe.from_json(recipe.to_json())
    assert again == recipe and again.digest() == recipe.digest()
    assert json.loads(recipe.to_json())["edits"][1] == {"kind": "freeze_input", "input": "state", "value": [[0.5, 1.0]]}


# --- repair 3: ONNX Runtime integer ops ---------------------------------------------------------------------


def test_integer_ops_repair_makes_the_model_parsable():
    model = integer_ops_model()
    (rep,) = find_repairs(model)
    assert rep.kind == "dequantize_integer_ops" and rep.edits == (R.DequantizeIntegerOps(),)
    r = check_model(model, repair=True)
    assert r.parsable is False and r.repaired["parsable"] is True and r.repaired["buildable"] is True
    assert r.repaired["edits"] == [{"kind": "dequantize_integer_ops"}]


# --- the CLI ----------------------------------------------------------------------------------------------


def test_cli_check_repair_writes_the_model_and_a_replayable_recipe(cli_path, tmp_path):
    src = tmp_path / "vad.onnx"
    onnx.save(if_on_sample_rate_model(), src)
    before = src.read_bytes()
    fixed, recipe = tmp_path / "fixed.onnx", tmp_path / "r.json"
    p = subprocess.run([str(cli_path), "check", str(src), "--repair", "--freeze", "sr=16000", "-o", str(fixed),
                        "--recipe-out", str(recipe), "--json"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["buildable"] is False and r["repaired"]["buildable"] is True
    assert r["repairs"][0]["kind"] == "freeze_input" and r["repairs"][0]["edits"][0]["value"] == 16000
    assert r["output"] == str(fixed) and r["recipe"] == str(recipe) and src.read_bytes() == before
    edits = json.loads(recipe.read_text())["edits"]
    assert edits == [{"kind": "freeze_input", "input": "sr", "value": 16000}, {"kind": "fold_constant_if"}]
    replay = tmp_path / "replay.onnx"
    p = subprocess.run([str(cli_path), "edit", str(src), str(recipe), "-o", str(replay), "--json"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert onnx.load(str(replay)).graph == onnx.load(str(fixed)).graph
    p = subprocess.run([str(cli_path), "check", str(src), "--freeze", "sr=fast", "--repair", "--json"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 1 and "sr=fast" in json.loads(p.stdout)["error"]


def test_apply_edits_of_a_repair_equal_check_repaired_model():
    model = shared_dims_model()
    fixed, applied, skipped = repair_model(model)
    assert skipped == [] and applied == [R.SplitSharedDims(inputs=("input",))]
    assert apply_edits(model, applied).graph == fixed.graph
