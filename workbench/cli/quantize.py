"""workbench quantize MODEL --calib DATA.npz -o OUT: calibrate in ONNX Runtime, insert Q/DQ where TensorRT (or, with
``--target onnxruntime``, ONNX Runtime's CPU provider) fuses them."""

from __future__ import annotations

import argparse
import dataclasses
import resource
import time
from pathlib import Path
from typing import Any

from ..backends.ort import OrtEngine
from ..calibration import DEFAULT_METHOD, METHODS, calibrate, calibration_diagnostics
from ..errors import DataError
from ..precision import TARGETS, activation_tensors, output_heads, quantization_targets, select_nodes
from ..recipe import CalibrationSettings, FuseBatchNorm, Quantize
from ..session import Session
from .data_args import add_data_arguments, read_data

COMMAND = "quantize"
HELP = "calibrate on representative data and write an INT8/FP8 Q/DQ model for TensorRT (or ONNX Runtime CPU)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="an .onnx file or a sample model name")
    p.add_argument("--calib", required=True, metavar="DATA",
                   help="calibration data (100-500 samples recommended): an .npz with one array per model input, or "
                        "a folder of images/.wav files read with the preprocessing flags below")
    p.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD,
                   help="calibration method (default auto: entropy, or mse where entropy clips more than 0.1%% of a "
                        "tensor's values)")
    p.add_argument("--percentile", type=float, default=99.99, help="for --method percentile")
    p.add_argument("--exclude", nargs="+", default=[], metavar="NODE",
                   help="nodes left in float: node names, op types (op:Gemm) or globs")
    p.add_argument("--dtype", choices=("int8", "fp8"), default="int8")
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
    p.add_argument("--target-metric", choices=("rel_l2", "accuracy"),
                   help="accuracy to a target: pick the calibration method that serves this metric best, then keep the "
                        "fewest layers in high precision (the debugger's sensitivity and plan search) until it is "
                        "within --tolerance of FP32, on --eval data (else the calibration data); accuracy needs a "
                        "'label' array in the data")
    p.add_argument("--tolerance", type=float,
                   help="with --target-metric: accuracy's largest drop below FP32 (default 0.005 = 0.5 point), or "
                        "rel_l2's largest output error (default 0.05)")
    p.add_argument("-o", "--output", required=True, help="where to write the quantized model")
    p.add_argument("--recipe-out", help="also write the recipe that reproduces the output (scale cache beside it)")
    add_data_arguments(p)


def _foldable_batchnorms(model: Any) -> int:
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    return sum(1 for n in model.graph.node if n.op_type == "BatchNormalization"
               and producers.get(n.input[0]) in ("Conv", "ConvTranspose", "Gemm"))


def run(args: argparse.Namespace) -> dict[str, Any]:
    session = Session(args.model)
    fused = 0
    if not args.keep_batchnorm and _foldable_batchnorms(session.model):
        before = len(session.model.graph.node)
        session.apply(FuseBatchNorm())
        fused = before - len(session.model.graph.node)
    model = session.model
    excluded = select_nodes(model, args.exclude, what="exclude") if args.exclude else []
    start = time.perf_counter()
    float_heads = not args.quantize_heads
    tensors = activation_tensors(model, exclude=excluded, target=args.target, float_heads=float_heads)
    data = read_data(args, Path(args.calib), model)
    cache = calibrate(model, data, method=args.method, percentile=args.percentile,
                      exclude=excluded, dtype=args.dtype, tensors=tensors)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    digest = cache.save(session.cache_dir)
    axes = {k: data.sample_axes[k] for k in data.inputs}
    session.set_calibration(CalibrationSettings(method=args.method, percentile=args.percentile,
                                                samples=cache.samples, data=str(args.calib),
                                                preprocessing=data.preprocessing,
                                                sample_axes=axes if any(a != 0 for a in axes.values()) else {}))
    edit = Quantize(dtype=args.dtype, exclude=tuple(excluded), method=args.method,
                    per_channel=not args.per_tensor, scales=digest, target=args.target, float_heads=float_heads)
    targets = quantization_targets(model, exclude=excluded, target=args.target, float_heads=float_heads)
    eval_data = read_data(args, Path(args.eval_data), model) if args.eval_data else None
    diagnostics = calibration_diagnostics(cache, model, eval_data)
    session.apply(edit)
    target_result = _to_target(args, session, eval_data if eval_data is not None else data) \
        if args.target_metric else None
    out = session.export(args.output)
    result: dict[str, Any] = {
        "output": str(out),
        "dtype": args.dtype,
        "target": args.target,
        "quantized": [n.name for n in model.graph.node if n.name in targets],
        "excluded": excluded,
        "float_heads": [h for h in output_heads(model) if h not in targets] if float_heads else [],
        "fused_batchnorm": fused,
        "calibration": {"method": args.method, "samples": cache.samples, "seconds": round(seconds, 3),
                        "peak_rss_mb": round(peak, 1), "scales": digest, "warnings": cache.warnings,
                        "data": data.describe(), "diagnostics": diagnostics},
    }
    if target_result is not None:
        result["target_metric"] = target_result
        result["excluded"] = [*excluded, *target_result["kept"]]
        result["quantized"] = [n for n in result["quantized"] if n not in target_result["kept"]]
        result["calibration"]["method"] = target_result["method"]
    if args.recipe_out:
        result["recipe"] = str(session.save(args.recipe_out))
    return result


def _to_target(args: argparse.Namespace, session: Session, data: Any) -> dict[str, Any]:
    """Accuracy to a target (issue 13, part 3): the calibration method whose whole-model metric is best, then the
    debugger's sensitivity ranking and plan search (:func:`workbench.debug.debug_precision`) for the fewest layers
    kept in high precision; the session's Quantize edit is replaced by the result (one recipe)."""
    from ..compare import accuracy, output_error
    from ..debug import debug_precision, estimated_cost, evaluate, recipe_models

    use_acc = args.target_metric == "accuracy"
    if use_acc and "label" not in data:
        raise DataError("--target-metric accuracy needs a 'label' array in the evaluation data",
                        hint="add labels to the .npz, or use --target-metric rel_l2")
    metric = accuracy() if use_acc else output_error()
    tolerance = args.tolerance if args.tolerance is not None else (0.005 if use_acc else 0.05)
    quantize = session.recipe.edits[-1]
    reference, _ = recipe_models(session.original, session.recipe, session.cache_dir)
    ref_outs = [OrtEngine(reference).run(b.feeds) for b in data.batches(64)]
    scores: dict[str, float] = {}
    for method in METHODS:  # one whole-model evaluation per method, from the same statistics
        trial = session.recipe.replace(edits=(*session.recipe.edits[:-1], dataclasses.replace(quantize, method=method)))
        _, build = recipe_models(session.original, trial, session.cache_dir)
        scores[method] = evaluate(build(()), data, metric, ref_outs, batch_size=64, max_samples=None,
                                  reference=reference)
    best = (max if use_acc else min)(scores, key=lambda m: scores[m])
    chosen = dataclasses.replace(quantize, method=best)
    recipe = session.recipe.replace(edits=(*session.recipe.edits[:-1], chosen))
    reference, factory = recipe_models(session.original, recipe, session.cache_dir)
    result = debug_precision(reference, factory(()), data, factory=factory, metric=metric, tolerance=tolerance,
                             recipe=recipe, batch_size=64)
    session.set_recipe(result.recipe if result.recipe is not None else recipe)
    plan = result.plan
    return {"metric": metric.name, "tolerance": tolerance, "methods": {k: round(v, 6) for k, v in scores.items()},
            "method": best, "fp32": result.metric_reference, "before": result.metric_before,
            "after": plan.metric, "met": plan.met, "kept": list(plan.keep), "message": plan.message,
            "estimated_cost": plan.cost, "cost_all_int8": estimated_cost(factory(()), reference),
            "plans_tried": len(plan.tried.rows), "samples": result.sensitivity.samples}


def render(r: dict[str, Any]) -> str:
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
                     f"{len(t['kept'])} layers in high precision, estimated cost {t['estimated_cost']} "
                     f"(all INT8 {t['cost_all_int8']}, FP32 1.0)")
    lines += [f"warning: {w}" for w in dict.fromkeys([*c["warnings"], *d["warnings"]])]
    if r.get("recipe"):
        lines.append(f"recipe: {r['recipe']}")
    return "\n".join(lines)
