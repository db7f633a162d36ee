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

from ..workflows.cluster import WorkerCommand, require_dask, resources_text, worker_command

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


def run(args: argparse.Namespace) -> WorkerCommand | None:
    """Start the worker (this process becomes Dask's worker), or with ``--dry-run`` say what it would run."""
    worker = worker_command(args.scheduler, resources=args.resources, nthreads=args.nthreads, name=args.name,
                            host=args.host)
    if args.dry_run:
        return worker
    require_dask()  # a clear error when the cluster extra is missing
    print(f"worker for {worker.scheduler}: resources {resources_text(worker.resources) or 'none'}", file=sys.stderr,
          flush=True)
    os.execv(sys.executable, list(worker.command))  # Dask's own worker CLI from here on (signals, restarts, logs)


def render(r: WorkerCommand) -> str:
    """The dry run for people."""
    flavours = ", ".join(f"{k} {v}" for k, v in r.machine.tensorrt.items()) or "no TensorRT"
    gpus = ", ".join(f"{g.name} (sm {g.compute_capability})" for g in r.machine.gpus) or "no GPU"
    return "\n".join([f"scheduler: {r.scheduler}", f"machine: {flavours}; {gpus}",
                      f"resources: {resources_text(r.resources) or 'none'}", "command: " + " ".join(r.command)])
