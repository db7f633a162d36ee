"""workbench profile: per-layer timings from ONNX Runtime (CPU) or imported trtexec JSON, in one schema."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..errors import DataError
from .data_args import PREPROCESSING_FLAGS, add_data_arguments, read_data

if TYPE_CHECKING:
    from ..workflows.build import ProfileReport

COMMAND = "profile"
HELP = "per-layer timings: ONNX Runtime on this CPU, or trtexec --exportLayerInfo/--exportProfile JSON"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command's flags (the data flags are :mod:`workbench.cli.data_args`')."""
    p.add_argument("model", nargs="?", help="an .onnx file or a sample model name (also maps TensorRT layers to it)")
    p.add_argument("--backend", default="onnxruntime", choices=["onnxruntime"],
                   help="who runs the model here (TensorRT timings come from files: --trt-layers/--trt-profile)")
    p.add_argument("--optimize", action=argparse.BooleanOptionalAction, default=True,
                   help="ORT graph optimisations (fused nodes are mapped back to ONNX nodes); default on")
    p.add_argument("--iterations", type=int, default=20, help="timed runs (after 2 warm-up runs); default 20")
    p.add_argument("--inputs", metavar="DATA",
                   help="input data whose first --batch samples are timed: an .npz (one array per model input) or a "
                        "folder of images/.wav files (preprocessing flags below); default: random data of --shapes")
    p.add_argument("--batch", type=int, default=1, help="samples per run (on each input's sample axis); default 1")
    p.add_argument("--shapes", action="append", metavar="SPEC",
                   help="NAME:1x3x224x224, the whole shape of an input for random data; needed for dynamic dims "
                        "other than the sample axis (never guessed); repeatable")
    p.add_argument("--trt-layers", metavar="G.json", help="trtexec --exportLayerInfo JSON (IEngineInspector)")
    p.add_argument("--trt-profile", metavar="P.json", help="trtexec --exportProfile JSON")
    p.add_argument("--compare", action="append", default=[], metavar="LABEL=G.json,P.json",
                   help="another trtexec profile to compare with (repeatable); the main profile is labelled 'main' "
                        "unless --label is given")
    p.add_argument("--label", default="main", help="label of the main profile in a comparison")
    p.add_argument("--top", type=int, default=15, help="layers shown in the text summary and bar chart")
    p.add_argument("--html", metavar="OUT.html", help="also write the charts to a standalone HTML file")
    add_data_arguments(p)


def run(args: argparse.Namespace) -> ProfileReport:
    """Profile with ONNX Runtime or import trtexec files (and compare), through one workflow."""
    from ..session import Session
    from ..workflows import build as wf

    if args.iterations < 1:
        raise DataError(f"--iterations must be at least 1, got {args.iterations}", hint="use --iterations 20")
    if args.batch < 1:
        raise DataError(f"--batch must be at least 1, got {args.batch}", hint="use --batch 1")
    session = Session(args.model) if args.model else None
    data = None
    if session is not None and not (args.trt_layers or args.trt_profile):
        if args.inputs is not None:
            data = read_data(args, args.inputs, session.model)
        elif [k for k in PREPROCESSING_FLAGS if getattr(args, k, None) is not None] or args.sample_axis \
                or args.run_length is not None:
            raise DataError("preprocessing, --sample-axis and --run-length flags need --inputs DATA",
                            hint="give --inputs")
    others = []
    for spec in args.compare:
        label, sep, files = spec.partition("=")
        parts = [f.strip() for f in files.split(",")] if sep else []
        if not label or len(parts) != 2 or not all(parts):
            raise DataError(f"--compare '{spec}' is not LABEL=LAYERS.json,PROFILE.json",
                            hint="e.g. --compare fp16=fp16.graph.json,fp16.profile.json")
        others.append((label, parts[0], parts[1]))
    result = wf.profile(session, layers=args.trt_layers, trt_profile=args.trt_profile, data=data, shapes=args.shapes,
                        batch=args.batch, iterations=args.iterations, optimize=args.optimize, label=args.label,
                        others=others, top=args.top, html=args.html)
    return result


def render(result: ProfileReport) -> str:
    """The slowest layers, the total and the comparison as text."""
    r = result.to_dict()
    rows = sorted(r["layers"], key=lambda x: -x["median_ms"])[: r["top"]]
    width = min(60, max((len(x["name"]) for x in rows), default=4))
    lines = [f"{'layer':<{width}}  {'ms':>9}  {'%':>5}  {'precision':<9}  onnx nodes"]
    for x in rows:
        name = x["name"] if len(x["name"]) <= width else x["name"][: width - 1] + "…"
        nodes = ", ".join(x["onnx_nodes"])
        lines.append(f"{name:<{width}}  {x['median_ms']:>9.4f}  {x['pct']:>5.1f}  {x['precision'] or '?':<9}  "
                     f"{nodes[:60]}")
    lines.append(f"total {r['total_ms']:.4f} ms over {len(r['layers'])} layers ({r['source']})")
    if r.get("shapes"):
        lines.append(f"input shapes ({r['data']} data): "
                     + ", ".join(f"{k} {'x'.join(map(str, v)) or 'scalar'}" for k, v in r["shapes"].items()))
    lines.append("by op type: " + ", ".join(f"{k} {v:.4f} ms" for k, v in r["by_op_type"].items()))
    if r.get("comparison"):
        lines.append("")
        lines.append(f"{'profile':<16} {'total ms':>9} {'layers':>6} {'speedup':>7}  precisions")
        for row in r["comparison"]["summary"]:
            extra = ", ".join(f"{k} {v}" for k, v in row.items() if k not in ("label", "total_ms", "layers", "speedup") and v)
            speed = f"{row['speedup']:.2f}" if row["speedup"] else "-"
            lines.append(f"{row['label']:<16} {row['total_ms']:>9.4f} {row['layers']:>6} {speed:>7}  {extra}")
    if r.get("html"):
        lines.append(f"charts: {r['html']}")
    return "\n".join(lines)
