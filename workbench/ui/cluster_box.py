"""The dashboard's Cluster box: connect to a Dask scheduler (or ``local[:N]``), see its workers, their resources
and machines, what each is running, and a link to Dask's own dashboard. ``box.cluster`` is what the sweeps use (the
Debug tab's comparison, ranking and plan search, through the dashboard); None runs them on this machine's threads."""

from __future__ import annotations

import html

import ipywidgets as W

from ..errors import WorkbenchError
from ..workflows.cluster import Cluster, connect
from .common import Status

__all__ = ["ClusterBox"]


class ClusterBox:
    """Address box + Connect/Disconnect/Refresh, and a table of workers."""

    def __init__(self, status: Status | None = None) -> None:
        self.status = status or Status()
        self.cluster: Cluster | None = None
        self.address = W.Text(placeholder="tcp://host:8786, tls://host:8786 or local:4", description="cluster",
                              layout=W.Layout(width="360px"))
        self.connect_button = W.Button(description="Connect", icon="plug", layout=W.Layout(width="auto"))
        self.disconnect_button = W.Button(description="Disconnect", icon="times", disabled=True,
                                          layout=W.Layout(width="auto"))
        self.refresh_button = W.Button(description="Refresh", icon="refresh", disabled=True,
                                       layout=W.Layout(width="auto"))
        self.connect_button.on_click(lambda _b: self.connect(self.address.value.strip()))
        self.disconnect_button.on_click(lambda _b: self.disconnect())
        self.refresh_button.on_click(lambda _b: self.refresh())
        self.table = W.HTML("<i>not connected: sweeps run on this machine's threads</i>")
        self.widget = W.VBox([W.HBox([self.address, self.connect_button, self.refresh_button,
                                      self.disconnect_button]), self.table])
        self.widget.add_class("wb-cluster")

    def connect(self, address: str) -> None:
        """Connect to ``address`` (a scheduler address or ``local[:N]``); an error is shown in the status line."""
        if not address:
            self.status.error(WorkbenchError("no cluster address", hint="type tcp://host:port or local:N"))
            return
        self.disconnect()
        try:
            self.status.busy(f"connecting to {address}")
            self.cluster = connect(address)
            self.cluster.probe()
        except WorkbenchError as exc:
            self.cluster = None
            self.status.error(exc)
            return
        self.connect_button.disabled, self.disconnect_button.disabled, self.refresh_button.disabled = True, False, False
        self.refresh()
        self.status.ok(f"connected to {self.cluster.address}: {len(self.cluster.workers())} worker(s)")

    def disconnect(self) -> None:
        """Close the cluster (a ``local[:N]`` one stops its workers); sweeps run locally again."""
        if self.cluster is not None:
            self.cluster.close()
        self.cluster = None
        self.connect_button.disabled, self.disconnect_button.disabled, self.refresh_button.disabled = False, True, True
        self.table.value = "<i>not connected: sweeps run on this machine's threads</i>"

    def refresh(self) -> None:
        """Redraw the workers table (resources, machine, tasks running now) and the dashboard link."""
        if self.cluster is None:
            return
        d = self.cluster.describe()
        e = html.escape
        rows = []
        for w in d.workers:
            m = w.machine
            trt = ", ".join(f"{k} {v}" for k, v in (m.tensorrt if m else {}).items()) or "no TensorRT"
            gpus = ", ".join(f"{g.name} (sm {g.compute_capability})" for g in (m.gpus if m else ())) or "no GPU"
            res = " ".join(f"{k}={v:g}" for k, v in sorted(w.resources.items())) or "-"
            rows.append(f"<tr><td>{e(w.name)}</td><td>{e(w.address)}</td><td>{w.nthreads}</td>"
                        f"<td>{e(res)}</td><td>{e(trt)}; {e(gpus)}</td><td>{w.running}</td></tr>")
        link = (f'<a href="{e(d.dashboard)}" target="_blank">Dask dashboard</a>' if d.dashboard
                else "Dask dashboard: install bokeh on the scheduler")
        events = "".join(f"<li>{e(x)}</li>" for x in d.events)
        self.table.value = (f"<b>{e(d.address)}</b> &middot; {link}<table class='wb-cluster-workers'>"
                            "<tr><th>worker</th><th>address</th><th>threads</th><th>resources</th><th>machine</th>"
                            f"<th>running</th></tr>{''.join(rows)}</table>" + (f"<ul>{events}</ul>" if events else ""))
