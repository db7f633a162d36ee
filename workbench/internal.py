"""Our own bugs, reported as internal errors: one line, where the traceback was logged, how to report it.

An exception that is not a :class:`~workbench.errors.WorkbenchError` is a bug in the workbench, never the user's
fault. The CLI (exit code :data:`EXIT_INTERNAL`, JSON ``{"error", "hint", "internal": true, "log"}``) and every tab
(``ui.common.Status``) report it through :func:`report_internal`, which writes the full traceback to its own file
under ``$XDG_CACHE_HOME/onnx-trt-workbench/logs/`` (atomically: a log is whole or absent, and concurrent
reports never interleave) and returns an :class:`InternalError` to show.
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .fsio import atomic_write, cache_root

__all__ = ["EXIT_INTERNAL", "InternalError", "log_dir", "report_internal"]

EXIT_INTERNAL = 2
"""CLI exit code of an internal error (0: success, 1: a user error, 130: interrupted)."""

_HOW_TO_REPORT = ("this is a bug in the workbench, not a problem with your input: please report it to the workbench "
                  "developers with the log file and the command or action that led to it")


def log_dir() -> Path:
    """Where internal-error tracebacks go: ``$XDG_CACHE_HOME/onnx-trt-workbench/logs``."""
    return cache_root() / "logs"


@dataclass(frozen=True)
class InternalError:
    """What to show for a bug: ``doing`` (what failed), the exception's type and message, the log file."""

    doing: str
    type: str
    message: str
    log: str | None
    log_problem: str = ""

    @property
    def line(self) -> str:
        """One line: what failed, the exception type and its (first-line) message."""
        text = f"internal error while {self.doing}: {self.type}"
        return f"{text}: {self.message}" if self.message else text

    @property
    def hint(self) -> str:
        """Where the traceback is, and how to report the bug."""
        where = (f"the full traceback is in {self.log}" if self.log
                 else f"the traceback could not be logged ({self.log_problem})")
        return f"{where}; {_HOW_TO_REPORT}"

    def to_dict(self) -> dict[str, Any]:
        """``{"error", "hint", "internal": true, "log"}``, as the CLI prints it."""
        return {"error": self.line, "hint": self.hint, "internal": True, "log": self.log}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def report_internal(exc: BaseException, doing: str) -> InternalError:
    """Log ``exc``'s traceback to a new file under :func:`log_dir` and return what to show the user."""
    now = datetime.datetime.now(datetime.timezone.utc)
    name = f"internal-{now:%Y%m%d-%H%M%S}-{os.getpid()}-{uuid.uuid4().hex[:8]}.log"
    text = (f"workbench internal error while {doing}\n"
            f"time: {now.isoformat()}\n"
            f"python: {sys.version.split()[0]} on {platform.platform()}\n"
            f"argv: {sys.argv!r}\n\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    log: str | None = None
    problem = ""
    try:
        log = str(atomic_write(log_dir() / name, text))
    except OSError as err:
        problem = f"{type(err).__name__}: {err}"
    return InternalError(doing=doing, type=type(exc).__name__, message=_first_line(exc), log=log,
                         log_problem=problem)
