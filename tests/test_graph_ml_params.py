"""Parameters of ai.onnx.ml models live in node attributes, not initializers (graph.summary / layer_table).

The smallest form of logreg_iris_onnxmltools, whose summary said ``params == 0``: a Scaler (offset, scale) and
a LinearClassifier (coefficients 3 classes x 4 features, intercepts) built with onnx.helper, loaded by the real
ONNX Runtime. Integer attributes (class labels) are not parameters.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper

from workbench.backends.ort import OrtEngine
from workbench.graph import layer_table, summary


def linear_classifier() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    coefficients = rng.standard_normal(12).round(3).tolist()  # 3 classes x 4 features
    nodes = [helper.make_node("Scaler", ["x"], ["scaled"], name="scaler", domain="ai.onnx.ml",
                              offset=[0.1, 0.2, 0.3, 0.4], scale=[2.0, 2.0, 2.0, 2.0]),
             helper.make_node("LinearClassifier", ["scaled"], ["label", "scores"], name="linear", domain="ai.onnx.ml",
                              coefficients=coefficients, intercepts=[0.5, -0.5, 0.0], classlabels_ints=[0, 1, 2],
                              multi_class=0, post_transform="SOFTMAX")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT, [3, 4])],
                          [helper.make_tensor_value_info("label", T.INT64, [3]),
                           helper.make_tensor_value_info("scores", T.FLOAT, [3, 3])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    onnx.checker.check_model(m)
    return m


def test_ml_attribute_coefficients_count_as_parameters() -> None:
    model = linear_classifier()
    out = OrtEngine(model).run({"x": np.ones((3, 4), np.float32)})  # a real, runnable model
    np.testing.assert_allclose(out["scores"].sum(axis=1), 1.0, rtol=1e-5)
    assert summary(model).params == 12 + 3 + 4 + 4  # coefficients, intercepts, Scaler offset and scale
    rows = {r["name"]: r for r in layer_table(model).records()}
    assert rows["linear"]["params"] == 15 and rows["scaler"]["params"] == 8
    assert sum(layer_table(model).column("params")) == summary(model).params
    # the same attribute names on a node of another domain are not counted: only ai.onnx.ml carries weights so
    plain = onnx.ModelProto.FromString(model.SerializeToString())
    plain.graph.node[0].domain = "custom.domain"
    assert summary(plain).params == 15
