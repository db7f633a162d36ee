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
    gate, seen = threading.Event(), []

    def work(j: Job) -> None:
        j.report(3, 4, "calibrating")
        seen.append((progress.value, phase.value, run.disabled, cancel.disabled))
        gate.wait(5)

    assert job.start("calibrate", work)
    assert not job.start("calibrate", work)  # one at a time
    gate.set()
    job.wait(5)
    assert seen == [(0.75, "calibrating", True, False)]
    assert (progress.value, phase.value, run.disabled, cancel.disabled) == (1.0, "done", False, True)
    assert status.state == "ok"


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
