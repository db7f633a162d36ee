"""Weights kept in Constant nodes (PaddlePaddle, TensorFlow exports): parameters, layer table, constant_weights."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from workbench.graph import constant_weights, layer_table, load_model, summary


def _const(name: str, array: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], name=f"{name}_const",
                            value=numpy_helper.from_array(array.astype(np.float32), name))


def constant_weight_model() -> onnx.ModelProto:
    """x -> Conv(W: Constant 8x3x3x3, B: Constant 8) -> Reshape(shape: int64 Constant) -> MatMul(Constant 128x4)."""
    rng = np.random.default_rng(0)
    nodes = [
        _const("W", rng.standard_normal((8, 3, 3, 3))),
        _const("B", rng.standard_normal(8)),
        helper.make_node("Constant", [], ["shape"], name="shape_const",
                         value=numpy_helper.from_array(np.array([1, 128], np.int64), "shape")),
        _const("M", rng.standard_normal((128, 4))),
        helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", kernel_shape=[3, 3]),
        helper.make_node("Reshape", ["c", "shape"], ["r"], name="reshape"),
        helper.make_node("MatMul", ["r", "M"], ["y"], name="head"),
    ]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def test_constant_node_weights_count_as_parameters() -> None:
    info = summary(load_model(constant_weight_model()))
    # 8*3*3*3 + 8 + 128*4; the int64 reshape target is shape arithmetic, not a weight
    assert info.params == 216 + 8 + 512


def test_weights_in_subgraphs_count_as_parameters() -> None:
    inner = helper.make_graph([_const("V", np.ones((4, 5))), helper.make_node("MatMul", ["x", "V"], ["t"])],
                              "then", [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    init = numpy_helper.from_array(np.ones((4, 5), np.float32), "U")
    other = helper.make_graph([helper.make_node("MatMul", ["x", "U"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)], initializer=[init])
    g = helper.make_graph([helper.make_node("If", ["c"], ["y"], name="if", then_branch=inner, else_branch=other)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4]),
                           helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    assert summary(load_model(model)).params == 40  # 20 in a Constant of one branch, 20 initializer of the other


def test_layer_table_shows_constant_weights_with_their_readers() -> None:
    model = load_model(constant_weight_model())
    rows = {r["name"]: r for r in layer_table(model).records()}
    assert list(rows) == ["conv", "reshape", "head"]  # no Constant rows
    assert rows["conv"]["weights"] == ["W: 8x3x3x3", "B: 8"]
    assert rows["conv"]["params"] == 224 and rows["conv"]["input_shapes"] == ["1x3x6x6"]
    assert rows["reshape"]["weights"] == ["shape: 2"] and rows["reshape"]["params"] == 0
    assert rows["head"]["params"] == 512 and rows["head"]["flops"] == 2 * 4 * 128
    assert sum(r["params"] for r in rows.values()) == summary(model).params
    full = layer_table(model, constant_rows=True)
    assert full.column("name") == [n.name for n in model.graph.node]


def test_constant_weights_maps_readers_to_tensors() -> None:
    model = load_model(constant_weight_model())
    assert constant_weights(model) == {"conv": [("W", (8, 3, 3, 3)), ("B", (8,))], "reshape": [("shape", (2,))],
                                       "head": [("M", (128, 4))]}
    cnn = load_model("digits_cnn")
    assert constant_weights(cnn) == {}
    with_inits = constant_weights(cnn, initializers=True)
    conv = next(n for n in cnn.graph.node if n.op_type == "Conv")
    assert [t for t, _ in with_inits[conv.name]] == [i for i in conv.input[1:] if i]


def test_fuse_batchnorm_reads_constant_node_parameters() -> None:
    """Paddle keeps Conv weights and BatchNorm statistics in Constant nodes: fuse_batchnorm alone must fuse them."""
    from workbench import recipe as R
    from workbench.backends.ort import OrtEngine
    from workbench.edits import apply_edit

    rng = np.random.default_rng(2)
    c = 8
    nodes = [_const("W", rng.standard_normal((c, 3, 3, 3)) * 0.2), _const("scale", 1 + 0.1 * rng.standard_normal(c)),
             _const("shift", 0.1 * rng.standard_normal(c)), _const("mean", 0.1 * rng.standard_normal(c)),
             _const("var", 1 + rng.random(c)),
             helper.make_node("Conv", ["x", "W"], ["c"], name="conv", kernel_shape=[3, 3]),
             helper.make_node("BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["y"], name="bn")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 4, 4])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model = load_model(model)
    fused = apply_edit(model, R.FuseBatchNorm())
    assert [n.op_type for n in fused.graph.node] == ["Conv"]
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    ref = OrtEngine(model, optimize=False).run({"x": x})["y"]
    np.testing.assert_allclose(OrtEngine(fused, optimize=False).run({"x": x})["y"], ref, rtol=1e-5, atol=1e-5)
