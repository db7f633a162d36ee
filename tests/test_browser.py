"""Real browser: the quickstart notebook in JupyterLab, in Debian's chromium through Playwright.

JupyterLab runs on a free localhost port with a token and isolated Jupyter/IPython settings, on a copy
of notebooks/01_quickstart.ipynb (autosave must never write outputs into the committed notebook).
The test runs all cells, checks the dashboard rendered (no "Error displaying widget", the Model tab,
the graph widget), then uses the controls and asserts what the kernel sent back.

A second test opens a generated notebook with ``Workbench("digits_cnn")``, shows every tab (its controls visible,
no widget errors, tracebacks, ellipsised buttons or charts cut off), then runs Profile (ONNX Runtime), Calibrate
(then quantizes the session) and Debug (FP32 vs the quantized session): their background-thread results, plotly
charts and the graph widget coloured by error must reach the page. Screenshots per tab go to the test's tmp dir; Profile's and Debug's to /tmp.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from workbench.graph import load_model

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "notebooks" / "01_quickstart.ipynb"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOT_COPY = Path("/tmp/wb_lab.png")
TOKEN = "wb-browser-test"
KERNEL_IDLE = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!(k && k.status === 'idle' && k.connectionStatus === 'connected');
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lab_env(tmp: Path) -> dict[str, str]:
    dirs = {name: tmp / sub for name, sub in (
        ("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"), ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("IPYTHONDIR", "ipython"), ("JUPYTERLAB_SETTINGS_DIR", "lab-settings"),
        ("JUPYTERLAB_WORKSPACES_DIR", "lab-workspaces"))}
    for d in dirs.values():
        d.mkdir(parents=True)
    # no "get notified about official Jupyter news?" popup over the page
    news = dirs["JUPYTERLAB_SETTINGS_DIR"] / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    return dict(os.environ, **{k: str(v) for k, v in dirs.items()})


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(QUICKSTART, root / QUICKSTART.name)
    port = _free_port()
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
         "--LabApp.expose_app_in_browser=True", "--ServerApp.open_browser=False"],
        env=_lab_env(tmp_path), cwd=root, stdout=subprocess.DEVNULL, stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            if proc.poll() is not None or _up(url):
                break
            time.sleep(0.5)
        if proc.poll() is not None or not _up(url):
            pytest.fail("JupyterLab did not start:\n" + (tmp_path / "lab.log").read_text()[-2000:])
        yield url, tmp_path
    finally:
        _shutdown(url, proc)
        log.close()


def _up(url: str) -> bool:
    try:
        urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=1)
        return True
    except Exception:
        return False


def _shutdown(url: str, proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            req = urllib.request.Request(f"{url}/api/shutdown", method="POST",
                                         headers={"Authorization": f"token {TOKEN}"})
            urllib.request.urlopen(req, timeout=10)
        except Exception:
            proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_quickstart_dashboard_renders_and_reacts(lab: tuple[str, Path]):
    from playwright.sync_api import expect, sync_playwright

    url, tmp = lab
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Debian's chromium is not installed ({CHROMIUM}): run `make chromium` "
                    "(or `apt-get install -y chromium` as root); Playwright's own browser download does not work here")
    model = load_model("digits_cnn")
    nodes = len(model.graph.node)
    convs = sum(n.op_type == "Conv" for n in model.graph.node)
    gemms = [n.name for n in model.graph.node if n.op_type == "Gemm"]
    maxpool = next(n.name for n in model.graph.node if n.op_type == "MaxPool")
    assert convs > 1 and len(gemms) == 1  # what the assertions below rely on
    shot = tmp / "lab.png"

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            t0 = time.perf_counter()
            page.goto(f"{url}/lab/tree/{QUICKSTART.name}?token={TOKEN}")
            page.wait_for_function(KERNEL_IDLE, timeout=120_000)
            print(f"\nlab page + kernel idle: {time.perf_counter() - t0:.1f} s")
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")

            dash = page.locator(".jp-OutputArea-output .wb-dashboard")
            try:
                expect(dash).to_be_visible(timeout=120_000)
            except AssertionError:
                page.screenshot(path=str(shot))
                errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
                pytest.fail("the dashboard did not render; cell errors: "
                            + " | ".join(errors.all_inner_texts())[-3000:] + f" (screenshot {shot})")
            expect(dash.locator(".lm-TabBar-tab", has_text="Model").first).to_be_visible(timeout=30_000)
            expect(dash.locator(".wb-summary-line")).to_contain_text(f"{nodes} nodes")
            expect(dash.locator(".wb-graph .wbg-node").first).to_be_visible(timeout=60_000)
            count = dash.locator(".wb-count")
            # the notebook's last cell filtered to Conv from Python: the front end shows what the kernel set
            expect(count).to_have_text(f"{convs} of {nodes} layers", timeout=120_000)
            page.wait_for_function(KERNEL_IDLE, timeout=120_000)
            print(f"all cells run, dashboard shown: {time.perf_counter() - t0:.1f} s")
            assert page.locator("text=Error displaying widget").count() == 0

            # a bad path: the status shows the error and hint, the model and its tabs stay
            dash.locator(".wb-path input").fill("no/such/model.onnx")
            dash.locator(".wb-open").click()
            expect(dash.locator(".wb-status-error")).to_contain_text("no/such/model.onnx", timeout=30_000)
            expect(dash.locator(".wb-status-error")).to_contain_text("hint:")
            expect(dash.locator(".wb-summary-line")).to_contain_text(f"{nodes} nodes")
            # then a good one: a fresh Model tab, all layers shown
            dash.locator(".wb-path input").fill("digits_cnn")
            dash.locator(".wb-open").click()
            expect(dash.locator(".wb-status-ok")).to_contain_text("opened digits_cnn.onnx", timeout=60_000)
            expect(count).to_have_text(f"{nodes} of {nodes} layers", timeout=30_000)
            expect(dash.locator(".lm-TabBar-tab", has_text="Model").first).to_be_visible()

            # now the user's turn: pick an op, type a filter, the table answers from the kernel
            dash.locator(".wb-op select").select_option("Conv")
            expect(count).to_have_text(f"{convs} of {nodes} layers", timeout=30_000)
            dash.locator(".wb-op select").select_option("all ops")
            dash.locator(".wb-filter input").fill("gemm")
            expect(count).to_have_text(f"1 of {nodes} layers", timeout=30_000)
            rows = dash.locator(".wb-rows select option")
            expect(rows).to_have_count(1, timeout=30_000)
            assert gemms[0] in rows.first.inner_text()

            # pick the row: the kernel answers with the node's details
            dash.locator(".wb-rows select").select_option(index=0)
            expect(dash.locator(".wb-details .wb-node-name")).to_have_text(gemms[0], timeout=30_000)
            expect(dash.locator(".wb-details .wb-node-op")).to_have_text("Gemm")
            assert page.locator("text=Error displaying widget").count() == 0

            # click a node box in the graph widget (found by its search box): its details come back
            graph = dash.locator(".wb-graph").first
            graph.scroll_into_view_if_needed()
            graph.locator(".wbg-search").fill(maxpool)
            graph.locator(".wbg-search").press("Enter")
            box = graph.locator(f'.wbg-node[data-id="{maxpool}"]')
            expect(box).to_be_visible(timeout=30_000)
            box.click()
            expect(dash.locator(".wb-details .wb-node-name")).to_have_text(maxpool, timeout=30_000)
            expect(dash.locator(".wb-details .wb-node-op")).to_have_text("MaxPool")
            expect(count).to_have_text(f"{nodes} of {nodes} layers")  # the filter made room for the node

            # another tab: built in the kernel when first shown, its placeholder replaced
            expect(dash.locator(".wb-tab-placeholder", has_text="Edit")).to_have_count(1)
            dash.locator(".lm-TabBar-tab", has_text="Edit").first.click()
            expect(dash.locator(".wb-tab-placeholder", has_text="Edit")).to_have_count(0, timeout=60_000)
            expect(dash.locator(".lm-TabBar-tab.lm-mod-current")).to_have_text("Edit")
            assert page.locator("text=Error displaying widget").count() == 0
            dash.locator(".lm-TabBar-tab", has_text="Model").first.click()
            print(f"open, filter, select, click, tabs done: {time.perf_counter() - t0:.1f} s")
            # Check with TensorRT: runs in a background thread (child-process build); the report arrives
            dash.locator(".wb-shapes input").fill("input:1x1x8x8,8x1x8x8,64x1x8x8")
            dash.locator(".wb-check-button").click()
            expect(dash.locator(".wb-report")).to_contain_text("buildable yes", timeout=120_000)
            expect(dash.locator(".wb-check-phase")).to_have_text("builds")
            expect(dash.locator(".wb-status-ok")).to_contain_text("TensorRT check: the model builds")
            dash.evaluate("e => e.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(300)
            page.screenshot(path=str(shot), full_page=False)
            print(f"check done, screenshot: {time.perf_counter() - t0:.1f} s")
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    shutil.copy(shot, SCREENSHOT_COPY)


TABS = ("Edit", "Precision", "Calibrate", "Build", "Profile", "Debug")
# one control per tab that only that tab shows: proof its widgets rendered as controls, not as text
TAB_CONTROLS = {"Edit": "Preview", "Precision": "Apply", "Calibrate": "Calibrate", "Build": "Build engine",
                "Profile": "Profile with ONNX Runtime", "Debug": "Compare layer by layer"}
PROFILE_SHOT, DEBUG_SHOT = Path("/tmp/wb_profile.png"), Path("/tmp/wb_debug.png")
# what a plotly graph div holds: its traces' (type, name, point count) as plotly.js received them from the kernel
PLOT_TRACES = "gd => (gd._fullData || []).map(t => [t.type, t.name, (t.x || []).length])"
# what the tab page on display cuts off: buttons whose label is ellipsised, plots reaching past the page's right edge
CUT_OFF = """page => {
  const right = page.getBoundingClientRect().right + 1;
  const shown = e => e.offsetParent !== null;
  // a plot inside a scrolling box can be scrolled to: then the box is what must fit
  const scroller = g => {
    for (let e = g.parentElement; e && e !== page; e = e.parentElement) {
      if (['auto', 'scroll'].includes(getComputedStyle(e).overflowX)) return e;
    }
    return g;
  };
  const past = e => Math.round(e.getBoundingClientRect().right - right);
  return [
    ...Array.from(page.querySelectorAll('button')).filter(b => shown(b) && b.scrollWidth > b.clientWidth + 1)
      .map(b => 'button ' + JSON.stringify(b.textContent.trim())),
    ...Array.from(page.querySelectorAll('.js-plotly-plot')).filter(g => shown(g) && past(scroller(g)) > 0)
      .map(g => 'plot ' + JSON.stringify((g.querySelector('.gtitle') || {}).textContent || '?')
        + ` ${past(scroller(g))} px past the right edge`),
  ];
}"""
# plotly.js drew at least n bar rectangles
BARS_DRAWN = "([gd, n]) => gd.querySelectorAll('.barlayer .point path').length >= n"


def write_notebook(path: Path, source: str) -> None:
    """A one-cell notebook running ``source`` (kernelspec metadata written: without it JupyterLab asks for a kernel
    in a dialog and nothing runs)."""
    import nbformat

    nb = nbformat.v4.new_notebook(metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"}})
    nb.cells = [nbformat.v4.new_code_cell(source)]
    nbformat.write(nb, path)


def _workbench_notebook(path: Path, cache: Path) -> None:
    """A notebook showing ``Workbench("digits_cnn")`` with its caches in ``cache``."""
    write_notebook(path, f'from workbench import Workbench\n\nwb = Workbench("digits_cnn", cache_dir={str(cache)!r})\nwb')


def _button(where, label: str):  # noqa: ANN001, ANN202 - playwright types are imported lazily
    """The button labelled ``label`` (its accessible name starts with the icon's glyph)."""
    return where.get_by_role("button", name=re.compile(rf"^\W*{re.escape(label)}$"))


def _shown_tab(dash):  # noqa: ANN001, ANN202
    """The dashboard's tab page on display (lumino hides the others with lm-mod-hidden)."""
    return dash.locator(".widget-tab > .widget-tab-contents > :not(.lm-mod-hidden)").first


def _launch(p):  # noqa: ANN001, ANN202
    return p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"])


def test_every_tab_renders_and_heavy_tabs_act(lab: tuple[str, Path]):
    """A generated notebook with ``Workbench("digits_cnn")``: every tab shows its controls; Profile (ONNX Runtime),
    Calibrate (+ quantize the session) and Debug (compare FP32 vs the quantized session) run and draw their charts."""
    from playwright.sync_api import expect, sync_playwright

    url, tmp = lab
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Debian's chromium is not installed ({CHROMIUM}): run `make chromium`")
    name = "workbench_tabs.ipynb"
    _workbench_notebook(tmp / "root" / name, tmp / "cache")
    shots: dict[str, Path] = {}

    with sync_playwright() as p:
        browser = _launch(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            dash = page.locator(".jp-OutputArea-output .wb-dashboard")
            status = dash.locator(".wb-status")

            def shoot(label: str) -> None:
                shots[label] = tmp / f"tab-{label.lower()}.png"
                page.screenshot(path=str(shots[label]))

            def clean(where: str) -> None:
                for bad in ("Error displaying widget", "Traceback"):
                    assert page.get_by_text(bad).count() == 0, f"{bad!r} on the page after {where}"
                broken = dash.locator(".wb-tab-crashed, .wb-tab-unavailable, .wb-status-error")
                assert broken.count() == 0, f"after {where}: " + " | ".join(broken.all_inner_texts())
                cut = _shown_tab(dash).evaluate(CUT_OFF)
                assert not cut, f"after {where}, cut off on screen: {cut}"

            def bars(plot, n: int) -> None:  # noqa: ANN001
                page.wait_for_function(BARS_DRAWN, arg=[plot.element_handle(), n], timeout=30_000)

            t0 = time.perf_counter()
            page.goto(f"{url}/lab/tree/{name}?token={TOKEN}")
            page.wait_for_function(KERNEL_IDLE, timeout=120_000)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            try:
                expect(dash.locator(".wb-summary-line")).to_be_visible(timeout=120_000)
            except AssertionError:
                shoot("failed")
                errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
                pytest.fail("the dashboard did not render; cell errors: "
                            + " | ".join(errors.all_inner_texts())[-3000:] + f" (screenshot {shots['failed']})")
            print(f"\ndashboard shown: {time.perf_counter() - t0:.1f} s")
            clean("showing the Model tab")

            # every tab: built in the kernel when first shown, its own controls visible, nothing broken
            for title in TABS:
                dash.locator(".lm-TabBar-tab", has_text=title).first.click()
                expect(dash.locator(".lm-TabBar-tab.lm-mod-current")).to_have_text(title)
                expect(dash.locator(".wb-tab-placeholder", has_text=title)).to_have_count(0, timeout=60_000)
                expect(_button(_shown_tab(dash), TAB_CONTROLS[title])).to_be_visible(timeout=30_000)
                clean(f"opening the {title} tab")
                shoot(title)
            print(f"all tabs shown: {time.perf_counter() - t0:.1f} s")

            # Profile: ONNX Runtime on this CPU -> a summary with the total, a bar chart with one bar per layer
            dash.locator(".lm-TabBar-tab", has_text="Profile").first.click()
            panel = _shown_tab(dash)
            _button(panel, "Profile with ONNX Runtime").click()
            summary = panel.locator(".wb-profile-summary")
            expect(summary).to_contain_text(re.compile(r"\d+ layers · total \d[\d.e-]* ms"), timeout=60_000)
            # the status says done in the same kernel handler, right after the chart; the browser applies it after
            # creating the chart's FigureWidget (the page's first: plotly.js loads), measured 5.6 s after the summary
            # on the 2-core test machine, so it gets the chart's timeout, not the default 5 s
            expect(status).to_contain_text(re.compile(r"ort-cpu|profiling with ONNX Runtime: done"), timeout=30_000)
            layers = int(re.search(r"(\d+) layers", summary.inner_text()).group(1))
            assert layers > 1
            chart = panel.locator(".js-plotly-plot")
            expect(chart).to_have_count(1, timeout=30_000)
            expect(chart).to_be_visible()
            bars(chart, min(layers, 20))
            traces = chart.evaluate(PLOT_TRACES)
            assert traces[0][0] == "bar" and traces[0][2] == min(layers, 20), traces
            clean("profiling")
            chart.scroll_into_view_if_needed()
            shoot("Profile-run")
            print(f"profile done: {time.perf_counter() - t0:.1f} s")

            # Calibrate: the bundled calibration split is offered; the run (a background thread) ends "done" and
            # fills the histogram chart
            dash.locator(".lm-TabBar-tab", has_text="Calibrate").first.click()
            panel = _shown_tab(dash)
            expect(panel.locator("input[list]")).to_have_value(re.compile(r"digits_calib\.npz$"))
            _button(panel, "Calibrate").click()
            expect(panel.get_by_text(re.compile(r"^done: \d+ samples$"))).to_be_visible(timeout=60_000)
            expect(status).to_contain_text("calibrated")
            expect(panel.locator(".wb-thresholds")).to_contain_text("entropy")
            hist = panel.locator(".js-plotly-plot")
            expect(hist).to_have_count(1, timeout=30_000)
            bars(hist, 10)
            traces = hist.evaluate(PLOT_TRACES)
            assert traces[0][:2] == ["bar", "histogram"] and traces[0][2] > 10, traces
            assert any(str(t[1]).startswith("threshold:") for t in traces), traces
            clean("calibrating")
            hist.scroll_into_view_if_needed()
            shoot("Calibrate-run")
            # quantize the session with these scales: the Debug tab's candidate
            _button(panel, "Quantize with these scales").click()
            expect(status).to_contain_text(re.compile(r"quantized \d+ nodes"), timeout=60_000)
            print(f"calibrate + quantize done: {time.perf_counter() - t0:.1f} s")

            # Debug: FP32 reference vs the quantized session on the bundled test split, layer by layer (a background
            # thread): the summary, the error-growth chart and the coloured graph appear
            dash.locator(".lm-TabBar-tab", has_text="Debug").first.click()
            panel = _shown_tab(dash)
            _button(panel, "Compare layer by layer").click()
            expect(panel.locator(".wb-compare")).to_contain_text("samples", timeout=60_000)
            expect(status).to_contain_text("comparing layer by layer: done")
            charts = panel.locator(".js-plotly-plot")
            expect(charts).to_have_count(1, timeout=30_000)
            graph = panel.locator(".wbg")  # the graph widget, coloured by each node's error, with its legend
            expect(graph.locator(".wbg-node").first).to_be_visible(timeout=30_000)
            expect(graph.locator(".wbg-legend")).to_contain_text("log10 rel L2")
            errors = charts.first
            expect(errors).to_be_visible()
            bars(errors, 2)
            traces = errors.evaluate(PLOT_TRACES)
            assert len(traces) >= 2 and all(t[2] > 1 for t in traces[:2]), traces
            clean("comparing")
            errors.scroll_into_view_if_needed()
            shoot("Debug-run")
            print(f"debug compare done: {time.perf_counter() - t0:.1f} s")

            # an exception in a widget callback (a click handled in the kernel) is not shown in the page: JupyterLab
            # logs it to the notebook's log console (checked: a handler raising RuntimeError shows its traceback there)
            page.evaluate("window.jupyterapp.commands.execute('logconsole:open')")
            logs = page.locator(".jp-LogConsole")
            expect(logs).to_contain_text("Log Level", timeout=30_000)
            assert "Traceback" not in logs.inner_text(), logs.inner_text()[-3000:]
        finally:
            browser.close()
    for shot in shots.values():
        assert shot.stat().st_size > 10_000, shot
    shutil.copy(shots["Profile-run"], PROFILE_SHOT)
    shutil.copy(shots["Debug-run"], DEBUG_SHOT)
