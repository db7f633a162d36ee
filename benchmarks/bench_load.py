"""Load + summary of a ~90 MB ResNet-50-style model: workbench.graph vs Polygraphy's in-process inspection.

    python benchmarks/bench_load.py [--repeat 5]

Generates the model (seeded random weights; Conv-BN-Relu bottlenecks [3, 4, 6, 3], 100-class Gemm head,
about 95 MB) in a temp dir, then times, on the same file in the same process, alternating:

- ours:       ``workbench.graph.load_model(path)`` (parse, checker, stable names, shape inference) + ``summary``
- polygraphy: ``polygraphy.backend.onnx.onnx_from_path(path)`` + ``polygraphy.backend.onnx.util.str_from_onnx``
  (what ``polygraphy inspect model`` does in-process; no checker, no shape inference unless asked)
- for reference, ``onnx.load(path)`` alone (the floor for anything that returns a full ModelProto the usual way)

Why ours can be faster although it does more: the file is parsed straight from an mmap of the page cache
(one copy of the weights instead of read() + parse), and the checker and shape inference run on a
weightless skeleton of the graph (large initializers become typed inputs), so their cost does not grow
with the weights.

and prints the median of each and the ratio ours/polygraphy (target <= 0.5).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def resnet50_like(classes: int = 100, seed: int = 0) -> onnx.ModelProto:
    """A ResNet-50-shaped graph (Conv/BatchNormalization/Relu/Add/MaxPool/GlobalAveragePool/Flatten/Gemm)."""
    rng = np.random.default_rng(seed)
    inits: list[TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    counter = [0]

    def conv_bn(x: str, cin: int, cout: int, k: int, stride: int, relu: bool) -> str:
        counter[0] += 1
        p = f"layer{counter[0]}"
        w = (rng.standard_normal((cout, cin, k, k), dtype=np.float32) * np.float32(np.sqrt(2 / (cin * k * k))))
        inits.append(numpy_helper.from_array(w, f"{p}.weight"))
        for name, val in (("scale", np.ones(cout)), ("bias", np.zeros(cout)), ("mean", np.zeros(cout)),
                          ("var", np.ones(cout))):
            inits.append(numpy_helper.from_array(val.astype(np.float32), f"{p}.bn.{name}"))
        nodes.append(helper.make_node("Conv", [x, f"{p}.weight"], [f"{p}.conv"], name=f"{p}.conv",
                                      kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4))
        nodes.append(helper.make_node("BatchNormalization", [f"{p}.conv"] + [f"{p}.bn.{n}" for n in
                                      ("scale", "bias", "mean", "var")], [f"{p}.bn"], name=f"{p}.bn"))
        if not relu:
            return f"{p}.bn"
        nodes.append(helper.make_node("Relu", [f"{p}.bn"], [f"{p}.relu"], name=f"{p}.relu"))
        return f"{p}.relu"

    x = conv_bn("input", 3, 64, 7, 2, True)
    nodes.append(helper.make_node("MaxPool", [x], ["pool0"], name="pool0", kernel_shape=[3, 3], strides=[2, 2],
                                  pads=[1, 1, 1, 1]))
    x, cin = "pool0", 64
    for stage, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512))):
        for b in range(blocks):
            stride = 2 if b == 0 and stage > 0 else 1
            y = conv_bn(x, cin, width, 1, 1, True)
            y = conv_bn(y, width, width, 3, stride, True)
            y = conv_bn(y, width, width * 4, 1, 1, False)
            short = conv_bn(x, cin, width * 4, 1, stride, False) if b == 0 else x
            out = f"stage{stage}.block{b}"
            nodes.append(helper.make_node("Add", [y, short], [out + ".add"], name=out + ".add"))
            nodes.append(helper.make_node("Relu", [out + ".add"], [out + ".relu"], name=out + ".relu"))
            x, cin = out + ".relu", width * 4
    fc = (rng.standard_normal((classes, cin), dtype=np.float32) * np.float32(0.01))
    inits += [numpy_helper.from_array(fc, "fc.weight"), numpy_helper.from_array(np.zeros(classes, np.float32), "fc.bias")]
    nodes += [
        helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(nodes, "resnet50_like",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 224, 224])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="bench_load")
    model.ir_version = 8
    return model


def ours(path: Path) -> dict:
    from workbench.graph import load_model, summary

    return summary(load_model(path))


def polygraphy(path: Path) -> str:
    from polygraphy.backend.onnx import onnx_from_path
    from polygraphy.backend.onnx.util import str_from_onnx

    return str_from_onnx(onnx_from_path(str(path)))


def onnx_load(path: Path) -> onnx.ModelProto:
    return onnx.load(str(path))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resnet50_like.onnx"
        onnx.save_model(resnet50_like(), str(path))
        size_mb = path.stat().st_size / 1e6
        s = ours(path)
        polygraphy(path)  # warm both (imports, page cache)
        print(f"model: {path.name} {size_mb:.1f} MB, {s['nodes']} nodes, {s['params']:,} params, "
              f"{s['flops'] / 1e9:.2f} GFLOP at batch 1" if s["flops"] else f"model: {size_mb:.1f} MB")
        times: dict[str, list[float]] = {"ours": [], "polygraphy": [], "onnx.load": []}
        for _ in range(args.repeat):
            for name, fn in (("ours", ours), ("polygraphy", polygraphy), ("onnx.load", onnx_load)):
                t0 = time.perf_counter()
                fn(path)
                times[name].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"workbench load_model+summary: median {med['ours'] * 1e3:.1f} ms  (runs: "
              + ", ".join(f"{t * 1e3:.0f}" for t in times["ours"]) + ")")
        print(f"polygraphy onnx_from_path+str_from_onnx: median {med['polygraphy'] * 1e3:.1f} ms  (runs: "
              + ", ".join(f"{t * 1e3:.0f}" for t in times["polygraphy"]) + ")")
        print(f"(reference) onnx.load alone: median {med['onnx.load'] * 1e3:.1f} ms, "
              f"min {min(times['onnx.load']) * 1e3:.1f} ms")
        print(f"min ours {min(times['ours']) * 1e3:.1f} ms, min polygraphy {min(times['polygraphy']) * 1e3:.1f} ms")
        print(f"ratio ours/polygraphy: {med['ours'] / med['polygraphy']:.2f}x (target <= 0.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
