"""workbench check MODEL: can TensorRT parse and build it? The real parser and an AOT build in a child process.

``--repair`` applies the repairs the check offers (as recipe edits), checks the repaired model too, and with ``-o``
writes it (``--recipe-out``: the recipe of those edits, replayable with ``workbench edit``). ``--freeze NAME=VALUE``
gives the value of an input a ``freeze_input`` repair needs (JSON: a number or a list).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ..errors import DataError

if TYPE_CHECKING:
    from ..workflows.model import CheckResult

COMMAND = "check"
HELP = "check a model with TensorRT: per-node support, parse errors, an AOT build, suggestions"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command's arguments."""
    p.add_argument("model", help="an .onnx file or a sample model name")
    p.add_argument("--shapes", action="append", metavar="SPEC",
                   help="NAME:1x3x224x224 or NAME:MIN,OPT,MAX (e.g. x:1x3x32x32,1x3x640x640,1x3x1280x1280); repeatable")
    p.add_argument("--backend", default="auto", choices=["auto", "tensorrt", "tensorrt-rtx"])
    p.add_argument("--timeout", type=float, default=600.0, help="seconds before the check's build is stopped")
    p.add_argument("--in-process", action="store_true", help="build in this process (a builder crash kills it)")
    p.add_argument("--repair", action="store_true", help="apply the repairs the check offers and check again")
    p.add_argument("--freeze", action="append", metavar="NAME=VALUE", default=[],
                   help="the value of an input to freeze (a freeze_input repair), e.g. sr=16000; repeatable")
    p.add_argument("-o", "--output", help="with --repair: write the repaired model here")
    p.add_argument("--recipe-out", help="with --repair: write the recipe of the repair edits here")


def _values(items: list[str]) -> dict[str, Any]:
    import json

    values: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise DataError(f"--freeze '{item}' is not NAME=VALUE", hint="e.g. --freeze sr=16000")
        try:
            values[name] = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"--freeze {item}: '{text}' is not a number or a JSON list ({exc.msg})",
                            hint="e.g. --freeze sr=16000 or --freeze scale=[1.0,2.0]") from exc
    return values


def run(args: argparse.Namespace) -> CheckResult:
    """Check (and with ``--repair`` repair) the model."""
    values = _values(args.freeze)
    if (args.output or args.recipe_out or values) and not args.repair:
        raise DataError("-o, --recipe-out and --freeze go with --repair", hint="add --repair")
    from ..session import Session
    from ..workflows.model import check, check_and_repair

    if not args.repair:
        return check(args.model, shapes=args.shapes, backend=args.backend, timeout=args.timeout,
                     in_process=args.in_process)
    return check_and_repair(Session(args.model), shapes=args.shapes, backend=args.backend, timeout=args.timeout,
                            in_process=args.in_process, values=values, output=args.output, recipe_out=args.recipe_out)


def _yn(v: bool | None) -> str:
    return "unknown" if v is None else ("yes" if v else "no")


def render(r: CheckResult) -> str:
    """The report for people (``--json`` prints ``r.to_dict()``)."""
    lines = [f"model: {r.model}  backend: {r.backend or 'none'} {r.version or ''}".rstrip(),
             f"parsable: {_yn(r.parsable)}  buildable: {_yn(r.buildable)}"
             + (f"  ({r.layers} engine layers, {r.build_seconds or 0.0:.2f} s)" if r.buildable else "")]
    if r.crashed:
        lines.append(f"CRASHED: {r.crashed.get('signal') or 'no result'}")
    if r.unsupported:
        lines.append("unsupported nodes:")
        lines += [f"  {u.node} ({u.op}): {u.reason}" for u in r.unsupported]
    if r.errors:
        lines.append("errors:")
        lines += [f"  {e}" for e in r.errors]
    if r.suggestions:
        lines.append("suggestions:")
        lines += [f"  - {s}" for s in r.suggestions]
    if r.repairs:
        lines.append("repairs (workbench check MODEL --repair):")
        lines += [f"  - {x['title']}: {x['why']}" for x in r.repairs]
    fixed = r.repaired
    if fixed:
        kinds = ", ".join(str(e.get("kind")) for e in fixed.edits) or "none"
        lines.append(f"repaired: {len(fixed.edits)} edit(s) ({kinds}); parsable: {_yn(fixed.parsable)}  "
                     f"buildable: {_yn(fixed.buildable)}")
        lines += [f"  skipped {x.title}: {x.reason}" for x in fixed.skipped]
        lines += [f"  error: {e}" for e in fixed.errors]
    lines += [f"wrote {path}" for path in (r.output, r.recipe) if path]
    return "\n".join(lines)
