"""Graph edits: semantics-preserving ones checked numerically against ONNX Runtime; surgical ones by structure."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.models import (
    conv_bn_relu_model,
    dynamic_model,
    external_data_model,
    if_model,
    integer_ops_model,
    matmul_mlp_model,
    random_feeds,
    unnamed_nodes_model,
)
from workbench import recipe as R
from workbench.backends.ort import OrtEngine, with_outputs
from workbench.edits import apply_edit, node_diff
from workbench.errors import EditError
from workbench.graph import load_model, model_bytes


def run(model: onnx.ModelProto, feeds: dict) -> dict[str, np.ndarray]:
    return OrtEngine(model, optimize=False).run(feeds)


def ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def names(model: onnx.ModelProto) -> list[str]:
    return [n.name for n in model.graph.node]


def _bn_after(op: str, seed: int = 0) -> onnx.ModelProto:
    """X -> op(W, B) -> BatchNormalization -> Y for Conv, grouped ConvTranspose and Gemm (transB 0/1)."""
    rng = np.random.default_rng(seed)

    def init(name: str, a: np.ndarray) -> onnx.TensorProto:
        return onnx.numpy_helper.from_array(a.astype(np.float32), name)

    c = 4
    if op == "Conv":
        x_shape, inits = [2, 3, 6, 6], [init("W", rng.standard_normal((c, 3, 3, 3))), init("B", rng.standard_normal(c))]
        node = helper.make_node("Conv", ["x", "W", "B"], ["h"], name="prod", pads=[1, 1, 1, 1])
        y_shape = [2, c, 6, 6]
    elif op == "ConvTranspose":  # group 2: weight (Cin=4, Cout/group=2, k, k) -> Cout = 4
        x_shape, inits = [2, 4, 5, 5], [init("W", rng.standard_normal((4, 2, 3, 3)))]
        node = helper.make_node("ConvTranspose", ["x", "W"], ["h"], name="prod", group=2, strides=[2, 2])
        y_shape = [2, c, 11, 11]
    else:
        trans = op == "GemmT"
        w = rng.standard_normal((c, 5) if trans else (5, c))
        x_shape, inits = [3, 5], [init("W", w), init("B", rng.standard_normal(c))]
        node = helper.make_node("Gemm", ["x", "W", "B"], ["h"], name="prod", transB=int(trans), alpha=0.5, beta=2.0)
        y_shape = [3, c]
    inits += [init("s", 1 + 0.2 * rng.standard_normal(c)), init("b", rng.standard_normal(c)),
              init("m", rng.standard_normal(c)), init("v", 1 + rng.random(c))]
    bn = helper.make_node("BatchNormalization", ["h", "s", "b", "m", "v"], ["y"], name="bn", epsilon=1e-3)
    g = helper.make_graph([node, bn], "bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("op", ["Conv", "ConvTranspose", "Gemm", "GemmT"])
def test_fuse_batchnorm_matches_onnxruntime(op: str) -> None:
    model = load_model(_bn_after(op))
    fused = apply_edit(model, R.FuseBatchNorm())
    assert ops(fused) == [op.rstrip("T")]
    assert names(fused) == ["prod"] and fused.graph.node[0].output[0] == "y"  # BN's output name kept
    feeds = random_feeds(model, seed=1)
    np.testing.assert_allclose(run(fused, feeds)["y"], run(model, feeds)["y"], rtol=1e-4, atol=1e-4)


def test_fold_fuse_identity_on_conv_model_keeps_outputs() -> None:
    model = load_model(conv_bn_relu_model())
    feeds = random_feeds(model, seed=3)
    ref = run(model, feeds)["logits"]
    m = model
    for edit in (R.FoldConstants(), R.FuseBatchNorm(), R.RemoveIdentity(), R.RemoveDeadNodes()):
        m = apply_edit(m, edit)
    assert "BatchNormalization" not in ops(m) and len(m.graph.node) == len(model.graph.node) - 3
    np.testing.assert_allclose(run(m, feeds)["logits"], ref, rtol=1e-4, atol=1e-5)
    assert model_bytes(load_model(conv_bn_relu_model())) == model_bytes(model)  # input never mutated


def _constant_chain_model() -> onnx.ModelProto:
    """y = x * (Shape-derived and arithmetic constants) with an Identity and a Dropout in the way."""
    c = onnx.numpy_helper.from_array(np.array([1.5, -2.0, 0.25], np.float32), "c")
    nodes = [
        helper.make_node("Shape", ["x"], ["shp"], name="shape"),
        helper.make_node("Cast", ["shp"], ["shp_f"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["shp_f"], ["total"], name="sum", keepdims=0),
        helper.make_node("Mul", ["c", "c"], ["c2"], name="square"),
        helper.make_node("Add", ["c2", "total"], ["k"], name="add_const"),
        helper.make_node("Identity", ["x"], ["x_id"], name="ident"),
        helper.make_node("Dropout", ["x_id"], ["x_dr"], name="drop"),
        helper.make_node("Mul", ["x_dr", "k"], ["y_pre"], name="scale"),
        helper.make_node("Identity", ["y_pre"], ["y"], name="out_ident"),
    ]
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], [c])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_fold_constants_and_remove_identity_are_exact() -> None:
    model = load_model(_constant_chain_model())
    feeds = random_feeds(model, seed=2)
    ref = run(model, feeds)["y"]
    folded = apply_edit(model, R.FoldConstants())
    assert ops(folded) == ["Identity", "Dropout", "Mul", "Identity"]
    k = {i.name: onnx.numpy_helper.to_array(i) for i in folded.graph.initializer}["k"]
    np.testing.assert_array_equal(k, np.array([1.5, -2.0, 0.25], np.float32) ** 2 + 5)
    clean = apply_edit(folded, R.RemoveIdentity())
    assert ops(clean) == ["Mul"] and clean.graph.node[0].output[0] == "y"  # the graph output keeps its name
    np.testing.assert_array_equal(run(clean, feeds)["y"], ref)


@pytest.mark.parametrize("cond", [True, False])
def test_fold_constant_if_takes_the_right_branch(cond: bool) -> None:
    model = load_model(if_model(condition=cond))
    folded = apply_edit(model, R.FoldConstantIf())
    assert ops(folded) == (["Add", "Relu"] if cond else ["Neg", "Relu"])
    assert names(folded)[0] == ("then_add" if cond else "else_neg")
    feeds = random_feeds(model, seed=4)
    np.testing.assert_array_equal(run(folded, feeds)["output"], run(model, feeds)["output"])


def test_dequantize_integer_ops_reproduces_onnxruntime_integer_math() -> None:
    model = load_model(integer_ops_model())
    out = apply_edit(model, R.DequantizeIntegerOps())
    assert not {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"} & set(ops(out))
    assert {"conv_quant", "fc_quant"} <= set(names(out))  # float ops keep the integer ops' names
    for seed in range(3):
        feeds = random_feeds(model, seed=seed)
        np.testing.assert_allclose(run(out, feeds)["output"], run(model, feeds)["output"], rtol=1e-5, atol=1e-4)


def test_dequantize_onnxruntime_quantize_dynamic_output(tmp_path) -> None:
    """A model quantised by ORT's own quantize_dynamic converts back to float within quantisation error."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = matmul_mlp_model()
    src, dst = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    onnx.save_model(fp32, src)
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QUInt8)
    q = load_model(dst)
    assert "MatMulInteger" in ops(q)
    out = apply_edit(q, R.DequantizeIntegerOps())
    assert "MatMulInteger" not in ops(out) and "DynamicQuantizeLinear" not in ops(out)
    feeds = random_feeds(fp32, seed=5)
    got, int8, ref = run(out, feeds)["logits"], run(q, feeds)["logits"], run(load_model(fp32), feeds)["logits"]
    np.testing.assert_allclose(got, int8, rtol=1e-4, atol=1e-4)
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()


def _lstm_model(direction: str, seed: int = 7) -> onnx.ModelProto:
    """A float LSTM (seq 6, batch 2, input 5, hidden 8) with bias, followed by a Relu."""
    rng = np.random.default_rng(seed)
    dirs, hidden, inp = (2 if direction == "bidirectional" else 1), 8, 5

    def init(name: str, shape: tuple) -> onnx.TensorProto:
        return onnx.numpy_helper.from_array((0.4 * rng.standard_normal(shape)).astype(np.float32), name)

    inits = [init("W", (dirs, 4 * hidden, inp)), init("R", (dirs, 4 * hidden, hidden)), init("B", (dirs, 8 * hidden))]
    nodes = [helper.make_node("LSTM", ["x", "W", "R", "B"], ["y", "y_h"], name="lstm", hidden_size=hidden,
                              direction=direction),
             helper.make_node("Relu", ["y"], ["out"], name="relu")]
    g = helper.make_graph(nodes, "lstm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 2, inp])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [6, dirs, 2, hidden]),
                           helper.make_tensor_value_info("y_h", TensorProto.FLOAT, [dirs, 2, hidden])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("direction, per_channel", [("forward", False), ("bidirectional", True)])
def test_dequantize_dynamic_quantize_lstm_from_onnxruntime(tmp_path, direction: str, per_channel: bool) -> None:
    from onnxruntime.quantization import quantize_dynamic

    fp32 = _lstm_model(direction)
    src, dst = tmp_path / "lstm.onnx", tmp_path / "lstm_int8.onnx"
    onnx.save_model(fp32, src)
    quantize_dynamic(str(src), str(dst), per_channel=per_channel, op_types_to_quantize=["LSTM"])
    q = load_model(dst)
    assert ops(q) == ["DynamicQuantizeLSTM", "Relu"]
    out = apply_edit(q, R.DequantizeIntegerOps())
    assert ops(out) == ["LSTM", "Relu"] and out.graph.node[0].name == q.graph.node[0].name
    feeds = random_feeds(fp32, seed=8)
    ref, int8, got = (run(m, feeds) for m in (load_model(fp32), q, out))
    for name in ("out", "y_h"):
        # the float LSTM differs from the float model only by the weights' int8 rounding ...
        assert np.abs(got[name] - ref[name]).max() < 0.02
        # ... and from ORT's int8 LSTM (which also quantises activations per step) within its error
        assert np.abs(got[name] - int8[name]).max() < 0.02
    w_q = {i.name: onnx.numpy_helper.to_array(i) for i in q.graph.initializer}
    w_f = {i.name: onnx.numpy_helper.to_array(i) for i in out.graph.initializer}
    w_name = out.graph.node[0].input[1]
    w_ref = onnx.numpy_helper.to_array(fp32.graph.initializer[0])
    assert w_f[w_name].shape == w_ref.shape
    step = max(float(np.abs(v).max()) for k, v in w_q.items() if "scale" in k)
    assert np.abs(w_f[w_name] - w_ref).max() <= step  # dequantised weights sit within one quantisation step


def test_dequantize_refuses_computed_lstm_weights() -> None:
    model = load_model(integer_ops_model())
    zeros = [onnx.numpy_helper.from_array(np.zeros(s, np.float32), n) for n, s in (("lstm_ws", (1,)), ("lstm_rs", (1,)))]
    zps = [onnx.numpy_helper.from_array(np.zeros(1, np.int8), n) for n in ("lstm_wz", "lstm_rz")]
    r = onnx.numpy_helper.from_array(np.zeros((1, 2, 8), np.int8), "lstm_r")
    model.graph.initializer.extend([*zeros, *zps, r])
    model.graph.node.append(helper.make_node("Cast", ["output"], ["w_computed"], name="cast_w", to=TensorProto.INT8))
    model.graph.node.append(helper.make_node(
        "DynamicQuantizeLSTM", ["output", "w_computed", "lstm_r", "", "", "", "", "", "lstm_ws", "lstm_wz",
                                "lstm_rs", "lstm_rz"], ["lstm_y"], name="lstm_q", domain="com.microsoft", hidden_size=2))
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    with pytest.raises(EditError, match="DynamicQuantizeLSTM 'lstm_q' has computed input-weight") as info:
        apply_edit(model, R.DequantizeIntegerOps())
    assert "constant" in info.value.hint


def test_bypass_remove_insert_replace_rename() -> None:
    model = load_model(conv_bn_relu_model())
    feeds = random_feeds(model, seed=0)
    m = apply_edit(model, R.BypassNode(node="block2.relu"))
    assert "block2.relu" not in names(m)
    conv3 = next(n for n in m.graph.node if n.name == "block3.conv")
    assert conv3.input[0] == "block2.bn_out"

    m = apply_edit(model, R.InsertNode(tensor="logits", op="Softmax", name="softmax", attributes={"axis": 1}))
    assert names(m)[-1] == "softmax" and m.graph.output[0].name == "logits"
    probs = run(m, feeds)["logits"]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    logits = run(model, feeds)["logits"]
    np.testing.assert_allclose(probs, np.exp(logits) / np.exp(logits).sum(1, keepdims=True), rtol=1e-5)

    m = apply_edit(model, R.ReplaceNode(node="block1.relu", op="LeakyRelu", attributes={"alpha": 0.5}))
    node = next(n for n in m.graph.node if n.name == "block1.relu")
    assert node.op_type == "LeakyRelu" and helper.get_attribute_value(node.attribute[0]) == pytest.approx(0.5)

    m = apply_edit(model, R.RenameNode(node="fc", new_name="classifier"))
    assert "classifier" in names(m) and "fc" not in names(m)
    m = apply_edit(model, R.RenameTensor(tensor="logits", new_name="scores"))
    assert m.graph.output[0].name == "scores"
    np.testing.assert_array_equal(run(m, feeds)["scores"], logits)


def test_extract_subgraph_runs_on_its_own() -> None:
    model = load_model(conv_bn_relu_model())
    sub = apply_edit(model, R.ExtractSubgraph(inputs=("block1.relu_out",), outputs=("block3.relu_out",)))
    assert names(sub) == ["block2.conv", "block2.bn", "block2.relu", "block3.conv", "block3.bn", "block3.relu"]
    feeds = random_feeds(model, seed=6)
    mid = run(with_outputs(model, ["block1.relu_out", "block3.relu_out"]), feeds)
    got = run(sub, {"block1.relu_out": mid["block1.relu_out"]})["block3.relu_out"]
    np.testing.assert_allclose(got, mid["block3.relu_out"], rtol=1e-5, atol=1e-6)


def test_set_shapes_static_and_dynamic_and_add_outputs() -> None:
    model = load_model(dynamic_model())
    static = apply_edit(model, R.SetShapes(shapes={"input": (1, 3, 20, 24)}))
    out = static.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in out] == [1, 2, 20, 24]
    back = apply_edit(static, R.SetShapes(shapes={"input": ("N", 3, None, "W")}))
    dims = back.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and not dims[2].HasField("dim_value") and dims[3].dim_param == "W"
    extra = apply_edit(static, R.AddOutputs(tensors=("r1",)))
    assert [o.name for o in extra.graph.output] == ["output", "r1"]
    feeds = random_feeds(static)
    res = run(extra, feeds)
    assert res["r1"].shape == (1, 4, 20, 24) and (res["r1"] >= 0).all()


def test_remove_node_removes_a_side_branch_and_refuses_disconnecting() -> None:
    model = load_model(dynamic_model())
    with_side = apply_edit(model, R.AddOutputs(tensors=("r1",)))
    with pytest.raises(EditError, match="disconnect graph output") as info:
        apply_edit(with_side, R.RemoveNode(node="conv2"))
    assert "bypass_node" in info.value.hint and "conv2" in info.value.message
    dropped = apply_edit(with_side, R.RemoveNode(node="conv2", drop_outputs=True))
    assert names(dropped) == ["conv1", "relu1"] and [o.name for o in dropped.graph.output] == ["r1"]
    with pytest.raises(EditError, match="every graph output"):
        apply_edit(model, R.RemoveNode(node="conv1", drop_outputs=True))


@pytest.mark.parametrize("edit, match", [
    (R.RemoveNode(node="nope"), "no node named 'nope'"),
    (R.BypassNode(node="conv_quant_missing"), "no node named"),
    (R.InsertNode(tensor="no_such_tensor", op="Relu"), "no tensor named 'no_such_tensor'"),
    (R.ExtractSubgraph(inputs=("r1",), outputs=("missing_out",)), "no tensor named 'missing_out'"),
    (R.SetShapes(shapes={"r1": (1,)}), "'r1' is not a graph input"),
    (R.SetShapes(shapes={"input": (1, 3)}), "rank 2 given"),
    (R.RenameNode(node="conv1", new_name="conv2"), "already exists"),
    (R.ReplaceNode(node="relu1", op="NotAnOp"), "invalid ONNX graph"),
    (R.ExtractSubgraph(inputs=("r1",), outputs=("output", "c1")), "neither computed"),
])
def test_bad_edits_name_the_thing(edit: R.Edit, match: str) -> None:
    model = load_model(dynamic_model())
    before = model_bytes(model)
    with pytest.raises(EditError, match=match) as info:
        apply_edit(model, edit)
    assert info.value.hint
    assert model_bytes(model) == before


def test_unnamed_nodes_and_external_data(tmp_path) -> None:
    model = load_model(unnamed_nodes_model())
    m = apply_edit(model, R.RemoveIdentity())
    assert "last" not in names(m) and m.graph.output[0].name == "output"
    path = external_data_model(tmp_path)
    ext = load_model(path)
    m = apply_edit(ext, R.InsertNode(tensor="logits", op="Relu", name="final_relu"))
    feeds = random_feeds(ext)
    np.testing.assert_array_equal(run(m, feeds)["logits"], np.maximum(run(ext, feeds)["logits"], 0))


def test_node_diff_lists_added_removed_changed() -> None:
    model = load_model(conv_bn_relu_model())
    fused = apply_edit(model, R.FuseBatchNorm())
    diff = node_diff(model, fused)
    assert diff["removed"] == ["block1.bn", "block2.bn", "block3.bn"]
    assert diff["changed"] == ["block1.conv", "block2.conv", "block3.conv"] and diff["added"] == []


def _outer_scope_model() -> onnx.ModelProto:
    """Relu(x) -> r; If(cond) whose branches read r from the outer scope; output y."""
    then_g = helper.make_graph([helper.make_node("Add", ["r", "r"], ["t"], name="then_add")], "then", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, [4])])
    else_g = helper.make_graph([helper.make_node("Neg", ["r"], ["e"], name="else_neg")], "else", [],
                               [helper.make_tensor_value_info("e", TensorProto.FLOAT, [4])])
    cond = onnx.numpy_helper.from_array(np.array(True), "cond")
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("If", ["cond"], ["y"], name="if", then_branch=then_g, else_branch=else_g)]
    g = helper.make_graph(nodes, "outer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [cond])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_direct_edits_follow_outer_scope_uses_in_subgraphs() -> None:
    model = load_model(_outer_scope_model())
    x = {"x": np.array([-1.0, 2.0, -3.0, 4.0], np.float32)}
    bypassed = apply_edit(model, R.BypassNode(node="relu"))
    np.testing.assert_array_equal(run(bypassed, x)["y"], 2 * x["x"])  # the branch now reads x itself
    renamed = apply_edit(model, R.RenameTensor(tensor="r", new_name="rectified"))
    then_branch = next(a.g for a in renamed.graph.node[1].attribute if a.name == "then_branch")
    assert list(then_branch.node[0].input) == ["rectified", "rectified"]
    np.testing.assert_array_equal(run(renamed, x)["y"], 2 * np.maximum(x["x"], 0))
    inserted = apply_edit(model, R.InsertNode(tensor="x", op="Abs", name="abs_in"))
    assert names(inserted) == ["abs_in", "relu", "if"]
    np.testing.assert_array_equal(run(inserted, x)["y"], 2 * np.abs(x["x"]))
    folded = apply_edit(model, R.FoldConstantIf())
    assert ops(folded) == ["Relu", "Add"]
    np.testing.assert_array_equal(run(folded, x)["y"], run(model, x)["y"])
