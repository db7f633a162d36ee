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


def _if_reference_and_fp16_candidate() -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """Reference: m = x * W; y = If(c) then m + W else m - W. Candidate: the same in fp16, W stored as fp16 under
    its own name, bodies included (what a converter that converts bodies writes)."""
    w = np.array([0.5, -1.25, 2.0, 3.5], np.float32)

    def graph(elem: int, low: bool) -> onnx.GraphProto:
        m = "m__fp16" if low else "m"
        then = helper.make_graph([helper.make_node("Add", [m, "W"], ["t"], name="if/then/add")], "then", [],
                                 [_vi("t", None, elem)])
        other = helper.make_graph([helper.make_node("Sub", [m, "W"], ["e"], name="if/else/sub")], "else", [],
                                  [_vi("e", None, elem)])
        y = "y__fp16" if low else "y"
        nodes = [helper.make_node("Mul", ["x__fp16" if low else "x", "W"], [m], name="mul"),
                 helper.make_node("If", ["c"], [y], name="if", then_branch=then, else_branch=other)]
        if low:
            nodes = [helper.make_node("Cast", ["x"], ["x__fp16"], name="x__cast_fp16", to=TensorProto.FLOAT16),
                     *nodes, helper.make_node("Cast", [y], ["y"], name="y__cast_fp32", to=F)]
        init = numpy_helper.from_array(w.astype(np.float16) if low else w, "W")
        return helper.make_graph(nodes, "g", [_vi("x", [4]), _vi("c", [], TensorProto.BOOL)], [_vi("y", [4])],
                                 initializer=[init])

    ref = helper.make_model(graph(F, False), opset_imports=[helper.make_opsetid("", 13)])
    cand = helper.make_model(graph(TensorProto.FLOAT16, True), opset_imports=[helper.make_opsetid("", 13)])
    ref.ir_version = cand.ir_version = 8
    return load_model(ref), load_model(cand)


def test_restoring_an_if_rewrites_the_outer_reads_of_its_bodies() -> None:
    from workbench.debug import restore_layers

    ref, cand = _if_reference_and_fp16_candidate()
    restored = restore_layers(cand, ref, ["if"])
    bodies = [a.g for n in restored.graph.node if n.op_type == "If" for a in n.attribute]
    reads = {i for b in bodies for n in b.node for i in n.input}
    assert "W__fp32" in reads and "W" not in reads  # the reference's fp32 weight, not the candidate's fp16 one
    x = np.array([1.0, 2.0, -3.0, 0.25], np.float32)
    for c in (True, False):
        feeds = {"x": x, "c": np.array(c)}
        want = OrtEngine(ref, optimize=False).run(feeds)["y"]
        got = OrtEngine(restored, optimize=False).run(feeds)["y"]
        np.testing.assert_allclose(got, want, rtol=1e-6)  # only the Mul is fp16 (exact here), the If fp32


def vad_like_model(sr: int | None = None) -> onnx.ModelProto:
    """silero-like: y = If(sr == 16000) then Conv_a(x) else Conv_b(x); its Convs live only in the bodies. With
    ``sr`` the sample rate is frozen to an initializer (what check's repair does)."""
    rng = np.random.default_rng(5)

    def branch(tag: str) -> onnx.GraphProto:
        w = numpy_helper.from_array(rng.standard_normal((4, 1, 3)).astype(np.float32), f"w_{tag}")
        return helper.make_graph([helper.make_node("Conv", ["x", f"w_{tag}"], [f"y_{tag}"], name=f"conv_{tag}")],
                                 tag, [], [_vi(f"y_{tag}", None)], initializer=[w])

    inputs = [_vi("x", ["batch", 1, 16])]
    inits = [numpy_helper.from_array(np.array(16000, np.int64), "k16")]
    if sr is None:
        inputs.append(_vi("sr", [], TensorProto.INT64))
    else:
        inits.append(numpy_helper.from_array(np.array(sr, np.int64), "sr"))
    g = helper.make_graph(
        [helper.make_node("Equal", ["sr", "k16"], ["is16"], name="eq"),
         helper.make_node("If", ["is16"], ["y"], name="if", then_branch=branch("a"), else_branch=branch("b"))],
        "g", inputs, [_vi("y", ["batch", 4, 14])], initializer=inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return load_model(model)


def test_quantizing_a_model_whose_convs_are_all_in_bodies_is_refused_by_name() -> None:
    import pytest

    from workbench.errors import EditError
    from workbench.precision import activation_tensors, quantization_targets

    model = vad_like_model()
    for target in ("tensorrt", "onnxruntime"):
        with pytest.raises(EditError, match="inside an If/Loop/Scan body") as info:
            activation_tensors(model, target=target)
        assert "'conv_a'" in str(info.value)
        assert "`workbench check MODEL --repair --freeze sr=16000 -o flat.onnx`" in info.value.hint
        with pytest.raises(EditError, match="'conv_b'"):
            quantization_targets(model, target=target)


def test_freezing_the_selector_and_folding_brings_the_branch_into_the_main_graph() -> None:
    from workbench.precision import activation_tensors, quantize_model

    model = vad_like_model(sr=16000)
    folded = model
    for edit in (R.FoldConstants(), R.FoldConstantIf(), R.RemoveIdentity()):
        folded = apply_edit(folded, edit)
    y = folded.graph.output[0].type.tensor_type
    assert [d.dim_param or d.dim_value for d in y.shape.dim] == ["batch", 4, 14]  # graphsurgeon dropped it
    assert [n.name for n in folded.graph.node if n.op_type == "Conv"] == ["conv_a"]
    assert activation_tensors(folded) == ["x"]
    x = np.random.default_rng(0).standard_normal((2, 1, 16)).astype(np.float32)
    ref = OrtEngine(model, optimize=False).run({"x": x})["y"]
    q = quantize_model(folded, {"x": float(np.abs(x).max())})
    got = OrtEngine(q).run({"x": x})["y"]
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()


def test_excluding_every_main_graph_conv_of_a_model_with_body_matmuls_is_not_refused() -> None:
    """slanet_1m (a CNN, then a Loop decoder whose MatMuls stay float): the debugger's all-kept plan excludes every
    main-graph conv; that left nothing to quantize and was refused as 'every Conv ... is inside a body'."""
    import warnings

    from workbench.precision import quantization_targets

    w = numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "w")
    m = numpy_helper.from_array(np.ones((4, 4), np.float32), "m")
    then = helper.make_graph([helper.make_node("MatMul", ["f", "m"], ["t"], name="body_matmul")], "then", [], [_vi("t")])
    other = helper.make_graph([helper.make_node("Identity", ["f"], ["e"], name="body_id")], "else", [], [_vi("e")])
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["f"], name="conv_main"),
         helper.make_node("If", ["c"], ["y"], name="branch", then_branch=then, else_branch=other)],
        "g", [_vi("x", [1, 3, 4, 4]), _vi("c", [], TensorProto.BOOL)], [_vi("y")], initializer=[w, m])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the body MatMul staying float is said as a warning
        for target in ("tensorrt", "onnxruntime"):
            assert "conv_main" in quantization_targets(model, target=target)
            assert quantization_targets(model, target=target, exclude=["conv_main"]) == {}
