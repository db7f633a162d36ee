"""Builds in a child process: streamed log/progress, a REAL crashing child, timeout, cancel (tensorrt engineer)."""

from __future__ import annotations

import os
import threading

import onnx
import pytest
from models import conv_bn_relu_model

from workbench.backends.worker import TEST_CRASH_ENV, WorkerCrash, run_in_child
from workbench.errors import BackendUnavailable, BuildError


@pytest.fixture
def job(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(conv_bn_relu_model(), path)
    return {"backend": "tensorrt-rtx", "model_path": str(path), "engine_path": str(tmp_path / "m.engine")}


def test_child_builds_and_streams_log_and_progress(job):
    events = []
    r = run_in_child(job, on_event=events.append, timeout=120)
    assert r["built"] and r["bytes"] == os.path.getsize(job["engine_path"])
    kinds = {e["event"] for e in events}
    assert {"log", "progress", "stage"} <= kinds
    assert any("Input filename" in e.get("message", "") for e in events)  # the child's own builder log


@pytest.mark.parametrize("how, signal_name", [("segv", "SIGSEGV"), ("abort", "SIGABRT")])
def test_crashing_child_is_reported_with_signal_and_last_log_lines(job, monkeypatch, how, signal_name):
    monkeypatch.setenv(TEST_CRASH_ENV, how)  # read only by the worker entry point: it kills itself mid-build
    with pytest.raises(WorkerCrash) as err:
        run_in_child(job, timeout=120)
    exc = err.value
    assert exc.signal_name == signal_name and exc.returncode < 0
    assert signal_name in exc.message and "last log lines" in exc.message
    assert exc.log_tail and any("Opset version:    17" in line for line in exc.log_tail)  # the child's log
    assert isinstance(exc, BuildError) and "session is intact" in exc.hint
    assert not os.path.exists(job["engine_path"])  # nothing half-written
    monkeypatch.delenv(TEST_CRASH_ENV)
    assert run_in_child(job, timeout=120)["built"]  # the caller survived and can build again


def test_timeout_stops_the_child(job):
    with pytest.raises(BuildError) as err:
        run_in_child(job, timeout=0.01)
    assert "timed out" in err.value.message and "timeout" in err.value.hint
    assert not os.path.exists(job["engine_path"])


def test_cancel_from_a_progress_callback(job):
    stop = threading.Event()

    def on_event(e):
        if e["event"] == "progress":
            stop.set()

    with pytest.raises(BuildError) as err:
        run_in_child(job, on_event=on_event, cancel=stop, timeout=120)
    assert "cancelled" in err.value.message
    assert not os.path.exists(job["engine_path"])


def test_child_workbench_errors_keep_their_type(job):
    job["backend"] = "no-such-backend"
    with pytest.raises(BackendUnavailable) as err:
        run_in_child(job, timeout=120)
    assert "no-such-backend" in err.value.message


def test_next_build_uses_the_warm_spare_and_spares_are_bounded(job):
    from workbench.backends import worker

    worker.shutdown_spares()
    first = run_in_child(job, timeout=120)
    key, spare = worker._spares["tensorrt-rtx"]
    assert spare.poll() is None and spare.pid != first["worker_pid"]
    second = run_in_child(job, timeout=120)
    assert second["worker_pid"] == spare.pid  # the pre-started child did the work
    assert len(worker._spares) == 1
    worker.shutdown_spares()
    assert worker._spares == {} and spare.poll() is not None
    cold = run_in_child(job, timeout=120, keep_warm=False)
    assert cold["built"] and worker._spares == {}
