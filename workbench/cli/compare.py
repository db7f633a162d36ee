"""workbench compare REF CAND --inputs DATA.npz [--layerwise]: how far the candidate is from the FP32 reference."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ._cluster import add_cluster_argument, cluster_from
from .data_args import add_data_arguments, read_data

if TYPE_CHECKING:
    from ..workflows.debug import CompareResult

COMMAND = "compare"
HELP = "compare a converted/quantized model with its FP32 reference: output errors, optionally layer by layer"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command's arguments."""
    p.add_argument("reference", help="the FP32 reference: an .onnx file or a sample model name")
    p.add_argument("candidate", help="the converted or quantized .onnx model")
    p.add_argument("--inputs", required=True, metavar="DATA",
                   help="an .npz with one array per model input (a 'label' array adds accuracy), or a folder of "
                        "images/.wav files read with the preprocessing flags")
    p.add_argument("--layerwise", action="store_true", help="also compare every intermediate tensor joined by name")
    p.add_argument("--tensors", nargs="+", metavar="TENSOR", help="with --layerwise: only these tensors")
    p.add_argument("--no-local", action="store_true", help="with --layerwise: skip each layer's local error")
    p.add_argument("--tolerance", default="0.1", metavar="SPEC",
                   help="pass/fail limits: a rel_l2 number, or e.g. 'rel_l2=0.05,cosine=0.99,snr_db=20'")
    p.add_argument("--label", default="label", help="the .npz array with class labels for accuracy")
    p.add_argument("--max-samples", type=int, help="use at most this many samples")
    p.add_argument("--workers", type=int,
                   help="threads sharing each batch (default: one per core, at most 4; 1 = none)")
    p.add_argument("--batch-size", type=int, default=32, help="samples per run (for a dynamic batch dimension)")
    add_data_arguments(p)
    add_cluster_argument(p)


def run(args: argparse.Namespace) -> CompareResult:
    """Read the arguments, run the compare workflow on the cluster when one is given."""
    from ..session import Session
    from ..workflows.debug import compare, parse_tolerance

    tolerance = parse_tolerance(args.tolerance)
    session = Session(args.reference)
    data = read_data(args, args.inputs, session.model)
    with cluster_from(args) as cluster:
        return compare(session, data, reference="original", candidate=args.candidate, layerwise=args.layerwise,
                       local=not args.no_local, tensors=args.tensors, tolerance=tolerance, label=args.label,
                       batch_size=args.batch_size, max_samples=args.max_samples, workers=args.workers,
                       cluster=cluster)


def _f(v: Any) -> str:
    return "-" if v is None else f"{v:.4g}"


def render(result: CompareResult) -> str:
    """The comparison for people: outputs, metrics, layers (with --layerwise), first divergence, warnings."""
    r = result.to_dict()
    lines = [f"{r['samples']} samples, {'PASS' if r['passed'] else 'FAIL'} (tolerance {r['tolerance']})"]
    for name, m in r["outputs"].items():
        tops = "  ".join(f"{k}={v:.3f}" for k, v in m.items() if k.startswith("top"))
        lines.append(f"  {name}: max_abs {_f(m['max_abs'])}  mean_abs {_f(m['mean_abs'])}  rel_l2 {_f(m['rel_l2'])}  "
                     f"cosine {_f(m['cosine'])}  snr {_f(m['snr_db'])} dB  {tops}")
    if r.get("top_k"):
        lines.append(f"  ({r['top_k']})")
    for name, m in r["metrics"].items():
        lines.append(f"  {name}: reference {m['reference']:.4f}  candidate {m['candidate']:.4f}")
    if "layers" in r:
        lines.append("layers (rel_l2 / local rel_l2):")
        for row in r["layers"]:
            mark = " " if row["passed"] else "!"
            lines.append(f" {mark} {row['tensor']} ({row['op']}): {_f(row['rel_l2'])} / {_f(row['local_rel_l2'])}")
    fd = r["first_divergence"]
    if fd:
        lines.append(f"first divergence: tensor '{fd['tensor']}' (node '{fd['node']}', {fd['op']}), "
                     f"rel_l2 {_f(fd['rel_l2'])}, local {_f(fd['local_rel_l2'])}")
    lines += [f"warning: {w}" for w in r["warnings"]]
    return "\n".join(lines)
