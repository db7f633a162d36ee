"""Atomic writes leave the mode a plain ``open()`` would: 0666 less the umask for a new file, the old mode kept."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from onnx import TensorProto, helper

from workbench.fsio import atomic_write, write_json
from workbench.graph import save_model


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _plain_open_mode(path: Path) -> int:
    with open(path, "wb"):
        pass
    return _mode(path)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_new_file_gets_0666_less_the_umask(tmp_path: Path, umask: None, mask: int) -> None:
    os.umask(mask)
    atomic_write(tmp_path / "a.bin", b"x")
    write_json(tmp_path / "b.json", {"a": 1})
    expected = _plain_open_mode(tmp_path / "plain")
    assert expected == 0o666 & ~mask
    assert _mode(tmp_path / "a.bin") == expected  # mkstemp's 0600 was left here before
    assert _mode(tmp_path / "b.json") == expected


def test_existing_file_keeps_its_mode(tmp_path: Path, umask: None) -> None:
    target = tmp_path / "r.json"
    target.write_text("old")
    target.chmod(0o640)
    atomic_write(target, "new")
    assert target.read_text() == "new" and _mode(target) == 0o640


def test_saved_model_and_its_weights_file_honour_the_umask(tmp_path: Path, umask: None) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    w = helper.make_tensor("w", TensorProto.FLOAT, [1], [2.0])
    model = helper.make_model(helper.make_graph([helper.make_node("Mul", ["x", "w"], ["y"])], "g", [x], [y], [w]))
    save_model(model, tmp_path / "m.onnx")
    save_model(model, tmp_path / "big.onnx", external_data=True)
    assert _mode(tmp_path / "m.onnx") == 0o644
    assert _mode(tmp_path / "big.onnx") == 0o644 and _mode(tmp_path / "big.onnx.data") == 0o644
