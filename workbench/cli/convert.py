"""workbench convert MODEL --precision fp16|bf16 [--keep NODE ...] -o OUT: mixed precision as Cast nodes."""

from __future__ import annotations

import argparse
from typing import Any

from ..precision import plan_conversion, precision_guards
from ..recipe import ConvertPrecision
from ..session import Session

COMMAND = "convert"
HELP = "run a model in fp16/bf16 through Cast nodes (overflow-prone ops stay fp32 unless forced)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="an .onnx file or a sample model name")
    p.add_argument("--precision", choices=("fp16", "bf16"), default="fp16")
    p.add_argument("--keep", nargs="+", default=[], metavar="NODE",
                   help="nodes kept fp32: node names, op types (op:Softmax) or globs")
    p.add_argument("--nodes", nargs="+", default=[], metavar="NODE",
                   help="convert only these (default: every eligible node); a guarded node named exactly is converted")
    p.add_argument("--no-guard", action="store_true", help="convert overflow-prone ops too")
    p.add_argument("--low-io", action="store_true", help="make graph inputs/outputs low precision as well")
    p.add_argument("-o", "--output", required=True, help="where to write the converted model")
    p.add_argument("--recipe-out", help="also write the recipe that reproduces the output")


def run(args: argparse.Namespace) -> dict[str, Any]:
    session = Session(args.model)
    edit = ConvertPrecision(precision=args.precision, nodes=tuple(args.nodes), keep=tuple(args.keep),
                            keep_io_types=not args.low_io, guard=not args.no_guard)
    plan = plan_conversion(session.model, args.precision, keep=edit.keep, nodes=edit.nodes, guard=edit.guard)
    session.apply(edit)
    out = session.export(args.output)
    result: dict[str, Any] = {
        "output": str(out),
        "precision": args.precision,
        "converted": [n for n, p in plan.items() if p["precision"] == args.precision],
        "kept": [n for n, p in plan.items() if p["reason"] == "kept by the user" or p["reason"].startswith("guard")],
        "kept_reasons": {n: p["reason"] for n, p in plan.items() if p["precision"] == "fp32"},
        "guards": precision_guards(session.original),
    }
    if args.recipe_out:
        result["recipe"] = str(session.save(args.recipe_out))
    return result


def render(r: dict[str, Any]) -> str:
    lines = [f"wrote {r['output']}: {len(r['converted'])} nodes in {r['precision']}, {len(r['kept'])} kept fp32"]
    lines += [f"  kept {n}: {r['kept_reasons'][n]}" for n in r["kept"]]
    return "\n".join(lines)
