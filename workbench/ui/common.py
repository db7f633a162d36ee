"""What every tab shares: a status line that shows errors (message + hint) and the tab protocol.

A tab is a class ``XTab(session, status)`` with ``title: str`` and ``widget`` (an ipywidgets Widget).
A button handler wraps its one Session/API call in ``with status.guard("doing X"):`` so a
:class:`~workbench.errors.WorkbenchError` is shown, not raised, and the kernel and session survive. Any other
exception is our bug: the guard shows it as an internal error (one line, where its traceback was logged, how to
report it; :mod:`workbench.internal`), never as the user's fault and never as a traceback in the cell output.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import ipywidgets as W

from ..errors import WorkbenchError
from ..internal import InternalError, report_internal

__all__ = ["Job", "Status", "Tab", "refill"]


class Tab(Protocol):
    title: str
    widget: W.Widget

    def __init__(self, session: Any, status: Status) -> None: ...


def refill(widget: Any, fig: Any) -> Any:
    """Show plotly figure ``fig`` in FigureWidget ``widget`` (same object: traces and layout replaced), or in a new
    FigureWidget when ``widget`` is None. Reuse matters: every new FigureWidget ships plotly.js (~5 MB) to the
    browser."""
    import plotly.graph_objects as go

    if widget is None:
        return go.FigureWidget(fig)
    # plotly.js merges a relayout into the old layout: settings of the old figure the new one lacks (an axis
    # title, a category order) would stay, so they are removed explicitly. The order matters: traces go out at
    # once (batch_update defers only restyle/relayout), so the old traces go, then the new layout (axis types),
    # then the new traces; new traces drawn on the old axes put category bars at NaN ("translate(NaN)")
    stale = _paths(widget.layout.to_plotly_json()) - _paths(fig.layout.to_plotly_json())
    widget.data = ()
    with widget.batch_update():
        widget.layout = fig.layout
        if stale:
            widget.plotly_relayout({path: None for path in sorted(stale)})
    widget.add_traces(list(fig.data))
    return widget


def _paths(layout: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted paths of a layout's leaf settings (lists are leaves); ``template`` is left alone."""
    out: set[str] = set()
    for key, value in layout.items():
        if key == "template":
            continue
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out |= _paths(value, path + ".")
        else:
            out.add(path)
    return out


class Status:
    """One status line for the dashboard: ``state`` is 'idle', 'busy', 'ok' or 'error'."""

    def __init__(self) -> None:
        self.widget = W.HTML(value="", layout=W.Layout(min_height="1.6em"))
        self.state = "idle"
        self.message = ""
        self.hint = ""
        self.internal: InternalError | None = None  # the last internal error shown, with its log file

    def _show(self, state: str, message: str, hint: str = "", *, internal: InternalError | None = None) -> None:
        self.state, self.message, self.hint, self.internal = state, message, hint, internal
        colour = {"error": "#b00020", "ok": "#1b5e20", "busy": "#555"}.get(state, "#333")
        text = html.escape(message) + (f"<br><i>hint: {html.escape(hint)}</i>" if hint else "")
        self.widget.value = f'<div class="wb-status wb-status-{state}" style="color:{colour}">{text}</div>'

    def busy(self, message: str) -> None:
        self._show("busy", message)

    def ok(self, message: str) -> None:
        self._show("ok", message)

    def error(self, exc: WorkbenchError) -> None:
        self._show("error", exc.message, exc.hint)

    def clear(self) -> None:
        """Empty the line (state 'idle')."""
        self._show("idle", "")

    def internal_error(self, exc: BaseException, doing: str) -> InternalError:
        """Log ``exc``'s traceback and show it as an internal error (state 'error', ``internal`` set)."""
        report = report_internal(exc, doing)
        self._show("error", report.line, report.hint, internal=report)
        return report

    @contextmanager
    def guard(self, doing: str) -> Iterator[None]:
        """Show ``doing`` while the block runs; show a WorkbenchError, or any other exception as an internal
        error, instead of raising it."""
        self.busy(f"{doing}…")
        try:
            yield
        except WorkbenchError as exc:
            self.error(exc)
        except Exception as exc:  # our bug: logged, shown as one line with the log file, never the user's fault
            self.internal_error(exc, doing)
        else:
            if self.state == "busy":
                self.ok(f"{doing}: done")


class Job:
    """A tab's one background task: a thread, a cancel event, a progress bar and Run/Cancel buttons that follow it.

    ``start(doing, fn)`` runs ``fn(job)`` in a daemon thread inside ``status.guard(doing)`` (so a WorkbenchError is
    shown, not raised); ``fn`` reports through ``job.report(done, total, phase)`` and polls ``job.cancelled``
    (or hands ``job.cancel_event`` / ``job.is_cancelled`` to the API call); a str it returns is the final phase
    (default "done"). Cancel shows "cancelling…", then "cancelled". Run is re-enabled at the end only if ``ready()``
    (default: always). ``wait()`` is for headless tests.
    """

    def __init__(
        self,
        status: Status,
        *,
        run_button: W.Button,
        cancel_button: W.Button,
        progress: W.FloatProgress | W.IntProgress,
        phase: W.Label | None = None,
        ready: Callable[[], bool] | None = None,
    ) -> None:
        import threading

        self.status = status
        self.run_button, self.cancel_button = run_button, cancel_button
        self.progress, self.phase = progress, phase
        self.ready = ready or (lambda: True)
        self.cancel_event = threading.Event()
        self._thread: threading.Thread | None = None
        cancel_button.disabled = True
        cancel_button.on_click(lambda _b: self.cancel())

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def is_cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def start(self, doing: str, fn: Any) -> bool:
        """Run ``fn(job)`` in the background; False (and nothing started) when a job is already running."""
        import threading

        if self.running:
            self.status.busy(f"{doing}: wait for the running task or cancel it")
            return False
        self.cancel_event.clear()
        self.report(0, 1, "starting")
        self.run_button.disabled, self.cancel_button.disabled = True, False

        def body() -> None:
            final = None
            try:
                with self.status.guard(doing):
                    final = fn(self)
                    if self.cancelled:
                        self.status.busy(f"{doing}: cancelled")
                        self.status.state = "idle"
                if self.cancelled:
                    self._set_phase("cancelled")
                elif self.status.state == "error":
                    self._set_phase("internal error" if self.status.internal is not None else "failed")
                else:
                    self.report(1, 1, final if isinstance(final, str) else "done")
            except Exception as exc:  # a bug after the guard (progress widgets, phase): still never "running"
                self.status.internal_error(exc, doing)
            finally:
                try:
                    ready = bool(self.ready())
                except Exception as exc:
                    self.status.internal_error(exc, f"{doing} (re-enabling Run)")
                    ready = True
                self.run_button.disabled, self.cancel_button.disabled = not ready, True

        self._thread = threading.Thread(target=body, name=f"workbench-{doing}", daemon=True)
        self._thread.start()
        return True

    def report(self, done: float, total: float, phase: str = "") -> None:
        """Progress callback: ``done`` of ``total`` (any units), with an optional phase label."""
        frac = 0.0 if total <= 0 else min(1.0, max(0.0, done / total))
        top = self.progress.max
        self.progress.value = int(round(frac * top)) if isinstance(self.progress, W.IntProgress) else frac * top
        if phase:
            self._set_phase(phase)

    def _set_phase(self, phase: str) -> None:
        if self.phase is not None:
            self.phase.value = phase

    def cancel(self) -> None:
        if self.running:
            self._set_phase("cancelling…")
        self.cancel_event.set()

    def wait(self, timeout: float | None = 300.0) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise TimeoutError(f"background task still running after {timeout} s")
