"""Issue #11: the Profile tab's tables can be selected and copied (headless check of the HTML and CSS sent).

In JupyterLab 4.6 + ipywidgets 8 here (Chromium through Playwright, a throwaway probe), a drag over the text of a
layer-table or comparison-table cell selected it, and no mousedown/selectstart handler cancelled it; the widget CSS
sets ``user-select: none`` only on tab bars, buttons and sliders. The tables state ``user-select: text``
themselves, so no container can take it away; this test checks that the HTML carries it.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import ipywidgets as W
import pytest
from test_profile_trt import graph, prof

from workbench.session import Session
from workbench.ui.common import Status
from workbench.ui.profile_tab import ProfileTab


class _Tables(HTMLParser):
    """Each <table>'s enclosing classes, and the text of every <style>."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[set[str]] = []
        self.tables: list[set[str]] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = set((dict(attrs).get("class") or "").split())
        if tag == "style":
            self._in_style = True
        elif tag == "table":
            self.tables.append(set().union(*self.stack, classes))
        if tag not in ("style", "br", "hr", "img", "input"):
            self.stack.append(classes)

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False
        elif tag not in ("br", "hr", "img", "input") and self.stack:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)


def _selectable_classes(styles: list[str]) -> set[str]:
    """Classes whose element and descendants get ``user-select: text`` from these style sheets."""
    found = set()
    for css in styles:
        for selectors, body in re.findall(r"([^{}]+)\{([^}]*)\}", css):
            if re.search(r"(^|;)\s*user-select\s*:\s*text", body):
                sel = [s.strip() for s in selectors.split(",")]
                found |= {s[1:] for s in sel if re.fullmatch(r"\.[\w-]+", s) and f"{s} *" in sel}
    return found


def _path_to(root: W.Widget, target: W.Widget) -> list[W.Widget] | None:
    if root is target:
        return [root]
    for child in getattr(root, "children", ()):
        path = _path_to(child, target)
        if path is not None:
            return [root, *path]
    return None


@pytest.fixture
def tab(tmp_path):
    tab = ProfileTab(Session("digits_cnn", cache_dir=tmp_path / "cache"), Status())
    for label in ("fp32", "fp16"):
        tab.layers_path.value, tab.profile_path.value, tab.label.value = str(graph(label)), str(prof(label)), label
        tab.import_button.click()
    tab.compare_with.value = ("fp32", "fp16")
    tab.compare_button.click()
    assert tab.status.state == "ok", tab.status.message
    return tab


@pytest.mark.parametrize("which", ["table_html", "compare_html"])
def test_every_table_is_in_a_box_that_states_user_select_text(tab, which):
    widget = getattr(tab, which)
    parsed = _Tables()
    parsed.feed(widget.value)
    expected = 1 if which == "table_html" else 2  # the layer rows; the comparison's summary and per-layer tables
    assert len(parsed.tables) == expected
    selectable = _selectable_classes(parsed.styles)
    assert selectable, "no style sheet makes the tables' text selectable"
    for classes in parsed.tables:
        assert classes & selectable, f"a table in {which} is outside every user-select:text box ({classes})"


@pytest.mark.parametrize("which", ["table_html", "compare_html"])
def test_tables_sit_in_plain_html_widgets_inside_boxes(tab, which):
    """Not in a control that takes the mouse (a button, a toggle, a select): an HTML widget in plain boxes."""
    widget = getattr(tab, which)
    path = _path_to(tab.widget, widget)
    assert path is not None and type(widget) is W.HTML
    assert all(type(w) in (W.VBox, W.HBox, W.Box) for w in path[:-1]), [type(w).__name__ for w in path]
