"""workbench worker SCHEDULER: a Dask worker that advertises what this machine offers the workbench.

Its resources (:func:`workbench.cluster.machine_resources`): ``trt=1`` / ``trt_rtx=1`` per TensorRT flavour
installed, ``gpu=N`` and ``trt_sm86=1`` (compute capability 8.6) where ``nvidia-smi`` finds a GPU; ``--resources``
adds or overrides. Builds, checks and profiles asking for those resources (``workbench.remote``) land here.
``--dry-run`` prints the worker's command line and resources instead of starting it.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..workflows.cluster import ClusterError, machine_info, machine_resources, parse_address, require_dask

COMMAND = "worker"
HELP = "start a Dask worker for SCHEDULER that advertises this machine's TensorRT and GPU as resources"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command's arguments."""
    p.add_argument("scheduler", help="the scheduler's address, e.g. tcp://10.0.0.5:8786 (as `dask scheduler` prints)")
    p.add_argument("--resources", default="", metavar="'NAME=N ...'",
                   help="extra or overriding resources, e.g. 'trt_sm86=1 jetson=1' (added to what is detected)")
    p.add_argument("--nthreads", type=int, default=1, help="task threads (default 1: each task uses the cores)")
    p.add_argument("--name", help="the worker's name (default: Dask's)")
    p.add_argument("--host", help="the interface to listen on (default: 127.0.0.1 for a loopback scheduler, else "
                                  "Dask's choice)")
    p.add_argument("--dry-run", action="store_true", help="print the command and resources; start nothing")


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


def _resources_text(res: dict[str, float]) -> str:
    return " ".join(f"{k}={v:g}" for k, v in sorted(res.items()))


def run(args: argparse.Namespace) -> dict[str, Any] | None:
    """Start the worker (this process becomes Dask's worker), or with ``--dry-run`` say what it would run."""
    address, _ = parse_address(args.scheduler)
    if address == "local":
        raise ClusterError("a worker needs a scheduler address, not 'local'",
                           hint="start `dask scheduler --host 127.0.0.1 --port 8786` and pass tcp://127.0.0.1:8786")
    info = machine_info()
    resources = {**machine_resources(info), **_parse_resources(args.resources)}
    if args.nthreads < 1:
        raise ClusterError("--nthreads must be >= 1", hint="use 1 (the default) for one task at a time")
    command = [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", str(args.nthreads),
               "--no-dashboard"]
    host = args.host or ("127.0.0.1" if any(h in address for h in ("127.0.0.1", "localhost", "[::1]")) else None)
    if host:
        command += ["--host", host]
    if resources:
        command += ["--resources", _resources_text(resources)]
    if args.name:
        command += ["--name", args.name]
    if args.dry_run:
        return {"scheduler": address, "resources": resources, "machine": info, "command": command}
    require_dask()  # a clear error when the cluster extra is missing
    print(f"worker for {address}: resources {_resources_text(resources) or 'none'}", file=sys.stderr, flush=True)
    os.execv(sys.executable, command)  # Dask's own worker CLI from here on (signals, nanny-less restarts, logs)


def render(r: dict[str, Any]) -> str:
    """The dry run for people."""
    flavours = ", ".join(f"{k} {v}" for k, v in r["machine"]["tensorrt"].items()) or "no TensorRT"
    gpus = ", ".join(f"{g['name']} (sm {g['compute_capability']})" for g in r["machine"]["gpus"]) or "no GPU"
    return "\n".join([f"scheduler: {r['scheduler']}", f"machine: {flavours}; {gpus}",
                      f"resources: {_resources_text(r['resources']) or 'none'}", "command: " + " ".join(r["command"])])
