"""workbench lab [NOTEBOOK]: start JupyterLab on the workbench (127.0.0.1) with the notebook open.

JupyterLab runs with its own settings under ``<cache root>/lab`` (not the user's): no "Jupyter news" popup, a
workspace of its own, and a pre-save hook (:func:`strip_outputs`) that keeps outputs and widget state out of the
notebooks shipped in the repository's ``notebooks/`` folder, as nbstripout would: the cells run and show their
outputs in the page, the tracked files keep only the code and text the user wrote. The printed URL opens the
notebook itself, not the Launcher.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..errors import WorkbenchError
from ..fsio import atomic_write, cache_root

COMMAND = "lab"
HELP = "start JupyterLab on 127.0.0.1 with a workbench notebook open"
NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
# JupyterLab's own setting names: no news fetched (the popup asking about it), no update checks
NOTIFICATIONS = {"fetchNews": "false", "checkForUpdates": False}
SERVER_CONFIG = f"""# written by `workbench lab`: outputs never reach the notebooks tracked in {NOTEBOOKS}
from workbench.cli.lab import strip_outputs

c.ContentsManager.pre_save_hook = strip_outputs  # noqa: F821 - `c` is the config object Jupyter provides
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The notebook to open, the port and ``--dry-run``."""
    p.add_argument("notebook", nargs="?", default=str(NOTEBOOKS / "01_quickstart.ipynb"))
    p.add_argument("--port", type=int, default=8888)
    p.add_argument("--dry-run", action="store_true", help="print the command instead of running it")


def strip_outputs(model: dict[str, Any], path: str, contents_manager: Any, **_: Any) -> None:
    """Jupyter pre-save hook: a notebook saved inside the repository's ``notebooks/`` folder loses its outputs,
    execution counts and saved widget state (any other notebook is saved as it is)."""
    if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
        return
    root = Path(getattr(contents_manager, "root_dir", "."))
    try:
        (root / path.lstrip("/")).resolve().relative_to(NOTEBOOKS.resolve())
    except ValueError:
        return
    nb = model["content"]
    nb.get("metadata", {}).pop("widgets", None)
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None


def lab_environment(base: str | os.PathLike[str] | None = None, *, write: bool = True) -> dict[str, str]:
    """Environment for a workbench JupyterLab: isolated config, settings and workspaces under ``base``
    (``<cache root>/lab``), the news popup off and the output-stripping hook configured (written unless
    ``write`` is false)."""
    base = Path(base) if base is not None else cache_root() / "lab"
    dirs = {"JUPYTER_CONFIG_DIR": base / "config", "JUPYTERLAB_SETTINGS_DIR": base / "settings",
            "JUPYTERLAB_WORKSPACES_DIR": base / "workspaces"}
    if not write:
        return {k: str(v) for k, v in dirs.items()}
    atomic_write(dirs["JUPYTERLAB_SETTINGS_DIR"] / "@jupyterlab" / "apputils-extension"
                 / "notification.jupyterlab-settings", json.dumps(NOTIFICATIONS, indent=2) + "\n")
    atomic_write(dirs["JUPYTER_CONFIG_DIR"] / "jupyter_server_config.py", SERVER_CONFIG)
    dirs["JUPYTERLAB_WORKSPACES_DIR"].mkdir(parents=True, exist_ok=True)
    return {k: str(v) for k, v in dirs.items()}


def run(args: argparse.Namespace) -> dict[str, object] | None:
    """Start JupyterLab on the notebook (outputs are stripped on save); ``--dry-run`` returns the command."""
    nb = Path(args.notebook).resolve()
    if not nb.is_file():
        raise WorkbenchError(f"notebook not found: {nb}", hint=f"pick one of {sorted(p.name for p in NOTEBOOKS.glob('*.ipynb'))}")
    token = secrets.token_hex(24)
    url = f"http://127.0.0.1:{args.port}/lab/tree/{nb.name}"
    cmd = [sys.executable, "-m", "jupyterlab", "--ip=127.0.0.1", f"--port={args.port}", "--no-browser",
           f"--ServerApp.root_dir={nb.parent}", f"--ServerApp.default_url=/lab/tree/{nb.name}",
           nb.name]
    if os.geteuid() == 0:
        cmd.insert(3, "--allow-root")
    env = lab_environment(write=not args.dry_run)
    if args.dry_run:
        return {"command": cmd, "env": env, "url": f"{url}?token=<token>"}
    env["JUPYTER_TOKEN"] = token  # the environment, not the command line, which other users can list
    print(f"JupyterLab with {nb.name}: {url}?token={token}  (Ctrl-C to stop)", file=sys.stderr)
    try:
        code = subprocess.call(cmd, cwd=nb.parent, env=dict(os.environ, **env))
    except KeyboardInterrupt:
        code = 0
    return {"exit_code": code} if args.json else None
