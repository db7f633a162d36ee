"""A model whose node holds long attribute tables (a LightGBM TreeEnsembleClassifier: 4.8 M-element node lists,
194 MB, corpus F14, OOM-killed at 8.2 GB): loading checks and infers shapes on a skeleton whose long lists are cut
to one element, and graphsurgeon edits hold them as numpy arrays and write them back unchanged."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from workbench import recipe as R
from workbench.edits import apply_edits
from workbench.edits._gs import to_graph, to_model
from workbench.graph import load_model, weightless_skeleton

TREES = 3000  # 3 nodes each: node lists of 9000 elements, past the 4096 at which lists count as tables


def forest() -> onnx.ModelProto:
    """TREES stumps on feature t % 4 (thresholds spread over 0..1), leaves voting class 0 or 1, then an Identity."""
    n = TREES
    tree = np.repeat(np.arange(n), 3)
    node = np.tile([0, 1, 2], n)
    attrs = dict(
        nodes_treeids=tree.tolist(), nodes_nodeids=node.tolist(),
        nodes_featureids=np.repeat(np.arange(n) % 4, 3).tolist(), nodes_values=np.stack([(np.arange(n) % 97 + 0.5) / 97, np.zeros(n), np.zeros(n)], 1).ravel().tolist(),
        nodes_modes=["BRANCH_LEQ", "LEAF", "LEAF"] * n, nodes_truenodeids=[1, 0, 0] * n,
        nodes_falsenodeids=[2, 0, 0] * n, nodes_hitrates=[1.0] * 3 * n,
        nodes_missing_value_tracks_true=[0] * 3 * n,
        class_treeids=np.repeat(np.arange(n), 2).tolist(), class_nodeids=[1, 2] * n, class_ids=[0, 1] * n,
        class_weights=[1.0, 1.0] * n, classlabels_int64s=[0, 1], post_transform="NONE")
    g = helper.make_graph(
        [helper.make_node("TreeEnsembleClassifier", ["x"], ["label0", "scores"], name="forest",
                          domain="ai.onnx.ml", **attrs),
         helper.make_node("Identity", ["label0"], ["label"], name="id")], "forest",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("ai.onnx.ml", 1)])
    m.ir_version = 7
    return m


def test_skeleton_cuts_long_lists_and_shapes_are_those_of_the_full_model():
    model = forest()
    skel = weightless_skeleton(model)
    (cut, ident) = skel.graph.node
    lengths = {a.name: len(a.floats) or len(a.ints) or len(a.strings) for a in cut.attribute}
    assert lengths["nodes_values"] == 1 and lengths["nodes_modes"] == 1 and lengths["classlabels_int64s"] == 2
    assert ident == model.graph.node[1]
    kept = {a.name: a for a in model.graph.node[0].attribute}
    assert len(kept["nodes_values"].floats) == 3 * TREES  # the model itself keeps its tables
    full = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    loaded = load_model(model)
    assert loaded.graph.node[0] == model.graph.node[0]
    assert {v.name: v.type for v in loaded.graph.value_info} == {v.name: v.type for v in full.graph.value_info}
    assert loaded.graph.output == full.graph.output


def test_graphsurgeon_round_trip_holds_tables_as_arrays_and_writes_them_back():
    model = load_model(forest())
    graph = to_graph(model)
    values = graph.nodes[0].attrs["nodes_values"]
    assert isinstance(values, np.ndarray) and values.dtype == np.float32 and values.size == 3 * TREES
    assert graph.nodes[0].attrs["classlabels_int64s"] == [0, 1]  # short lists stay lists
    assert len(str(graph.nodes[0])) < 20_000  # graphsurgeon formats nodes into its log messages
    out = to_model(graph, model)
    assert out.graph.node[0] == model.graph.node[0]
    assert isinstance(graph.nodes[0].attrs["nodes_values"], np.ndarray)  # the graph keeps its arrays


def test_simplify_of_a_forest_keeps_its_predictions():
    model = load_model(forest())
    edited = apply_edits(model, [R.FoldConstants(), R.FuseBatchNorm(), R.RemoveIdentity()])
    assert [n.op_type for n in edited.graph.node] == ["TreeEnsembleClassifier"]
    x = (np.random.default_rng(0).random((16, 4)) * 0.3 + np.repeat([[0.05], [0.65]], 8, axis=0)).astype(np.float32)
    run = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
           for m in (model, edited)]
    np.testing.assert_array_equal(run[0][0], run[1][0])
    np.testing.assert_array_equal(run[0][1], run[1][1])
    assert np.ptp(run[0][1][:, 0]) > 0  # the stumps vote differently on the two halves of the data
