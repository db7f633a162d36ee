"""The ground floor: errors, tables, atomic writes, the CLI dispatcher, import layering."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.errors import BackendUnavailable, WorkbenchError, require
from workbench.fsio import atomic_write, read_json, write_json
from workbench.table import Table

ROOT = Path(__file__).resolve().parents[1]


def test_error_carries_message_and_hint() -> None:
    err = WorkbenchError("tensor 'x' is missing", hint="add it")
    assert err.to_dict() == {"error": "tensor 'x' is missing", "hint": "add it"}
    assert "hint: add it" in str(err)


def test_require_names_the_extra() -> None:
    with pytest.raises(BackendUnavailable) as info:
        require("no_such_module_for_workbench", "rtx")
    assert "no_such_module_for_workbench" in info.value.message
    assert "[rtx]" in info.value.hint
    assert require("json", "x") is json


def test_table_records_sort_and_filter() -> None:
    t = Table.from_records([{"name": "a", "ms": 2.0}, {"name": "b", "ms": None}, {"name": "c", "ms": 5.0}])
    assert t.columns == ("name", "ms")
    assert t.sort_by("ms", descending=True).column("name") == ["c", "a", "b"]
    assert t.sort_by("ms").column("name") == ["a", "c", "b"]
    assert t.where(lambda r: r["name"] != "a").column("name") == ["b", "c"]
    assert json.loads(t.to_json())[2] == {"name": "c", "ms": 5.0}
    assert "<td>c</td>" in t._repr_html_()
    with pytest.raises(ValueError):
        Table(("a",), ((1, 2),))
    with pytest.raises(KeyError, match="columns are"):
        t.column("nope")


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "r.json"
    write_json(target, {"b": 1, "a": [1, 2]})
    assert read_json(target) == {"a": [1, 2], "b": 1}
    assert target.read_text().index('"a"') < target.read_text().index('"b"')  # canonical key order
    atomic_write(target, b"xyz")
    assert target.read_bytes() == b"xyz"
    assert [p.name for p in target.parent.iterdir()] == ["r.json"]


def test_atomic_write_failure_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "keep.txt"
    target.write_text("old")

    with pytest.raises(TypeError):
        atomic_write(target, 123)  # type: ignore[arg-type]
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_import_workbench_loads_no_ui_plotting_or_runtime() -> None:
    code = (
        "import sys, workbench, workbench.graph, workbench.recipe;"
        "bad = [m for m in ('ipywidgets', 'plotly', 'IPython', 'onnxruntime', 'tensorrt', 'tensorrt_rtx', 'cuda')"
        " if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_every_top_level_name_resolves() -> None:
    """``workbench.X`` is imported lazily from the module ``_EXPORTS`` names: a module that moves breaks it here."""
    import workbench

    missing = []
    for name in workbench.__all__:
        try:
            getattr(workbench, name)
        except (AttributeError, ImportError) as exc:
            missing.append(f"{name}: {exc}")
    assert missing == []
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        workbench.no_such_name  # noqa: B018


def test_import_layer_contracts_hold() -> None:
    exe = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(exe)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_cli_lists_commands_and_json_errors(cli_path: Path, tmp_path: Path) -> None:
    out = subprocess.run([str(cli_path), "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for command in ("inspect", "lab"):
        assert command in out.stdout
    bad = tmp_path / "not_a_model.onnx"
    bad.write_bytes(b"\x00\x01garbage")
    res = subprocess.run([str(cli_path), "inspect", str(bad), "--json"], capture_output=True, text=True)
    assert res.returncode == 1
    payload = json.loads(res.stdout)
    assert str(bad) in payload["error"] and payload["hint"]
    assert "Traceback" not in res.stderr


def test_lab_dry_run_points_at_the_quickstart(cli_path: Path) -> None:
    res = subprocess.run([str(cli_path), "lab", "--dry-run", "--json", "--port", "8999"], capture_output=True, text=True)
    if not (ROOT / "notebooks" / "01_quickstart.ipynb").exists():
        assert res.returncode == 1 and "notebook not found" in json.loads(res.stdout)["error"]
        return
    cmd = json.loads(res.stdout)["command"]
    assert "--ip=127.0.0.1" in cmd and "--port=8999" in cmd and cmd[-1] == "01_quickstart.ipynb"
    assert ("--allow-root" in cmd) == (os.geteuid() == 0)


def test_cancel_tokens_event_callable_or_none() -> None:
    import threading

    from workbench.cancel import cancelled

    event = threading.Event()
    assert cancelled(None) is False
    assert cancelled(event) is False
    event.set()
    assert cancelled(event) is True
    flag = [False]
    assert cancelled(lambda: flag[0]) is False
    flag[0] = True
    assert cancelled(lambda: flag[0]) is True
