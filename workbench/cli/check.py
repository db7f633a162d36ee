"""workbench check MODEL: can TensorRT parse and build it? The real parser and an AOT build in a child process.

``--repair`` applies the repairs the check offers (as recipe edits), checks the repaired model too, and with ``-o``
writes it (``--recipe-out``: the recipe of those edits, replayable with ``workbench edit``). ``--freeze NAME=VALUE``
gives the value of an input a ``freeze_input`` repair needs (JSON: a number or a list).
"""

from __future__ import annotations

import argparse
from typing import Any

from ..check import check_model
from ..errors import DataError

COMMAND = "check"
HELP = "check a model with TensorRT: per-node support, parse errors, an AOT build, suggestions"


def add_arguments(p: argparse.ArgumentParser) -> None:
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


def run(args: argparse.Namespace) -> dict[str, Any]:
    values = _values(args.freeze)
    if (args.output or args.recipe_out or values) and not args.repair:
        raise DataError("-o, --recipe-out and --freeze go with --repair", hint="add --repair")
    if not args.repair:
        report = check_model(args.model, shapes=args.shapes, backend=args.backend, timeout=args.timeout,
                             in_process=args.in_process)
        return report.to_dict()
    from ..recipe import edit_from_dict
    from ..session import Session

    session = Session(args.model)
    report = check_model(session.model, shapes=args.shapes, backend=args.backend, timeout=args.timeout,
                         in_process=args.in_process, repair=True, values=values)
    result = report.to_dict()
    result["model"] = str(session.source_path or args.model)
    edits = [edit_from_dict(e) for e in (report.repaired or {}).get("edits", [])]
    if edits:
        session.apply_all(edits)
    if args.output:
        result["output"] = str(session.export(args.output))
    if args.recipe_out:
        result["recipe"] = str(session.save(args.recipe_out))
    return result


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
    if r.get("repairs"):
        lines.append("repairs (workbench check MODEL --repair):")
        lines += [f"  - {x['title']}: {x['why']}" for x in r["repairs"]]
    fixed = r.get("repaired")
    if fixed:
        lines.append(f"repaired: {len(fixed['edits'])} edit(s) ({', '.join(e['kind'] for e in fixed['edits']) or 'none'});"
                     f" parsable: {_yn(fixed['parsable'])}  buildable: {_yn(fixed['buildable'])}")
        lines += [f"  skipped {x['title']}: {x['reason']}" for x in fixed["skipped"]]
        lines += [f"  error: {e}" for e in fixed["errors"]]
    lines += [f"wrote {r[k]}" for k in ("output", "recipe") if r.get(k)]
    return "\n".join(lines)
