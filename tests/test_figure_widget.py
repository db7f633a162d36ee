"""ui.figure_widget: plotly's widget bundle with its default export wrapped, for the installed plotly."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("plotly", reason="the notebook extra (plotly) draws the dashboard's charts")


def test_the_wrapper_applies_to_the_installed_plotly_bundle(tmp_path: Path):
    import plotly.graph_objects as go

    from workbench.ui.figure_widget import FigureWidget, figure_esm

    bundle, esm = str(go.FigureWidget._esm), figure_esm()
    # one default export, ours, wrapping the bundle's (a worker's source inside the bundle keeps its own); the
    # bundle's other exports kept
    assert esm.count(" as default") == bundle.count(" as default") - 1 and esm.count("export default ") == 1
    assert re.search(r"export default __wbPlotlyWidget\([\w$]+\);\s*$", esm)
    assert "as FigureModel" in esm and "as FigureView" in esm and len(esm) > len(bundle)
    widget = FigureWidget(go.Figure(go.Bar(x=["a", "b"], y=[1, 2])))
    assert widget.get_state()["_esm"] == esm and widget.data[0].type == "bar"
    node = shutil.which("node")
    if node:  # a syntax error would leave the chart blank in the browser (tests/test_dashboard_browser.py draws one)
        (tmp_path / "figure.mjs").write_text(esm)
        subprocess.run([node, "--check", str(tmp_path / "figure.mjs")], check=True)
