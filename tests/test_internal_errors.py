"""Our own bugs are internal errors: one line, the logged traceback's file, how to report it; never the user's fault.

The CLI exits 2 (user errors exit 1) and under --json prints {error, hint, internal: true, log}; a tab's status
shows the same line and the Job that ran into it ends (Run enabled again) instead of staying "running".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import ipywidgets as W
import pytest

from workbench.cli import main
from workbench.internal import EXIT_INTERNAL, log_dir, report_internal
from workbench.ui.common import Job, Status


def _boom(*_a, **_k):
    raise RuntimeError("summary exploded\nsecond line of the message")


def _logs() -> list[Path]:
    return sorted(log_dir().glob("internal-*.log")) if log_dir().is_dir() else []


def test_cli_internal_error_in_process_json(monkeypatch, capsys):
    import workbench.graph as graph  # workbench inspect imports summary from graph when it runs

    monkeypatch.setattr(graph, "summary", _boom)
    assert _logs() == []
    code = main(["inspect", "digits_cnn", "--json"])
    out, err = capsys.readouterr()
    assert code == EXIT_INTERNAL == 2
    r = json.loads(out)  # one JSON object, nothing else on stdout
    assert r["internal"] is True
    assert r["error"] == "internal error while running `workbench inspect`: RuntimeError: summary exploded"
    (log,) = _logs()
    assert r["log"] == str(log) and str(log) in r["hint"] and "report it" in r["hint"]
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "_boom" in text and "second line of the message" in text
    assert "Traceback" not in err  # the traceback is in the log, not on the terminal


def test_cli_internal_error_in_process_text(monkeypatch, capsys):
    import workbench.graph as graph  # workbench inspect imports summary from graph when it runs

    monkeypatch.setattr(graph, "summary", _boom)
    assert main(["inspect", "digits_cnn"]) == EXIT_INTERNAL
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert lines[0] == "error: internal error while running `workbench inspect`: RuntimeError: summary exploded"
    assert lines[1].startswith("hint: the full traceback is in ") and "Traceback" not in err
    # a user error still exits 1 and is not "internal"
    assert main(["inspect", "no_such_model.onnx", "--json"]) == 1
    r = json.loads(capsys.readouterr().out)
    assert "internal" not in r and "no_such_model" in r["error"]


def test_cli_internal_error_subprocess_real_command(tmp_path):
    """The installed entry point in a fresh process: a real `check` whose core raises (patched at start)."""
    code = ("import sys, workbench.check as c\n"
            "def boom(*a, **k): raise ZeroDivisionError('division by zero in our code')\n"
            "c.check_model = boom\n"
            "from workbench.cli import main; sys.exit(main(sys.argv[1:]))")
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    p = subprocess.run([sys.executable, "-c", code, "check", "digits_cnn", "--json"], capture_output=True, text=True,
                       timeout=120, env=env)
    assert p.returncode == 2, p.stderr
    r = json.loads(p.stdout)
    assert r["internal"] is True and "ZeroDivisionError: division by zero in our code" in r["error"]
    log = Path(r["log"])
    assert log.parent == tmp_path / "cache" / "onnx-trt-workbench" / "logs"
    assert "ZeroDivisionError" in log.read_text() and "Traceback" not in p.stderr


def test_unwritable_log_dir_still_reports_one_line(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # logs/ cannot be made under a file
    try:
        raise KeyError("k")
    except KeyError as exc:
        report = report_internal(exc, "testing")
    assert report.log is None and "could not be logged" in report.hint and report.line.endswith("KeyError: 'k'")


def test_many_reports_get_their_own_whole_files():
    for i in range(5):
        try:
            raise ValueError(f"bug {i}")
        except ValueError as exc:
            report_internal(exc, "testing")
    logs = _logs()
    assert len(logs) == 5 and sorted(f"bug {i}" in p.read_text() for i in range(5) for p in logs).count(True) == 5
    assert not list(log_dir().glob(".*.tmp"))  # no half-written temporaries left


def test_status_guard_shows_an_internal_error_and_the_kernel_survives():
    status = Status()
    with status.guard("applying the edit"):
        {}["missing"]  # noqa: B018 - our bug
    assert status.state == "error" and status.internal is not None
    assert status.message == "internal error while applying the edit: KeyError: 'missing'"
    assert status.internal.log and Path(status.internal.log).is_file() and "report it" in status.hint
    assert "internal error" in status.widget.value and "Traceback" not in status.widget.value
    with status.guard("again"):
        pass
    assert status.state == "ok" and status.internal is None


def test_job_whose_fn_raises_ends_with_the_internal_error_and_run_enabled():
    status, run, cancel = Status(), W.Button(), W.Button()
    progress, phase = W.FloatProgress(min=0, max=1), W.Label()
    job = Job(status, run_button=run, cancel_button=cancel, progress=progress, phase=phase)

    def fails(j: Job) -> None:
        j.report(1, 2, "halfway")
        raise RuntimeError("our bug in the middle")

    assert job.start("calibrating", fails)
    job.wait(10)
    assert not job.running
    assert status.state == "error" and status.message == "internal error while calibrating: RuntimeError: our bug in the middle"
    assert status.internal is not None and "our bug in the middle" in Path(status.internal.log).read_text()
    assert phase.value == "internal error" and progress.value == 0.5
    assert not run.disabled and cancel.disabled
    # the next run works as usual
    assert job.start("calibrating", lambda j: "done again")
    job.wait(10)
    assert status.state == "ok" and phase.value == "done again"


@pytest.mark.slow
def test_a_tab_action_that_hits_our_bug_shows_it(monkeypatch, tmp_path):
    """A real tab (Model: Check with TensorRT) whose core call raises a non-WorkbenchError."""
    import workbench.check as check_module
    from workbench import Session
    from workbench.ui.model_tab import ModelTab

    def boom(*_a, **_k):
        raise AttributeError("'NoneType' object has no attribute 'graph'")

    monkeypatch.setattr(check_module, "check_model", boom)
    status = Status()
    tab = ModelTab(Session("digits_cnn", cache_dir=tmp_path / "c"), status)
    tab.check_button.click()
    tab.job.wait(30)
    assert status.state == "error" and status.internal is not None
    assert status.message.startswith("internal error while checking the model with TensorRT: AttributeError")
    assert not tab.check_button.disabled and tab.cancel_button.disabled and tab.phase.value == "internal error"
