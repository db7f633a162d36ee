"""The status line and the background Job every long-running tab shares."""

from __future__ import annotations

import threading

import ipywidgets as W

from workbench.errors import DataError
from workbench.ui.common import Job, Status


def _job() -> tuple[Job, Status, W.Button, W.Button, W.FloatProgress, W.Label]:
    status, run, cancel = Status(), W.Button(), W.Button()
    progress, phase = W.FloatProgress(min=0, max=1), W.Label()
    return Job(status, run_button=run, cancel_button=cancel, progress=progress, phase=phase), status, run, cancel, progress, phase


def test_guard_shows_workbench_errors_instead_of_raising() -> None:
    status = Status()
    with status.guard("loading"):
        raise DataError("input 'x' has NaN", hint="clean it")
    assert status.state == "error" and status.message == "input 'x' has NaN" and status.hint == "clean it"
    assert "hint: clean it" in status.widget.value
    with status.guard("loading"):
        pass
    assert status.state == "ok" and "loading: done" in status.widget.value


def test_job_runs_in_background_reports_progress_and_restores_buttons() -> None:
    job, status, run, cancel, progress, phase = _job()
    gate, reported, seen = threading.Event(), threading.Event(), []

    def work(j: Job) -> None:
        j.report(3, 4, "calibrating")
        seen.append((progress.value, phase.value, run.disabled, cancel.disabled))
        reported.set()
        gate.wait(5)

    assert job.start("calibrate", work)
    assert not job.start("calibrate", work)  # one at a time
    assert reported.wait(5)
    # the worker's report is posted, not written: the widgets still show the start until this thread applies it
    assert seen == [(0.0, "starting", True, False)]
    assert job.running  # asked here (the thread that made the job): the waiting updates are applied
    assert (progress.value, phase.value) == (0.75, "calibrating")
    gate.set()
    job.wait(5)
    assert (progress.value, phase.value, run.disabled, cancel.disabled) == (1.0, "done", False, True)
    assert status.state == "ok" and not job.running


def test_job_on_done_applies_the_result_on_the_thread_that_made_the_job() -> None:
    job, status, _run, _cancel, _progress, phase = _job()
    applied: list[tuple[int, str]] = []

    def done(result: int) -> str:
        applied.append((result, threading.current_thread().name))
        return f"done: {result}"

    job.start("sum", lambda j: sum(range(10)), done)
    job.wait(5)
    assert applied == [(45, threading.current_thread().name)]
    assert phase.value == "done: 45" and status.state == "ok"

    job.start("sum", lambda j: 1, lambda r: (_ for _ in ()).throw(DataError("bad result", hint="h")))
    job.wait(5)
    assert status.state == "error" and status.message == "bad result" and phase.value == "failed"


def test_job_cancel_and_errors() -> None:
    job, status, _run, cancel, progress, _phase = _job()

    def until_cancelled(j: Job) -> None:
        while not j.cancelled:
            j.cancel_event.wait(0.01)

    job.start("build", until_cancelled)
    cancel.click()
    job.wait(5)
    assert status.state == "idle" and "cancelled" in status.message and progress.value < 1.0

    def fails(j: Job) -> None:
        raise DataError("no samples in calib.npz", hint="give 100-500 samples")

    job.start("calibrate", fails)
    job.wait(5)
    assert status.state == "error" and status.message == "no samples in calib.npz"
    assert cancel.disabled


def test_job_final_phase_cancel_feedback_and_ready() -> None:
    status, run, cancel = Status(), W.Button(), W.Button()
    progress, phase = W.FloatProgress(min=0, max=1), W.Label()
    ready = [False]
    job = Job(status, run_button=run, cancel_button=cancel, progress=progress, phase=phase, ready=lambda: ready[0])

    job.start("calibrate", lambda j: "done: 300 samples")  # a returned str is the final phase
    job.wait(5)
    assert (progress.value, phase.value, status.state) == (1.0, "done: 300 samples", "ok")
    assert run.disabled and cancel.disabled  # not ready (e.g. the chosen backend is missing): Run stays off

    ready[0] = True
    started, seen = threading.Event(), []

    def until_cancelled(j: Job) -> None:
        j.report(1, 4, "25 samples")
        started.set()
        while not j.cancelled:
            j.cancel_event.wait(0.01)
        seen.append(phase.value)

    job.start("calibrate", until_cancelled)
    assert started.wait(5)
    cancel.click()
    job.wait(5)
    assert seen == ["cancelling…"] and phase.value == "cancelled" and progress.value == 0.25
    assert not run.disabled and cancel.disabled
    job.cancel()  # nothing running: the phase stays
    assert phase.value == "cancelled"
