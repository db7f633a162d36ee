"""The joined view in JupyterLab (Debian's chromium through Playwright, the lab fixture of test_browser.py): a click on
a node box in the Model tab's graph shows, beside the tabs, the node's name, attributes and weight statistics (a
round trip: browser click -> kernel selection signal -> node facts -> browser), with no console errors."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from test_browser import CHROMIUM, KERNEL_IDLE, TOKEN, _launch, lab, write_notebook  # noqa: F401 - lab is a fixture

pytestmark = pytest.mark.browser

CELL = '''
from workbench import Workbench
wb = Workbench("digits_cnn")
wb
'''


def test_click_in_the_model_graph_shows_the_joined_view(lab):  # noqa: F811 - the fixture
    from playwright.sync_api import expect, sync_playwright

    url, tmp = lab
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Debian's chromium is not installed ({CHROMIUM}): run `make chromium`")
    write_notebook(tmp / "root" / "joined.ipynb", CELL)
    problems: list[str] = []
    with sync_playwright() as p:
        browser = _launch(p)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
            t0 = time.perf_counter()
            page.goto(f"{url}/lab/tree/joined.ipynb?token={TOKEN}")
            page.wait_for_function(KERNEL_IDLE, timeout=120_000)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            dash = page.locator(".wb-dashboard")
            view = dash.locator(".wb-node-view-body")
            expect(view).to_contain_text("select a node", timeout=120_000)
            graph = dash.locator(".wb-graph")
            expect(graph.locator(".wbg-node").first).to_be_visible(timeout=120_000)
            print(f"\ndashboard drawn: {time.perf_counter() - t0:.1f} s")
            search = graph.locator(".wbg-search")
            search.fill("/stem/stem.0/Conv")
            search.press("Enter")  # centres the box
            conv = graph.locator('.wbg-node[data-id="/stem/stem.0/Conv"]')
            expect(conv).to_be_visible(timeout=30_000)
            t1 = time.perf_counter()
            conv.click()
            expect(view.locator(".wb-nv-name")).to_have_text("/stem/stem.0/Conv", timeout=30_000)
            print(f"joined view after the click: {time.perf_counter() - t1:.2f} s")
            expect(view.locator(".wb-nv-op")).to_have_text("Conv")
            attrs = view.locator(".wb-nv-attrs")
            expect(attrs).to_contain_text("kernel_shape")
            expect(attrs).to_contain_text("[3, 3]")
            expect(view.locator(".wb-nv-weight").first).to_contain_text("stem.0.weight")
            expect(view.locator(".wb-nv-weight").first).to_contain_text(re.compile(r"min -?\d"))
            expect(view.locator("svg.wb-hist").first).to_be_visible()
            # the view sits beside the tabs, inside the page
            box, tabs = view.bounding_box(), dash.locator(".lm-TabBar").first.bounding_box()
            assert box["x"] >= tabs["x"] + tabs["width"] - 1 and box["x"] + box["width"] <= 1500, (box, tabs)
            # the row of the layer table followed the click
            expect(dash.locator(".wb-rows option:checked")).to_have_text(re.compile(r"^/stem/stem\.0/Conv\s"))
            assert page.get_by_text("Error displaying widget").count() == 0
            page.screenshot(path=str(tmp / "joined.png"))
        finally:
            browser.close()
    ours = [m for m in problems if "Failed to load resource" not in m]
    assert not ours, ours
