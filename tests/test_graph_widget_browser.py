"""The graph widget in JupyterLab, in Debian's chromium through Playwright (the lab fixture of test_browser.py).

A generated notebook shows two GraphWidgets (digits_cnn; digits_transformer with groups collapsed early) and
labels that the *kernel* fills from the widgets' traits (``selected``, ``info``), so each assertion on a label
is a round trip: browser -> kernel -> browser. The test counts drawn node boxes, clicks a box and reads the
selection back from the kernel, selects from Python (a button) and checks the box is highlighted and centred,
searches, expands a collapsed name-scope group, fits, and checks the console stayed free of errors.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from test_browser import CHROMIUM, KERNEL_IDLE, TOKEN, _launch, lab, write_notebook  # noqa: F401 - lab is a fixture

from workbench.graph import load_model
from workbench.plots.graph_data import graph_json

pytestmark = pytest.mark.browser

CELL = '''
import ipywidgets as W
from workbench.graph import load_model
from workbench.ui.graph_widget import GraphWidget

cnn = GraphWidget(load_model("digits_cnn"), height=420)
cnn.add_class("wb-test-cnn")
picked = W.Label(value="picked: -").add_class("wb-test-picked")
drawn = W.Label(value="drawn: -").add_class("wb-test-drawn")
cnn.observe(lambda c: setattr(picked, "value", "picked: " + ",".join(c["new"])), "selected")
cnn.observe(lambda c: setattr(drawn, "value", f"drawn: {c['new'].get('boxes')} of {c['new'].get('units')}"), "info")
cnn.add_overlay("ms", {"/fc/Gemm": 2.0, "/stem/stem.0/Conv": 1.0})
colour = W.Label(value="colour: op type").add_class("wb-test-colour")
cnn.observe(lambda c: setattr(colour, "value", "colour: " + c["new"].get("title", "op type")), "overlay")
button = W.Button(description="select fc from Python").add_class("wb-test-select")
button.on_click(lambda _b: setattr(cnn, "selected", ["/fc/Gemm"]))
tf = GraphWidget(load_model("digits_transformer"), height=420, collapse_above=30)
tf.add_class("wb-test-tf")
groups = W.Label(value="groups: -").add_class("wb-test-groups")
tf.observe(lambda c: setattr(groups, "value", f"groups: {c['new'].get('collapsed')} collapsed, "
                                             f"{c['new'].get('units')} boxes"), "info")
W.VBox([W.HBox([picked, drawn, colour, button]), cnn, groups, tf])
'''

# the centre of a node box relative to the centre of its widget's view, in pixels
OFF_CENTRE = """g => {
  const view = g.closest('.wbg-view').getBoundingClientRect(), r = g.getBoundingClientRect();
  return [r.x + r.width / 2 - (view.x + view.width / 2), r.y + r.height / 2 - (view.y + view.height / 2)];
}"""


def test_graph_widget_draws_selects_searches_and_collapses(lab):  # noqa: F811 - the fixture
    from playwright.sync_api import expect, sync_playwright

    url, tmp = lab
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Debian's chromium is not installed ({CHROMIUM}): run `make chromium`")
    cnn_model = load_model("digits_cnn")
    boxes_total = len(graph_json(cnn_model)["nodes"])  # 17 nodes + graph input + output
    assert boxes_total == len(cnn_model.graph.node) + 2
    relus = sum(n.op_type == "Relu" for n in cnn_model.graph.node)
    write_notebook(tmp / "root" / "graph.ipynb", CELL)
    problems: list[str] = []

    with sync_playwright() as p:
        browser = _launch(p)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1100})
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
            t0 = time.perf_counter()
            page.goto(f"{url}/lab/tree/graph.ipynb?token={TOKEN}")
            page.wait_for_function(KERNEL_IDLE, timeout=120_000)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            cnn = page.locator(".wb-test-cnn")
            expect(cnn.locator(".wbg-node").first).to_be_visible(timeout=120_000)
            print(f"\ngraph drawn: {time.perf_counter() - t0:.1f} s")
            assert page.get_by_text("Error displaying widget").count() == 0

            # boxes drawn: those in view (the rest are culled), the same number the kernel was told
            drawn = cnn.locator(".wbg-node rect.box")
            expect(page.locator(".wb-test-drawn")).to_have_text(re.compile(rf"drawn: \d+ of {boxes_total}$"),
                                                                 timeout=30_000)
            n = int(re.search(r"drawn: (\d+)", page.locator(".wb-test-drawn").inner_text()).group(1))
            assert 3 <= n <= boxes_total and drawn.count() == n
            # fit: the whole graph in view, every box drawn, and the kernel hears of it
            cnn.locator(".wbg-fit").click()
            expect(drawn).to_have_count(boxes_total, timeout=30_000)
            expect(page.locator(".wb-test-drawn")).to_have_text(f"drawn: {boxes_total} of {boxes_total}",
                                                                timeout=30_000)
            # a box shows op, name, key attributes and its folded weights; edges carry shape and dtype
            conv = cnn.locator('.wbg-node[data-id="/stem/stem.0/Conv"]')
            cnn.locator(".wbg-view").hover()
            page.mouse.wheel(0, -400)  # zoom in (labels show from 0.6) around the pointer
            cnn.locator(".wbg-search").fill("/stem/stem.0/Conv")
            cnn.locator(".wbg-search").press("Enter")
            expect(conv).to_contain_text("Conv", timeout=30_000)
            expect(conv).to_contain_text("k 3x3")
            expect(conv).to_contain_text("16x1x3x3")
            expect(cnn.locator(".wbg-elabel", has_text="x16x8x8 f32").first).to_be_visible()

            # click a box: the kernel's selected trait comes back through the label
            conv.click()
            expect(page.locator(".wb-test-picked")).to_have_text("picked: /stem/stem.0/Conv", timeout=30_000)
            expect(conv).to_have_class(re.compile(r"\bsel\b"))
            expect(cnn.locator(".wbg-details")).to_contain_text("stem.0.weight")  # the folded weights, expanded

            # select from Python: highlighted and centred in view
            page.locator(".wb-test-select").click()
            fc = cnn.locator('.wbg-node[data-id="/fc/Gemm"]')
            expect(fc).to_have_class(re.compile(r"\bsel\b"), timeout=30_000)
            expect(page.locator(".wb-test-picked")).to_have_text("picked: /fc/Gemm", timeout=30_000)
            dx, dy = fc.evaluate(OFF_CENTRE)
            assert abs(dx) < 3 and abs(dy) < 3, (dx, dy)
            expect(cnn.locator(".wbg-node.sel")).to_have_count(1)  # the conv is no longer selected

            # the colour menu: an overlay registered in the kernel, picked in the page, the kernel hears of it
            cnn.locator(".wbg-colour").select_option("ms")
            expect(page.locator(".wb-test-colour")).to_have_text("colour: ms", timeout=30_000)
            expect(cnn.locator(".wbg-legend")).to_contain_text("ms")
            expect(fc.locator("rect.box")).to_have_attribute("fill", "#fde725")  # the slowest: top of the scale
            cnn.locator(".wbg-colour").select_option("op type")
            expect(page.locator(".wb-test-colour")).to_have_text("colour: op type", timeout=30_000)

            # search by op: one match, marked and centred
            cnn.locator(".wbg-search").fill("maxpool")
            cnn.locator(".wbg-search").press("Enter")
            expect(cnn.locator(".wbg-count")).to_have_text("1 of 1", timeout=30_000)
            pool = cnn.locator('.wbg-node[data-id="/pool/MaxPool"]')
            expect(pool).to_have_class(re.compile(r"\bmatch\b"))
            dx, dy = pool.evaluate(OFF_CENTRE)
            assert abs(dx) < 3 and abs(dy) < 3, (dx, dy)
            cnn.locator(".wbg-search").fill("relu")  # by op type, name or written tensor: the Relus
            cnn.locator(".wbg-search").press("Enter")
            expect(cnn.locator(".wbg-count")).to_have_text(re.compile(rf"^\d of {relus}$"), timeout=30_000)

            # name-scope groups: the transformer opens with groups collapsed; a click expands one in place
            tf = page.locator(".wb-test-tf")
            label = page.locator(".wb-test-groups")
            expect(label).to_have_text(re.compile(r"groups: [1-9]\d* collapsed, \d+ boxes"), timeout=30_000)
            before_text = label.inner_text()
            before = [int(x) for x in re.findall(r"\d+", before_text)]
            tf.locator(".wbg-fit").click()
            group = tf.locator(".wbg-node.group").first
            expect(group).to_contain_text("nodes (click to expand)")
            members = int(re.search(r"(\d+) nodes", group.text_content()).group(1))
            group.click()
            expect(label).not_to_have_text(before_text, timeout=30_000)
            after = [int(x) for x in re.findall(r"\d+", label.inner_text())]
            assert after[1] > before[1] and after[1] <= before[1] - 1 + members, (before, after, members)
            assert page.get_by_text("Error displaying widget").count() == 0
            page.screenshot(path=str(tmp / "graph.png"))
        finally:
            browser.close()
    ours = [m for m in problems if "Failed to load resource" not in m]
    assert not ours, ours


def test_static_html_of_the_widget_draws_offline(tmp_path: Path):
    """GraphWidget.to_html(): the fragment a report embeds draws the graph from a file:// page, no kernel, no network."""
    from playwright.sync_api import sync_playwright

    from workbench.ui.graph_widget import GraphWidget

    w = GraphWidget(load_model("digits_cnn"))
    w.set_overlay({"/fc/Gemm": 1.0, "/Add": 3.0}, "ms")
    w.selected = ["/Add"]
    page_path = tmp_path / "report.html"
    page_path.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>{w.to_html()}</body></html>")
    problems: list[str] = []
    with sync_playwright() as p:
        browser = _launch(p)
        try:
            page = browser.new_page()
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.route("http*://**", lambda route: (problems.append(f"fetched {route.request.url}"), route.abort()))
            page.goto(page_path.as_uri())
            page.wait_for_selector(".wbg-node.sel", timeout=30_000)
            sel = page.locator(".wbg-node.sel")
            assert sel.get_attribute("data-id") == "/Add"
            assert sel.locator("rect.box").get_attribute("fill") == "#fde725"  # the overlay's top colour
            assert "ms" in page.locator(".wbg-legend").inner_text()
            assert page.locator(".wbg-node").count() >= 5
        finally:
            browser.close()
    assert not problems, problems
