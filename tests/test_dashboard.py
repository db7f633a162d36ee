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

