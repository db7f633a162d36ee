"""Threads: a background job computes off the kernel thread while the user edits; every widget write and every session
change event happens on the kernel thread (here the test's main thread), the session stays consistent, and the
job's result lands.

Every trait change of every widget goes through ``Widget.notify_change`` (which sends it to the browser): the tests
record the thread of each. Two ways the kernel thread gets the updates: with no event loop running (headless, a
script) ``Job.wait()`` applies them; in a kernel (an asyncio loop runs on the main thread, as ipykernel's does) the
loop applies them through ``call_soon_threadsafe`` without anyone waiting.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import ipywidgets as W
import pytest

from workbench import recipe as R
from workbench.table import Table
from workbench.ui.common import Job, Status
from workbench.ui.dashboard import Workbench
from workbench.workflows.model import layer_table

MAIN = threading.main_thread()


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str, str]]]:
    """(thread name, widget class, trait) of every widget trait change made while the test runs."""
    seen: list[tuple[str, str, str]] = []
    real = W.Widget.notify_change

    def notify_change(self: W.Widget, change: object) -> None:
        seen.append((threading.current_thread().name, type(self).__name__, str(getattr(change, "name", change))))
        real(self, change)

    monkeypatch.setattr(W.Widget, "notify_change", notify_change)
    yield seen


def _off_main(writes: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    return [w for w in writes if w[0] != MAIN.name]


def _job_with_gate(wb: Workbench) -> tuple[Job, threading.Event, threading.Event, Callable[[Job], Table]]:
    """The Model tab's job running a real computation (the layer table of the session's model) that also changes
    the session from the worker, as the tabs' older jobs did (set_calibration), then waits for the test's go."""
    tab = wb.tabs["Model"]
    started, go = threading.Event(), threading.Event()

    def work(job: Job) -> Table:
        session = wb.session
        assert session is not None
        table = layer_table(session)  # reads the model under the session's lock
        job.report(1, 3, "layer table read")
        session.set_calibration(R.CalibrationSettings(method="max", samples=8))  # a change from the worker
        job.report(2, 3, "waiting for the test")
        started.set()
        assert go.wait(60)
        return table

    return tab.job, started, go, work


def _edit_while_running(wb: Workbench) -> None:
    """What the user does meanwhile, on the kernel thread: bypass a Relu through the Edit tab's buttons, undo it,
    apply it again."""
    edit = wb.tabs["Edit"]
    relu = next(n.name for n in wb.session.model.graph.node if n.op_type == "Relu")
    edit.select([relu])
    edit.action.value = "bypass node"
    edit.apply_button.click()
    assert wb.status.state == "ok", wb.status.message
    edit.undo_button.click()
    edit.redo_button.click()
    assert wb.status.state == "ok", wb.status.message


def _check_consistent(wb: Workbench, rows: list[int], before: int) -> None:
    session = wb.session
    assert session is not None
    kinds = [e.kind for e in session.recipe.edits]
    assert kinds == ["bypass_node", "fuse_batchnorm"]  # the user's edit, then the one the job's result applied
    assert session.recipe.calibration == R.CalibrationSettings(method="max", samples=8)  # the worker's change kept
    assert rows == [before]  # the job's table is the model as it was when the job read it
    edit = wb.tabs["Edit"]
    assert edit.history.value == session.position == len(session.history) - 1
    assert len(edit.nodes.options) == len(session.model.graph.node)  # the Edit tab shows the current model
    model_tab = wb.tabs["Model"]
    assert model_tab.table is not None and len(model_tab.table) == len(layer_table(session))
    assert model_tab.phase.value == f"done: {before} rows" and model_tab.progress.value == 1.0
    assert not model_tab.check_button.disabled and model_tab.cancel_button.disabled


def test_a_job_and_edits_at_the_same_time_write_widgets_only_on_the_kernel_thread(tmp_path, writes) -> None:
    wb = Workbench("digits_cnn", cache_dir=tmp_path)
    wb.tabs["Edit"]  # built before the job, as a user who opened the tab
    job, started, go, work = _job_with_gate(wb)
    rows: list[int] = []
    events: list[str] = []
    wb.session.on_change(lambda _s: events.append(threading.current_thread().name))
    before = len(layer_table(wb.session))

    def done(table: Table) -> str:  # on the kernel thread: the only place the job's result touches the session
        rows.append(len(table))
        wb.session.apply(R.FuseBatchNorm())
        return f"done: {len(table)} rows"

    assert job.start("reading the layers", work, done)
    assert started.wait(60)
    assert job.running  # on the kernel thread: the worker's progress and change event are applied here, now
    assert wb.tabs["Model"].phase.value == "waiting for the test"
    assert wb.tabs["Edit"].recipe_json.value == wb.session.recipe.to_json()  # the worker's change is shown
    _edit_while_running(wb)
    assert wb.status.running == ["reading the layers"]  # the busy state stays visible under the edit's message
    assert "running: reading the layers" in wb.status.widget.value and "bypass" in wb.status.message
    go.set()
    job.wait(60)
    assert wb.status.running == [] and "running:" not in wb.status.widget.value

    assert _off_main(writes) == []
    assert len(writes) > 100  # the recorder saw the dashboard's writes (progress, tables, status, graph)
    assert events and set(events) == {MAIN.name}  # the worker's set_calibration too was delivered here
    _check_consistent(wb, rows, before)
    assert wb.status.state == "ok" and wb.status.message == "reading the layers: done"


def test_in_a_running_event_loop_the_updates_arrive_without_waiting(tmp_path, writes) -> None:
    """As in a kernel: the dashboard is made while an asyncio loop runs on the main thread; the worker's updates and
    its result are applied by that loop (call_soon_threadsafe) while the test's coroutine only sleeps."""
    rows: list[int] = []
    landed = threading.Event()

    async def scenario() -> tuple[Workbench, int]:
        wb = Workbench("digits_cnn", cache_dir=tmp_path)
        wb.tabs["Edit"]
        job, started, go, work = _job_with_gate(wb)
        before = len(layer_table(wb.session))

        def done(table: Table) -> str:
            rows.append(len(table))
            wb.session.apply(R.FuseBatchNorm())
            landed.set()
            return f"done: {len(table)} rows"

        assert job.start("reading the layers", work, done)
        while not started.is_set():
            await asyncio.sleep(0.01)
        while wb.tabs["Model"].phase.value != "waiting for the test":  # delivered by the loop, nobody drains
            await asyncio.sleep(0.01)
        _edit_while_running(wb)
        go.set()
        for _ in range(6000):  # up to a minute; the loop applies the end of the job
            if landed.is_set() and not job._active:
                break
            await asyncio.sleep(0.01)
        return wb, before

    wb, before = asyncio.run(scenario())
    assert landed.is_set()
    assert _off_main(writes) == []
    _check_consistent(wb, rows, before)


def test_in_a_real_kernel_the_job_captures_its_loop_and_delivers_there() -> None:
    """ipykernel (7.x here) runs cells on its asyncio loop in the main thread: a Job made in a cell captures it, and
    the worker's progress and the job's end are applied by that loop between cells, on the main thread, with no
    Job.wait()."""
    jupyter_client = pytest.importorskip("jupyter_client", reason="a real kernel needs jupyter_client (notebook extra)")
    km = jupyter_client.KernelManager(kernel_name="python3")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()

    def run(code: str) -> str:
        out: list[str] = []

        def hook(msg: dict) -> None:
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                out.append("\n".join(msg["content"]["traceback"]))

        kc.execute_interactive(code, output_hook=hook, timeout=120)
        return "".join(out)

    try:
        kc.wait_for_ready(timeout=120)
        made = run(
            "import asyncio, threading\n"
            "import ipywidgets as W\n"
            "from workbench.ui.common import Job, Status\n"
            "seen = []\n"
            "real = W.Widget.notify_change\n"
            "def record(self, change):\n"
            "    seen.append(threading.current_thread().name)\n"
            "    real(self, change)\n"
            "W.Widget.notify_change = record\n"
            "status, phase = Status(), W.Label()\n"
            "job = Job(status, run_button=W.Button(), cancel_button=W.Button(),\n"
            "          progress=W.FloatProgress(min=0, max=1), phase=phase)\n"
            "print(job._ui.loop is not None, job._ui.thread is threading.main_thread())\n"
            "def answer(j):\n"
            "    j.report(1, 2, 'half')\n"
            "    return 42\n"
            "job.start('answering', answer, lambda r: f'done: {r}')\n")
        assert made.split() == ["True", "True"], made
        ended = run(
            "for _ in range(6000):\n"
            "    if not job._active:\n"
            "        break\n"
            "    await asyncio.sleep(0.01)\n"  # the loop runs the posted updates; nobody calls job.wait()
            "print(job._active, phase.value, '|', status.message, '|', sorted(set(seen)))\n")
        assert ended.strip() == "False done: 42 | answering: done | ['MainThread']", ended
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_a_real_check_outdated_by_an_edit_is_not_shown(tmp_path, writes) -> None:
    """A real TensorRT-RTX check (child process) runs while the user fuses BatchNorm in the Edit tab: the report,
    applied on the kernel thread after the edit, is for the old model, so it is not shown; the next check's is."""
    pytest.importorskip("tensorrt_rtx", reason="the check builds with TensorRT-RTX (the rtx extra)")
    wb = Workbench("digits_cnn", cache_dir=tmp_path)
    model_tab, edit = wb.tabs["Model"], wb.tabs["Edit"]
    model_tab.check_button.click()
    edit.action.value = "fuse BatchNorm into Conv/Gemm"
    edit.apply_button.click()  # on the kernel thread, while the check runs in its worker
    model_tab.job.wait(300)
    assert model_tab.phase.value == "outdated" and model_tab.last_report is None and model_tab.report.value == ""
    assert "changed during the check" in wb.status.message
    model_tab.check_button.click()
    model_tab.job.wait(300)
    assert model_tab.last_report is not None and model_tab.last_report.buildable is True
    assert model_tab.last_report.nodes == len(wb.session.model.graph.node)  # the fused model's
    assert _off_main(writes) == []


# --- every tab's background action, headless on the sample model ------------------------------------------------


@pytest.fixture
def changes(tmp_path: Path) -> Iterator[tuple[Workbench, list[str]]]:
    """A dashboard on the sample model and the thread of every change of its session. The session's dispatcher is
    called in the thread that makes a change (it then posts the change events to the kernel thread), so wrapping it
    records where each change was made, not where its events were delivered."""
    wb = Workbench("digits_cnn", cache_dir=tmp_path / "cache")
    made: list[str] = []
    deliver = wb.session.dispatcher
    assert deliver is not None  # the dashboard delivers change events on the kernel thread

    def dispatch(run: Callable[[], None]) -> None:
        made.append(threading.current_thread().name)
        deliver(run)

    wb.session.set_dispatcher(dispatch)
    yield wb, made


def _calibrate(wb: Workbench) -> str:
    tab = wb.tabs["Calibrate"]
    assert Path(tab.data.value).name == "digits_calib.npz"  # found beside the model
    tab.method.value = "max"
    tab.run_button.click()
    tab.wait()
    assert wb.status.state == "ok", wb.status.message
    cache = tab.cache
    assert cache is not None and cache.method == "max"
    calibration = wb.session.recipe.calibration  # recorded in the session, by the kernel thread
    assert calibration is not None and calibration.method == "max" and calibration.samples == cache.samples > 0
    assert calibration.data.endswith("digits_calib.npz")
    assert tab.figure is not None and tab.tensor.value in cache.tensors and not tab.quantize_button.disabled
    return f"done: {cache.samples} samples"


def _quantize_to_target(wb: Workbench) -> str:
    _calibrate(wb)
    tab = wb.tabs["Calibrate"]
    tab.target_metric.value, tab.tolerance.value = "rel_l2", 0.5
    before = wb.session.position
    tab.quantize_button.click()
    tab.wait()
    assert wb.status.state == "ok", wb.status.message
    assert tab.result is not None and tab.result.target_metric is not None and tab.result.target_metric.met
    edits = wb.session.recipe.edits
    assert [e.kind for e in edits] == ["quantize"] and edits[0].exclude == tab.result.target_metric.kept
    assert wb.session.position == before + 1  # the fork's recipe adopted as one undoable step
    assert any(n.op_type == "QuantizeLinear" for n in wb.session.model.graph.node)
    return "done: target met"


def _debug(wb: Workbench) -> str:
    _calibrate(wb)
    wb.tabs["Calibrate"].quantize_button.click()  # quick, on the kernel thread
    assert wb.session.recipe.edits[-1].kind == "quantize"
    tab = wb.tabs["Debug"]
    assert Path(tab.data.value).name == "digits_test.npz"
    tab.max_samples.value = 64
    tab.compare_button.click()
    tab.wait()
    assert wb.status.state == "ok", wb.status.message
    assert tab.report is not None and tab.report.samples == 64 and "64 samples" in tab.summary.value
    assert tab.errors_fig is not None and tab.graph_fig is not None
    tab.metric.value = "rel_l2"
    tab.debug_button.click()
    tab.wait()
    assert wb.status.state == "ok", wb.status.message
    assert tab.result is not None and tab.result.sensitivity.table and tab.sensitivity_fig is not None
    assert tab.result.plan.message in tab.plan.value
    return tab.progress_label.value


def _build(wb: Workbench) -> str:
    pytest.importorskip("tensorrt_rtx", reason="builds on the CPU with TensorRT-RTX (the rtx extra)")
    tab = wb.tabs["Build"]
    tab.backend.value = "tensorrt-rtx"
    tab.opt_level.value = 0
    tab.build_button.click()
    tab.wait(600)
    assert wb.status.state == "ok", wb.status.message
    assert tab.result is not None and tab.result.engine_path.is_file()
    assert tab.engines.value == str(tab.result.engine_path) and wb.session.recipe.build is not None
    assert tab.log.value  # the builder's log lines, posted to the kernel thread
    return "done"


def _profile(wb: Workbench) -> str:
    tab = wb.tabs["Profile"]
    tab.iterations.value = 2
    tab.ort_button.click()
    tab.wait()
    assert wb.status.state == "ok", wb.status.message
    table = tab.profiles["ort-cpu"]
    timed = {n for nodes in table.column("onnx_nodes") for n in nodes}
    assert timed and timed <= {n.name for n in wb.session.model.graph.node}
    assert tab.shown.value == "ort-cpu" and tab.chart is not None and "ran with input 1x1x8x8" in tab.shapes_used.value
    saved = list((wb.session.cache_dir / "timings").glob(f"{wb.session.digest}-ort-cpu.json"))
    assert len(saved) == 1  # saved under the digest of the model it timed
    return "done: ort-cpu"


def _check(wb: Workbench) -> str:
    pytest.importorskip("tensorrt_rtx", reason="the check builds with TensorRT-RTX (the rtx extra)")
    tab = wb.tabs["Model"]
    tab.check_button.click()
    tab.job.wait(300)
    assert wb.status.state == "ok", wb.status.message
    assert tab.last_report is not None and tab.last_report.buildable is True
    assert tab.last_report.nodes == len(wb.session.model.graph.node) and tab.report.value
    return tab.last_report.verdict


ACTIONS = {"calibrate": _calibrate, "quantize to a target": _quantize_to_target, "debug": _debug,
           "build": _build, "profile": _profile, "check": _check}


@pytest.mark.parametrize("action", list(ACTIONS))
def test_each_tabs_background_action_writes_widgets_and_changes_the_session_on_the_kernel_thread(
        action: str, changes: tuple[Workbench, list[str]], writes: list[tuple[str, str, str]]) -> None:
    """Calibrate, quantize to a target, Compare and Find culprits, Build, Profile with ONNX Runtime and Check each
    run their work in a worker; each result lands (asserted per action) and every widget trait change and every
    change of the session was made on the main (kernel) thread."""
    wb, made = changes
    jobs = threading.active_count()
    phase = ACTIONS[action](wb)
    assert _off_main(writes) == []
    assert set(made) <= {MAIN.name}
    progress = [w for w in writes if w[1] in ("FloatProgress", "IntProgress") and w[2] == "value"]
    assert len(writes) >= 10 and progress  # the recorder saw the tab's writes (progress, status, results)
    tab = {"calibrate": "Calibrate", "quantize to a target": "Calibrate", "debug": "Debug", "build": "Build",
           "profile": "Profile", "check": "Model"}[action]
    label = getattr(wb.tabs[tab], "progress_label", None) or wb.tabs[tab].phase
    assert label.value == phase  # the job's end was shown (its final phase)
    assert wb.status.running == [] and threading.active_count() <= jobs


def test_a_fork_is_changed_in_a_worker_and_adopted_on_the_kernel_thread(tmp_path: Path) -> None:
    """Session.fork: a private copy (no history, no subscribers) a worker may change; Session.adopt takes its
    recipe as one undoable step, with the model the fork replayed (not replayed again)."""
    from workbench.session import Session

    session = Session("digits_cnn", cache_dir=tmp_path)
    seen: list[int] = []
    session.on_change(lambda s: seen.append(len(s.recipe.edits)))
    fork = session.fork()
    worker = threading.Thread(target=lambda: (fork.apply(R.FuseBatchNorm()),
                                              fork.set_calibration(R.CalibrationSettings(method="max"))))
    worker.start()
    worker.join(60)
    assert seen == [] and session.recipe.edits == () and len(fork.recipe.edits) == 1  # the session is untouched
    assert fork.history[0] == session.recipe
    session.adopt(fork)
    assert seen == [1] and session.recipe == fork.recipe and session.model is fork.model
    assert len(session.model.graph.node) < len(session.original.graph.node)
    session.undo()
    assert session.recipe.edits == () and session.recipe.calibration is None


def test_a_job_started_from_a_subshell_thread_shows_its_end_there(writes: list[tuple[str, str, str]]) -> None:
    """JupyterLab 4.6 sends widget messages over a kernel subshell: a click (and a tab built when first shown) runs
    on the subshell's thread and asyncio loop while the status line was made on the main thread. The job's end runs
    on the subshell's loop and writes the status line there at once (a kernel thread), so what on_done shows stays
    (it was posted to the idle main thread, then overwritten by the guard's '...: done'); the worker writes nothing."""
    status = Status()  # made by the cell, on the main thread (no loop runs here: nothing drains it)
    writes.clear()  # the status widget's own construction
    shown: list[str] = []
    subshell_names: list[str] = []

    async def click() -> None:  # the button handler, on the subshell thread's loop
        subshell_names.append(threading.current_thread().name)
        job = Job(status, run_button=W.Button(), cancel_button=W.Button(), progress=W.FloatProgress(max=1.0),
                  phase=W.Label())
        job.start("answering", lambda j: (j.report(1, 2, "half"), 42)[1],
                  lambda r: status.ok(f"the answer is {r}"))
        while job._active:  # the subshell's loop applies the job's end; nobody waits on the main thread
            await asyncio.sleep(0.01)
        shown.append(status.message)

    subshell = threading.Thread(target=lambda: asyncio.run(click()), name="subshell-1")
    subshell.start()
    subshell.join(60)
    assert shown == ["the answer is 42"] and status.message == "the answer is 42" and status.state == "ok"
    assert writes and {w[0] for w in writes} == {"subshell-1"}  # every write on the subshell thread, none on the worker
