"""ui.figure_widget: figures load plotly.js from the kernel's one PlotlyBundle widget (the browser side is drawn by
tests/test_dashboard_browser.py and tests/test_graph_reload_browser.py, before and after a page reload)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("plotly", reason="the notebook extra (plotly) draws the dashboard's charts")


def test_figures_share_one_bundle_widget_and_ship_a_small_loader(tmp_path: Path):
    import plotly.graph_objects as go

    from workbench.ui.figure_widget import LOADER, FigureWidget, plotly_bundle

    bar = FigureWidget(go.Figure(go.Bar(x=["a", "b"], y=[1, 2])))
    line = FigureWidget(go.Figure(go.Scatter(x=[1, 2], y=[3, 4])))
    bundle = plotly_bundle()
    assert bundle.bundle == str(go.FigureWidget._esm) and len(bundle.bundle) > 1_000_000  # plotly's, whole
    for fig in (bar, line):
        state = fig.get_state()
        assert state["_esm"] == LOADER and len(state["_esm"]) < 5_000  # not plotly.js again
        assert state["_wb_bundle"] == f"IPY_MODEL_{bundle.model_id}"
    assert bar.data[0].type == "bar" and line.data[0].type == "scatter"
    assert bar.get_state()["_view_count"] is None  # no sync message per view removed
    first = bundle.model_id
    bundle.close()  # closed (e.g. Widget.close_all()): the next figure gets a new one
    again = FigureWidget()
    assert again.get_state()["_wb_bundle"] == f"IPY_MODEL_{plotly_bundle().model_id}" != f"IPY_MODEL_{first}"
    node = shutil.which("node")
    if node:  # a syntax error would leave every chart blank in the browser
        (tmp_path / "loader.mjs").write_text(LOADER)
        subprocess.run([node, "--check", str(tmp_path / "loader.mjs")], check=True)
