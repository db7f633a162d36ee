"""The graph widget shows the session's model after an edit and after a page reload (JupyterLab in Debian's chromium
through Playwright, the lab fixture of test_browser.py).

The defect: after fusing BatchNorm and quantizing to INT8, reloading the page drew the original 17-node graph while
the summary line said 30 nodes. The test does what the user did in the dashboard (Edit: fuse BatchNorm; Calibrate:
quantize with these scales), counts the node boxes the Model tab's graph draws (fitted, so none is culled) and the
Edit tab's, compares each with the node count the kernel's summary line states, saves, reloads, and counts again
(and the calibration histogram draws again), then closes the notebook and opens it again (same kernel) and counts.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from test_browser import (  # noqa: F401 - lab is a fixture
    CHROMIUM,
    KERNEL_IDLE,
    TOKEN,
    _button,
    _launch,
    _shown_tab,
    _workbench_notebook,
    lab,
)

from workbench.graph import load_model

pytestmark = pytest.mark.browser

# the op nodes a graph widget draws (graph inputs/outputs are in:/out: boxes; no group is collapsed at this size)
OP_BOXES = """g => Array.from(g.querySelectorAll('.wbg-node'))
  .filter(n => !/^(in|out):/.test(n.dataset.id) && !n.classList.contains('group')).length"""


def test_graph_node_count_follows_edits_and_survives_a_reload(lab):  # noqa: F811 - the fixture
    from playwright.sync_api import expect, sync_playwright

    url, tmp = lab
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Debian's chromium is not installed ({CHROMIUM}): run `make chromium`")
    original = len(load_model("digits_cnn").graph.node)
    name = "edited.ipynb"
    _workbench_notebook(tmp / "root" / name, tmp / "cache")
    problems: list[str] = []
    with sync_playwright() as p:
        browser = _launch(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
            dash = page.locator(".jp-OutputArea-output .wb-dashboard")
            status = dash.locator(".wb-status")

            def tab(title: str):  # noqa: ANN202
                dash.locator(".lm-TabBar-tab", has_text=title).first.click()
                expect(dash.locator(".lm-TabBar-tab.lm-mod-current")).to_have_text(title)
                expect(dash.locator(".wb-tab-placeholder", has_text=title)).to_have_count(0, timeout=60_000)
                return _shown_tab(dash)

            def stated() -> int:
                """The node count the kernel's summary line states."""
                line = dash.locator(".wb-summary-line").inner_text()
                return int(re.search(r"(\d+) nodes", line).group(1))

            def drawn(panel, expected: int, where: str) -> None:  # noqa: ANN001
                """Fit the tab's graph, wait until it draws ``expected`` op boxes, fail with what it drew."""
                graph = panel.locator(".wbg").first
                expect(graph.locator(".wbg-node").first).to_be_visible(timeout=60_000)
                graph.locator(".wbg-fit").click()
                try:
                    page.wait_for_function(f"g => ({OP_BOXES})(g) === {expected}", arg=graph.element_handle(),
                                           timeout=30_000)
                except Exception:
                    info = graph.locator(".wbg-info").inner_text()
                    pytest.fail(f"{where}: the graph draws {graph.evaluate(OP_BOXES)} op boxes ({info}), "
                                f"the summary says {expected} nodes")

            page.goto(f"{url}/lab/tree/{name}?token={TOKEN}")
            page.wait_for_function(KERNEL_IDLE, timeout=120_000)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            expect(dash.locator(".wb-summary-line")).to_be_visible(timeout=120_000)
            assert stated() == original
            drawn(_shown_tab(dash), original, "at first")

            # Edit: fuse BatchNorm into the convolutions (fewer nodes)
            panel = tab("Edit")
            panel.locator(".widget-dropdown", has=page.locator("label", has_text="action")).locator("select") \
                .select_option("fuse BatchNorm into Conv/Gemm")
            _button(panel, "Apply").click()
            expect(dash.locator(".wb-summary-line")).not_to_contain_text(f"{original} nodes", timeout=60_000)
            fused = stated()
            assert fused < original
            drawn(panel, fused, "the Edit tab after fusing BatchNorm")
            drawn(tab("Model"), fused, "the Model tab after fusing BatchNorm")

            # Calibrate, then quantize with these scales (Q/DQ nodes: more nodes)
            panel = tab("Calibrate")
            _button(panel, "Calibrate").click()
            expect(panel.get_by_text(re.compile(r"^done: \d+ samples$"))).to_be_visible(timeout=120_000)
            _button(panel, "Quantize with these scales").click()
            expect(status).to_contain_text(re.compile(r"quantized \d+ nodes"), timeout=60_000)
            expect(dash.locator(".wb-summary-line")).not_to_contain_text(f"{fused} nodes", timeout=60_000)
            quantized = stated()
            assert quantized > fused
            drawn(tab("Model"), quantized, "the Model tab after quantizing")
            drawn(tab("Edit"), quantized, "the Edit tab after quantizing")

            # save and reload (a laptop waking up): the same counts, from the kernel's live state
            page.wait_for_function(KERNEL_IDLE, timeout=60_000)
            page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
            page.wait_for_timeout(1500)
            t0 = time.perf_counter()
            page.reload()
            expect(dash.locator(".wb-summary-line")).to_be_visible(timeout=60_000)
            page.wait_for_function("() => !document.body.innerText.includes('Loading widget')", timeout=120_000)
            print(f"\nreloaded in {time.perf_counter() - t0:.1f} s")
            assert stated() == quantized
            drawn(_shown_tab(dash), quantized, "the Edit tab (shown when saved) after the reload")
            drawn(tab("Model"), quantized, "the Model tab after the reload")
            # the calibration histogram (plotly.js from the kernel's one bundle widget) draws again too
            hist = tab("Calibrate").locator(".js-plotly-plot").first
            page.wait_for_function("gd => gd.querySelectorAll('.barlayer .point path').length > 10",
                                   arg=hist.element_handle(), timeout=60_000)
            assert page.get_by_text("Error displaying widget").count() == 0

            # close the notebook (its kernel keeps running) and open it again: the same, from the kernel
            page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
            page.wait_for_timeout(1000)
            page.evaluate("window.jupyterapp.shell.currentWidget.close()")
            expect(dash).to_have_count(0, timeout=30_000)
            page.evaluate(f"window.jupyterapp.commands.execute('docmanager:open', {{path: {name!r}}})")
            expect(dash.locator(".wb-summary-line")).to_be_visible(timeout=60_000)
            assert stated() == quantized
            drawn(tab("Model"), quantized, "the Model tab after reopening the notebook")
            drawn(tab("Edit"), quantized, "the Edit tab after reopening the notebook")
        finally:
            browser.close()
    ours = [m for m in problems if "Failed to load resource" not in m]
    assert not ours, ours
