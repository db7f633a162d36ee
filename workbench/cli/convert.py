"""workbench convert MODEL --precision fp16|bf16 [--inputs DATA] [--keep NODE ...] -o OUT: mixed precision as Cast
nodes.

For fp16 the float tensors are measured on a reference run first (``--inputs DATA`` through the data layer, else
seeded random data, with a warning): a node reading or writing a tensor beyond ``--range-limit`` stays float32, as
ModelOpt's AutoCast does. Those nodes are written into the recipe's ``keep`` by name, so the recipe replays
without the data.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..choices import FP16_MAX, LOW_PRECISIONS
from ..errors import DataError
from .data_args import PREPROCESSING_FLAGS, add_data_arguments, read_data

if TYPE_CHECKING:
    from ..workflows.quantize import ConvertResult

COMMAND = "convert"
HELP = "run a model in fp16/bf16 through Cast nodes (overflow-prone ops stay fp32 unless forced)"



def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command's arguments."""
    p.add_argument("model", help="an .onnx file or a sample model name")
    p.add_argument("--precision", choices=LOW_PRECISIONS, default="fp16")
    p.add_argument("--inputs", metavar="DATA",
                   help="fp16: representative inputs for the reference run that measures activation ranges (an .npz "
                        "or a folder of images/.wav files, preprocessing flags below); default: random data")
    p.add_argument("--shapes", action="append", metavar="SPEC",
                   help="NAME:1x3x224x224, an input's whole shape for the random reference data (needed for dynamic "
                        "dims other than the sample axis); repeatable")
    p.add_argument("--range-limit", type=float, default=FP16_MAX, metavar="MAX",
                   help="fp16: nodes touching a tensor whose measured magnitude exceeds this stay fp32 "
                        "(default 65504, the fp16 maximum; smaller keeps a margin, e.g. 512 as ModelOpt's data_max)")
    p.add_argument("--keep", nargs="+", default=[], metavar="NODE",
                   help="nodes kept fp32: node names, op types (op:Softmax) or globs")
    p.add_argument("--nodes", nargs="+", default=[], metavar="NODE",
                   help="convert only these (default: every eligible node); a guarded node named exactly is converted")
    p.add_argument("--no-guard", action="store_true",
                   help="convert overflow-prone ops too (no guards, no reference run)")
    p.add_argument("--low-io", action="store_true", help="make graph inputs/outputs low precision as well")
    p.add_argument("-o", "--output", required=True, help="where to write the converted model")
    p.add_argument("--recipe-out", help="also write the recipe that reproduces the output")
    add_data_arguments(p)


def run(args: argparse.Namespace) -> ConvertResult:
    """One workflow call (:func:`workbench.workflows.quantize.convert`); ``--json`` prints its ``to_dict()``."""
    from ..session import Session
    from ..workflows.quantize import convert

    session = Session(args.model)
    data = None
    if args.inputs is not None:
        data = read_data(args, args.inputs, session.model)
    elif any(getattr(args, k, None) is not None for k in PREPROCESSING_FLAGS) or args.sample_axis or args.data_input \
            or args.run_length is not None:
        raise DataError("preprocessing, --sample-axis, --run-length and --data-input flags need --inputs DATA",
                        hint="give --inputs, or drop the flags")
    return convert(session, args.precision, data=data, shapes=args.shapes, range_limit=args.range_limit,
                   keep=args.keep, nodes=args.nodes, guard=not args.no_guard, low_io=args.low_io,
                   output=args.output, recipe_out=args.recipe_out)


def render(result: ConvertResult) -> str:
    """The result as text."""
    r = result.to_dict()
    lines = [f"wrote {r['output']}: {len(r['converted'])} nodes in {r['precision']}, {len(r['kept'])} kept fp32"]
    if r.get("data"):
        lines.append(f"  activation ranges from {r['data'].get('data', 'the data')}: "
                     f"{len(r['range_kept'])} nodes beyond {r['range_limit']:g} kept fp32")
    lines += [f"  kept {n}: {r['kept_reasons'][n]}" for n in r["kept"]]
    lines += [f"warning: {w}" for w in r.get("warnings", ())]
    return "\n".join(lines)
