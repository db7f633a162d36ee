"""Property tests (hypothesis): FLOPs and parameter counts by formula over generator parameters, and the
stable-naming rules over arbitrary name lists."""

from __future__ import annotations

import onnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from models import conv_bn_relu_model, matmul_mlp_model
from onnx import TensorProto, helper, numpy_helper

from workbench.graph import load_model, name_nodes, summary

small = st.integers(min_value=1, max_value=6)
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(batch=small, channels=small, size=st.integers(1, 9), width=small, classes=small)
def test_conv_bn_relu_flops_and_params(batch: int, channels: int, size: int, width: int, classes: int) -> None:
    model = conv_bn_relu_model(batch=batch, channels=channels, size=size, width=width, classes=classes)
    got = summary(load_model(model))
    assert got.flops == 2 * batch * size * size * width * 9 * (channels + 2 * width) + 2 * batch * width * classes
    assert got.params == sum(numpy_helper.to_array(t).size for t in model.graph.initializer)
    assert got.params == width * channels * 9 + 2 * width * width * 9 + 3 * 5 * width + classes * width + classes


@SETTINGS
@given(batch=small, features=small, hidden=small, classes=small)
def test_mlp_flops(batch: int, features: int, hidden: int, classes: int) -> None:
    got = summary(load_model(matmul_mlp_model(batch=batch, features=features, hidden=hidden, classes=classes)))
    assert got.flops == 2 * batch * (features * hidden + hidden * hidden + hidden * classes)


def _chain(names: list[str]) -> onnx.ModelProto:
    nodes, x = [], "input"
    for i, name in enumerate(names):
        nodes.append(helper.make_node("Relu", [x], [f"t{i}"], name=name))
        x = f"t{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@SETTINGS
@given(st.lists(st.sampled_from(["", "a", "b", "Relu_0", "Relu_1", "a_1", "Relu_0_1"]), min_size=1, max_size=12))
def test_naming_rules(names: list[str]) -> None:
    model = _chain(names)
    name_nodes(model)
    out = [n.name for n in model.graph.node]
    assert all(out) and len(set(out)) == len(out)  # every node named, no two alike
    for i, (before, after) in enumerate(zip(names, out)):
        if before and before not in names[:i]:
            assert after == before  # the first holder of a name keeps it
        if not before:
            assert after.startswith(f"Relu_{i}")  # unnamed: op and position
    again = onnx.ModelProto()
    again.CopyFrom(model)
    assert name_nodes(again) == 0 and [n.name for n in again.graph.node] == out  # idempotent
    assert [n.name for n in load_model(_chain(names)).graph.node] == out  # load_model applies the same rules
