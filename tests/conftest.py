"""Shared test set-up: every test runs with its own cache dir and never touches the user's settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"
VENV_BIN = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin"


@pytest.fixture
def cli_path() -> Path:
    """The installed `workbench` console script (the one users run)."""
    path = VENV_BIN / "workbench"
    if not path.exists():
        import shutil

        found = shutil.which("workbench")
        assert found, "the workbench console script is not installed: run `make test`, which installs it"
        path = Path(found)
    return path


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.setenv("MPLCONFIGDIR", str(home / "mpl"))
