"""workbench build MODEL: a serialised TensorRT engine (child process by default) and its metadata JSON.

The builder's log goes to ``<engine>.log``; the terminal shows only its warnings after a successful build, its
last lines when the build fails, and all of it as it comes with ``--verbose``.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from ..errors import BuildError

if TYPE_CHECKING:
    from ..workflows.build import EngineBuild

COMMAND = "build"
HELP = "build a TensorRT engine ahead of time (no GPU needed with TensorRT-RTX)"
_FAILURE_LINES = 30


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command's flags."""
    p.add_argument("model", help="an .onnx file or a sample model name")
    p.add_argument("-o", "--output", metavar="ENGINE",
                   help="engine path (default: the model's engine cache, where the dashboard's Build tab builds; "
                        "the dashboard lists the engine either way)")
    p.add_argument("--shapes", action="append", metavar="SPEC",
                   help="NAME:1x3x224x224 or NAME:MIN,OPT,MAX; repeatable; dynamic inputs left out get derived defaults")
    p.add_argument("--backend", default="auto", choices=["auto", "tensorrt", "tensorrt-rtx"])
    p.add_argument("--opt-level", type=int, default=3, choices=range(0, 6), metavar="N",
                   help="builder optimisation level 0-5 (default 3)")
    p.add_argument("--workspace-mb", type=int, default=None, help="workspace memory pool limit in MiB")
    p.add_argument("--timing-cache", metavar="PATH", help="timing cache file reused across builds (TensorRT)")
    p.add_argument("--no-timing-cache", action="store_true", help="do not use a timing cache")
    p.add_argument("--compute-capability", action="append", default=[], metavar="SM",
                   help="TensorRT-RTX target, e.g. SM86 or 8.9; repeatable")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds before the build is stopped")
    p.add_argument("--in-process", action="store_true", help="build in this process (a builder crash kills it)")
    p.add_argument("--verbose", action="store_true", help="stream the builder's whole log (info too) to stderr")
    p.add_argument("--quiet", action="store_true", help="no builder log on stderr (not even warnings, nor on failure)")


def run(args: argparse.Namespace) -> EngineBuild:
    """One workflow call (:func:`workbench.workflows.build.build`); ``--json`` prints its ``to_dict()``. Only the
    builder's warnings reach stderr on success."""
    from ..session import Session
    from ..workflows import build as wf

    session = Session(args.model)
    settings = wf.build_settings(
        session, shapes=args.shapes, backend=args.backend, opt_level=args.opt_level, workspace_mb=args.workspace_mb,
        timing_cache=not args.no_timing_cache, compute_capabilities=args.compute_capability,
        in_process=args.in_process, timeout_s=args.timeout)

    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        if args.verbose and not line.startswith("[verbose]"):
            print(line, file=sys.stderr)

    try:  # without -o into the model's engine cache: the Build tab lists it (workflows.build.engines)
        result = wf.build(session, settings, out=args.output, log=log, timing_cache_path=args.timing_cache)
    except BuildError:
        if not args.quiet and not args.verbose and lines:
            tail = lines[-_FAILURE_LINES:]
            print(f"builder log, last {len(tail)} of {len(lines)} lines:", *tail, sep="\n", file=sys.stderr)
        raise
    if not args.quiet and not args.verbose:  # on success only the builder's warnings: its info is in the log file
        for line in lines:
            if line.startswith(("[warning]", "[error]", "[internal_error]")):
                print(line, file=sys.stderr)
    return result


def render(result: EngineBuild) -> str:
    """The engine, its build and the trtexec line for a device, as text."""
    r = result.to_dict()
    lines = [f"engine: {r['engine']} ({r['bytes']:,} bytes, {r['layers']} layers)",
             f"backend: {r['backend']} {r['version']}  build: {r['seconds']:.2f} s",
             f"metadata: {r['metadata_path']}"]
    if r.get("log_path"):
        lines.append(f"builder log: {r['log_path']} (--verbose streams it)")
    lines += [f"note: {n}" for n in r["notes"]]
    lines.append(f"on a device: {r['trtexec']}")
    return "\n".join(lines)
