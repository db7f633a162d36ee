"""``workbench`` command line: argument parsing only, then API calls.

Each command is a module in this package exposing ``COMMAND`` (its name), ``HELP``, ``add_arguments(parser)``
and ``run(args)``, which returns a workflow result (``--json`` prints its ``to_dict()``), a plain JSON dict or None;
an optional ``render(result) -> str`` formats it for people. :data:`COMMANDS` names
them with their help, so start-up imports only the module of the command being run: ``workbench --help`` loads
no command module and no numerical library (tests/test_cli_startup.py checks both, and that the table matches
the modules). Every command takes
``--json`` and then prints one JSON object on stdout; exit 0 on success, 1 on a user error with
``{"error", "hint"}``, never a traceback for bad input. Logs go to stderr. A reader that stops early
(``workbench inspect M | head``) ends the command quietly, as it ends other Unix tools (exit 141, 128 + SIGPIPE).

Any other exception is our bug, reported as an internal error (:mod:`workbench.internal`): exit 2, one line on
stderr (what failed, the exception type and message) with where the traceback was logged and how to report it;
under ``--json`` one object ``{"error", "hint", "internal": true, "log"}``. Never a bare traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any, NoReturn

from ..errors import WorkbenchError

__all__ = ["COMMANDS", "main", "commands", "command_module"]

COMMANDS: dict[str, str] = {
    "build": "build a TensorRT engine ahead of time (no GPU needed with TensorRT-RTX)",
    "check": "check a model with TensorRT: per-node support, parse errors, an AOT build, suggestions",
    "compare": "compare a converted/quantized model with its FP32 reference: output errors, optionally layer by layer",
    "convert": "run a model in fp16/bf16 through Cast nodes (overflow-prone ops stay fp32 unless forced)",
    "debug": "sensitivity ranking of quantized/fp16 layers and the fewest to keep in high precision (a new recipe)",
    "edit": "apply a recipe (or a template recipe) to a model and write the edited model",
    "inspect": "summarise a model: inputs, outputs, ops, parameters, opset, FLOPs",
    "lab": "start JupyterLab on 127.0.0.1 with a workbench notebook open",
    "profile": "per-layer timings: ONNX Runtime on this CPU, or trtexec --exportLayerInfo/--exportProfile JSON",
    "quantize": "calibrate on representative data and write an INT8/FP8 Q/DQ model for TensorRT (or ONNX Runtime CPU)",
    "worker": "start a Dask worker for SCHEDULER that advertises this machine's TensorRT and GPU as resources",
}
"""Command name (= module name in this package) -> its one-line help (the module's ``HELP``)."""


def command_module(name: str) -> ModuleType:
    """The module of command ``name``, imported now (its imports are the command's own cost)."""
    return importlib.import_module(f"{__name__}.{name}")


def commands() -> dict[str, ModuleType]:
    """Command name -> module, for every command (imports them all; the command line imports only one)."""
    return {name: command_module(name) for name in COMMANDS}


class _UsageError(Exception):
    """A command line argparse rejects (unknown option, bad choice, missing argument): a user error."""

    def __init__(self, message: str, parser: argparse.ArgumentParser) -> None:
        super().__init__(message)
        self.message, self.parser = message, parser


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse would print usage and exit 2
        raise _UsageError(message, self)


def _parser(name: str | None, module: ModuleType | None) -> argparse.ArgumentParser:
    """Every command listed; only ``name``'s arguments added (from ``module``): argv holds one command."""
    parser = _Parser(prog="workbench", description="ONNX -> TensorRT workbench")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command, help in COMMANDS.items():
        p = sub.add_parser(command, help=help, description=help)
        p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        if command == name and module is not None:
            module.add_arguments(p)
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    """The command argv names: its first word not starting with '-' (the top level has no option with a value)."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return word if word in COMMANDS else None


def _default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "__fspath__"):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    name = _command_in(argv)
    try:
        module = command_module(name) if name is not None else None
        parser = _parser(name, module)
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
    try:
        if module is None or args.command != name:
            raise RuntimeError(f"argparse chose {args.command!r}, the start-up read {name!r} from {argv}")
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
        data = result.to_dict() if callable(getattr(result, "to_dict", None)) else result
        if args.json:
            text = json.dumps(data, default=_default)
        elif hasattr(module, "render"):
            text = module.render(result)
        else:
            text = json.dumps(data, indent=2, default=_default)
    except Exception as exc:
        return _internal(exc, f"printing the result of `workbench {args.command}`", args.json)
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        return _reader_gone()
    return 0


EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for `cat big | head`


def _reader_gone() -> int:
    """The reader of stdout closed the pipe: stop quietly. stdout goes to /dev/null so that the interpreter's last flush
    at exit does not complain about the pipe either."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE


def _internal(exc: BaseException, doing: str, as_json: bool) -> int:
    from ..internal import EXIT_INTERNAL, report_internal  # only on a bug: start-up skips uuid, platform, datetime

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
