"""workbench inspect MODEL: the model summary."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..workflows.model import ModelSummary, TensorSummary

COMMAND = "inspect"
HELP = "summarise a model: inputs, outputs, ops, parameters, opset, FLOPs"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command's arguments."""
    p.add_argument("model", help="an .onnx file or a sample model name")
    p.add_argument("--layers", action="store_true", help="also list every node (name, op, shapes, params, flops)")
    p.add_argument("--shapes", action="append", metavar="SPEC",
                   help="input shapes for FLOPs of a dynamic model, e.g. input:1x3x224x224 "
                   "(with min,opt,max the opt shape is used)")


def run(args: argparse.Namespace) -> ModelSummary:
    """The summary (with ``--layers`` the layer table)."""
    from ..workflows.model import inspect  # onnx and numpy: not for `workbench inspect --help`

    return inspect(args.model, shapes=args.shapes, layers=args.layers)


def render(r: ModelSummary) -> str:
    """The summary for people (``--json`` prints ``r.to_dict()``)."""

    def io(items: tuple[TensorSummary, ...]) -> str:
        return "\n".join(f"  {t.name}: {t.dtype} {None if t.shape is None else list(t.shape)}" for t in items)

    if r.flops is None and r.flops_per_sample is not None:
        flops = f"{_flops(r.flops_per_sample)} per sample (dynamic batch; --shapes NAME:DIMS for a batch)"
    elif r.flops is None:
        flops = "unknown (dynamic shapes: pass --shapes NAME:DIMS)"
    else:
        at = {k: list(v) for k, v in r.flops_shapes.items()} if r.flops_shapes else None
        flops = _flops(r.flops) + (f" at {at}" if at else "")
    ops = ", ".join(f"{k} x{v}" for k, v in sorted(r.ops.items(), key=lambda kv: -kv[1]))
    text = (f"inputs:\n{io(r.inputs)}\noutputs:\n{io(r.outputs)}\n"
            f"nodes: {r.nodes}  params: {r.params:,}  opset: {r.opset}  flops: {flops}\nops: {ops}")
    if r.layers is not None:
        rows = [(x["name"], x["op"], " ".join(x["output_shapes"]), f"{x['params']:,}",
                 "" if x["flops"] is None else _flops(x["flops"])) for x in r.layers.records()]
        head = ("name", "op", "output shape", "params", "flops")
        widths = [max(len(str(c)) for c in col) for col in zip(head, *rows)]
        text += "\n\n" + "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()
                                    for row in [head, *rows])
    return text


def _flops(n: int) -> str:
    for unit, scale in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} FLOP"
