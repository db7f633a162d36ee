"""Crash-safe TensorRT work: run :func:`workbench.backends.trt.run_job` in a child process.

A TensorRT builder can segfault on real models, so builds and checks run in ``python -m
workbench.backends.worker`` by default. Protocol (JSON lines, no pickle): the parent writes the job as one
line on the child's stdin, later optionally ``{"op": "cancel"}``; the child writes events
(``log``, ``progress``, ``stage``) and finally one ``result`` or ``error`` line on its own protocol
stream (its original stdout; anything native code prints to stdout goes to stderr instead).

A warm spare child (Python, the workbench and the TensorRT module already imported, waiting for its job)
is kept per backend and environment, so a build does not pay the interpreter and library start-up
(``keep_warm=False`` or :func:`shutdown_spares` to avoid it; spares are killed at exit).

The parent streams events to a callback, enforces the timeout, forwards cancel (and kills the child if
it does not stop), and turns a child killed by a signal into :class:`WorkerCrash` with the signal name
and the last log lines. The caller always survives.

Test-only hook: when the environment variable ``WORKBENCH_TEST_CRASH`` is ``segv`` or ``abort``, the
worker entry point (:func:`main`, nothing else) kills itself with that signal at the first build
progress step, so tests exercise the crash path with a real crashing child.
"""

from __future__ import annotations

import atexit
import collections
import hashlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..cancel import Cancel, cancelled
from ..errors import BuildError, WorkbenchError

__all__ = ["WorkerCrash", "run_in_child", "shutdown_spares", "main", "TEST_CRASH_ENV"]

TEST_CRASH_ENV = "WORKBENCH_TEST_CRASH"
_CANCEL_GRACE_S = 3.0
_TAIL = 20


class WorkerCrash(BuildError):
    """The child process died from a signal (segfault, abort) or exited without a result."""

    def __init__(self, message: str, hint: str = "", *, signal_name: str | None = None,
                 returncode: int | None = None, log_tail: tuple[str, ...] = ()) -> None:
        super().__init__(message, hint)
        self.signal_name = signal_name
        self.returncode = returncode
        self.log_tail = log_tail


def _signal_name(returncode: int) -> str | None:
    if returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


_spares: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}  # backend -> (environment key, idle child)
_spares_lock = threading.Lock()


# Variables the child never reads (the job carries every path): a spare started under other values still fits.
_ENV_IGNORED = frozenset({"PYTEST_CURRENT_TEST", "XDG_CACHE_HOME", "MPLCONFIGDIR", "PWD", "OLDPWD"})


def _env_key(env: Mapping[str, str]) -> str:
    items = sorted((k, v) for k, v in env.items() if k not in _ENV_IGNORED)
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()


def _spawn(backend: str, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "workbench.backends.worker", "--preload", backend],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=dict(env), start_new_session=True,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def _take(backend: str, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """The idle spare for this backend when it was started with this environment, else a new child."""
    with _spares_lock:
        key, proc = _spares.pop(backend, ("", None))
    if proc is not None:
        if key == _env_key(env) and proc.poll() is None:
            return proc
        _stop(proc)
    return _spawn(backend, env)


def _replenish(backend: str, env: Mapping[str, str]) -> None:
    """Start the next spare (at most one per backend; a spare for another environment is replaced)."""
    key = _env_key(env)
    with _spares_lock:
        old = _spares.pop(backend, None)
        if old is not None and old[0] == key and old[1].poll() is None:
            _spares[backend] = old
            return
        _spares[backend] = (key, _spawn(backend, env))
    if old is not None:
        _stop(old[1])


def shutdown_spares() -> None:
    """Stop the idle warm worker processes (also done at interpreter exit)."""
    with _spares_lock:
        procs = [proc for _, proc in _spares.values()]
        _spares.clear()
    for proc in procs:
        _stop(proc)


atexit.register(shutdown_spares)


def run_in_child(
    job: Mapping[str, Any],
    *,
    timeout: float | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    cancel: Cancel = None,
    what: str = "the build",
    keep_warm: bool = True,
) -> dict[str, Any]:
    """Run one job in a child process and return its result dict.

    Raises :class:`WorkerCrash` when the child dies, :class:`BuildError` on timeout or cancel, and the
    child's own :class:`WorkbenchError` (as a BuildError with its message and hint) for bad input.
    """
    on_event = on_event or (lambda event: None)
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    backend = str(job.get("backend", ""))
    line = (json.dumps(dict(job)) + "\n").encode()
    proc = _take(backend, env) if keep_warm else _spawn(backend, env)
    try:
        assert proc.stdin is not None
        proc.stdin.write(line)
        proc.stdin.flush()
    except OSError:  # the spare died since it was checked: start a fresh child
        _stop(proc)
        proc = _spawn(backend, env)
        assert proc.stdin is not None
        proc.stdin.write(line)
        proc.stdin.flush()
    events: queue.Queue[dict[str, Any] | None] = queue.Queue()
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL)

    def read_events() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            try:
                events.put(json.loads(raw))
            except json.JSONDecodeError:
                tail.append(raw.decode(errors="replace").rstrip())
        events.put(None)

    def read_stderr() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            text = raw.decode(errors="replace").rstrip()
            if text:
                tail.append(text)

    threads = [threading.Thread(target=f, daemon=True) for f in (read_events, read_stderr)]
    for t in threads:
        t.start()

    deadline = None if timeout is None else time.monotonic() + timeout
    cancel_sent: float | None = None
    final: dict[str, Any] | None = None
    try:
        while True:
            try:
                event = events.get(timeout=0.05)
            except queue.Empty:
                event = {}
            if event is None:
                break
            if event:
                kind = event.get("event")
                if kind in ("result", "error", "exception"):
                    final = event
                    break
                else:
                    if kind == "log":
                        tail.append(f"[{event.get('level')}] {event.get('message')}")
                    on_event(event)
            now = time.monotonic()
            if cancel_sent is None and cancelled(cancel):
                cancel_sent = now
                try:
                    proc.stdin.write(b'{"op": "cancel"}\n')
                    proc.stdin.flush()
                except OSError:
                    pass
            if cancel_sent is not None and now - cancel_sent > _CANCEL_GRACE_S:
                proc.kill()
                proc.wait()
                raise BuildError(f"{what} was cancelled (the worker was stopped)",
                                 hint="nothing was written; start it again when ready")
            if deadline is not None and now > deadline:
                proc.kill()
                proc.wait()
                raise BuildError(f"{what} timed out after {timeout:.0f} s (the worker was stopped)",
                                 hint="raise the timeout (BuildSettings.timeout_s / --timeout) or lower --opt-level")
        returncode = proc.wait()
        for t in threads:
            t.join(timeout=1.0)
    finally:
        _stop(proc)

    if keep_warm and final is not None and final.get("event") == "result":
        _replenish(backend, env)  # after the job, so the spare's start-up does not compete with the build
    if final is not None and final.get("event") == "result":
        result = dict(final["result"])
        if cancel_sent is not None and not result.get("built"):
            raise BuildError(f"{what} was cancelled", hint="nothing was written; start it again when ready")
        return result
    if final is not None and final.get("event") == "error":
        from .. import errors

        cls = getattr(errors, str(final.get("type")), BuildError)
        cls = cls if isinstance(cls, type) and issubclass(cls, WorkbenchError) else BuildError
        raise cls(final.get("message", f"{what} failed"), hint=final.get("hint", ""))
    if final is not None and final.get("event") == "exception":
        raise RuntimeError(f"internal error in the build worker: {final.get('message')}\n{final.get('traceback', '')}")
    sig = _signal_name(returncode)
    last = tuple(tail)[-8:]
    shown = "\n".join(f"    {line}" for line in last) or "    (no log lines)"
    cause = f"crashed with {sig}" if sig else f"exited with code {returncode} without a result"
    raise WorkerCrash(
        f"the TensorRT worker {cause} during {what}; last log lines:\n{shown}",
        hint="the builder, not the workbench, crashed; your session is intact. Run `workbench check` to find "
             "unsupported nodes, simplify the graph (fold_constants, remove_identity) or try another TensorRT version",
        signal_name=sig, returncode=returncode, log_tail=last,
    )


def main() -> int:
    """Child entry point: read one job from stdin, run it, write events and the result as JSON lines."""
    if len(sys.argv) == 3 and sys.argv[1] == "--preload":  # a warm spare: load the libraries, then wait
        from .trt import import_backend

        try:
            import_backend(sys.argv[2])
        except WorkbenchError:
            pass  # reported properly when the job runs
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # native code printing to stdout must not corrupt the protocol stream
    sys.stdout = sys.stderr
    lock = threading.Lock()

    def send(obj: dict[str, Any]) -> None:
        with lock:
            proto.write(json.dumps(obj) + "\n")
            proto.flush()

    line = sys.stdin.readline()
    if not line:
        return 2
    job = json.loads(line)
    cancelled = threading.Event()

    def watch_stdin() -> None:
        for raw in sys.stdin:
            try:
                if json.loads(raw).get("op") == "cancel":
                    cancelled.set()
            except (json.JSONDecodeError, AttributeError):
                continue

    threading.Thread(target=watch_stdin, daemon=True).start()
    crash = os.environ.get(TEST_CRASH_ENV, "").lower()

    def emit(event: dict[str, Any]) -> None:
        send(event)
        if crash and event.get("event") == "progress":  # test-only hook, see the module docstring
            os.kill(os.getpid(), signal.SIGABRT if crash == "abort" else signal.SIGSEGV)

    from .trt import run_job

    try:
        result = run_job(job, emit, cancelled.is_set)
    except WorkbenchError as exc:
        send({"event": "error", "type": type(exc).__name__, "message": exc.message, "hint": exc.hint})
        return 1
    except Exception as exc:  # an internal bug: report it with its traceback, never hide it
        import traceback

        send({"event": "exception", "message": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
        return 1
    send({"event": "result", "result": {**result, "worker_pid": os.getpid()}})
    proto.close()
    sys.stderr.flush()
    os._exit(0)  # skip unloading the TensorRT libraries: the parent has what it needs


if __name__ == "__main__":
    sys.exit(main())
