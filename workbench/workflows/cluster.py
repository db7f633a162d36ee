"""Connecting to a Dask cluster for the sweeps (``--cluster ADDRESS|local[:N]``, the dashboard's Cluster box) and
what a worker machine advertises (``workbench worker``).

Plain re-exports of :mod:`workbench.cluster` plus :class:`ClusterUse`, the part of a result that says which cluster
ran it, and :func:`worker_command`, the Dask worker command line ``workbench worker`` runs. Dask is imported only
when a cluster is connected.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..cluster import (
    Cluster,
    ClusterError,
    ClusterInfo,
    Gpu,
    MachineInfo,
    WorkerInfo,
    machine_info,
    machine_resources,
    parse_address,
)
from .base import Result

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Cluster", "ClusterError", "ClusterInfo", "ClusterUse", "Gpu", "MachineInfo", "WorkerCommand", "WorkerInfo",
           "connect", "machine_info", "machine_resources", "parse_address", "require_dask", "resources_text",
           "worker_command"]


@dataclass(frozen=True)
class ClusterUse(Result):
    """The cluster a run used: its address, how many workers it had, and what the user should know (workers lost
    and their tasks rerun, in order)."""

    address: str
    workers: int
    events: tuple[str, ...] = ()

    @classmethod
    def of(cls, cluster: Cluster | None) -> ClusterUse | None:
        """The summary of ``cluster`` now (None for a local run)."""
        if cluster is None:
            return None
        return cls(cluster.address, len(cluster.workers()), tuple(cluster.events))


def connect(address: str | Cluster, *, security: Any = None, timeout: float = 10.0,
            resources: Mapping[str, float] | None = None) -> Cluster:
    """A :class:`Cluster` for ``address`` (:func:`workbench.cluster.connect`): a scheduler address the user gives
    or ``local[:N]``; an unreachable scheduler raises a :class:`ClusterError` that offers the local run."""
    from ..cluster import connect as _connect

    return _connect(address, security=security, timeout=timeout, resources=resources)


def require_dask() -> None:
    """A :class:`ClusterError` with the install hint when Dask's ``distributed`` is missing."""
    from ..cluster import _dask

    _dask()


@dataclass(frozen=True)
class WorkerCommand(Result):
    """A Dask worker for ``scheduler`` that advertises this machine: its ``resources`` (detected, plus the user's),
    the ``machine`` they come from and the ``command`` line that starts it."""

    scheduler: str
    resources: dict[str, float]
    machine: MachineInfo
    command: tuple[str, ...]


def _parse_resources(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in text.replace(",", " ").split():
        name, eq, value = part.partition("=")
        try:
            out[name] = float(value)
        except ValueError:
            eq = ""
        if not eq or not name:
            raise ClusterError(f"bad resource '{part}'", hint="write NAME=N pairs, e.g. --resources 'trt_sm86=1'")
    return out


def resources_text(resources: Mapping[str, float]) -> str:
    """``NAME=N ...`` sorted by name: Dask's ``--resources`` syntax."""
    return " ".join(f"{k}={v:g}" for k, v in sorted(resources.items()))


def worker_command(scheduler: str, *, resources: str = "", nthreads: int = 1, name: str | None = None,
                   host: str | None = None) -> WorkerCommand:
    """The Dask worker command line for ``scheduler`` (an address, not ``local``) advertising this machine's
    :func:`machine_resources` plus ``resources`` (``'trt_sm86=1 jetson=1'``, added or overriding). ``host``
    defaults to 127.0.0.1 for a loopback scheduler, else Dask's choice."""
    address, _ = parse_address(scheduler)
    if address == "local":
        raise ClusterError("a worker needs a scheduler address, not 'local'",
                           hint="start `dask scheduler --host 127.0.0.1 --port 8786` and pass tcp://127.0.0.1:8786")
    info = machine_info()
    advertised = {**machine_resources(info), **_parse_resources(resources)}
    if nthreads < 1:
        raise ClusterError("--nthreads must be >= 1", hint="use 1 (the default) for one task at a time")
    command = [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", str(nthreads),
               "--no-dashboard"]
    host = host or ("127.0.0.1" if any(h in address for h in ("127.0.0.1", "localhost", "[::1]")) else None)
    if host:
        command += ["--host", host]
    if advertised:
        command += ["--resources", resources_text(advertised)]
    if name:
        command += ["--name", name]
    return WorkerCommand(address, advertised, info, tuple(command))
