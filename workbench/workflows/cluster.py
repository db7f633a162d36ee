"""Connecting to a Dask cluster for the sweeps (``--cluster ADDRESS|local[:N]``, the dashboard's Cluster box) and
what a worker machine advertises (``workbench worker``).

Plain re-exports of :mod:`workbench.cluster` plus :class:`ClusterUse`, the part of a result that says which cluster
ran it. Dask is imported only when a cluster is connected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..cluster import Cluster, ClusterError, WorkerInfo, machine_info, machine_resources, parse_address
from .base import Result

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Cluster", "ClusterError", "ClusterUse", "WorkerInfo", "connect", "machine_info", "machine_resources",
           "parse_address", "require_dask"]


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
