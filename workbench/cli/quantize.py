"""workbench quantize MODEL --calib DATA.npz -o OUT: calibrate in ONNX Runtime, insert Q/DQ where TensorRT (or, with
``--target onnxruntime``, ONNX Runtime's CPU provider) fuses them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..choices import DEFAULT_METHOD, METHODS, QUANT_DTYPES, TARGET_METRICS, TARGETS
from ._cluster import add_cluster_argument, cluster_from
from .data_args import add_data_arguments, read_data

if TYPE_CHECKING:
    from ..workflows.quantize import QuantizeResult

COMMAND = "quantize"
HELP = "calibrate on representative data and write an INT8/FP8 Q/DQ model for TensorRT (or ONNX Runtime CPU)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command's arguments."""
    p.add_argument("model", help="an .onnx file or a sample model name")
    p.add_argument("--calib", required=True, metavar="DATA",
                   help="calibration data (100-500 samples recommended): an .npz with one array per model input, or "
                        "a folder of images/.wav files read with the preprocessing flags below")
    p.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD,
                   help="calibration method (default auto: entropy, or mse where entropy clips more than 0.1%% of a "
                        "tensor's values; for --dtype fp8: max)")
    p.add_argument("--percentile", type=float, default=99.99, help="for --method percentile")
    p.add_argument("--exclude", nargs="+", default=[], metavar="NODE",
                   help="nodes left in float: node names, op types (op:Gemm) or globs")
    p.add_argument("--dtype", choices=QUANT_DTYPES, default="int8",
                   help="int8, or fp8: float8e4m3fn Q/DQ for TensorRT (scales amax/448; a model older than opset 19 "
                        "is converted with onnx's version converter; convs with 16 or fewer channels, depthwise or "
                        "over 32 filter taps stay float; see docs/fp8.md)")
    p.add_argument("--target", choices=TARGETS, default="tensorrt",
                   help="whose Q/DQ fusion to place for: tensorrt (symmetric int8, Q/DQ on weighted ops' inputs) or "
                        "onnxruntime (uint8 activations, Q/DQ around each weighted op: integer kernels on the CPU)")
    p.add_argument("--per-tensor", action="store_true", help="per-tensor weight scales (default: per-channel)")
    p.add_argument("--keep-batchnorm", action="store_true",
                   help="do not fold BatchNormalization into the preceding Conv/Gemm first (folding is the default: "
                        "TensorRT folds it too, and folded weights are what gets quantized)")
    p.add_argument("--quantize-heads", action="store_true",
                   help="quantize the output heads too (default: a Conv/Gemm/MatMul with no other one between it and a "
                        "graph output stays float; see docs/int8_accuracy.md)")
    p.add_argument("--eval", metavar="DATA", dest="eval_data",
                   help="evaluation data (same forms as --calib): the diagnostics warn where it leaves the calibrated "
                        "range")
    p.add_argument("--target-metric", choices=TARGET_METRICS,
                   help="accuracy to a target: pick the calibration method that serves this metric best, then keep the "
                        "fewest layers in high precision (the debugger's sensitivity and plan search) until it is "
                        "within --tolerance of FP32, on --eval data (else the calibration data); accuracy needs a "
                        "'label' array in the data. For --target tensorrt a kept layer runs in FP16 where that meets "
                        "the target (a Cast region, half FP32's cost), else FP32")
    p.add_argument("--tolerance", type=float,
                   help="with --target-metric: accuracy's largest drop below FP32 (default 0.005 = 0.5 point), or "
                        "rel_l2's largest output error (default 0.05)")
    p.add_argument("-o", "--output", required=True, help="where to write the quantized model")
    p.add_argument("--recipe-out", help="also write the recipe that reproduces the output (scale cache beside it)")
    add_cluster_argument(p)
    add_data_arguments(p)


def run(args: argparse.Namespace) -> QuantizeResult:
    """One workflow call (:func:`workbench.workflows.quantize.quantize`); ``--json`` prints its ``to_dict()``."""
    from ..session import Session
    from ..workflows.quantize import QuantizeSettings, quantize

    session = Session(args.model)
    model = session.model
    data = read_data(args, Path(args.calib), model)
    eval_data = read_data(args, Path(args.eval_data), model) if args.eval_data else None
    settings = QuantizeSettings(method=args.method, percentile=args.percentile, dtype=args.dtype, target=args.target,
                                exclude=tuple(args.exclude), per_channel=not args.per_tensor,
                                float_heads=not args.quantize_heads, fold_batchnorm=not args.keep_batchnorm,
                                target_metric=args.target_metric, tolerance=args.tolerance)
    with cluster_from(args) as cluster:
        return quantize(session, data, settings, label=str(args.calib), eval_data=eval_data, output=args.output,
                        recipe_out=args.recipe_out, cluster=cluster)


def render(result: QuantizeResult) -> str:
    """The result as text."""
    r = result.to_dict()
    c = r["calibration"]
    lines = [f"wrote {r['output']}: {len(r['quantized'])} nodes in {r['dtype']} (Q/DQ placed for {r['target']}), "
             f"{len(r['excluded'])} excluded",
             f"calibration: {c['method']} on {c['samples']} samples in {c['seconds']:.2f} s, "
             f"peak RSS {c['peak_rss_mb']:.0f} MB"]
    d = c["diagnostics"]
    if r.get("float_heads"):
        lines.append(f"output heads kept float: {', '.join(r['float_heads'])}")
    lines.append(f"diagnostics: {d['clipped_tensors']} tensors clip some calibration values, memory ~{d['memory_mb']} MB"
                 + "".join(f"; {x['tensor']} clips {x['clipped'] * 100:.3g}% ({x['method']})" for x in d["clipped"][:3]
                           if x["clipped"] > 0))
    t = r.get("target_metric")
    if t:
        lines.append(f"target {t['metric']} within {t['tolerance']} of FP32 ({t['fp32']:.4g}): method {t['method']}, "
                     f"{t['before']:.4g} -> {t['after']:.4g} ({'met' if t['met'] else 'NOT met'}), kept "
                     f"{len(t['kept'])} layers in high precision ({len(t['kept_fp16'])} FP16, "
                     f"{len(t['kept']) - len(t['kept_fp16'])} FP32), estimated cost {t['estimated_cost']} "
                     f"(all INT8 {t['cost_all_int8']}, FP32 1.0)")
    lines += [f"warning: {w}" for w in dict.fromkeys([*c["warnings"], *d["warnings"]])]
    if r.get("recipe"):
        lines.append(f"recipe: {r['recipe']}")
    return "\n".join(lines)
