"""workbench quantize --target-metric/--tolerance: the calibration method and the fewest layers kept in high
precision (the debugger's sensitivity and plan search) until the metric is within tolerance of FP32, in one recipe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from test_int8_accuracy import _cancelling_head, _rel, _run

from workbench.cli import main as cli_main
from workbench.session import Session


def test_target_rel_l2_keeps_the_layer_that_breaks_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, x = _cancelling_head()
    src, calib, ev = tmp_path / "m.onnx", tmp_path / "calib.npz", tmp_path / "eval.npz"
    onnx.save(model, src)
    np.savez(calib, x=x[:128])
    np.savez(ev, x=x[128:])
    out, recipe = tmp_path / "q.onnx", tmp_path / "r.json"
    code = cli_main(["quantize", str(src), "--calib", str(calib), "--eval", str(ev), "--quantize-heads",
                     "--target-metric", "rel_l2", "--tolerance", "0.02", "-o", str(out), "--recipe-out", str(recipe),
                     "--json"])
    r = json.loads(capsys.readouterr().out)
    t = r["target_metric"]
    assert code == 0 and t["before"] > 0.02 and t["met"] and t["after"] <= 0.02
    assert t["kept"] == ["head"] and r["excluded"] == ["head"] and r["quantized"] == ["body"]
    assert set(t["methods"]) == {"max", "percentile", "entropy", "mse", "auto"}
    assert t["method"] == min(t["methods"], key=t["methods"].get)
    assert t["cost_all_int8"] < t["estimated_cost"] < 1.0  # the head's FLOPs back in FP32
    written = onnx.load(out)
    assert not any(n.input[0].endswith("__dq") for n in written.graph.node if n.name == "head")
    edit = json.loads(recipe.read_text())["edits"][-1]
    assert edit["exclude"] == ["head"] and edit["method"] == t["method"] and edit["float_heads"] is False
    replayed = Session.load(recipe, model=str(src)).model  # one recipe reproduces it
    assert _rel(_run(written, x[128:]), _run(replayed, x[128:])) == 0.0


def test_target_accuracy_needs_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, x = _cancelling_head()
    src, calib = tmp_path / "m.onnx", tmp_path / "calib.npz"
    onnx.save(model, src)
    np.savez(calib, x=x[:64])
    code = cli_main(["quantize", str(src), "--calib", str(calib), "--target-metric", "accuracy",
                     "-o", str(tmp_path / "q.onnx")])
    err = capsys.readouterr().err
    assert code != 0 and "label" in err and not (tmp_path / "q.onnx").exists()
