"""Small, deterministic ONNX models for everyone's tests (onnx.helper + seeded numpy).

Every generator returns a model that passes ``onnx.checker.check_model`` and runs in ONNX Runtime
(tests/test_models.py checks both); the one exception is ``unnamed_nodes_model()`` with its default
duplicate node names, which ORT refuses until ``workbench.graph.load_model`` has renamed them. Weights come from ``numpy.random.default_rng(seed)`` so two calls
give byte-identical models. Import as ``from tests.models import conv_bn_relu_model`` (or ``from models
import ...`` inside tests/).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "OPSET",
    "conv_bn_relu_model",
    "dynamic_model",
    "integer_ops_model",
    "if_model",
    "unnamed_nodes_model",
    "external_data_model",
    "matmul_mlp_model",
    "random_feeds",
]

OPSET = 17


def _init(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(array), name)


def _model(graph: onnx.GraphProto, opset: int = OPSET, *, extra_opsets: tuple = ()) -> onnx.ModelProto:
    imports = [helper.make_opsetid("", opset), *extra_opsets]
    model = helper.make_model(graph, opset_imports=imports, producer_name="tests.models")
    model.ir_version = 8
    return model


def _conv_bn_relu(rng: np.random.Generator, prefix: str, x: str, cin: int, cout: int,
                  inits: list[TensorProto], *, stride: int = 1) -> tuple[list[onnx.NodeProto], str]:
    w = rng.standard_normal((cout, cin, 3, 3)).astype(np.float32) * np.float32(np.sqrt(2.0 / (cin * 9)))
    b = rng.standard_normal(cout).astype(np.float32) * np.float32(0.1)
    inits += [
        _init(f"{prefix}.conv.weight", w),
        _init(f"{prefix}.conv.bias", b),
        _init(f"{prefix}.bn.scale", (1.0 + 0.1 * rng.standard_normal(cout)).astype(np.float32)),
        _init(f"{prefix}.bn.bias", (0.1 * rng.standard_normal(cout)).astype(np.float32)),
        _init(f"{prefix}.bn.mean", (0.1 * rng.standard_normal(cout)).astype(np.float32)),
        _init(f"{prefix}.bn.var", (1.0 + 0.1 * rng.random(cout)).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", [x, f"{prefix}.conv.weight", f"{prefix}.conv.bias"], [f"{prefix}.conv_out"],
                         name=f"{prefix}.conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[stride, stride]),
        helper.make_node("BatchNormalization",
                         [f"{prefix}.conv_out", f"{prefix}.bn.scale", f"{prefix}.bn.bias", f"{prefix}.bn.mean",
                          f"{prefix}.bn.var"], [f"{prefix}.bn_out"], name=f"{prefix}.bn", epsilon=1e-5),
        helper.make_node("Relu", [f"{prefix}.bn_out"], [f"{prefix}.relu_out"], name=f"{prefix}.relu"),
    ]
    return nodes, f"{prefix}.relu_out"


def conv_bn_relu_model(batch: int = 2, channels: int = 3, size: int = 16, width: int = 8, classes: int = 10,
                       seed: int = 0) -> onnx.ModelProto:
    """Conv-BN-Relu blocks, a residual Add, GlobalAveragePool, Flatten and Gemm; input `input`, output `logits`."""
    rng = np.random.default_rng(seed)
    inits: list[TensorProto] = []
    n1, y1 = _conv_bn_relu(rng, "block1", "input", channels, width, inits)
    n2, y2 = _conv_bn_relu(rng, "block2", y1, width, width, inits)
    n3, y3 = _conv_bn_relu(rng, "block3", y2, width, width, inits)
    gemm_w = (rng.standard_normal((classes, width)) / np.sqrt(width)).astype(np.float32)
    inits += [_init("fc.weight", gemm_w), _init("fc.bias", np.zeros(classes, np.float32))]
    nodes = n1 + n2 + n3 + [
        helper.make_node("Add", [y1, y3], ["residual_out"], name="residual.add"),
        helper.make_node("GlobalAveragePool", ["residual_out"], ["pool_out"], name="pool"),
        helper.make_node("Flatten", ["pool_out"], ["flat_out"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat_out", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "conv_bn_relu",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, channels, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])],
        inits,
    )
    return _model(graph)


def dynamic_model(channels: int = 3, width: int = 4, seed: int = 1) -> onnx.ModelProto:
    """Fully convolutional: input `input` [batch, C, height, width] with symbolic dims, output `output`."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((width, channels, 3, 3)) * 0.3).astype(np.float32)
    w2 = (rng.standard_normal((2, width, 1, 1)) * 0.3).astype(np.float32)
    inits = [_init("conv1.weight", w1), _init("conv1.bias", np.zeros(width, np.float32)),
             _init("conv2.weight", w2), _init("conv2.bias", np.zeros(2, np.float32))]
    nodes = [
        helper.make_node("Conv", ["input", "conv1.weight", "conv1.bias"], ["c1"], name="conv1",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "conv2.weight", "conv2.bias"], ["c2"], name="conv2", kernel_shape=[1, 1]),
        helper.make_node("Sigmoid", ["c2"], ["output"], name="sigmoid"),
    ]
    graph = helper.make_graph(
        nodes, "dynamic",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", channels, "height", "width"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 2, "height", "width"])],
        inits,
    )
    return _model(graph)


def integer_ops_model(batch: int = 2, channels: int = 3, size: int = 8, width: int = 4, features: int = 5,
                      seed: int = 2) -> onnx.ModelProto:
    """ORT dynamic-quantisation style: DynamicQuantizeLinear + ConvInteger + MatMulInteger; `input` -> `output`."""
    rng = np.random.default_rng(seed)
    w_conv = rng.integers(0, 256, (width, channels, 3, 3), dtype=np.uint8)
    w_mm = rng.integers(0, 256, (width * size * size, features), dtype=np.uint8)
    inits = [
        _init("conv.weight_quantized", w_conv),
        _init("conv.weight_zero_point", np.array(128, np.uint8)),
        _init("conv.weight_scale", np.array(0.01, np.float32)),
        _init("fc.weight_quantized", w_mm),
        _init("fc.weight_zero_point", np.array(128, np.uint8)),
        _init("fc.weight_scale", np.array(0.02, np.float32)),
        _init("flat_shape", np.array([0, -1], np.int64)),
    ]
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["input"], ["input_q", "input_scale", "input_zp"],
                         name="input_QuantizeLinear"),
        helper.make_node("ConvInteger", ["input_q", "conv.weight_quantized", "input_zp", "conv.weight_zero_point"],
                         ["conv_int32"], name="conv_quant", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Cast", ["conv_int32"], ["conv_float"], name="conv_cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["input_scale", "conv.weight_scale"], ["conv_scale"], name="conv_scale_mul"),
        helper.make_node("Mul", ["conv_float", "conv_scale"], ["conv_out"], name="conv_output_mul"),
        helper.make_node("Relu", ["conv_out"], ["relu_out"], name="relu"),
        helper.make_node("Reshape", ["relu_out", "flat_shape"], ["flat"], name="flatten"),
        helper.make_node("DynamicQuantizeLinear", ["flat"], ["flat_q", "flat_scale", "flat_zp"],
                         name="flat_QuantizeLinear"),
        helper.make_node("MatMulInteger", ["flat_q", "fc.weight_quantized", "flat_zp", "fc.weight_zero_point"],
                         ["fc_int32"], name="fc_quant"),
        helper.make_node("Cast", ["fc_int32"], ["fc_float"], name="fc_cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["flat_scale", "fc.weight_scale"], ["fc_scale"], name="fc_scale_mul"),
        helper.make_node("Mul", ["fc_float", "fc_scale"], ["output"], name="fc_output_mul"),
    ]
    graph = helper.make_graph(
        nodes, "integer_ops",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, channels, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, features])],
        inits,
    )
    return _model(graph)


def if_model(condition: bool = True, size: int = 4) -> onnx.ModelProto:
    """An If whose condition is a Constant: `then` doubles `input`, `else` negates it; output `output`."""
    then_graph = helper.make_graph(
        [helper.make_node("Add", ["input", "input"], ["then_out"], name="then_add")], "then_branch", [],
        [helper.make_tensor_value_info("then_out", TensorProto.FLOAT, [size])],
    )
    else_graph = helper.make_graph(
        [helper.make_node("Neg", ["input"], ["else_out"], name="else_neg")], "else_branch", [],
        [helper.make_tensor_value_info("else_out", TensorProto.FLOAT, [size])],
    )
    nodes = [
        helper.make_node("Constant", [], ["cond"], name="cond_const",
                         value=helper.make_tensor("cond_value", TensorProto.BOOL, [], [condition])),
        helper.make_node("If", ["cond"], ["if_out"], name="if", then_branch=then_graph, else_branch=else_graph),
        helper.make_node("Relu", ["if_out"], ["output"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes, "if_const",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [size])],
    )
    return _model(graph)


def unnamed_nodes_model(size: int = 4, *, duplicates: bool = True) -> onnx.ModelProto:
    """Relu, Neg, Abs, Sigmoid, Identity: two unnamed, `dup` twice (ORT refuses that until renamed), `last`."""
    second = "dup" if duplicates else "dup2"
    nodes = [
        helper.make_node("Relu", ["input"], ["a"]),  # unnamed
        helper.make_node("Neg", ["a"], ["b"], name="dup"),
        helper.make_node("Abs", ["b"], ["c"], name=second),
        helper.make_node("Sigmoid", ["c"], ["d"]),  # unnamed
        helper.make_node("Identity", ["d"], ["output"], name="last"),
    ]
    graph = helper.make_graph(
        nodes, "unnamed",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, size])],
    )
    return _model(graph)


def matmul_mlp_model(batch: int = 4, features: int = 16, hidden: int = 32, classes: int = 10,
                     seed: int = 3) -> onnx.ModelProto:
    """MatMul+Add+Relu, MatMul+Add+Relu, MatMul+Add; input `input` [batch, features], output `logits`."""
    rng = np.random.default_rng(seed)
    dims = [features, hidden, hidden, classes]
    inits, nodes, x = [], [], "input"
    for i in range(3):
        w = (rng.standard_normal((dims[i], dims[i + 1])) / np.sqrt(dims[i])).astype(np.float32)
        b = (0.1 * rng.standard_normal(dims[i + 1])).astype(np.float32)
        inits += [_init(f"fc{i}.weight", w), _init(f"fc{i}.bias", b)]
        last = i == 2
        nodes += [
            helper.make_node("MatMul", [x, f"fc{i}.weight"], [f"fc{i}.mm"], name=f"fc{i}.matmul"),
            helper.make_node("Add", [f"fc{i}.mm", f"fc{i}.bias"], ["logits" if last else f"fc{i}.add"],
                             name=f"fc{i}.add"),
        ]
        if not last:
            nodes.append(helper.make_node("Relu", [f"fc{i}.add"], [f"fc{i}.relu"], name=f"fc{i}.relu"))
            x = f"fc{i}.relu"
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])],
        inits,
    )
    return _model(graph)


def external_data_model(tmp_dir: str | Path, *, name: str = "external.onnx", seed: int = 4) -> Path:
    """Save matmul_mlp_model with all weights in `<name>.data` beside it; return the .onnx path."""
    tmp_dir = Path(tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    model = matmul_mlp_model(seed=seed)
    path = tmp_dir / name
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=f"{name}.data", size_threshold=0)
    return path


def random_feeds(model: onnx.ModelProto, seed: int = 0, dims: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Seeded float32 feeds for every graph input; symbolic dims take ``dims[name]`` or 8."""
    rng = np.random.default_rng(seed)
    inits = {i.name for i in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        t = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else (dims or {}).get(d.dim_param, 8) for d in t.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(t.elem_type)
        feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
    return feeds
