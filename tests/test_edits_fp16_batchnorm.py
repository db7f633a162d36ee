"""fuse_batchnorm on a model with float16 weights: the fold is computed in float64 and rounded once to float16 (the
best float16 weights there are for Conv+BN), not step by step in float16 as a fold in the weights' own type does
(ONNX Runtime's Initializer arithmetic rounds each step's result to the initializer's type)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from workbench.backends.ort import OrtEngine
from workbench.edits import apply_edits
from workbench.graph import load_model
from workbench.recipe import FuseBatchNorm

F16 = TensorProto.FLOAT16
EPS = 1e-3


def _params(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"w": (rng.standard_normal((16, 8, 3, 3)) * 0.2).astype(np.float16),
            "b": (rng.standard_normal(16) * 0.1).astype(np.float16),
            "gamma": rng.uniform(0.5, 3.0, 16).astype(np.float16),
            "beta": (rng.standard_normal(16) * 0.5).astype(np.float16),
            "mean": (rng.standard_normal(16) * 0.5).astype(np.float16),
            "var": rng.uniform(0.01, 4.0, 16).astype(np.float16)}


def conv_bn(p: dict[str, np.ndarray]) -> onnx.ModelProto:
    """x (fp16) -> Conv(w, b) -> BatchNormalization -> y, every parameter float16."""
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["y"], name="bn",
                              epsilon=EPS)]
    g = helper.make_graph(nodes, "conv_bn", [helper.make_tensor_value_info("x", F16, [1, 8, 10, 10])],
                          [helper.make_tensor_value_info("y", F16, [1, 16, 10, 10])],
                          initializer=[numpy_helper.from_array(v, k) for k, v in p.items()])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return load_model(model)


def test_fp16_batchnorm_fold_rounds_once_from_float64() -> None:
    p = _params(np.random.default_rng(0))
    fused = apply_edits(conv_bn(p), [FuseBatchNorm()])
    assert [n.op_type for n in fused.graph.node] == ["Conv"]
    conv = fused.graph.node[0]
    inits = {i.name: numpy_helper.to_array(i) for i in fused.graph.initializer}
    w, b = inits[conv.input[1]], inits[conv.input[2]]
    assert w.dtype == np.float16 and b.dtype == np.float16
    f64 = {k: v.astype(np.float64) for k, v in p.items()}
    s = f64["gamma"] / np.sqrt(f64["var"] + EPS)
    np.testing.assert_array_equal(w, (f64["w"] * s[:, None, None, None]).astype(np.float16))
    np.testing.assert_array_equal(b, ((f64["b"] - f64["mean"]) * s + f64["beta"]).astype(np.float16))
    # a fold in float16 arithmetic, each step rounded (what folding in the weights' own type gives), differs
    s16 = p["gamma"] / np.sqrt(p["var"] + np.float16(EPS))
    assert not np.array_equal(w, p["w"] * s16[:, None, None, None])


def test_fp16_batchnorm_fold_outputs_stay_within_float16_noise() -> None:
    p = _params(np.random.default_rng(1))
    model = conv_bn(p)
    fused = apply_edits(model, [FuseBatchNorm()])
    x = np.random.default_rng(2).standard_normal((1, 8, 10, 10)).astype(np.float16)
    ref = OrtEngine(model, optimize=False).run({"x": x})["y"].astype(np.float64)
    got = OrtEngine(fused, optimize=False).run({"x": x})["y"].astype(np.float64)
    rel = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    assert 0.0 < rel < 2e-3  # the weights were re-rounded (not bit-identical), by float16's rounding only
