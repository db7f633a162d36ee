"""Every notebooks/*.ipynb runs top to bottom in a fresh python3 kernel (nbclient), cwd = notebooks/, without
changing the tracked file; JupyterLab started by `workbench lab` saves them without outputs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

pytestmark = pytest.mark.notebook


@pytest.fixture
def kernel_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel that never reads or writes the user's IPython/Jupyter settings."""
    for var, sub in (("IPYTHONDIR", "ipython"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                     ("JUPYTER_CONFIG_DIR", "config")):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))


def test_there_are_notebooks():
    assert NOTEBOOKS / "01_quickstart.ipynb" in PATHS


@pytest.mark.parametrize("path", PATHS, ids=[p.name for p in PATHS])
def test_notebook_is_committed_clean(path: Path):
    """Kernelspec set (JupyterLab would otherwise ask for a kernel) and no outputs committed."""
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", f"{path.name}: set kernelspec {KERNELSPEC}"
    with_outputs = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not with_outputs, f"{path.name}: cells {with_outputs} were committed with outputs; clear them"


@pytest.mark.parametrize("path", PATHS, ids=[p.name for p in PATHS])
def test_notebook_runs(path: Path, kernel_env: None):
    before = path.read_bytes()
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}})
    t0 = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as exc:
        pytest.fail(f"{path.name}: a cell failed:\n{exc}", pytrace=False)
    print(f"\n{path.name}: {time.perf_counter() - t0:.1f} s")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{path.name}: {errors[0].ename}: {errors[0].evalue}"
    assert path.read_bytes() == before, f"running {path.name} changed the tracked file"
    if path.name == "01_quickstart.ipynb":
        first = next(c for c in nb.cells if c.cell_type == "code")
        views = [o for o in first.outputs if WIDGET_VIEW in o.get("data", {})]
        assert views, "the quickstart's first cell must display the dashboard as a widget view"
        text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
        assert "held-out digits classified correctly" in text


def _with_outputs() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": KERNELSPEC, "widgets": {"state": {"x": 1}}})
    nb.cells = [nbformat.v4.new_code_cell("1 + 1", execution_count=3, outputs=[
        nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=3)])]
    return nb


def test_lab_saves_tracked_notebooks_without_outputs(tmp_path: Path):
    """JupyterLab's own contents manager with the hook `workbench lab` configures: a notebook saved inside
    notebooks/ keeps its code but loses outputs, counts and widget state; one saved elsewhere keeps them."""
    from jupyter_server.services.contents.filemanager import FileContentsManager

    from workbench.cli.lab import strip_outputs

    name = f"zz-scratch-{os.getpid()}.ipynb"  # removed below (Jupyter refuses hidden names)
    tracked, elsewhere = FileContentsManager(root_dir=str(NOTEBOOKS)), FileContentsManager(root_dir=str(tmp_path))
    tracked.pre_save_hook = elsewhere.pre_save_hook = strip_outputs
    try:
        tracked.save({"type": "notebook", "format": "json", "content": _with_outputs()}, name)
        saved = nbformat.read(NOTEBOOKS / name, as_version=4)
    finally:
        (NOTEBOOKS / name).unlink(missing_ok=True)
    assert saved.cells[0].source == "1 + 1"
    assert saved.cells[0].outputs == [] and saved.cells[0].execution_count is None
    assert "widgets" not in saved.metadata
    elsewhere.save({"type": "notebook", "format": "json", "content": _with_outputs()}, "mine.ipynb")
    kept = nbformat.read(tmp_path / "mine.ipynb", as_version=4)
    assert kept.cells[0].outputs and kept.cells[0].execution_count == 3


def test_lab_environment_turns_news_off_and_configures_the_hook(tmp_path: Path):
    import json

    from workbench.cli.lab import lab_environment

    env = lab_environment(tmp_path)
    settings = Path(env["JUPYTERLAB_SETTINGS_DIR"]) / "@jupyterlab" / "apputils-extension"
    assert json.loads((settings / "notification.jupyterlab-settings").read_text())["fetchNews"] == "false"
    assert "pre_save_hook = strip_outputs" in (Path(env["JUPYTER_CONFIG_DIR"]) / "jupyter_server_config.py").read_text()
