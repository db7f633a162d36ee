"""If nodes whose conditions are computed from tensor shapes (silero VAD's decoder: Shape -> Gather -> Equal -> If,
then Shape -> Size of that If's output -> If): with static input shapes, fold_constants folds the shape chains round
after round (a shape is known only once the If before it is flattened) and flattens the Ifs; check offers that as a
repair (set_shapes + fold_constants) with the shapes of the profile, also for Ifs nested in another If's branches,
and TensorRT-RTX builds the repaired model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from workbench import recipe as R
from workbench.backends.ort import OrtEngine
from workbench.check import check_model, repair_model, static_shapes
from workbench.edits import apply_edit, apply_edits
from workbench.edits.repairs import fill_values, find_repairs, shape_ifs
from workbench.graph import load_model
from workbench.recipe import ShapeProfile


def _i64(name: str, value: int) -> onnx.TensorProto:
    return helper.make_tensor(name, TensorProto.INT64, [], [value])


def shape_if_nodes(x: str, prefix: str = "") -> tuple[list[onnx.NodeProto], str]:
    """Nodes computing ``{prefix}y`` from ``x`` through two shape-dependent Ifs (the second reads the first's output,
    whose rank inference cannot give: its branches differ in rank)."""
    p = prefix
    keep = helper.make_graph([helper.make_node("Identity", [x], [f"{p}t1"])], "keep", [],
                             [helper.make_tensor_value_info(f"{p}t1", TensorProto.FLOAT, None)])
    reduce = helper.make_graph([helper.make_node("ReduceSum", [x], [f"{p}e1"], keepdims=0)], "reduce", [],
                               [helper.make_tensor_value_info(f"{p}e1", TensorProto.FLOAT, None)])
    relu = helper.make_graph([helper.make_node("Relu", [f"{p}y1"], [f"{p}t2"])], "relu", [],
                             [helper.make_tensor_value_info(f"{p}t2", TensorProto.FLOAT, None)])
    neg = helper.make_graph([helper.make_node("Neg", [f"{p}y1"], [f"{p}e2"])], "neg", [],
                            [helper.make_tensor_value_info(f"{p}e2", TensorProto.FLOAT, None)])
    nodes = [
        helper.make_node("Constant", [], [f"{p}zero"], value=_i64(f"{p}zero", 0)),
        helper.make_node("Constant", [], [f"{p}one"], value=_i64(f"{p}one", 1)),
        helper.make_node("Constant", [], [f"{p}three"], value=_i64(f"{p}three", 3)),
        helper.make_node("Shape", [x], [f"{p}s"], name=f"{p}shape"),
        helper.make_node("Gather", [f"{p}s", f"{p}zero"], [f"{p}n"], name=f"{p}gather"),
        helper.make_node("Equal", [f"{p}n", f"{p}one"], [f"{p}c1"], name=f"{p}equal"),
        helper.make_node("If", [f"{p}c1"], [f"{p}y1"], name=f"{p}if_batch", then_branch=keep, else_branch=reduce),
        helper.make_node("Size", [f"{p}y1"], [f"{p}size"], name=f"{p}size_of"),
        helper.make_node("Equal", [f"{p}size", f"{p}three"], [f"{p}c2"], name=f"{p}equal2"),
        helper.make_node("If", [f"{p}c2"], [f"{p}y"], name=f"{p}if_size", then_branch=relu, else_branch=neg),
    ]
    return nodes, f"{p}y"


def shape_if_model() -> onnx.ModelProto:
    nodes, y = shape_if_nodes("x")
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                          [helper.make_tensor_value_info(y, TensorProto.FLOAT, ["a", "b"])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return load_model(model)


def nested_model() -> onnx.ModelProto:
    """The shape-dependent Ifs inside the branches of an If on a scalar 'sr' (silero VAD v5's layout)."""
    a_nodes, a_y = shape_if_nodes("x", "a_")
    b_nodes, b_y = shape_if_nodes("x", "b_")
    then = helper.make_graph(a_nodes, "sr16k", [], [helper.make_tensor_value_info(a_y, TensorProto.FLOAT, None)])
    other = helper.make_graph(b_nodes, "sr8k", [], [helper.make_tensor_value_info(b_y, TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Constant", [], ["k16"], value=_i64("k16", 16000)),
             helper.make_node("Equal", ["sr", "k16"], ["is16k"], name="sr_equal"),
             helper.make_node("If", ["is16k"], ["y"], name="if_sr", then_branch=then, else_branch=other)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3]),
                                       helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b"])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return load_model(model)


X = np.array([[1.0, -2.0, 3.0]], dtype=np.float32)


def test_fold_constants_with_static_shapes_folds_shape_ifs_round_after_round() -> None:
    model = shape_if_model()
    assert apply_edit(model, R.FoldConstants()).graph.node[-1].op_type == "If"  # dynamic N: nothing to fold
    static = apply_edit(model, R.SetShapes(shapes={"x": (1, 3)}))
    folded = apply_edit(static, R.FoldConstants())
    assert [n.op_type for n in folded.graph.node] == ["Identity", "Relu"]  # both Ifs gone: the second needed a second round
    want = OrtEngine(model, optimize=False).run({"x": X})["y"]
    got = OrtEngine(folded, optimize=False).run({"x": X})["y"]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, np.maximum(X, 0))


def test_check_offers_static_shapes_for_a_shape_if() -> None:
    model = shape_if_model()
    assert shape_ifs(model) == ["if_batch", "if_size"]  # Size, like Shape, is known once shapes are static
    (rep,) = [r for r in find_repairs(model) if r.kind == "static_shapes"]
    assert rep.needs_shapes == ("x",) and not rep.ready
    ready = fill_values([rep], {}, {"x": (1, 3)})[0]
    assert ready.ready and ready.edits[0] == R.SetShapes(shapes={"x": (1, 3)}) and "x=1x3" in ready.title
    assert static_shapes(model, [ShapeProfile("x", (1, 3), (1, 3), (1, 3))]) == {"x": (1, 3)}
    assert static_shapes(model, [ShapeProfile("x", (1, 3), (2, 3), (4, 3))]) == {}  # a range gives no static shape
    fixed, applied, skipped = repair_model(model, shapes={"x": (1, 3)})
    assert [e.kind for e in applied] == ["set_shapes", "fold_constants"] and not skipped
    assert "If" not in {n.op_type for n in fixed.graph.node}
    _, applied, skipped = repair_model(model)
    assert not applied and "--shapes x:DIMS" in skipped[0]["reason"]


def test_nested_shape_ifs_fold_after_freezing_the_outer_input() -> None:
    model = nested_model()
    assert sorted(shape_ifs(model)) == ["a_if_batch", "a_if_size", "b_if_batch", "b_if_size"]  # in the branches
    kinds = [r.kind for r in find_repairs(model)]
    assert kinds.index("freeze_input") < kinds.index("static_shapes")
    fixed, applied, skipped = repair_model(model, values={"sr": 16000}, shapes={"x": (1, 3)})
    assert [e.kind for e in applied] == ["freeze_input", "fold_constant_if", "set_shapes", "fold_constants"]
    assert [n.op_type for n in fixed.graph.node] == ["Identity", "Relu"]
    want = OrtEngine(model, optimize=False).run({"x": X, "sr": np.array(16000, np.int64)})["y"]
    np.testing.assert_array_equal(OrtEngine(fixed, optimize=False).run({"x": X})["y"], want)
    replayed = apply_edits(model, applied)  # the recipe edits replay to the same graph
    assert [n.op_type for n in replayed.graph.node] == ["Identity", "Relu"]


def test_tensorrt_rtx_builds_the_repaired_model() -> None:
    pytest.importorskip("tensorrt_rtx", reason="the repaired model is built with TensorRT-RTX (the rtx extra, which make test installs)")
    report = check_model(nested_model(), shapes=["x:1x3"], backend="tensorrt-rtx", repair=True,
                         values={"sr": 16000}, timeout=300)
    assert report.repaired is not None and report.repaired["buildable"] is True, report.repaired
    assert [e["kind"] for e in report.repaired["edits"]] == ["freeze_input", "fold_constant_if", "set_shapes",
                                                            "fold_constants"]
    titles = [r["title"] for r in report.repairs]
    assert any("x=1x3" in t for t in titles)
