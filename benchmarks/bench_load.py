"""Load + summary of a ~90 MB ResNet-50-style model: workbench.graph vs Polygraphy's in-process inspection.

    python benchmarks/bench_load.py [--repeat 5] [--model resnet50_like|encoder_like|all]

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
from typing import TYPE_CHECKING

import numpy as np
import onnx
from generators import resnet
from onnx import TensorProto, helper, numpy_helper

if TYPE_CHECKING:
    from workbench.graph import ModelSummary

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def encoder_like(layers: int = 12, dim: int = 384, heads: int = 6, seq: int = 128, seed: int = 0) -> onnx.ModelProto:
    """A BERT-style encoder (about 85 MB, ~40 nodes per layer): MatMul/Add, Reshape/Transpose heads, Softmax,
    LayerNormalization, GELU as Div/Erf/Add/Mul; dynamic batch. Node-heavy compared with the CNN."""
    rng = np.random.default_rng(seed)
    inits: list[TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    def op(kind: str, inputs: list[str], name: str, **attrs) -> str:
        nodes.append(helper.make_node(kind, inputs, [name], name=name, **attrs))
        return name

    def linear(x: str, cin: int, cout: int, p: str) -> str:
        w = const(f"{p}.weight", (rng.standard_normal((cin, cout), dtype=np.float32) / np.float32(np.sqrt(cin))))
        return op("Add", [op("MatMul", [x, w], f"{p}.matmul"), const(f"{p}.bias", np.zeros(cout, np.float32))],
                  f"{p}.add")

    def norm(x: str, p: str) -> str:
        return op("LayerNormalization", [x, const(f"{p}.scale", np.ones(dim, np.float32)),
                                         const(f"{p}.bias", np.zeros(dim, np.float32))], f"{p}.ln", axis=-1)

    head_shape = const("head_shape", np.array([0, 0, heads, dim // heads], np.int64))
    merge_shape = const("merge_shape", np.array([0, 0, dim], np.int64))
    x = "input"
    for i in range(layers):
        p = f"layer{i}"
        h = norm(x, f"{p}.norm1")
        q, k, v = (op("Transpose", [op("Reshape", [linear(h, dim, dim, f"{p}.{n}"), head_shape], f"{p}.{n}.heads")],
                      f"{p}.{n}.t", perm=perm) for n, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]),
                                                                ("v", [0, 2, 1, 3])))
        scores = op("Mul", [op("MatMul", [q, k], f"{p}.qk"), const(f"{p}.scale", np.array(
            (dim // heads) ** -0.5, np.float32))], f"{p}.scaled")
        ctx = op("MatMul", [op("Softmax", [scores], f"{p}.softmax", axis=-1), v], f"{p}.ctx")
        ctx = op("Reshape", [op("Transpose", [ctx], f"{p}.ctx.t", perm=[0, 2, 1, 3]), merge_shape], f"{p}.merge")
        x = op("Add", [x, linear(ctx, dim, dim, f"{p}.proj")], f"{p}.res1")
        h = linear(norm(x, f"{p}.norm2"), dim, 4 * dim, f"{p}.fc1")
        erf = op("Erf", [op("Div", [h, const(f"{p}.sqrt2", np.array(np.sqrt(2), np.float32))], f"{p}.gelu.div")],
                 f"{p}.gelu.erf")
        one, half = const(f"{p}.one", np.array(1, np.float32)), const(f"{p}.half", np.array(0.5, np.float32))
        gelu = op("Mul", [op("Mul", [h, op("Add", [erf, one], f"{p}.gelu.add")], f"{p}.gelu.mul"), half],
                  f"{p}.gelu")
        x = op("Add", [x, linear(gelu, 4 * dim, dim, f"{p}.fc2")], f"{p}.res2")
    nodes.append(helper.make_node("Identity", [norm(x, "final")], ["output"], name="output"))
    graph = helper.make_graph(nodes, "encoder_like",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", seq, dim])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", seq, dim])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="bench_load")
    model.ir_version = 8
    return model


def resnet50_like() -> onnx.ModelProto:
    """ResNet-50 (Conv-BN-Relu bottlenecks [3, 4, 6, 3]), 100 classes, batch 1: about 95 MB."""
    return resnet((3, 4, 6, 3), classes=100, batch_norm=True, bottleneck=True, batch=1)


MODELS = {"resnet50_like": resnet50_like, "encoder_like": encoder_like}


def ours(path: Path) -> ModelSummary:
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
    parser.add_argument("--model", choices=[*MODELS, "all"], default="resnet50_like",
                        help="resnet50_like (the ~90 MB CNN the target is about), encoder_like, or all")
    args = parser.parse_args(argv)
    for name in MODELS if args.model == "all" else [args.model]:
        run_one(name, args.repeat)
    return 0


def run_one(name: str, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.onnx"
        onnx.save_model(MODELS[name](), str(path))
        size_mb = path.stat().st_size / 1e6
        s = ours(path)
        polygraphy(path)  # warm both (imports, page cache)
        flops = f", {s.flops / 1e9:.2f} GFLOP at batch 1" if s.flops else ""
        print(f"model: {path.name} {size_mb:.1f} MB, {s.nodes} nodes, {s.params:,} params{flops}")
        times: dict[str, list[float]] = {"ours": [], "polygraphy": [], "onnx.load": []}
        for _ in range(repeat):
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


if __name__ == "__main__":
    sys.exit(main())
