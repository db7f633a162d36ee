"""What every tab shares: a status line that shows errors (message + hint) and the tab protocol.

A tab is a class ``XTab(session, status)`` with ``title: str`` and ``widget`` (an ipywidgets Widget).
A button handler wraps its one Session/API call in ``with status.guard("doing X"):`` so a
:class:`~workbench.errors.WorkbenchError` is shown, not raised, and the kernel and session survive. Any other
exception is our bug: the guard shows it as an internal error (one line, where its traceback was logged, how to
report it; :mod:`workbench.internal`), never as the user's fault and never as a traceback in the cell output.

Threads: widgets are written on a kernel thread only (the main thread running cells, or the kernel subshell thread
JupyterLab's widget messages arrive on; never a job's worker). A tab's long task is a :class:`Job`: its ``fn`` computes in
a worker thread and returns a result, which ``on_done(result)`` shows (and records in the session) on the kernel
thread; progress and status writes from the worker are posted there (:class:`KernelThread`), and the session's change
events are delivered there (:func:`on_kernel_thread`). The tab reads its controls on the kernel thread before the job
starts; a workflow that changes the session runs on ``session.fork()`` (a private copy) in the worker, and ``on_done``
takes what it changed into the session (``session.adopt(fork)``, ``set_calibration``), unless the session changed
meanwhile (then the result is outdated and says so).
"""

from __future__ import annotations

import asyncio
import html
import threading
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol, TypeVar

import ipywidgets as W

from ..errors import WorkbenchError
from ..internal import InternalError, report_internal

__all__ = ["Guard", "Job", "KernelThread", "Status", "Tab", "kernel_thread", "on_kernel_thread", "refill"]

T = TypeVar("T")


class Tab(Protocol):
    """What the dashboard needs of a tab: a title and a widget, made from the session and the status line."""

    title: str
    widget: W.Widget

    def __init__(self, session: Any, status: Status) -> None: ...


def refill(widget: Any, fig: Any) -> Any:
    """Show plotly figure ``fig`` in FigureWidget ``widget`` (same object: traces and layout replaced), or in a new
    FigureWidget when ``widget`` is None. Reuse keeps the page's widget count (and a reload's work) down; plotly.js
    itself ships once per kernel (:mod:`workbench.ui.figure_widget`)."""
    from .figure_widget import FigureWidget  # plotly's, its removed views no longer updated

    if widget is None:
        return FigureWidget(fig)
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
    """One status line for the dashboard: ``state`` is 'idle', 'busy', 'ok' or 'error'. Safe from any thread: a
    write from another thread than the one that made it is posted there (:class:`KernelThread`)."""

    def __init__(self) -> None:
        self._ui = kernel_thread()
        self.widget = W.HTML(value="", layout=W.Layout(min_height="1.6em"))
        self.state = "idle"
        self.message = ""
        self.hint = ""
        self.internal: InternalError | None = None  # the last internal error shown, with its log file
        self.origin: threading.Thread | None = None  # the thread that asked for what the line shows
        self.running: list[str] = []  # background jobs under way (kernel thread only)

    def _show(self, state: str, message: str, hint: str = "", *, internal: InternalError | None = None,
              origin: threading.Thread | None = None) -> None:
        origin = origin or threading.current_thread()
        if not self._ui.here():
            self._ui.post(lambda: self._show(state, message, hint, internal=internal, origin=origin))
            return
        self.origin = origin
        self.state, self.message, self.hint, self.internal = state, message, hint, internal
        self._render()

    def _render(self) -> None:
        colour = {"error": "#b00020", "ok": "#1b5e20", "busy": "#555"}.get(self.state, "#333")
        text = html.escape(self.message) + (f"<br><i>hint: {html.escape(self.hint)}</i>" if self.hint else "")
        line = f'<div class="wb-status wb-status-{self.state}" style="color:{colour}">{text}</div>'
        if self.running:  # the busy state stays visible while another action writes the line
            line += ('<div class="wb-status-jobs" style="color:#555;font-size:90%">running: '
                     + html.escape(", ".join(self.running)) + "…</div>")
        self.widget.value = line

    def job_started(self, doing: str) -> None:
        """A background job began (on the kernel thread): listed under the line until :meth:`job_ended`."""
        self.running.append(doing)
        self._render()

    def job_ended(self, doing: str) -> None:
        """A background job's end was shown."""
        if doing in self.running:
            self.running.remove(doing)
        self._render()

    def busy(self, message: str) -> None:
        """Show ``message`` as work in progress."""
        self._show("busy", message)

    def ok(self, message: str) -> None:
        """Show ``message`` as a success."""
        self._show("ok", message)

    def error(self, exc: WorkbenchError) -> None:
        """Show a user error: its message and hint."""
        self._show("error", exc.message, exc.hint)

    def clear(self) -> None:
        """Empty the line (state 'idle')."""
        self._show("idle", "")

    def internal_error(self, exc: BaseException, doing: str) -> InternalError:
        """Log ``exc``'s traceback and show it as an internal error (state 'error', ``internal`` set)."""
        report = report_internal(exc, doing)
        self._show("error", report.line, report.hint, internal=report)
        return report

    def guard(self, doing: str, *, announce: bool = True) -> Guard:
        """Show ``doing`` while the block runs (``announce=False``: the line already says so); show a
        WorkbenchError, or any other exception as an internal error, instead of raising it."""
        return Guard(self, doing, announce)


class Guard:
    """:meth:`Status.guard`'s context manager. It swallows the exceptions it shows (``__exit__`` returns True), so
    a type checker knows the code after the block may run without the block having finished."""

    def __init__(self, status: Status, doing: str, announce: bool) -> None:
        self.status, self.doing, self.announce = status, doing, announce

    def __enter__(self) -> None:
        if self.announce:
            self.status.busy(f"{self.doing}…")

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> bool:
        if exc is None:
            if self.status.state == "busy":
                self.status.ok(f"{self.doing}: done")
            return False
        if isinstance(exc, WorkbenchError):
            self.status.error(exc)
            return True
        if isinstance(exc, Exception):  # our bug: logged, shown as one line with the log file, never the user's fault
            self.status.internal_error(exc, self.doing)
            return True
        return False  # KeyboardInterrupt, SystemExit: not ours to swallow


class Job:
    """A tab's one background task: a thread, a cancel event, a progress bar and Run/Cancel buttons that follow it.

    ``start(doing, fn, on_done=None)`` runs ``fn(job)`` in a daemon thread; ``fn`` computes (it reports through
    ``job.report(done, total, phase)`` and polls ``job.cancelled``, or hands ``job.cancel_event`` /
    ``job.is_cancelled`` to the API call) and returns its result. Every widget write and every session change
    happens on the kernel thread (the thread that made the Job): ``report`` from the worker posts the progress, and
    at the end ``on_done(result)`` runs there inside ``status.guard(doing)`` (a WorkbenchError from ``fn`` or
    ``on_done`` is shown, not raised). A str that ``on_done`` (or, without it, ``fn``) returns is the final phase
    (default "done"). A cancelled job's result is not applied (nor is the WorkbenchError its call raised on being
    cancelled shown); Cancel shows "cancelling…", then "cancelled". Run is
    re-enabled at the end only if ``ready()`` (default: always). ``wait()`` blocks until the job ended and its
    result was applied (headless tests and scripts, where no event loop delivers the updates).
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
        self.status = status
        self.run_button, self.cancel_button = run_button, cancel_button
        self.progress, self.phase = progress, phase
        self.ready = ready or (lambda: True)
        self.cancel_event = threading.Event()
        self._ui = kernel_thread()
        self._thread: threading.Thread | None = None
        self._active = False  # from start() until the end was shown on the kernel thread
        self._report_lock = threading.Lock()
        self._pending: tuple[float, str] | None = None  # the latest progress a worker reported, not yet shown
        cancel_button.disabled = True
        cancel_button.on_click(lambda _b: self.cancel())

    @property
    def running(self) -> bool:
        """True from :meth:`start` until the job's end has been shown (asked on the kernel thread, it applies the
        updates that are waiting)."""
        self._ui.drain()
        return self._active

    @property
    def cancelled(self) -> bool:
        """Whether Cancel was pressed (for ``fn`` to poll)."""
        return self.cancel_event.is_set()

    def is_cancelled(self) -> bool:
        """:attr:`cancelled` as a callable (a :data:`~workbench.cancel.Cancel` for API calls)."""
        return self.cancel_event.is_set()

    def start(self, doing: str, fn: Callable[[Job], T], on_done: Callable[[T], object] | None = None) -> bool:
        """Run ``fn(job)`` in the background, then ``on_done(result)`` on the kernel thread; False (and nothing
        started) when a job is already running."""
        if self.running:
            self.status.busy(f"{doing}: wait for the running task or cancel it")
            return False
        self.cancel_event.clear()
        self._active = True
        self.report(0, 1, "starting")
        self.run_button.disabled, self.cancel_button.disabled = True, False
        self.status.job_started(doing)
        self.status.busy(f"{doing}…")

        def body() -> None:
            try:
                outcome: tuple[bool, object] = (True, fn(self))
            except BaseException as exc:  # shown on the kernel thread, by the guard there
                outcome = (False, exc)
            self._ui.post(lambda: self._finish(doing, outcome, on_done))

        self._thread = threading.Thread(target=body, name=f"workbench-{doing}", daemon=True)
        self._thread.start()
        return True

    def _finish(self, doing: str, outcome: tuple[bool, object], on_done: Callable[[Any], object] | None) -> None:
        """The end of a job, on the kernel thread: apply the result, show the outcome, restore the buttons."""
        self._show_report()
        final: object = None
        if self.status.origin is not self._thread:  # the line shows something else since: the job's end replaces it
            self.status.busy(f"{doing}…")
        try:
            with self.status.guard(doing, announce=False):
                ok, value = outcome
                if not ok and not (self.cancelled and isinstance(value, WorkbenchError)):
                    raise value  # type: ignore[misc]
                if self.cancelled:
                    self.status.busy(f"{doing}: cancelled")
                    self.status.state = "idle"
                else:
                    final = on_done(value) if on_done is not None else value
            if self.cancelled:
                self._set_phase("cancelled")
            elif self.status.state == "error":
                self._set_phase("internal error" if self.status.internal is not None else "failed")
            else:
                self._write_progress(1.0, final if isinstance(final, str) else "done")
        except Exception as exc:  # a bug after the guard (progress widgets, phase): still never "running"
            self.status.internal_error(exc, doing)
        finally:
            try:
                ready = bool(self.ready())
            except Exception as exc:
                self.status.internal_error(exc, f"{doing} (re-enabling Run)")
                ready = True
            self.run_button.disabled, self.cancel_button.disabled = not ready, True
            self._active = False
            self.status.job_ended(doing)

    def report(self, done: float, total: float, phase: str = "") -> None:
        """Progress callback: ``done`` of ``total`` (any units), with an optional phase label. From the worker it
        posts the update to the kernel thread (the latest one wins while none is shown yet)."""
        frac = 0.0 if total <= 0 else min(1.0, max(0.0, done / total))
        if self._ui.here():
            self._write_progress(frac, phase)
            return
        with self._report_lock:
            first = self._pending is None
            keep = phase or (self._pending[1] if self._pending else "")
            self._pending = (frac, keep)
        if first:
            self._ui.post(self._show_report)

    def _show_report(self) -> None:
        with self._report_lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            self._write_progress(*pending)

    def _write_progress(self, frac: float, phase: str) -> None:
        top = self.progress.max
        self.progress.value = int(round(frac * top)) if isinstance(self.progress, W.IntProgress) else frac * top
        if phase:
            self._set_phase(phase)

    def _set_phase(self, phase: str) -> None:
        if self.phase is not None:
            self.phase.value = phase

    def cancel(self) -> None:
        """Ask the running job to stop (the phase says "cancelling…" until it has)."""
        if self.running:
            self._ui.post(lambda: self._set_phase("cancelling…"))
        self.cancel_event.set()

    def wait(self, timeout: float | None = 300.0) -> None:
        """Block until the job ended and its end was shown (on the kernel thread: the waiting updates are applied
        here)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise TimeoutError(f"background task still running after {timeout} s")
        self._ui.drain()


class KernelThread:
    """Runs UI work on a kernel thread, never on a job's worker: :meth:`post` from any thread.

    ipykernel runs cells on its asyncio loop in the main thread; JupyterLab (4.6, ``commsOverSubshells``) sends
    widget messages over a kernel subshell, so comm handlers (button clicks, a tab built when first shown) run on
    that subshell's thread and its asyncio loop. Either is a kernel thread: a thread running an asyncio loop may
    write widgets. The owner thread's loop (running when this object is made) is captured; work posted from a
    worker (no loop) is queued and the loop told (``call_soon_threadsafe``) to drain the queue. With no loop running
    (headless tests, plain python) the queue waits for the owner thread to :meth:`drain` it (``Job.wait()`` and
    ``Job.running`` do). Work posted on a kernel thread runs at once (on the owner: after what was queued before
    it). One per thread: :func:`kernel_thread`.
    """

    def __init__(self) -> None:
        self.thread = threading.current_thread()
        self.loop: asyncio.AbstractEventLoop | None = _running_loop()
        self._queue: deque[Callable[[], object]] = deque()
        self._lock = threading.Lock()
        self._draining = False

    def here(self) -> bool:
        """True on a kernel thread: the owner, or any thread running an asyncio loop (the kernel's main thread, a
        kernel subshell's). A job's worker runs none."""
        return threading.current_thread() is self.thread or _running_loop() is not None

    def post(self, fn: Callable[[], object]) -> None:
        """Run ``fn()`` on a kernel thread: now when called on one, else on the owner as soon as it gets to it."""
        if self.here():  # at once, and a failure raises to the caller as any direct call would
            self.drain()
            fn()
            return
        with self._lock:
            self._queue.append(fn)
        loop = self.loop
        if loop is not None and loop.is_running():
            try:
                loop.call_soon_threadsafe(self.drain)
            except RuntimeError:  # the loop closed meanwhile: the queue waits for drain()
                pass

    def drain(self) -> None:
        """Run what other threads posted, in order (on the owner thread only; elsewhere a no-op)."""
        if threading.current_thread() is not self.thread or self._draining:
            return
        self._draining = True
        try:
            while True:
                with self._lock:
                    if not self._queue:
                        return
                    fn = self._queue.popleft()
                self._run(fn)
        finally:
            self._draining = False

    @staticmethod
    def _run(fn: Callable[[], object]) -> None:
        try:
            fn()
        except Exception as exc:  # a UI update is our code: never lost silently, never fatal to the others
            report_internal(exc, "updating the dashboard")


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


_KERNEL_THREADS: dict[int, KernelThread] = {}
_KERNEL_LOCK = threading.Lock()


def kernel_thread() -> KernelThread:
    """The :class:`KernelThread` of the calling thread (made on first use; its loop re-read while none was seen)."""
    me = threading.current_thread()
    with _KERNEL_LOCK:
        kt = _KERNEL_THREADS.get(me.ident or 0)
        if kt is None or kt.thread is not me:
            kt = _KERNEL_THREADS[me.ident or 0] = KernelThread()
        elif kt.loop is None or kt.loop.is_closed():
            kt.loop = _running_loop()
        return kt


def on_kernel_thread(session: Any) -> None:
    """Have ``session``'s change events delivered on the calling (kernel) thread, whichever thread changed it."""
    if getattr(session, "dispatcher", None) is None and hasattr(session, "set_dispatcher"):
        session.set_dispatcher(kernel_thread().post)
