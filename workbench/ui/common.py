"""What every tab shares: a status line that shows errors (message + hint) and the tab protocol.

A tab is a class ``XTab(session, status)`` with ``title: str`` and ``widget`` (an ipywidgets Widget).
A button handler wraps its one Session/API call in ``with status.guard("doing X"):`` so a
:class:`~workbench.errors.WorkbenchError` is shown, not raised, and the kernel and session survive.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import ipywidgets as W

from ..errors import WorkbenchError

__all__ = ["Status", "Tab"]


class Tab(Protocol):
    title: str
    widget: W.Widget

    def __init__(self, session: Any, status: Status) -> None: ...


class Status:
    """One status line for the dashboard: ``state`` is 'idle', 'busy', 'ok' or 'error'."""

    def __init__(self) -> None:
        self.widget = W.HTML(value="", layout=W.Layout(min_height="1.6em"))
        self.state = "idle"
        self.message = ""
        self.hint = ""

    def _show(self, state: str, message: str, hint: str = "") -> None:
        self.state, self.message, self.hint = state, message, hint
        colour = {"error": "#b00020", "ok": "#1b5e20", "busy": "#555"}.get(state, "#333")
        text = html.escape(message) + (f"<br><i>hint: {html.escape(hint)}</i>" if hint else "")
        self.widget.value = f'<div class="wb-status wb-status-{state}" style="color:{colour}">{text}</div>'

    def busy(self, message: str) -> None:
        self._show("busy", message)

    def ok(self, message: str) -> None:
        self._show("ok", message)

    def error(self, exc: WorkbenchError) -> None:
        self._show("error", exc.message, exc.hint)

    @contextmanager
    def guard(self, doing: str) -> Iterator[None]:
        """Show ``doing`` while the block runs; show a WorkbenchError instead of raising it."""
        self.busy(f"{doing}…")
        try:
            yield
        except WorkbenchError as exc:
            self.error(exc)
        else:
            if self.state == "busy":
                self.ok(f"{doing}: done")
