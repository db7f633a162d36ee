"""The plan search keeps first the layers whose restoring alone improves the target (task) metric: the outputs' rel
L2 ranking puts a large-magnitude branch first that no class decision depends on (blazeface_back_256, ONNX Runtime
placement: 82 of 102 layers kept after 40 plans when the greedy walked the rel L2 ranking)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from workbench.compare.metrics import Metric
from workbench.debug import debug_precision, mixed_models
from workbench.session import Session
from workbench.workflows import quantize as wq


def _two_heads() -> onnx.ModelProto:
    """y = Concat(cls(x), reg(x)): cls's two columns differ by 0.002 (its class is decided by a small difference
    that per-channel INT8 weights do not keep); reg's outputs are ~100x larger, so they carry the rel L2."""
    rng = np.random.default_rng(0)
    wc = rng.standard_normal((16, 1))
    wc = np.concatenate([wc, wc + 0.002 * rng.standard_normal((16, 1))], axis=1).astype(np.float32)
    wr = (100.0 * rng.standard_normal((16, 8))).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "wc"], ["c"], name="cls"),
             helper.make_node("Gemm", ["x", "wr"], ["r"], name="reg"),
             helper.make_node("Concat", ["c", "r"], ["y"], name="cat", axis=1)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
                          [numpy_helper.from_array(wc, "wc"), numpy_helper.from_array(wr, "wr")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _class_agreement() -> Metric:
    def fn(outputs: dict[str, np.ndarray], batch: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> np.ndarray:
        return (outputs["y"][:, :2].argmax(axis=1) == ref["y"][:, :2].argmax(axis=1)).astype(np.float64)

    return Metric("top1", fn, True)


def test_the_layer_that_flips_classes_is_kept_first(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    calib, evals = ({"x": rng.standard_normal((256, 16)).astype(np.float32)} for _ in range(2))
    session = Session(_two_heads(), cache_dir=tmp_path)

    r = wq.quantize(session, calib, wq.QuantizeSettings(target="onnxruntime", float_heads=False,
                                                        target_metric=_class_agreement(), tolerance=0.0),
                    eval_data=evals)
    t = r.target_metric
    assert t is not None and t.before < 1.0 and t.met and t.after == 1.0 and t.kept == ("cls",)
    # the rel L2 ranking puts reg first; the plan search walked cls first and needed no more plans than
    # the baseline, all layers, and cls alone
    quantize = [e for e in session.recipe.edits if e.kind == "quantize"][-1]
    recipe = session.recipe.replace(edits=(*session.recipe.edits[:-1], dataclasses.replace(quantize, exclude=())))
    reference, mixed = mixed_models(session.original, recipe, session.cache_dir)
    d = debug_precision(reference, mixed((), ()), evals, factory=lambda keep: mixed(keep, ()),
                        metric=_class_agreement(), tolerance=0.0)
    assert d.sensitivity.ranking[0] == "reg"
    rows = d.plan.tried.records()
    assert [r["step"] for r in rows] == ["baseline", "all high precision", "greedy"] and rows[2]["keep"] == ["cls"]
    assert d.plan.keep == ("cls",)
