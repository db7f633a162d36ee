"""Run the corpus suite one model per child process, smallest model first, and keep every result.

    python -m corpus.run [--models ID ...] [--ci] [--timeout SECONDS] [--no-report]
    python -m corpus.run --merge FILE ...    # merge results files (another worktree's run) into the committed copy

Each model runs in its own ``pytest tests/test_corpus.py`` child (``CORPUS=all CORPUS_MODELS=<id>``), which
writes its results to a file of its own (``CORPUS_RESULTS``) after every step, with the step it is in
(``running``). A child killed by a signal (the kernel's OOM killer: signal 9) or past ``--timeout`` is recorded
as a FAILED row for the step it was in ("killed by signal 9 (out of memory?) during fp16, peak RSS 8192 MB"); the
model's remaining steps run in a fresh child (once; after a second kill they are recorded as blocked), then the
next model. A run that is itself stopped keeps what it recorded.

Results merge row by row (model/step) into ``benchmarks/out/corpus_results.json`` after every child and into the
committed copy ``docs/corpus_results.json`` (from which ``python -m corpus.report`` renders docs/corpus.md in a
clean clone); a row is replaced only by a newer row of the same model and step, never dropped. CI (``make test``)
writes only ``benchmarks/out/``. Exit status: 1 when a step failed, else 0.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WORKING = ROOT / "benchmarks" / "out" / "corpus_results.json"
COMMITTED = ROOT / "docs" / "corpus_results.json"
STEPS = ("inspect", "check", "simplify", "fp16", "int8_tensorrt", "int8_onnxruntime", "compare", "layerwise",
         "debug", "build", "profile", "dashboard")
MAX_KILLS = 2  # per model: after the second kill its remaining steps are recorded as blocked

__all__ = ["Child", "merge", "merge_file", "run_child", "run_model", "main"]


# --- results files -----------------------------------------------------------------------------------------------


def _order(row: Mapping[str, Any]) -> tuple[str, int]:
    step = row.get("step", "")
    return row.get("model", ""), STEPS.index(step) if step in STEPS else len(STEPS)


def merge(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """``old`` results with ``new``'s rows (and model entries) added: a row replaces only the row of its own model and
    step, so no row of ``old`` is ever dropped."""
    rows = {f"{e['model']}/{e['step']}": e for e in old.get("results", [])}
    rows.update({f"{e['model']}/{e['step']}": e for e in new.get("results", [])})
    models = {k: dict(v or {}) for k, v in (old.get("models") or {}).items()}
    for k, v in (new.get("models") or {}).items():
        models[k] = {**models.get(k, {}), **(v or {})}
    out = {"generated": new.get("generated") or old.get("generated") or time.strftime("%Y-%m-%d %H:%M:%S"),
           "models": models, "results": sorted(rows.values(), key=_order)}
    if "running" in new:  # a suite child's own file: the step it is in (None between steps)
        out["running"] = new["running"]
    return out


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (a lock file in the temp folder) for a read-merge-write by one process at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]  # in the temp folder: none in the repository
    with open(Path(tempfile.gettempdir()) / f"corpus-results-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read(path: Path) -> dict[str, Any]:
    """A results file ({} when absent or unreadable: a child killed mid-write never leaves a half file, see write)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=float) + "\n")
    tmp.replace(path)


def merge_file(path: Path, new: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``new`` into the results file at ``path`` (locked, written atomically); the merged results."""
    with _locked(path):
        merged = merge(read(path), new)
        _write(path, merged)
    return merged


# --- one child ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Child:
    """How a child process ended: its exit status (negative: the signal that killed it), whether it ran past its
    timeout (and was killed), its wall seconds and the peak RSS of its largest process (MB)."""

    returncode: int
    timed_out: bool
    seconds: float
    peak_rss_mb: float

    @property
    def killed(self) -> bool:
        return self.timed_out or self.returncode < 0

    def why(self, step: str) -> str:
        """What ended a killed child, for the FAILED row of ``step``."""
        peak = f"peak RSS {self.peak_rss_mb:.0f} MB"
        if self.timed_out:
            return f"timed out after {self.seconds:.0f} s during {step} (killed), {peak}"
        sig = -self.returncode
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        oom = " (out of memory?)" if sig == signal.SIGKILL else f" ({name})"
        return f"killed by signal {sig}{oom} during {step}, {peak}"


def run_child(argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float | None = None,
              cwd: Path = ROOT) -> Child:
    """Run ``argv`` in a session of its own and wait; past ``timeout`` seconds its whole process group is killed.
    The peak RSS comes from the kernel (``wait4``): that of the child or of the largest process it waited for."""
    start = time.monotonic()
    proc = subprocess.Popen(list(argv), env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True)
    timed_out = False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if timeout is not None and time.monotonic() - start > timeout:
            timed_out = True
            _kill_group(proc.pid)
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.2)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    _kill_group(proc.pid)  # what it left behind (a builder worker of a killed child)
    return Child(proc.returncode, timed_out, round(time.monotonic() - start, 1), round(usage.ru_maxrss / 1024, 1))


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# --- one model ---------------------------------------------------------------------------------------------------


def suite_command() -> list[str]:
    """The child that runs the corpus suite (model, steps and results file come in its environment)."""
    return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "corpus", "--timeout=3600",
            str(ROOT / "tests" / "test_corpus.py")]


def _row(model: str, step: str, status: str, message: str, seconds: float = 0.0, **detail: Any) -> dict[str, Any]:
    return {"model": model, "step": step, "status": status, "message": message, "seconds": seconds, **detail}


def run_model(model: str, *, steps: Sequence[str] = STEPS, timeout: float | None = None,
              argv: Sequence[str] | None = None, workdir: Path, results: Path = WORKING) -> dict[str, Any]:
    """Run ``model``'s ``steps`` in child processes (``argv``, default :func:`suite_command`; the model, the steps
    left and the child's results file in ``CORPUS_MODELS``, ``CORPUS_STEPS``, ``CORPUS_RESULTS``), merging the rows
    into ``results``. A killed child's step is recorded FAILED and the steps after it run in a fresh child; a step a
    child that exited did not record is FAILED too. The results recorded for this model."""
    left = list(steps)
    kills: list[str] = []
    rows: dict[str, dict[str, Any]] = {}
    meta: dict[str, Any] = {}
    attempt = 0
    while left:
        attempt += 1
        mine = workdir / f"{model}.{attempt}.json"
        env = {**os.environ, "CORPUS": "all", "CORPUS_MODELS": model, "CORPUS_STEPS": ",".join(left),
               "CORPUS_RESULTS": str(mine)}
        child = run_child(argv or suite_command(), env=env, timeout=timeout)
        got = read(mine)
        meta = {**meta, **(got.get("models") or {})}
        done = {e["step"]: e for e in got.get("results", []) if e.get("model") == model}
        rows.update(done)
        prev = meta.get(model) or {}
        meta[model] = {**prev, "peak_rss_mb": max(child.peak_rss_mb, prev.get("peak_rss_mb", 0.0)),
                       "run_seconds": round(prev.get("run_seconds", 0.0) + child.seconds, 1)}
        if not child.killed:
            for s in left:
                if s not in done:
                    rows[s] = _row(model, s, "failed", f"not recorded: the suite's process exited with status "
                                                       f"{child.returncode} before this step")
            break
        running = got.get("running") or next((s for s in left if s not in done), left[-1])
        why = child.why(running)
        print(f"corpus.run: {model}: {why}", flush=True)
        rows[running] = _row(model, running, "failed", why, child.seconds, peak_rss_mb=child.peak_rss_mb)
        kills.append(running)
        left = [s for s in left[left.index(running) + 1:] if s not in done] if running in left else []
        if len(kills) >= MAX_KILLS and left:
            for s in left:
                rows[s] = _row(model, s, "blocked", f"not run: the model's process was killed during "
                                                    f"{' and '.join(kills)}")
            left = []
    found = {"generated": time.strftime("%Y-%m-%d %H:%M:%S"), "models": meta,
             "results": sorted(rows.values(), key=_order)}
    merge_file(results, found)
    return found


def _manifests(models: Sequence[str], ci: bool) -> list[dict[str, Any]]:
    from corpus.fetch import load_manifest, manifests

    chosen = [load_manifest(m) for m in models] if models else manifests(ci_only=ci)
    return sorted(chosen, key=lambda m: (m.get("size_bytes", 0), m["id"]))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=[], help="model ids (default: every manifest)")
    ap.add_argument("--ci", action="store_true", help="only the models marked ci")
    ap.add_argument("--steps", nargs="*", default=list(STEPS), choices=STEPS)
    ap.add_argument("--timeout", type=float, default=3 * 3600.0, help="seconds per child process")
    ap.add_argument("--results", default=str(WORKING), help="the working results file")
    ap.add_argument("--committed", default=str(COMMITTED), help="the committed copy the report reads")
    ap.add_argument("--no-report", action="store_true", help="do not render docs/corpus.md at the end")
    ap.add_argument("--merge", nargs="+", default=[], metavar="FILE",
                    help="merge these results files into the committed copy instead of running the suite")
    args = ap.parse_args(argv)
    results, committed = Path(args.results), Path(args.committed)
    for path in args.merge:
        found = read(Path(path))
        if not found.get("results"):
            print(f"corpus.run: {path} holds no results", file=sys.stderr)
            return 2
        merge_file(committed, {k: v for k, v in found.items() if k != "running"})
    if args.merge:
        if not args.no_report:
            from corpus.report import main as report

            report(["--results", str(committed)])
        return 0
    failed = 0
    with tempfile.TemporaryDirectory(prefix="corpus-run-") as tmp:
        for m in _manifests(args.models, args.ci):
            print(f"corpus.run: {m['id']} ({m.get('size_bytes', 0) / 1e6:.1f} MB)", flush=True)
            found = run_model(m["id"], steps=args.steps, timeout=args.timeout, workdir=Path(tmp), results=results)
            merge_file(committed, found)
            failed += sum(e["status"] == "failed" for e in found["results"])
    if not args.no_report:
        from corpus.report import main as report

        report(["--results", str(committed)])
    print(f"corpus.run: {failed} failed step(s); results in {results} and {committed}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
