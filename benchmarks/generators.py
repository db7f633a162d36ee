"""Seeded ONNX model generators shared by the benchmarks (plain ``onnx.helper``; no workbench imports).

The benchmarks run as scripts (``.venv/bin/python benchmarks/bench_x.py``), so Python puts this folder on
``sys.path`` and they import it as ``from generators import resnet``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def resnet(depth_blocks: tuple[int, ...] = (2, 2, 2, 2), widths: tuple[int, ...] = (64, 128, 256, 512), *,
           image: int = 224, classes: int = 1000, batch_norm: bool = False, bottleneck: bool = False,
           cifar_stem: bool = False, batch: int | str = "batch", seed: int = 0) -> onnx.ModelProto:
    """A ResNet (torchvision layout) with seeded random weights, opset 17, input ``input``, output ``logits``.

    - ``depth_blocks``/``widths``: blocks and channels per stage; the defaults are ResNet-18, with
      ``depth_blocks=(3, 4, 6, 3), bottleneck=True`` it is ResNet-50.
    - ``bottleneck``: 1x1 -> 3x3 (strided) -> 1x1 blocks with 4x expansion instead of two 3x3 convs.
    - ``batch_norm``: Conv (no bias) + BatchNormalization (random scale, shift, mean, var) for every conv;
      otherwise Conv with a bias (BatchNorm folded away).
    - ``cifar_stem``: a 3x3 stride-1 stem conv without MaxPool (small images) instead of 7x7/2 + MaxPool 3x3/2.
    - ``batch``: the batch dimension of the input and output (a name for a dynamic one, or a fixed size).

    Every stage but the first starts with a stride-2 block; a block gets a 1x1 downsample conv on its shortcut
    when the stride or the channel count changes. Head: GlobalAveragePool, Flatten, Gemm. Conv weights are
    He-initialised. Random numbers are drawn per conv in graph order (weight, then the BatchNorm parameters
    or the bias), then the FC weight, so the same arguments give the same model byte for byte.
    """
    rng = np.random.default_rng(seed)
    inits: list[TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def init(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def node(op: str, inputs: list[str], name: str, out: str | None = None, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [out or name], name=name, **attrs))
        return out or name

    def conv(x: str, cin: int, cout: int, k: int, stride: int, name: str, relu: bool = True) -> str:
        weight = init(f"{name}.weight", rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k)))
        if batch_norm:
            bn = [init(f"{name}.g", 1 + 0.1 * rng.standard_normal(cout)),
                  init(f"{name}.b", 0.1 * rng.standard_normal(cout)),
                  init(f"{name}.m", 0.1 * rng.standard_normal(cout)),
                  init(f"{name}.v", 1 + 0.1 * rng.random(cout))]
            y = node("Conv", [x, weight], f"{name}.conv", kernel_shape=[k, k], strides=[stride, stride],
                     pads=[k // 2] * 4)
            y = node("BatchNormalization", [y, *bn], f"{name}.bn")
        else:
            bias = init(f"{name}.bias", 0.01 * rng.standard_normal(cout))
            y = node("Conv", [x, weight, bias], f"{name}.conv", kernel_shape=[k, k], strides=[stride, stride],
                     pads=[k // 2] * 4)
        return node("Relu", [y], f"{name}.relu") if relu else y

    if cifar_stem:
        x = conv("input", 3, widths[0], 3, 1, "stem")
    else:
        x = conv("input", 3, widths[0], 7, 2, "stem")
        x = node("MaxPool", [x], "stem.pool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = widths[0]
    for li, (blocks, width) in enumerate(zip(depth_blocks, widths)):
        cout = 4 * width if bottleneck else width
        for bi in range(blocks):
            stride = 2 if (bi == 0 and li > 0) else 1
            name = f"layer{li + 1}.{bi}"
            if bottleneck:
                y = conv(x, cin, width, 1, 1, f"{name}.c1")
                y = conv(y, width, width, 3, stride, f"{name}.c2")
                y = conv(y, width, cout, 1, 1, f"{name}.c3", relu=False)
            else:
                y = conv(x, cin, cout, 3, stride, f"{name}.c1")
                y = conv(y, cout, cout, 3, 1, f"{name}.c2", relu=False)
            short = conv(x, cin, cout, 1, stride, f"{name}.down", relu=False) if (stride != 1 or cin != cout) else x
            x = node("Relu", [node("Add", [y, short], f"{name}.add")], f"{name}.out")
            cin = cout
    flat = node("Flatten", [node("GlobalAveragePool", [x], "gap")], "flatten", out="flat")
    fc_w = init("fc.weight", rng.standard_normal((classes, cin)) / np.sqrt(cin))
    node("Gemm", [flat, fc_w, init("fc.bias", np.zeros(classes))], "fc", out="logits", transB=1)
    graph = helper.make_graph(nodes, "resnet",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, image, image])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model
