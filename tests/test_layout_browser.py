"""No clipped button or label at workshop-laptop widths (JupyterLab in Debian's chromium through Playwright, the lab
fixture of test_browser.py).

At 1024 px wide with the file browser open (as JupyterLab opens) and 800 px wide with it closed, every tab of ``Workbench("digits_cnn")`` is
shown and every visible button, label, checkbox text, tab title and text box in the dashboard is measured: text
is cut off when its box is narrower than its text (``scrollWidth > clientWidth``) and the box hides the rest
(``overflow`` hidden or an ellipsis). Before the dashboard's stylesheet (workbench/ui/styles.py) "workspac…",
"Export…" and "build in this process (a crash kills the ker…" were cut off.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_browser import (  # noqa: F401 - lab is a fixture
    CHROMIUM,
    KERNEL_IDLE,
    TOKEN,
    _launch,
    _shown_tab,
    _workbench_notebook,
    lab,
)

pytestmark = pytest.mark.browser

TABS = ("Model", "Edit", "Precision", "Calibrate", "Build", "Profile", "Debug")
WIDTHS = (1024, 800)
# what the dashboard shows cut off: the text of every visible element whose box hides part of its text
CLIPPED = """dash => {
  const sel = 'button, .widget-label, .widget-label-basic, label, .lm-TabBar-tabLabel, .widget-html-content, '
    + '.widget-inline-hbox > .widget-readout';
  const hides = s => ['hidden', 'clip'].includes(s.overflowX) || s.textOverflow === 'ellipsis';
  return Array.from(dash.querySelectorAll(sel))
    .filter(e => e.offsetParent !== null && e.textContent.trim() && e.scrollWidth > e.clientWidth + 1
            && hides(getComputedStyle(e)) && !e.closest('.wbg, .js-plotly-plot'))
    .map(e => `${e.tagName.toLowerCase()}.${(e.className.baseVal ?? e.className).split(' ')[0]} `
      + `${JSON.stringify(e.textContent.trim().slice(0, 60))} (${e.clientWidth} of ${e.scrollWidth} px)`);
}"""


def test_no_button_or_label_is_cut_off_at_narrow_widths(lab):  # noqa: F811 - the fixture
    from playwright.sync_api import expect, sync_playwright

    url, tmp = lab
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Debian's chromium is not installed ({CHROMIUM}): run `make chromium`")
    name = "narrow.ipynb"
    _workbench_notebook(tmp / "root" / name, tmp / "cache")
    cut: list[str] = []
    with sync_playwright() as p:
        browser = _launch(p)
        try:
            page = browser.new_page(viewport={"width": WIDTHS[0], "height": 900})
            dash = page.locator(".jp-OutputArea-output .wb-dashboard")
            page.goto(f"{url}/lab/tree/{name}?token={TOKEN}")
            page.wait_for_function(KERNEL_IDLE, timeout=120_000)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            expect(dash.locator(".wb-summary-line")).to_be_visible(timeout=120_000)
            for width in WIDTHS:
                page.set_viewport_size({"width": width, "height": 900})
                if width < 1000:  # the file browser closed: at 800 px it would leave the notebook 360 px
                    page.evaluate("window.jupyterapp.shell.collapseLeft()")
                for title in TABS:
                    dash.locator(".lm-TabBar-tab", has_text=title).first.click()
                    expect(dash.locator(".lm-TabBar-tab.lm-mod-current")).to_have_text(title)
                    expect(dash.locator(".wb-tab-placeholder", has_text=title)).to_have_count(0, timeout=60_000)
                    expect(_shown_tab(dash)).to_be_visible()
                    page.wait_for_timeout(300)  # lumino lays the page out on the next frame
                    cut += [f"{width} px, {title} tab: {c}" for c in dash.evaluate(CLIPPED)]
                    page.screenshot(path=str(tmp / f"narrow-{width}-{title}.png"))
        finally:
            browser.close()
    assert not cut, "cut off:\n" + "\n".join(dict.fromkeys(cut))
