"""workbench lab [NOTEBOOK]: start JupyterLab on the workbench (127.0.0.1)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from ..errors import WorkbenchError

COMMAND = "lab"
HELP = "start JupyterLab on 127.0.0.1 with a workbench notebook open"
NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("notebook", nargs="?", default=str(NOTEBOOKS / "01_quickstart.ipynb"))
    p.add_argument("--port", type=int, default=8888)
    p.add_argument("--dry-run", action="store_true", help="print the command instead of running it")


def run(args: argparse.Namespace) -> dict[str, object] | None:
    nb = Path(args.notebook).resolve()
    if not nb.is_file():
        raise WorkbenchError(f"notebook not found: {nb}", hint=f"pick one of {sorted(p.name for p in NOTEBOOKS.glob('*.ipynb'))}")
    cmd = [sys.executable, "-m", "jupyterlab", "--ip=127.0.0.1", f"--port={args.port}", "--no-browser",
           f"--ServerApp.root_dir={nb.parent}", nb.name]
    if os.geteuid() == 0:
        cmd.insert(3, "--allow-root")
    if args.dry_run:
        return {"command": cmd}
    print(f"JupyterLab on http://127.0.0.1:{args.port} (Ctrl-C to stop)", file=sys.stderr)
    try:
        code = subprocess.call(cmd, cwd=nb.parent)
    except KeyboardInterrupt:
        code = 0
    return {"exit_code": code} if args.json else None
