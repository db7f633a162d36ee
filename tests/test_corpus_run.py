"""corpus.run: one model per child process; a child killed by a signal (as the OOM killer does) or past its timeout
is recorded as FAILED for the step it was in, the model's other steps run in a fresh child, and no recorded row is
ever dropped. The children here are real processes (a stand-in for the suite that follows its file protocol:
CORPUS_STEPS in, CORPUS_RESULTS out with the step it is in), killed by real signals."""

from __future__ import annotations

import json
import sys

import pytest

from corpus import report
from corpus.run import merge, merge_file, read, run_child, run_model

# The suite's protocol: before each step write {"running": step}, after it the step's row. DIE_AT: steps at which
# it kills itself with SIGKILL after touching 64 MB (what the OOM killer does to the real suite); HANG_AT: a step
# at which it sleeps past any timeout.
SUITE = r"""
import json, os, signal, time
model, path = os.environ["CORPUS_MODELS"], os.environ["CORPUS_RESULTS"]
rows = []
def write(running):
    with open(path + ".tmp", "w") as f:
        json.dump({"models": {model: {"title": "stand-in"}}, "results": rows, "running": running}, f)
    os.replace(path + ".tmp", path)
for step in os.environ["CORPUS_STEPS"].split(","):
    write(step)
    if step in os.environ.get("DIE_AT", "").split(","):
        blob = bytearray(64 << 20)
        blob[::4096] = b"x" * len(blob[::4096])
        os.kill(os.getpid(), signal.SIGKILL)
    if step == os.environ.get("HANG_AT"):
        time.sleep(120)
    rows.append({"model": model, "step": step, "status": "ok", "message": "", "seconds": 0.0})
write(None)
"""
STEPS = ("inspect", "check", "simplify", "fp16", "build")


def _run(tmp_path, **kw):
    return run_model("m", steps=STEPS, argv=[sys.executable, "-c", SUITE], workdir=tmp_path,
                     results=tmp_path / "results.json", **kw)


def _by_step(found):
    return {e["step"]: e for e in found["results"]}


def test_a_killed_child_fails_its_step_and_the_others_run(tmp_path, monkeypatch):
    monkeypatch.setenv("DIE_AT", "simplify")
    rows = _by_step(_run(tmp_path))
    assert [rows[s]["status"] for s in STEPS] == ["ok", "ok", "failed", "ok", "ok"]
    message = rows["simplify"]["message"]
    assert message.startswith("killed by signal 9 (out of memory?) during simplify, peak RSS ")
    assert rows["simplify"]["peak_rss_mb"] >= 64
    assert _by_step(read(tmp_path / "results.json")) == rows  # merged into the working file


def test_a_second_kill_blocks_the_rest(tmp_path, monkeypatch):
    monkeypatch.setenv("DIE_AT", "check,fp16")
    rows = _by_step(_run(tmp_path))
    assert [rows[s]["status"] for s in STEPS] == ["ok", "failed", "ok", "failed", "blocked"]
    assert "killed during check and fp16" in rows["build"]["message"]


def test_a_child_past_its_timeout_is_killed_and_failed(tmp_path, monkeypatch):
    monkeypatch.setenv("HANG_AT", "fp16")
    rows = _by_step(_run(tmp_path, timeout=2.0))
    assert rows["fp16"]["status"] == "failed"
    assert rows["fp16"]["message"].startswith("timed out after 2 s during fp16 (killed)")
    assert rows["build"]["status"] == "ok"


def test_run_child_reports_the_signal_of_a_real_killed_process():
    child = run_child([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"])
    assert child.returncode == -11 and child.killed and not child.timed_out
    assert child.why("build").startswith("killed by signal 11 (SIGSEGV) during build")
    assert run_child([sys.executable, "-c", "raise SystemExit(3)"]).returncode == 3


def test_merge_replaces_rows_of_the_same_step_and_drops_none(tmp_path):
    old = {"models": {"a": {"title": "A"}, "b": {"title": "B"}},
           "results": [{"model": "a", "step": "inspect", "status": "ok"},
                       {"model": "b", "step": "inspect", "status": "failed"},
                       {"model": "b", "step": "check", "status": "ok"}]}
    path = tmp_path / "committed.json"
    path.write_text(json.dumps(old))
    merged = merge_file(path, {"models": {"b": {"peak_rss_mb": 10.0}},
                               "results": [{"model": "b", "step": "inspect", "status": "ok"}]})
    assert {(e["model"], e["step"]): e["status"] for e in merged["results"]} == {
        ("a", "inspect"): "ok", ("b", "inspect"): "ok", ("b", "check"): "ok"}
    assert merged["models"]["b"] == {"title": "B", "peak_rss_mb": 10.0}
    assert read(path) == merged
    assert merge(merged, {"results": []})["results"] == merged["results"]


def test_the_report_reads_the_committed_results_and_counts_builds(tmp_path):
    results = {"models": {}, "results": [
        {"model": "a", "step": "build", "status": "ok", "builds_raw": True, "repairs": []},
        {"model": "b", "step": "check", "status": "refused", "message": "x", "builds_raw": False,
         "builds_repaired": True, "repairs": ["split_shared_dims"]},
        {"model": "b", "step": "build", "status": "refused", "message": "y", "builds_raw": False,
         "builds_repaired": True, "repairs": ["split_shared_dims"]},
        {"model": "c", "step": "build", "status": "refused", "message": "z", "builds_raw": False,
         "builds_repaired": None, "repairs": []}]}
    lines = report.build_counts(results["results"])
    assert lines[0].startswith("**1 of 3 build raw, 1 more after the suggested repairs**")
    assert "- `b`: repairs `split_shared_dims`: builds" in lines
    assert "- `c`: repairs none offered: not built" in lines
    assert report.RESULTS.relative_to(report.ROOT).as_posix() == "docs/corpus_results.json"
    if not report.RESULTS.is_file():
        pytest.skip("no committed corpus results yet")
    out = tmp_path / "corpus.md"
    assert report.main(["-o", str(out)]) == 0
    committed = read(report.RESULTS)
    some = committed["results"][0]["model"]
    assert f"`{some}`" in out.read_text()
