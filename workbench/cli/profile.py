"""workbench profile: per-layer timings from ONNX Runtime (CPU) or imported trtexec JSON, in one schema."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import DataError
from .data_args import PREPROCESSING_FLAGS, add_data_arguments, read_data

COMMAND = "profile"
HELP = "per-layer timings: ONNX Runtime on this CPU, or trtexec --exportLayerInfo/--exportProfile JSON"


def add_arguments(p: argparse.ArgumentParser) -> None:
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


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ..graph import load_model
    from ..profile import compare_profiles, from_trtexec, group_times, precision_counts, profile_summary, total_ms

    if args.iterations < 1:
        raise DataError(f"--iterations must be at least 1, got {args.iterations}", hint="use --iterations 20")
    model = load_model(args.model) if args.model else None
    if args.trt_layers or args.trt_profile:
        table = from_trtexec(args.trt_layers, args.trt_profile, model=model)
        source = "trtexec"
    else:
        if model is None:
            raise DataError("nothing to profile: give a MODEL or --trt-layers/--trt-profile files",
                            hint="workbench profile digits_cnn  or  workbench profile --trt-layers G.json "
                                 "--trt-profile P.json")
        from ..backends.ort_profile import profile_model
        from ..backends.trt_profiles import parse_shapes
        from ..data import timing_feeds

        if args.batch < 1:
            raise DataError(f"--batch must be at least 1, got {args.batch}", hint="use --batch 1")
        shapes = {p.input: p.opt for p in parse_shapes(args.shapes, model)}
        if args.inputs is not None:
            feeds = timing_feeds(model, read_data(args, args.inputs, model), batch=args.batch, shapes=shapes)
        else:
            flags = [k for k in PREPROCESSING_FLAGS if getattr(args, k, None) is not None]
            if flags or args.sample_axis:
                raise DataError("preprocessing and --sample-axis flags need --inputs DATA", hint="give --inputs")
            feeds = timing_feeds(model, batch=args.batch, shapes=shapes)
        table = profile_model(model, feeds, optimize=args.optimize, iterations=args.iterations)
        source = "onnxruntime"
    result: dict[str, Any] = {
        "source": source,
        "layers": [{k: r[k] for k in ("name", "onnx_nodes", "type", "precision", "median_ms", "mean_ms", "pct")}
                   for r in table.records()],
        "total_ms": total_ms(table),
        "by_op_type": {r["group"]: r["median_ms"] for r in group_times(table, "op_type", model=model).records()},
        "precisions": precision_counts(table),
        "top": args.top,
    }
    if source == "onnxruntime":
        result.update(optimize=args.optimize, iterations=args.iterations,
                      shapes={k: list(v.shape) for k, v in feeds.items()},
                      data=str(args.inputs) if args.inputs is not None else "random")
    profiles = {args.label: table}
    if args.compare:
        for spec in args.compare:
            label, sep, files = spec.partition("=")
            parts = [f.strip() for f in files.split(",")] if sep else []
            if not label or len(parts) != 2 or not all(parts):
                raise DataError(f"--compare '{spec}' is not LABEL=LAYERS.json,PROFILE.json",
                                hint="e.g. --compare fp16=fp16.graph.json,fp16.profile.json")
            if label in profiles:
                raise DataError(f"--compare label '{label}' is used twice", hint="give every profile its own label")
            profiles[label] = from_trtexec(parts[0], parts[1], model=model)
        result["comparison"] = {"summary": profile_summary(profiles).records(),
                                "layers": compare_profiles(profiles).records()}
    if args.html:
        result["html"] = str(_write_html(table, model, args.html, top=args.top, title=f"workbench profile ({source})",
                                         profiles=profiles if args.compare else None))
    return result


def _write_html(table: Any, model: Any, path: str, *, top: int, title: str,
                profiles: dict[str, Any] | None = None) -> Any:
    """The Profile tab's charts (workbench.plots.profile) in one standalone HTML file (plotly loads only here)."""
    from ..plots import profile as plots

    figs = [plots.layer_bar(table, top=top), plots.group_bar(table, "op_type", model=model),
            plots.group_bar(table, "precision"), plots.time_treemap(table, model=model)]
    if profiles:
        figs += [plots.compare_totals(profiles), plots.precision_mix(profiles), plots.compare_layers(profiles, top=top)]
    return plots.write_html(figs, path, title=title)


def render(r: dict[str, Any]) -> str:
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
