"""workbench convert MODEL --precision fp16|bf16 [--inputs DATA] [--keep NODE ...] -o OUT: mixed precision as Cast
nodes.

For fp16 the float tensors are measured on a reference run first (``--inputs DATA`` through the data layer, else
seeded random data, with a warning): a node reading or writing a tensor beyond ``--range-limit`` stays float32, as
ModelOpt's AutoCast does. Those nodes are written into the recipe's ``keep`` by name, so the recipe replays
without the data.
"""

from __future__ import annotations

import argparse
import warnings
from typing import Any

import numpy as np

from ..errors import DataError
from ..precision import FP16_MAX, float_tensors, plan_conversion, precision_guards
from ..precision.convert import range_guards
from ..recipe import ConvertPrecision
from ..session import Session
from .data_args import PREPROCESSING_FLAGS, add_data_arguments, read_data

COMMAND = "convert"
HELP = "run a model in fp16/bf16 through Cast nodes (overflow-prone ops stay fp32 unless forced)"

RANDOM_SAMPLES = 8
_RANDOM_WARNING = ("fp16 activation ranges measured on RANDOM data (no --inputs): nodes whose real values leave the "
                   "fp16 range may be missed; give --inputs DATA (100-500 representative samples) for real ranges")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="an .onnx file or a sample model name")
    p.add_argument("--precision", choices=("fp16", "bf16"), default="fp16")
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


def reference_ranges(args: argparse.Namespace, model: Any) -> tuple[dict[str, float], dict[str, Any], list[str]]:
    """The reference run's magnitude of every float tensor, what data it read, and warnings."""
    notes: list[str] = []
    if args.inputs is not None:
        if args.shapes:
            raise DataError("give either --inputs DATA or --shapes for the reference run, not both",
                            hint="the data's own shapes are the ones measured")
        data = read_data(args, args.inputs, model)
    else:
        flags = [k for k in PREPROCESSING_FLAGS if getattr(args, k, None) is not None]
        if flags or args.sample_axis or args.data_input:
            raise DataError("preprocessing, --sample-axis and --data-input flags need --inputs DATA",
                            hint="give --inputs, or drop the flags")
        from ..backends.trt_profiles import parse_shapes
        from ..data import random_data

        shapes = {p.input: p.opt for p in parse_shapes(args.shapes, model)} if args.shapes else None
        data = random_data(model, samples=RANDOM_SAMPLES, shapes=shapes, warn=False)
        warnings.warn(_RANDOM_WARNING, UserWarning, stacklevel=2)
        notes.append(_RANDOM_WARNING)
    return activation_ranges(model, data), data.describe(), notes


def activation_ranges(model: Any, data: Any) -> dict[str, float]:
    """{tensor: largest magnitude} of every float tensor (:func:`~workbench.precision.float_tensors`) over ``data``
    (a Dataset) in ONNX Runtime, unoptimised. A tensor holding inf or NaN on the reference run (T5's
    ``Log`` of a zero relative position) gets inf: its nodes stay float32. One sample per run where the model allows:
    every float tensor is an extra output, so a batch costs the whole network's activations."""
    from ..backends.ort import OrtEngine, check_feeds, with_outputs

    names = float_tensors(model)
    graph_inputs = {i.name for i in model.graph.input}
    inner = [t for t in names if t not in graph_inputs]
    amax: dict[str, float] = {}
    engine = OrtEngine(with_outputs(model, inner), low_memory=True, optimize=False)
    try:
        for i, batch in enumerate(data.batches(1)):
            feeds = check_feeds(model, batch.feeds, where=f"batch {i} of {data.description}")
            outs = engine.run(feeds, inner)
            for t in names:
                value = feeds[t] if t in feeds else outs.get(t)
                if value is None or value.size == 0 or value.dtype.kind != "f":
                    continue
                m = float(np.max(np.abs(value)))  # NaN when the tensor holds one
                amax[t] = max(amax.get(t, 0.0), float("inf") if np.isnan(m) else m)
            del outs
    finally:
        engine.close()
    if not amax:
        raise DataError(f"{data.description} holds no samples", hint="give a few representative samples")
    return amax


def run(args: argparse.Namespace) -> dict[str, Any]:
    session = Session(args.model)
    model = session.model
    ranges = None
    result: dict[str, Any] = {}
    notes: list[str] = []
    if args.precision == "fp16" and not args.no_guard:
        if not args.range_limit > 0:
            raise DataError(f"--range-limit must be positive, got {args.range_limit}", hint="e.g. --range-limit 65504")
        ranges, result["data"], notes = reference_ranges(args, model)
    elif args.inputs is not None:
        raise DataError(f"--inputs feeds the fp16 reference run, which {'bf16' if args.precision == 'bf16' else '--no-guard'}"
                        " does not make", hint="drop --inputs")
    by_range = range_guards(model, ranges, limit=args.range_limit) if ranges is not None else {}
    # measured out-of-range nodes go into the recipe by name (a node named exactly in --nodes is converted anyway)
    extra = tuple(n for n in by_range if n not in set(args.nodes))
    edit = ConvertPrecision(precision=args.precision, nodes=tuple(args.nodes), keep=(*args.keep, *extra),
                            keep_io_types=not args.low_io, guard=not args.no_guard)
    plan = plan_conversion(model, args.precision, keep=tuple(args.keep), nodes=edit.nodes, guard=edit.guard)
    for n in extra:
        if plan[n]["precision"] != "fp32":
            plan[n] = {"precision": "fp32", "reason": f"range: {by_range[n]}"}
    session.apply(edit)
    out = session.export(args.output)
    result.update({
        "output": str(out),
        "precision": args.precision,
        "converted": [n for n, p in plan.items() if p["precision"] == args.precision],
        "kept": [n for n, p in plan.items() if p["reason"] == "kept by the user"
                 or p["reason"].startswith(("guard", "range"))],
        "kept_reasons": {n: p["reason"] for n, p in plan.items() if p["precision"] == "fp32"},
        "guards": precision_guards(session.original),
        "range_kept": list(extra),
        "range_limit": args.range_limit if ranges is not None else None,
        "warnings": notes,
    })
    if args.recipe_out:
        result["recipe"] = str(session.save(args.recipe_out))
    return result


def render(r: dict[str, Any]) -> str:
    lines = [f"wrote {r['output']}: {len(r['converted'])} nodes in {r['precision']}, {len(r['kept'])} kept fp32"]
    if r.get("data"):
        lines.append(f"  activation ranges from {r['data'].get('data', 'the data')}: "
                     f"{len(r['range_kept'])} nodes beyond {r['range_limit']:g} kept fp32")
    lines += [f"  kept {n}: {r['kept_reasons'][n]}" for n in r["kept"]]
    lines += [f"warning: {w}" for w in r.get("warnings", ())]
    return "\n".join(lines)
