"""The shared generators in tests/models.py: deterministic, valid ONNX, runnable in ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from models import (
    conv_bn_relu_model,
    dynamic_model,
    external_data_model,
    if_model,
    integer_ops_model,
    matmul_mlp_model,
    random_feeds,
    unnamed_nodes_model,
)

GENERATORS = [conv_bn_relu_model, dynamic_model, integer_ops_model, if_model, matmul_mlp_model,
              lambda: unnamed_nodes_model(duplicates=False)]
IDS = ["conv_bn_relu", "dynamic", "integer_ops", "if", "matmul_mlp", "unnamed"]


def _run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


@pytest.mark.parametrize("make", GENERATORS, ids=IDS)
def test_generator_is_valid_deterministic_and_runs(make) -> None:
    model = make()
    onnx.checker.check_model(model, full_check=True)
    assert model.SerializeToString() == make().SerializeToString()
    outs = _run(model, random_feeds(model))
    assert all(np.isfinite(o).all() for o in outs)


def test_conv_bn_relu_matches_numpy() -> None:
    """The residual CNN computes what its weights say (numpy reference of conv/bn/relu/add/pool/gemm)."""
    model = conv_bn_relu_model(batch=1, channels=2, size=5, width=3, classes=4)
    w = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    x = random_feeds(model)["input"]

    def conv(x, k, b):  # 3x3, pad 1, stride 1
        xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
        out = np.zeros((x.shape[0], k.shape[0], x.shape[2], x.shape[3]), np.float64)
        for i in range(x.shape[2]):
            for j in range(x.shape[3]):
                out[:, :, i, j] = np.einsum("nchw,ochw->no", xp[:, :, i:i + 3, j:j + 3], k)
        return out + b[None, :, None, None]

    def block(x, p):
        y = conv(x, w[f"{p}.conv.weight"], w[f"{p}.conv.bias"])
        c = lambda n: w[f"{p}.bn.{n}"][None, :, None, None]  # noqa: E731
        return np.maximum((y - c("mean")) / np.sqrt(c("var") + 1e-5) * c("scale") + c("bias"), 0)

    y1 = block(x, "block1")
    y3 = block(block(y1, "block2"), "block3")
    ref = (y1 + y3).mean(axis=(2, 3)) @ w["fc.weight"].T + w["fc.bias"]
    np.testing.assert_allclose(_run(model, {"input": x})[0], ref, rtol=1e-4, atol=1e-5)


def test_if_model_takes_the_constant_branch() -> None:
    x = np.array([1.0, -2.0, 3.0, -4.0], np.float32)
    np.testing.assert_array_equal(_run(if_model(True), {"input": x})[0], np.maximum(2 * x, 0))
    np.testing.assert_array_equal(_run(if_model(False), {"input": x})[0], np.maximum(-x, 0))


def test_integer_ops_model_uses_ort_integer_ops() -> None:
    ops = {n.op_type for n in integer_ops_model().graph.node}
    assert {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"} <= ops


def test_dynamic_model_accepts_any_height_and_width() -> None:
    model = dynamic_model()
    dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "", "height", "width"]
    out = _run(model, random_feeds(model, dims={"batch": 3, "height": 5, "width": 11}))[0]
    assert out.shape == (3, 2, 5, 11)


def test_unnamed_nodes_model_has_unnamed_and_duplicate_names() -> None:
    names = [n.name for n in unnamed_nodes_model().graph.node]
    assert names == ["", "dup", "dup", "", "last"]
    with pytest.raises(Exception, match="same node name"):
        _run(unnamed_nodes_model(), random_feeds(unnamed_nodes_model()))


def test_external_data_model_keeps_weights_beside_it(tmp_path: Path) -> None:
    path = external_data_model(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["external.onnx", "external.onnx.data"]
    bare = onnx.load(str(path), load_external_data=False)
    assert all(t.data_location == onnx.TensorProto.EXTERNAL for t in bare.graph.initializer)
    onnx.checker.check_model(str(path))
    full = onnx.load(str(path))
    feeds = random_feeds(full)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(sess.run(None, feeds)[0], _run(full, feeds)[0])
    np.testing.assert_array_equal(_run(full, feeds)[0], _run(matmul_mlp_model(seed=4), feeds)[0])
