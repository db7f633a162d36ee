"""Benchmark: a 50-edit recipe on a generated ~5,000-node model, then undo and redo through it.

Prints time per edit (apply, undo, redo, cold replay), the model size and memory: peak RSS and the RSS
growth per applied edit, which should stay near one model copy (each result is cached by digest; undo
and redo are cursor moves). Run: ``.venv/bin/python benchmarks/bench_edits.py [--blocks 1000]``.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench import recipe as R  # noqa: E402
from workbench.graph import model_bytes  # noqa: E402
from workbench.session import Session  # noqa: E402


def big_model(blocks: int, channels: int = 8, seed: int = 0) -> onnx.ModelProto:
    """``blocks`` x [Conv 1x1, BatchNormalization, Relu, Identity, Add(x, constant*constant)] = 6 nodes each."""
    rng = np.random.default_rng(seed)
    nodes, inits, x = [], [], "input"
    for i in range(blocks):
        p = f"b{i}"
        inits += [
            numpy_helper.from_array((rng.standard_normal((channels, channels, 1, 1)) * 0.3).astype(np.float32), f"{p}.w"),
            numpy_helper.from_array((1 + 0.1 * rng.standard_normal(channels)).astype(np.float32), f"{p}.s"),
            numpy_helper.from_array((0.1 * rng.standard_normal(channels)).astype(np.float32), f"{p}.b"),
            numpy_helper.from_array(np.zeros(channels, np.float32), f"{p}.m"),
            numpy_helper.from_array(np.ones(channels, np.float32), f"{p}.v"),
            numpy_helper.from_array(np.full((1, channels, 1, 1), 0.01, np.float32), f"{p}.c"),
        ]
        nodes += [
            helper.make_node("Conv", [x, f"{p}.w"], [f"{p}.conv"], name=f"{p}.conv"),
            helper.make_node("BatchNormalization", [f"{p}.conv", f"{p}.s", f"{p}.b", f"{p}.m", f"{p}.v"],
                             [f"{p}.bn"], name=f"{p}.bn"),
            helper.make_node("Relu", [f"{p}.bn"], [f"{p}.relu"], name=f"{p}.relu"),
            helper.make_node("Identity", [f"{p}.relu"], [f"{p}.id"], name=f"{p}.id"),
            helper.make_node("Mul", [f"{p}.c", f"{p}.c"], [f"{p}.cc"], name=f"{p}.const_mul"),
            helper.make_node("Add", [f"{p}.id", f"{p}.cc"], [f"{p}.out"], name=f"{p}.add"),
        ]
        x = f"{p}.out"
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, channels, 4, 4])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, channels, 4, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def recipe_edits(blocks: int) -> list[R.Edit]:
    edits: list[R.Edit] = [R.FoldConstants(), R.FuseBatchNorm(), R.RemoveIdentity()]
    step = max(blocks // 12, 4)
    for k in range(12):
        i = k * step
        if i + 3 >= blocks:
            break
        edits += [
            R.BypassNode(node=f"b{i}.relu"),
            R.ReplaceNode(node=f"b{i + 1}.relu", op="LeakyRelu", attributes={"alpha": 0.1}),
            R.InsertNode(tensor=f"b{i + 2}.out", op="Sigmoid", name=f"sig{k}"),
            R.RenameNode(node=f"b{i + 3}.conv", new_name=f"renamed{k}"),
        ]
    edits.append(R.RemoveDeadNodes())
    return edits[:50]


def heavy_model(layers: int = 12, width: int = 1024, seed: int = 0) -> onnx.ModelProto:
    """``layers`` x [MatMul (width x width float32 weights), Relu, Identity]: a model made of its weights."""
    rng = np.random.default_rng(seed)
    nodes, inits, x = [], [], "input"
    for i in range(layers):
        inits.append(numpy_helper.from_array(rng.standard_normal((width, width), dtype=np.float32) * 0.03, f"w{i}"))
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"mm{i}"], name=f"mm{i}"),
                  helper.make_node("Relu", [f"mm{i}"], [f"relu{i}"], name=f"relu{i}"),
                  helper.make_node("Identity", [f"relu{i}"], [f"id{i}"], name=f"id{i}")]
        x = f"id{i}"
    graph = helper.make_graph(nodes, "heavy", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [4, width])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [4, width])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def heavy(layers: int) -> None:
    """Peak memory of single applies on a weight-heavy model, in model copies (ru_maxrss is a high-water mark)."""
    s = Session(heavy_model(layers))
    size_mb = len(model_bytes(s.original)) / 2**20
    peak0 = rss_mb()
    now0 = current_rss_mb()
    for e in (R.BypassNode(node="relu0"), R.RenameNode(node="mm1", new_name="first"), R.RemoveIdentity(),
              R.InsertNode(tensor="mm2", op="Sigmoid")):
        t = time.perf_counter()
        s.apply(e)
        print(f"  {e.kind:<16} {1e3 * (time.perf_counter() - t):6.0f} ms")
    print(f"weight-heavy model ({len(s.original.graph.node)} nodes, {size_mb:.0f} MB): 4 applies raised the RSS "
          f"high-water mark by {rss_mb() - peak0:.0f} MB and kept {current_rss_mb() - now0:.0f} MB "
          f"({(current_rss_mb() - now0) / 4 / size_mb:.2f} model copies retained per edit)")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, default=834, help="6 nodes per block (834 -> ~5,000 nodes)")
    ap.add_argument("--heavy-layers", type=int, default=12, help="4 MB MatMul weights per layer (0: skip)")
    args = ap.parse_args()
    if args.heavy_layers:
        heavy(args.heavy_layers)
    t = time.perf_counter()
    model = big_model(args.blocks)
    s = Session(model)
    size_mb = len(model_bytes(s.original)) / 2**20
    print(f"model: {len(s.original.graph.node)} nodes, {size_mb:.2f} MB serialised; opened in "
          f"{time.perf_counter() - t:.2f} s")
    base = current_rss_mb()
    copies = []
    for _ in range(5):
        c = onnx.ModelProto()
        c.CopyFrom(s.original)
        copies.append(c)
    copy_mb = (current_rss_mb() - base) / 5
    del copies
    print(f"one in-memory copy of the model: {copy_mb:.2f} MB RSS")
    edits = recipe_edits(args.blocks)
    rss0 = current_rss_mb()
    times = []
    for e in edits:
        t = time.perf_counter()
        s.apply(e)
        times.append(time.perf_counter() - t)
    rss1 = current_rss_mb()
    print(f"apply {len(edits)} edits: total {sum(times):.2f} s, per edit median {statistics.median(times) * 1e3:.0f} ms, "
          f"max {max(times) * 1e3:.0f} ms ({edits[times.index(max(times))].kind}); "
          f"now {len(s.model.graph.node)} nodes")
    print(f"RSS growth over {len(edits)} applies: {rss1 - rss0:.1f} MB = {(rss1 - rss0) / len(edits):.2f} MB per "
          f"edit = {(rss1 - rss0) / len(edits) / max(copy_mb, 1e-6):.2f} in-memory model copies per edit "
          "(the cached result of each edit included)")
    t = time.perf_counter()
    while s.can_undo:
        s.undo()
    undo = time.perf_counter() - t
    t = time.perf_counter()
    while s.can_redo:
        s.redo()
    redo = time.perf_counter() - t
    print(f"undo all: {undo * 1e3 / len(edits):.1f} ms per step; redo all: {redo * 1e3 / len(edits):.1f} ms per step "
          "(cursor moves + node diff for the UI)")
    t = time.perf_counter()
    replay = Session(model, recipe=s.recipe)
    cold = time.perf_counter() - t
    assert model_bytes(replay.model) == model_bytes(s.model)
    print(f"cold replay of the recipe in a new session: {cold:.2f} s ({cold * 1e3 / len(edits):.0f} ms per edit), "
          "byte-identical")
    print(f"peak RSS: {rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
