"""Edits on the bundled sample models, checked against ONNX Runtime on the real test split."""

from __future__ import annotations

import numpy as np

from workbench import recipe as R
from workbench.backends.ort import OrtEngine
from workbench.graph import SAMPLES_DIR, load_model
from workbench.session import Session


def _data(npz: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    d = np.load(SAMPLES_DIR / npz)
    return {k: d[k] for k in d.files if k != "label"}, d["label"]


def test_digits_cnn_cleanup_recipe_keeps_outputs_and_accuracy() -> None:
    s = Session("digits_cnn")
    for e in (R.FoldConstants(), R.FuseBatchNorm(), R.RemoveIdentity(), R.RemoveDeadNodes()):
        s.apply(e)
    ops = {n.op_type for n in s.model.graph.node}
    assert "BatchNormalization" not in ops
    assert sum(n.op_type == "BatchNormalization" for n in s.original.graph.node) == 4
    assert len(s.model.graph.node) == len(s.original.graph.node) - 4
    feeds, labels = _data("digits_test.npz")
    (name,) = [o.name for o in s.model.graph.output]
    ref = OrtEngine(s.original).run(feeds)[name]
    got = OrtEngine(s.model).run(feeds)[name]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    assert (got.argmax(1) == labels).mean() == (ref.argmax(1) == labels).mean() > 0.9


def test_digits_transformer_fold_constants_is_exact() -> None:
    model = load_model("digits_transformer")
    s = Session(model)
    s.apply(R.FoldConstants())
    assert len(s.model.graph.node) < len(model.graph.node)
    assert "Constant" not in {n.op_type for n in s.model.graph.node}
    feeds, labels = _data("digits_test_seq.npz")
    (name,) = [o.name for o in model.graph.output]
    ref = OrtEngine(model, optimize=False).run(feeds)[name]
    got = OrtEngine(s.model, optimize=False).run(feeds)[name]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_fcn_dynamic_set_shapes_static_then_dynamic_again() -> None:
    s = Session("fcn_dynamic")
    (inp,) = s.summary().inputs
    assert inp.shape is not None and isinstance(inp.shape[1], int)
    static = (1, inp.shape[1], 32, 48)
    s.apply(R.SetShapes(shapes={inp.name: static}))
    assert s.summary().inputs[0].shape == static
    out_shape = s.summary().outputs[0].shape
    assert out_shape is not None and all(isinstance(d, int) for d in out_shape) and out_shape[0] == 1
    x = np.random.default_rng(0).standard_normal(static).astype(np.float32)
    got = OrtEngine(s.model).run({inp.name: x})
    ref = OrtEngine(s.original).run({inp.name: x})
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k])
        assert got[k].shape == out_shape
    s.undo()
    assert s.summary().inputs[0] == inp
