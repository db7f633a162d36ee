"""`workbench inspect MODEL --json` as users run it (the installed console script, in a subprocess)."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import onnx
import pytest
from models import conv_bn_relu_model
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ["digits_cnn", "digits_transformer", "fcn_dynamic"]


def _inspect(cli: Path, *args: str) -> tuple[int, dict, str]:
    proc = subprocess.run([str(cli), "inspect", *args, "--json"], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert len(proc.stdout.strip().splitlines()) == 1, proc.stdout + proc.stderr  # exactly one JSON object
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def _expected(model: onnx.ModelProto) -> dict:
    return {
        "nodes": len(model.graph.node),
        "ops": dict(Counter(n.op_type for n in model.graph.node)),
        "params": sum(numpy_helper.to_array(t).size for t in model.graph.initializer),
        "opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
    }


def test_inspect_every_sample_against_onnx(cli_path: Path) -> None:
    for name in SAMPLES:
        path = ROOT / "sample_models" / f"{name}.onnx"
        code, out, err = _inspect(cli_path, str(path))
        assert code == 0, err
        assert {"inputs", "outputs", "nodes", "ops", "params", "opset", "flops"} <= set(out)
        ref = onnx.load(str(path))
        for key, value in _expected(ref).items():
            assert out[key] == value, (name, key)
        assert out["inputs"][0]["name"] == "input" and out["inputs"][0]["dtype"] == "float32"
        assert out["outputs"][0]["name"] == "logits"
        assert out["flops"] is None  # dynamic batch: FLOPs unknown
        assert "Traceback" not in err
    _, fcn, _ = _inspect(cli_path, "fcn_dynamic")  # a sample name works too
    assert fcn["inputs"][0]["shape"] == ["batch", 3, "height", "width"]


def test_inspect_fixed_shape_model_reports_flops_and_layers(cli_path: Path, tmp_path: Path) -> None:
    model = conv_bn_relu_model(batch=1, channels=3, size=8, width=4, classes=10)
    path = tmp_path / "cnn.onnx"
    onnx.save_model(model, str(path))
    code, out, _ = _inspect(cli_path, str(path), "--layers")
    assert code == 0
    assert out["flops"] == 2 * 1 * 4 * 8 * 8 * 9 * (3 + 4 + 4) + 2 * 4 * 10
    assert [layer["name"] for layer in out["layers"]] == [n.name for n in model.graph.node]
    assert out["inputs"] == [{"name": "input", "dtype": "float32", "shape": [1, 3, 8, 8]}]


def test_inspect_with_shapes_gives_flops_of_a_dynamic_model(cli_path: Path) -> None:
    code, out, _ = _inspect(cli_path, "fcn_dynamic", "--shapes", "input:2x3x16x16")
    assert code == 0
    assert out["flops"] == 2 * 2 * 256 * (16 * 27 + 2 * 16 * 144 + 2 * 16)  # by hand, see test_graph.py
    assert out["flops_shapes"] == {"input": [2, 3, 16, 16]}
    code, out, _ = _inspect(cli_path, "fcn_dynamic", "--shapes", "input:1x4x16x16")
    assert code == 1 and "dim 1" in out["error"] and out["hint"]


@pytest.mark.parametrize("kind", ["not_onnx", "truncated", "missing", "unknown_sample"])
def test_inspect_bad_input_exits_1_with_error_and_hint(cli_path: Path, tmp_path: Path, kind: str) -> None:
    if kind == "not_onnx":
        target = tmp_path / "readme.onnx"
        target.write_text("hello\n")
    elif kind == "truncated":
        target = tmp_path / "cut.onnx"
        target.write_bytes((ROOT / "sample_models" / "digits_cnn.onnx").read_bytes()[:5000])
    elif kind == "missing":
        target = tmp_path / "absent.onnx"
    else:
        target = Path("no_such_sample_model")
    code, out, err = _inspect(cli_path, str(target))
    assert code == 1
    assert set(out) == {"error", "hint"}
    assert str(target) in out["error"] and out["hint"]
    assert "Traceback" not in err


@pytest.mark.parametrize(("argv", "named"), [
    (["quantize", "digits_cnn", "--calib", "x.npz", "-o", "o.onnx", "--target", "gpu"], "'gpu'"),
    (["inspect"], "model"),
    (["inspect", "digits_cnn", "--no-such-option"], "--no-such-option"),
    (["no-such-command"], "'no-such-command'"),
])
def test_a_command_line_argparse_rejects_is_a_user_error(cli_path: Path, tmp_path: Path, argv: list[str],
                                                         named: str) -> None:
    """The CLI contract: exit 1, one JSON object {error, hint} under --json, usage + error on stderr otherwise."""
    proc = subprocess.run([str(cli_path), *argv, "--json"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) == {"error", "hint"} and "--help" in out["hint"]
    assert named in out["error"]
    human = subprocess.run([str(cli_path), *argv], capture_output=True, text=True, cwd=tmp_path)
    assert human.returncode == 1 and human.stdout == ""
    assert human.stderr.startswith("usage: workbench") and "error: " in human.stderr and "Traceback" not in human.stderr
    assert not (tmp_path / "o.onnx").exists()


def test_a_reader_that_stops_early_ends_the_command_quietly(cli_path):
    """`workbench inspect M | head`: the pipe closes before the output is written; no BrokenPipeError traceback."""
    import os

    read, write = os.pipe()
    os.close(read)  # nobody reads: the first write fails with EPIPE, as after `head` has exited
    try:
        proc = subprocess.run([str(cli_path), "inspect", "digits_cnn", "--layers"], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert proc.stderr == ""  # no traceback, no "Exception ignored" at exit
    assert proc.returncode == 141  # 128 + SIGPIPE, as a shell reports for other tools
