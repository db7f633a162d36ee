"""The ``--cluster ADDRESS|local[:N]`` flag shared by the commands that fan batches out (not a command)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..workflows.cluster import Cluster


def add_cluster_argument(p: argparse.ArgumentParser) -> None:
    """``--cluster ADDRESS|local[:N]``."""
    p.add_argument("--cluster", metavar="ADDRESS|local[:N]",
                   help="run the batches as Dask tasks: a scheduler address you started (tcp://host:8786, "
                        "tls://...) or local[:N] for N worker processes on this machine; same result as locally "
                        "(needs the 'cluster' extra)")


@contextlib.contextmanager
def cluster_from(args: argparse.Namespace) -> Iterator[Cluster | None]:
    """The connected cluster for ``args.cluster`` (closed afterwards), or None without the flag."""
    if not getattr(args, "cluster", None):
        yield None
        return
    from ..workflows.cluster import connect

    c = connect(args.cluster)
    try:
        if not getattr(args, "json", False):
            print(f"cluster {c.address}: {len(c.workers())} worker(s)"
                  + (f", dashboard {c.dashboard_link}" if c.dashboard_link else ""), file=sys.stderr)
        yield c
    finally:
        c.close()
