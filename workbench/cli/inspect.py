"""workbench inspect MODEL: the model summary."""

from __future__ import annotations

import argparse
from typing import Any

from ..graph import load_model, summary

COMMAND = "inspect"
HELP = "summarise a model: inputs, outputs, ops, parameters, opset, FLOPs"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="an .onnx file or a sample model name")
    p.add_argument("--layers", action="store_true", help="also list every node (name, op, shapes, params, flops)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    model = load_model(args.model)
    result = summary(model)
    if args.layers:
        from ..graph import layer_table

        result["layers"] = layer_table(model).records()
    return result


def render(r: dict[str, Any]) -> str:
    def io(items: list[dict[str, Any]]) -> str:
        return "\n".join(f"  {t['name']}: {t['dtype']} {t['shape']}" for t in items)

    flops = "unknown" if r["flops"] is None else f"{r['flops'] / 1e9:.3f} GFLOP"
    ops = ", ".join(f"{k} x{v}" for k, v in sorted(r["ops"].items(), key=lambda kv: -kv[1]))
    return (f"inputs:\n{io(r['inputs'])}\noutputs:\n{io(r['outputs'])}\n"
            f"nodes: {r['nodes']}  params: {r['params']:,}  opset: {r['opset']}  flops: {flops}\nops: {ops}")
