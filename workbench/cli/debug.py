"""workbench debug MODEL --recipe R --inputs DATA.npz: rank the layers that break accuracy, find the fewest to keep."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..choices import DIRECTIONS, METRICS
from ._cluster import add_cluster_argument, cluster_from
from .data_args import add_data_arguments, read_data

if TYPE_CHECKING:
    from ..workflows.debug import DebugRun

COMMAND = "debug"
HELP = "sensitivity ranking of quantized/fp16 layers and the fewest to keep in high precision (a new recipe)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command's arguments."""
    p.add_argument("model", help="the FP32 model the recipe applies to (.onnx or a sample name)")
    p.add_argument("--recipe", required=True, help="a recipe with a quantize or convert_precision edit")
    p.add_argument("--inputs", required=True, metavar="DATA",
                   help="evaluation data: an .npz with one array per model input (a 'label' array enables --metric "
                        "accuracy), or a folder of images/.wav files read with the preprocessing flags")
    p.add_argument("--metric", choices=METRICS, default="auto",
                   help="what the plan must meet (auto: accuracy when the data has labels, else rel_l2)")
    p.add_argument("--tolerance", type=float,
                   help="accuracy: the largest allowed drop below FP32 (default 0.001 = 0.1 point); "
                        "rel_l2: the largest allowed output error (default 0.05)")
    p.add_argument("--label", default="label", help="the .npz array with class labels")
    p.add_argument("--recipe-out", help="where to write the fixed recipe (default: <recipe>.debugged.json)")
    p.add_argument("--max-samples", type=int, help="use at most this many samples")
    p.add_argument("--rank-samples", type=int,
                   help="rank layers on this many samples only (faster); plans are still measured on all")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--direction", choices=DIRECTIONS, default="restore",
                   help="restore: score each layer by the gain when only it goes back to FP32 (default); "
                        "quantize_only: by the damage when only it is quantized in the FP32 model")
    p.add_argument("--workers", type=int,
                   help="threads sharing each batch (default: one per core, at most 4; 1 = none)")
    add_data_arguments(p)
    add_cluster_argument(p)


def run(args: argparse.Namespace) -> DebugRun:
    """Read the arguments, run the debug workflow on the cluster when one is given."""
    from ..session import Session
    from ..workflows.debug import debug

    session = Session.load(args.recipe, model=args.model)
    data = read_data(args, args.inputs, session.model)
    recipe_out = Path(args.recipe_out) if args.recipe_out else Path(args.recipe).with_suffix(".debugged.json")
    with cluster_from(args) as cluster:
        return debug(session, data, metric=args.metric, tolerance=args.tolerance, label=args.label,
                     direction=args.direction, batch_size=args.batch_size, max_samples=args.max_samples,
                     rank_samples=args.rank_samples, workers=args.workers, recipe_out=recipe_out, cluster=cluster)


def render(result: DebugRun) -> str:
    """The ranking and the plan for people."""
    r = result.to_dict()
    lines = [f"metric {r['metric']}: FP32 {r['metric_reference']:.4f}, candidate {r['metric_before']:.4f}, "
             f"with the plan {r['metric_after']:.4f} ({'met' if r['met'] else 'NOT met'}, tolerance {r['tolerance']})",
             "sensitivity (output rel_l2 recovered when only this layer is restored):"
             if r.get("direction", "restore") == "restore" else
             "sensitivity (output rel_l2 vs FP32 when only this layer is quantized):"]
    lines += [f"  {i + 1:2d}. {s['node']} ({s['op']}, {s['precision']}): {s['score']:.4g}"
              for i, s in enumerate(r["sensitivity"])]
    lines.append(f"keep in high precision: {r['keep_high_precision'] or 'nothing'}")
    lines.append(r["message"])
    lines.append(f"ranked {len(r['sensitivity'])} layers on {r['samples']} samples in {r['seconds']:.1f} s; "
                 f"{len(r['plans'])} plans measured")
    lines.append(f"recipe: {r['recipe']}")
    lines += [f"warning: {w}" for w in r["warnings"]]
    return "\n".join(lines)
