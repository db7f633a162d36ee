"""workbench check MODEL: can TensorRT parse and build it? The real parser and an AOT build in a child process."""

from __future__ import annotations

import argparse
from typing import Any

from ..check import check_model

COMMAND = "check"
HELP = "check a model with TensorRT: per-node support, parse errors, an AOT build, suggestions"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="an .onnx file or a sample model name")
    p.add_argument("--shapes", action="append", metavar="SPEC",
                   help="NAME:1x3x224x224 or NAME:MIN,OPT,MAX (e.g. x:1x3x32x32,1x3x640x640,1x3x1280x1280); repeatable")
    p.add_argument("--backend", default="auto", choices=["auto", "tensorrt", "tensorrt-rtx"])
    p.add_argument("--timeout", type=float, default=600.0, help="seconds before the check's build is stopped")
    p.add_argument("--in-process", action="store_true", help="build in this process (a builder crash kills it)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    report = check_model(args.model, shapes=args.shapes, backend=args.backend, timeout=args.timeout,
                         in_process=args.in_process)
    return report.to_dict()


def _yn(v: Any) -> str:
    return "unknown" if v is None else ("yes" if v else "no")


def render(r: dict[str, Any]) -> str:
    lines = [f"model: {r['model']}  backend: {r['backend'] or 'none'} {r['version'] or ''}".rstrip(),
             f"parsable: {_yn(r['parsable'])}  buildable: {_yn(r['buildable'])}"
             + (f"  ({r['layers']} engine layers, {r['build_seconds']:.2f} s)" if r.get("buildable") else "")]
    if r.get("crashed"):
        lines.append(f"CRASHED: {r['crashed']['signal'] or 'no result'}")
    if r["unsupported"]:
        lines.append("unsupported nodes:")
        lines += [f"  {u['node']} ({u['op']}): {u['reason']}" for u in r["unsupported"]]
    if r["errors"]:
        lines.append("errors:")
        lines += [f"  {e}" for e in r["errors"]]
    if r["suggestions"]:
        lines.append("suggestions:")
        lines += [f"  - {s}" for s in r["suggestions"]]
    return "\n".join(lines)
