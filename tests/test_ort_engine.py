"""OrtEngine: optimized ONNX Runtime sessions give the model's own results, float8 Q/DQ included."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest

from workbench.backends.ort import OrtEngine
from workbench.backends.ort_profile import profile_model
from workbench.calibration import calibrate
from workbench.graph import SAMPLES_DIR, load_model
from workbench.precision import activation_tensors, quantizable_nodes, quantize_model


@pytest.fixture(scope="module")
def cnn19() -> onnx.ModelProto:
    return load_model(onnx.version_converter.convert_version(load_model("digits_cnn"), 19))


@pytest.fixture(scope="module")
def scales(cnn19):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return calibrate(cnn19, SAMPLES_DIR / "digits_calib.npz", method="max",
                         tensors=activation_tensors(cnn19, target="onnxruntime"))


def test_fp8_qdq_runs_optimized_with_the_unoptimized_results(cnn19, scales):
    """ONNX Runtime's ReluQuantRewrite drops the Relu before a float8 Q (as if float8 clipped at its zero point);
    a float8 model's session stays at the basic level, so it computes exactly what the graph says."""
    # every node named: FP8 would leave these <= 16-channel convs float (precision.qdq rule 10)
    fp8 = quantize_model(cnn19, scales, dtype="fp8", nodes=quantizable_nodes(cnn19))
    test = dict(np.load(SAMPLES_DIR / "digits_test.npz"))
    engine = OrtEngine(fp8)
    assert engine.session.get_session_options().graph_optimization_level.name == "ORT_ENABLE_BASIC"
    fast = engine.run({"input": test["input"]})["logits"]
    plain = OrtEngine(fp8, optimize=False).run({"input": test["input"]})["logits"]
    np.testing.assert_array_equal(fast, plain)
    assert (fast.argmax(1) == test["label"]).mean() >= 0.99
    # the profiler opens its own session at the engine's level, so every Relu of the graph still runs
    table = profile_model(fp8, {"input": test["input"][:32]}, iterations=2)
    assert sum(1 for r in table.records() if r["type"] == "Relu") == sum(n.op_type == "Relu" for n in fp8.graph.node)


def test_int8_models_keep_every_onnx_runtime_rewrite(cnn19, scales):
    def level(model):
        return OrtEngine(model).session.get_session_options().graph_optimization_level.name

    assert level(quantize_model(cnn19, scales)) == "ORT_ENABLE_ALL"
    with pytest.warns(UserWarning, match="fold them first"):  # BatchNorm left in: placed, but ORT cannot fuse
        ort_placed = quantize_model(cnn19, scales, target="onnxruntime")
    assert level(ort_placed) == "ORT_ENABLE_ALL"
    assert level(cnn19) == "ORT_ENABLE_ALL"
