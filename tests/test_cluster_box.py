"""The dashboard's Cluster box on a real local cluster (headless widgets)."""

from __future__ import annotations

import pytest

pytest.importorskip("distributed", reason="the cluster extra (dask.distributed), which make test installs")
pytest.importorskip("ipywidgets", reason="the notebook extra, which make test installs")

from workbench.ui.cluster_box import ClusterBox  # noqa: E402
from workbench.ui.dashboard import Workbench  # noqa: E402


def test_cluster_box_connects_lists_workers_and_disconnects():
    box = ClusterBox()
    box.connect("tcp://127.0.0.1")  # no port: a user error in the status line, nothing connected
    assert box.cluster is None and "not a scheduler address" in box.status.widget.value
    box.connect("local:2")
    try:
        assert box.cluster is not None and len(box.cluster.workers()) == 2
        table = box.table.value
        assert table.count("<tr>") == 3 and "trt_rtx=1" in table and "tensorrt-rtx" in table and "no GPU" in table
        assert "install bokeh" in table  # no bokeh here: no dashboard link is offered
        assert box.disconnect_button.disabled is False and box.connect_button.disabled is True
    finally:
        box.disconnect()
    assert box.cluster is None and "not connected" in box.table.value


def test_the_dashboard_has_a_cluster_box():
    wb = Workbench("digits_cnn")
    assert wb.cluster_box.cluster is None
    assert wb.cluster_box.widget in wb.widget.children[0].children[-1].children
