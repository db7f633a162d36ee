"""If/Loop/Scan bodies through edits, precision and the debugger: the smallest reproductions of real-model failures
(silero VAD: a model that is one If whose branches hold nested Ifs, LSTMs and their weights)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from workbench import recipe as R
from workbench.backends.ort import OrtEngine
from workbench.edits import apply_edit
from workbench.graph import load_model, model_bytes

F = TensorProto.FLOAT


def _vi(name: str, shape: list | None = None, elem: int = F) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def nested_if_model() -> onnx.ModelProto:
    """y = If(c) then x*2 else [inner If(Constant true) then Relu(x) else -x] + 1, the inner one foldable."""
    inner_then = helper.make_graph([helper.make_node("Relu", ["x"], ["it"], name="inner_relu")], "inner_then", [],
                                   [_vi("it")])
    inner_else = helper.make_graph([helper.make_node("Neg", ["x"], ["ie"], name="inner_neg")], "inner_else", [],
                                   [_vi("ie")])
    outer_else = helper.make_graph([
        helper.make_node("Constant", [], ["k"], name="k", value=numpy_helper.from_array(np.array(True), "k")),
        helper.make_node("If", ["k"], ["inner_y"], name="inner_if", then_branch=inner_then, else_branch=inner_else),
        helper.make_node("Add", ["inner_y", "one"], ["e"], name="add_one"),
    ], "outer_else", [], [_vi("e")])
    outer_then = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["t"], name="mul_two")], "outer_then", [],
                                   [_vi("t")])
    g = helper.make_graph(
        [helper.make_node("Identity", ["x_in"], ["x"], name="id"),
         helper.make_node("If", ["c"], ["y"], name="outer_if", then_branch=outer_then, else_branch=outer_else)],
        "g", [_vi("x_in", [2, 3]), _vi("c", [], TensorProto.BOOL)], [_vi("y", [2, 3])],
        initializer=[numpy_helper.from_array(np.float32(1.0).reshape(()), "one"),
                     numpy_helper.from_array(np.float32(2.0).reshape(()), "two")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _runs(model: onnx.ModelProto) -> list[np.ndarray]:
    x = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    engine = OrtEngine(model, optimize=False)
    return [engine.run({"x_in": x, "c": np.array(c)})["y"] for c in (True, False)]


def test_fold_constants_keeps_nested_bodies_whole_and_the_input_untouched() -> None:
    model = load_model(nested_if_model())
    before = model_bytes(model)
    out = apply_edit(model, R.FoldConstants())
    assert model_bytes(model) == before  # graphsurgeon's folding of bodies wrote into the caller's model
    onnx.checker.check_model(out, full_check=True)
    for got, want in zip(_runs(out), _runs(model)):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_every_simplify_edit_keeps_results_on_nested_ifs() -> None:
    model = load_model(nested_if_model())
    out = model
    for edit in (R.FoldConstants(), R.FuseBatchNorm(), R.RemoveIdentity()):
        out = apply_edit(out, edit)
    for got, want in zip(_runs(out), _runs(model)):
        np.testing.assert_allclose(got, want, rtol=1e-6)
