"""The dashboard, headless: what it leaves in the kernel (every open widget is restored by a page reload), the
status line across tabs, and its HTML report."""

from __future__ import annotations

import warnings
from pathlib import Path

import ipywidgets as W

from workbench.errors import WorkbenchError
from workbench.ui.dashboard import Workbench

TABS = ("Edit", "Precision", "Calibrate", "Build", "Profile", "Debug")


def _open_widgets() -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return sum(1 for w in list(W.Widget.widgets.values()) if w.comm is not None)


def test_reopening_closes_the_replaced_tabs_widgets(tmp_path: Path) -> None:
    """Each open left every widget of the old tabs alive: thousands of models that a page reload restored."""
    wb = Workbench("digits_cnn", cache_dir=tmp_path)
    for title in TABS:
        wb.tabs[title]
    after_first = _open_widgets()
    for _ in range(3):
        assert wb.open("digits_cnn")
        for title in TABS:
            wb.tabs[title]
    assert _open_widgets() == after_first
    assert wb.open("no/such/model.onnx") is False and _open_widgets() == after_first  # the model stays


def test_reopening_closes_the_old_pages_after_the_tab_shows_the_new_ones(tmp_path: Path) -> None:
    """Closed while still the Tab's pages, the old pages left the browser's tab bar one by one; with the last gone the
    browser sent selected_index null and the new pages came with none shown (test_browser's quickstart: the Model
    tab's controls "not visible" after opening another model)."""
    wb = Workbench("digits_cnn", cache_dir=tmp_path)
    old_pages = list(wb.tab.children)
    still_shown: list[bool] = []  # per old page, when it was closed: was it still one of the Tab's pages?
    for page in old_pages:
        page.observe(lambda c, p=page: still_shown.append(any(p is x for x in wb.tab.children))
                     if c["new"] is None else None, "comm")
    assert wb.open("digits_cnn")
    assert len(still_shown) == len(old_pages) and not any(still_shown)
    assert wb.tab.selected_index == 0 and wb.tab.children[0] is wb.tabs["Model"].widget


def test_a_page_is_always_selected(tmp_path: Path) -> None:
    """The browser sends selected_index null when its tab bar loses every page: the dashboard shows the first."""
    wb = Workbench("digits_cnn", cache_dir=tmp_path)
    wb.tab.selected_index = 2
    wb.tab.selected_index = None
    assert wb.tab.selected_index == 0


def test_precision_rows_share_their_layouts_and_styles(tmp_path: Path) -> None:
    before = _open_widgets()
    Workbench("digits_cnn", cache_dir=tmp_path).tabs["Precision"]
    assert _open_widgets() - before < 450  # 40 rows of 4 widgets: ~560 models for the rows alone when not shared


def test_another_tabs_error_leaves_the_status_line_when_switching_tabs(tmp_path: Path) -> None:
    wb = Workbench("digits_cnn", cache_dir=tmp_path)
    wb.tab.selected_index = 1
    wb.status.error(WorkbenchError("no precision changes to apply", hint="pick a precision"))
    wb.tab.selected_index = 2
    assert wb.status.state == "idle" and wb.status.message == "" and "no precision" not in wb.status.widget.value
    wb.status.ok("calibrated")
    wb.tab.selected_index = 3
    assert wb.status.message == "calibrated"  # news that is not an error stays



def test_export_html_is_one_self_contained_report(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    from workbench.recipe import SetShapes

    wb = Workbench("digits_cnn", cache_dir=tmp_path / "cache")
    wb.session.apply(SetShapes(shapes={"input": (4, 1, 8, 8)}))
    profile = wb.tabs["Profile"]
    profile.iterations.value = 3
    profile.ort_button.click()
    profile.wait()
    assert wb.status.state == "ok", wb.status.message
    profile.view.value = "op type"
    charts = wb.charts()
    assert [c.layout.title.text for c in charts] == ["Time by op type"]
    path = wb.export_html(tmp_path / "r.html")
    doc = path.read_text()
    assert doc.count("* plotly.js v") == 1 and doc.count("Plotly.newPlot(") == 1  # plotly.js embedded once
    assert 'src="http' not in doc  # nothing fetched when it opens
    assert "digits_cnn.onnx" in doc and f"{len(wb.session.model.graph.node)} nodes" in doc
    assert "<li>set_shapes</li>" in doc and "&quot;set_shapes&quot;" in doc  # the recipe, as a list and its JSON
    assert all(n.name in doc for n in wb.session.model.graph.node)  # the layer table, every row
    assert "Time by op type" in doc
    monkeypatch.chdir(tmp_path)  # the button writes <model>-report.html into the notebook's folder
    wb.export_button.click()
    assert wb.status.state == "ok" and (tmp_path / "digits_cnn-report.html").is_file(), wb.status.message
