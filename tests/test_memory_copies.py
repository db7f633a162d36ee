"""Whole-model copies that a big model cannot afford (corpus F14: a 194 MB tree ensemble is 1.15 GB as a protobuf,
and the simplify step held four of them). An edit with nothing to do returns the model it was given, so the
session's cache holds one model, not one per edit; an edit with something to do still runs."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from workbench import recipe as R
from workbench.edits import apply_edit
from workbench.session import Session

CLEANUPS = (R.FoldConstants(), R.FuseBatchNorm(), R.RemoveIdentity())


def _model(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto] = (), out: str = "y") -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 2, 4, 4])], list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def _table_model(features: int = 50_000) -> onnx.ModelProto:
    """Relu -> ai.onnx.ml LinearRegressor whose coefficients are a 50 000-element attribute (like a tree ensemble's
    tables, which no clean-up touches)."""
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="relu"),
         helper.make_node("LinearRegressor", ["r"], ["y"], name="linear", domain="ai.onnx.ml",
                          coefficients=np.linspace(-1, 1, features).tolist(), intercepts=[0.5], targets=1)],
        "table", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("ai.onnx.ml", 1)])
    m.ir_version = 8
    return m


def test_idle_cleanups_return_the_model_itself_and_the_session_holds_one_model(tmp_path):
    model = _table_model()
    for edit in CLEANUPS:
        assert apply_edit(model, edit) is model, edit.kind
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    s = Session(path, cache_dir=tmp_path / "cache")
    after = s.apply_all(list(CLEANUPS))
    assert after is s.original and s.model is s.original
    assert len(s.recipe.edits) == 3 and s.last_change.changed == () and s.last_change.removed == ()


def _w(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(value.astype(np.float32), name)


def test_cleanups_with_something_to_do_still_run():
    relu = helper.make_node("Relu", ["x"], ["y"], name="relu")
    # a node computed from constants alone: folded into an initializer
    folded = _model([helper.make_node("Add", ["a", "a"], ["c"], name="const_add"),
                     helper.make_node("Add", ["x", "c"], ["y"], name="add")], [_w("a", np.ones(1))])
    out = apply_edit(folded, R.FoldConstants())
    assert [n.name for n in out.graph.node] == ["add"]
    # a dead node and an unused initializer: folding's clean-up removes them
    dead = _model([relu, helper.make_node("Neg", ["x"], ["unused"], name="dead")], [_w("spare", np.ones(3))])
    out = apply_edit(dead, R.FoldConstants())
    assert [n.name for n in out.graph.node] == ["relu"] and not out.graph.initializer
    # nodes out of order: the round trip sorts them
    unsorted = _model([helper.make_node("Neg", ["r"], ["y"], name="neg"),
                       helper.make_node("Relu", ["x"], ["r"], name="relu")])
    for edit in CLEANUPS:
        out = apply_edit(unsorted, edit)
        assert out is not unsorted and [n.name for n in out.graph.node] == ["relu", "neg"], edit.kind
    # an Identity: removed
    ident = _model([helper.make_node("Relu", ["x"], ["r"], name="relu"),
                    helper.make_node("Identity", ["r"], ["y"], name="id")])
    assert [n.name for n in apply_edit(ident, R.RemoveIdentity()).graph.node] == ["relu"]
    assert apply_edit(ident, R.FoldConstants()) is ident and apply_edit(ident, R.FuseBatchNorm()) is ident
    # a BatchNormalization after a Conv: fused
    c = 2
    conv_bn = _model([helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
                      helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"], name="bn")],
                     [_w("w", np.ones((c, c, 1, 1))), _w("s", np.full(c, 2.0)), _w("b", np.zeros(c)),
                      _w("m", np.zeros(c)), _w("v", np.ones(c))])
    assert [n.name for n in apply_edit(conv_bn, R.FuseBatchNorm()).graph.node] == ["conv"]


def test_fuse_batchnorm_with_nothing_to_fuse_leaves_dead_nodes_to_their_own_edit():
    """fuse_batchnorm once ran graphsurgeon's whole-graph clean-up even when it fused nothing (so it was never
    idle); dead nodes are remove_dead_nodes' (and fold_constants') to remove."""
    dead = _model([helper.make_node("Relu", ["x"], ["y"], name="relu"),
                   helper.make_node("Neg", ["x"], ["unused"], name="dead")])
    assert apply_edit(dead, R.FuseBatchNorm()) is dead
    assert [n.name for n in apply_edit(dead, R.RemoveDeadNodes()).graph.node] == ["relu"]


def _linear_only(features: int = 50_000) -> onnx.ModelProto:
    """Only an ai.onnx.ml LinearRegressor (its 50 000 coefficients an attribute): no node fp16 can convert."""
    m = _table_model(features)
    relu, linear = m.graph.node
    linear.input[0] = "x"
    m.graph.node.remove(relu)
    return m


def test_fp16_with_no_node_to_convert_makes_no_copy_and_no_reference_run(tmp_path):
    from workbench.precision import convert_precision
    from workbench.workflows.quantize import convert

    model = _linear_only()
    assert convert_precision(model, "fp16") is model
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    s = Session(path, cache_dir=tmp_path / "cache")
    data = {"x": np.random.default_rng(0).standard_normal((4, 50_000)).astype(np.float32)}
    r = convert(s, "fp16", data=data)
    assert r.converted == () and r.data is None and r.range_limit is None  # data only after a reference run
    assert s.model is s.original and len(s.recipe.edits) == 1
    # one node that converts: the reference run measures the data, and the model is a new one
    onnx.save(_table_model(), tmp_path / "t.onnx")
    s2 = Session(tmp_path / "t.onnx", cache_dir=tmp_path / "cache2")
    r2 = convert(s2, "fp16", data=data)
    assert r2.converted == ("relu",) and r2.data is not None and s2.model is not s2.original


def _spy(monkeypatch, module, name: str, calls: list[str], real):
    def spy(*args, **kwargs):
        calls.append(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy, raising=False)


def test_ort_profile_opens_one_session_on_the_model_as_it_is(tmp_path, monkeypatch):
    """profile_model copied a given ModelProto (load_model), serialised it for an engine it only read options from,
    then again for the profiling session; from its file it serialises nothing."""
    from workbench.backends import ort, ort_profile
    from workbench.graph import load_model, model_bytes

    model = _table_model(5_000)
    feeds = {"x": np.linspace(-1, 1, 5_000, dtype=np.float32)[None]}
    calls: list[str] = []
    for module in (ort, ort_profile):
        _spy(monkeypatch, module, "model_bytes", calls, model_bytes)
    _spy(monkeypatch, ort_profile, "load_model", calls, load_model)
    table = ort_profile.profile_model(model, feeds, iterations=2)
    assert calls == ["model_bytes"]
    assert {n for r in table.records() for n in r["onnx_nodes"]} <= {"relu", "linear"} and table.records()
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    calls.clear()
    again = ort_profile.profile_model(model, feeds, iterations=2, path=path)
    assert calls == [] and [r["type"] for r in again.records()] == [r["type"] for r in table.records()]


def test_session_model_file_is_the_file_while_the_model_is_it(tmp_path):
    path = tmp_path / "m.onnx"
    model = _table_model(5_000)
    onnx.save(model, path)
    s = Session(path, cache_dir=tmp_path / "cache")
    assert s.model_file == path.resolve()
    s.apply_all(list(CLEANUPS))  # idle: still the file's model
    assert s.model_file == path.resolve()
    s.apply(R.BypassNode(node="relu"))
    assert s.model_file is None
    s.undo()
    assert s.model_file == path.resolve()
    unnamed = _table_model(5_000)
    unnamed.graph.node[0].name = ""  # the session names it: the model is no longer the file's
    onnx.save(unnamed, tmp_path / "u.onnx")
    assert Session(tmp_path / "u.onnx", cache_dir=tmp_path / "cache2").model_file is None


def test_fp16_planning_types_an_untyped_model_without_copying_its_weights(monkeypatch):
    """plan_conversion (the Precision tab's per-node choices), convert_precision and quantizable_nodes (the Calibrate
    tab) typed a model without value_info through a shape-inferred copy of the whole model (1.15 GB for the 194 MB
    tree ensemble): now inference runs on its weightless skeleton."""
    from workbench.graph import shapes
    from workbench.precision import convert_precision, plan_conversion, quantizable_nodes

    w = _w("w", np.random.default_rng(0).standard_normal((64, 2, 3, 3)))
    model = _model([helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
                    helper.make_node("Relu", ["c"], ["r"], name="relu"),
                    helper.make_node("ReduceMean", ["r"], ["y"], name="mean", axes=[1], keepdims=1)], [w])
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 1
    assert not model.graph.value_info  # 'c' and 'r' untyped
    copied: list[int] = []
    real = shapes.copy_model
    monkeypatch.setattr(shapes, "copy_model", lambda m: copied.append(m.ByteSize()) or real(m))
    plan = plan_conversion(model, "fp16")
    assert plan["conv"]["precision"] == "fp16" and plan["relu"]["precision"] == "fp16"
    out = convert_precision(model, "fp16")
    assert [i.data_type for i in out.graph.initializer] == [TensorProto.FLOAT16]
    assert quantizable_nodes(model) == ["conv"]  # the Calibrate tab's INT8 targets typed the same way
    weights = len(w.raw_data)
    assert copied and all(size < weights for size in copied), (copied, weights)
