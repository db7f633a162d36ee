"""``workbench`` command line: argument parsing only, then API calls.

Each command is a module in this package exposing ``COMMAND`` (its name), ``HELP``, ``add_arguments(parser)``
and ``run(args) -> dict``; an optional ``render(result) -> str`` formats it for people. Every command takes
``--json`` and then prints one JSON object on stdout; exit 0 on success, 1 on a user error with
``{"error", "hint"}``, never a traceback for bad input. Logs go to stderr.

Any other exception is our bug, reported as an internal error (:mod:`workbench.internal`): exit 2, one line on
stderr (what failed, the exception type and message) with where the traceback was logged and how to report it;
under ``--json`` one object ``{"error", "hint", "internal": true, "log"}``. Never a bare traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any, NoReturn

from ..errors import WorkbenchError
from ..internal import EXIT_INTERNAL, report_internal

__all__ = ["main", "commands"]


def commands() -> dict[str, ModuleType]:
    """Command name -> module, discovered in this package."""
    found: dict[str, ModuleType] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "COMMAND"):
            found[module.COMMAND] = module
    return found


class _UsageError(Exception):
    """A command line argparse rejects (unknown option, bad choice, missing argument): a user error."""

    def __init__(self, message: str, parser: argparse.ArgumentParser) -> None:
        super().__init__(message)
        self.message, self.parser = message, parser


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse would print usage and exit 2
        raise _UsageError(message, self)


def _parser(mods: dict[str, ModuleType]) -> argparse.ArgumentParser:
    parser = _Parser(prog="workbench", description="ONNX -> TensorRT workbench")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in mods.items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        module.add_arguments(p)
    return parser


def _default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "__fspath__"):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        mods = commands()
        parser = _parser(mods)
    except Exception as exc:
        return _internal(exc, "starting the workbench command line", "--json" in argv)
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:  # a user error like any other: exit 1, JSON under --json
        hint = f"see `{exc.parser.prog} --help`"
        if "--json" in argv:
            print(json.dumps({"error": exc.message, "hint": hint}))
        else:
            print(f"{exc.parser.format_usage()}error: {exc.message}\nhint: {hint}", file=sys.stderr)
        return 1
    module = mods[args.command]
    try:
        result = module.run(args)
    except WorkbenchError as exc:
        if args.json:
            print(json.dumps(exc.to_dict()))
        else:
            print(f"error: {exc.message}", file=sys.stderr)
            if exc.hint:
                print(f"hint: {exc.hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # our bug, never the user's: one line, the log file, how to report it
        return _internal(exc, f"running `workbench {args.command}`", args.json)
    if result is None:
        return 0
    try:
        if args.json:
            text = json.dumps(result, default=_default)
        elif hasattr(module, "render"):
            text = module.render(result)
        else:
            text = json.dumps(result, indent=2, default=_default)
    except Exception as exc:
        return _internal(exc, f"printing the result of `workbench {args.command}`", args.json)
    print(text)
    return 0


def _internal(exc: BaseException, doing: str, as_json: bool) -> int:
    report = report_internal(exc, doing)
    if as_json:
        print(json.dumps(report.to_dict()))
    else:
        print(f"error: {report.line}\nhint: {report.hint}", file=sys.stderr)
    if report.log is None:  # nowhere to keep the traceback: stderr is the last place it can go
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
