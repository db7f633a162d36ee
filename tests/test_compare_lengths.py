"""Outputs whose length depends on their values (a decoder stopping at its end token, a detector's box count) may
differ between reference and candidate: compare and the debugger's metric pad them, they do not crash (slanet_1m,
a table-structure decoder, whose INT8 candidate decoded 2004 steps where FP32 decoded 1632)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from workbench.compare import compare
from workbench.compare.metrics import align, output_error, run_metric


def _compress(threshold: float) -> onnx.ModelProto:
    """y = the columns of x whose maximum over the samples exceeds ``threshold``: [N, count(values)]."""
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["m"], axes=[0], keepdims=0),
        helper.make_node("Greater", ["m", "t"], ["mask"]),
        helper.make_node("Compress", ["x", "mask"], ["y"], axis=1),
    ]
    g = helper.make_graph(nodes, "compress", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "K"])],
                          [helper.make_tensor("t", TensorProto.FLOAT, [], [threshold])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def test_align_pads_both_to_the_longer_length() -> None:
    r, c, padded = align(np.array([[1.0, 2.0]]), np.array([[1.0, 2.0, 3.0]]))
    assert padded and r.tolist() == [[1.0, 2.0, 0.0]] and c.tolist() == [[1.0, 2.0, 3.0]]
    err = run_metric(output_error(), {"y": np.array([[1.0, 2.0, 3.0]])}, {}, {"y": np.array([[1.0, 2.0]])}, "test")
    assert np.allclose(err, [3.0 / np.sqrt(5.0)])  # the extra element counts in full


def test_compare_reports_a_data_dependent_length_that_differs(tmp_path) -> None:
    ref, cand = tmp_path / "ref.onnx", tmp_path / "cand.onnx"
    onnx.save(_compress(0.9), ref)
    onnx.save(_compress(0.5), cand)
    x = np.random.default_rng(0).random((8, 8)).astype(np.float32)
    x[:, :3] *= 0.6  # three columns below 0.9 but some above 0.5: the candidate keeps more columns
    r = ort.InferenceSession(str(ref)).run(None, {"x": x})[0]
    c = ort.InferenceSession(str(cand)).run(None, {"x": x})[0]
    assert r.shape[1] < c.shape[1]  # the case this test is about
    report = compare(ref, cand, {"x": x}, batch_size=8, workers=1).to_dict()  # one batch: ReduceMax spans it
    y = report["outputs"]["y"]
    rp = np.pad(r, [(0, 0), (0, c.shape[1] - r.shape[1])]).astype(np.float64)
    expected = np.linalg.norm(c - rp) / np.linalg.norm(rp)
    assert y["padded"] == 1 and np.isclose(y["rel_l2"], expected, rtol=1e-6)
    assert any("data-dependent length" in w for w in report["warnings"])
