"""Start-up of the command line, in fresh processes: ``workbench`` against ``polygraphy`` (both from this venv).

    python benchmarks/bench_cli.py [--repeat 7] [--model mlp|resnet50|all]

Times, best of ``--repeat`` wall-clock runs (the commands alternate, so load on the machine hits both alike):

- ``workbench --help``                    vs ``polygraphy --help``
- ``workbench inspect MODEL``             vs ``polygraphy inspect model MODEL``

on a ~100 MB model written to a temp dir (seeded random weights, plain ``onnx.helper``): ``mlp``, six
2048x2048 Gemm layers (few nodes, the weights dominate), or ``resnet50`` (the generators' ResNet-50, 120+
nodes). ``python -c pass`` is printed as the floor every command pays. Prints each time and the ratio
workbench/polygraphy (target <= 1.0x for both). Output of the commands goes to /dev/null; a command that
fails stops the benchmark with its stderr.

What each side does: ``polygraphy inspect model`` imports onnx (and through it numpy and ml_dtypes),
``onnx.load``s the file and prints the graph; ``workbench inspect`` imports the same libraries and its
``inspect`` command only, parses the file from an mmap, runs the checker and shape inference on a weightless
skeleton (the weights left out) and prints the summary with FLOPs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from generators import resnet
from onnx import TensorProto, helper, numpy_helper

BIN = Path(sys.executable).parent


def mlp(layers: int = 6, dim: int = 2048, seed: int = 0) -> onnx.ModelProto:
    """``layers`` Gemm layers of ``dim`` x ``dim`` fp32 weights with biases (6 x 2048: 100.7 MB), dynamic batch."""
    rng = np.random.default_rng(seed)
    nodes, inits, x = [], [], "input"
    for i in range(layers):
        inits += [numpy_helper.from_array(rng.standard_normal((dim, dim), dtype=np.float32), f"fc{i}.weight"),
                  numpy_helper.from_array(rng.standard_normal(dim, dtype=np.float32), f"fc{i}.bias")]
        y = "output" if i == layers - 1 else f"fc{i}"
        nodes.append(helper.make_node("Gemm", [x, f"fc{i}.weight", f"fc{i}.bias"], [y], name=f"fc{i}", transB=1))
        x = y
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", dim])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", dim])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


MODELS: dict[str, Callable[[], onnx.ModelProto]] = {
    "mlp": mlp,
    "resnet50": lambda: resnet((3, 4, 6, 3), bottleneck=True),
}


def best_of(commands: dict[str, list[str]], repeat: int) -> dict[str, float]:
    """Best wall time of each command over ``repeat`` rounds (one warm-up round first, not counted)."""
    best = dict.fromkeys(commands, float("inf"))
    for round_ in range(repeat + 1):
        for name, cmd in commands.items():
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            elapsed = time.perf_counter() - t0
            if proc.returncode != 0:
                raise SystemExit(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
            if round_:
                best[name] = min(best[name], elapsed)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--model", choices=[*MODELS, "all"], default="all")
    args = parser.parse_args(argv)
    workbench, polygraphy = str(BIN / "workbench"), str(BIN / "polygraphy")
    help_times = best_of({"python -c pass": [sys.executable, "-c", "pass"],
                          "workbench --help": [workbench, "--help"],
                          "polygraphy --help": [polygraphy, "--help"]}, args.repeat)
    print(f"best of {args.repeat} runs, wall clock, fresh processes")
    for name, t in help_times.items():
        print(f"  {name:<40} {t:7.3f} s")
    ratios = {"--help": help_times["workbench --help"] / help_times["polygraphy --help"]}
    print(f"  ratio workbench/polygraphy --help: {ratios['--help']:.2f}x (target <= 1.0x)")
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS if args.model == "all" else [args.model]:
            path = Path(tmp) / f"{name}.onnx"
            model = MODELS[name]()
            onnx.save_model(model, str(path))
            print(f"model {name}: {path.stat().st_size / 1e6:.1f} MB, {len(model.graph.node)} nodes")
            del model
            times = best_of({"workbench inspect": [workbench, "inspect", str(path)],
                             "polygraphy inspect model": [polygraphy, "inspect", "model", str(path)]}, args.repeat)
            for cmd, t in times.items():
                print(f"  {cmd:<40} {t:7.3f} s")
            ratios[name] = times["workbench inspect"] / times["polygraphy inspect model"]
            print(f"  ratio workbench/polygraphy inspect ({name}): {ratios[name]:.2f}x (target <= 1.0x)")
    print("ratios: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items())
          + ("  (all within target)" if all(v <= 1.0 for v in ratios.values()) else "  (ABOVE TARGET)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
