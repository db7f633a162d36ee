"""workbench quantize --target-metric/--tolerance: the calibration method and the fewest layers kept in high
precision (the debugger's sensitivity and plan search) until the metric is within tolerance of FP32, in one recipe."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
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
    *_, edit, half = json.loads(recipe.read_text())["edits"]  # TensorRT placement: the kept head tries FP16 first
    assert edit["exclude"] == ["head"] and edit["method"] == t["method"] and edit["float_heads"] is False
    assert t["kept_fp16"] == ["head"] and half["kind"] == "convert_precision" and half["nodes"] == ["head"]
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


def _two_branch() -> onnx.ModelProto:
    """y = head(g1(x1) + g2(x2)): x2 holds one calibration outlier (1000) that flattens its scale, so g2's branch
    must stay float. Keeping g2 moves the residual Add's Q/DQ from input b onto input a, a tensor the all-INT8
    placement does not calibrate."""
    rng = np.random.default_rng(0)
    w1 = np.full((16, 8), 0.01, np.float32)
    w1[0] = 1.0
    inits = [numpy_helper.from_array(w, n) for w, n in ((w1, "w1"), ((rng.standard_normal((16, 8)) * 0.25)
                                                                      .astype(np.float32), "w2"),
                                                         (np.eye(8, dtype=np.float32), "w3"))]
    nodes = [helper.make_node("Gemm", ["x1", "w1"], ["a"], name="g1"),
             helper.make_node("Gemm", ["x2", "w2"], ["b"], name="g2"),
             helper.make_node("Add", ["a", "b"], ["s"], name="add"),
             helper.make_node("Gemm", ["s", "w3"], ["y"], name="head")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 16])
                                       for n in ("x1", "x2")],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _two_branch_data(seed: int, outlier: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x1 = (rng.standard_normal((128, 16)) * 0.1).astype(np.float32)
    x1[rng.choice(128, size=2, replace=False), 0] = 10.0
    x2 = rng.standard_normal((128, 16)).astype(np.float32)
    if outlier:
        x2[3, 5] = 1000.0
    return {"x1": x1, "x2": x2}


def test_target_plans_find_the_scales_of_a_residual_adds_other_input(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The plans keep layers in high precision; keeping g2 needs a scale for 'a' (it raised 'no calibrated scale
    for tensor a' in the sensitivity pass): the target mode calibrates every input of the quantized nodes."""
    src, calib = tmp_path / "m.onnx", tmp_path / "calib.npz"
    onnx.save(_two_branch(), src)
    np.savez(calib, **_two_branch_data(0, True))
    np.savez(tmp_path / "eval.npz", **_two_branch_data(1, False))
    code = cli_main(["quantize", str(src), "--calib", str(calib), "--eval", str(tmp_path / "eval.npz"),
                     "--target-metric", "rel_l2", "--tolerance", "0.05", "-o", str(tmp_path / "q.onnx"),
                     "--recipe-out", str(tmp_path / "r.json"), "--json"])
    r = json.loads(capsys.readouterr().out)
    t = r["target_metric"]
    assert code == 0, r
    assert t["before"] > 0.5 and t["met"] and t["after"] <= 0.05 and "g2" in t["kept"] and "g1" in r["quantized"]
    replayed = Session.load(tmp_path / "r.json", model=str(src)).model
    x = _two_branch_data(1, False)
    from workbench.backends.ort import OrtEngine

    np.testing.assert_array_equal(OrtEngine(onnx.load(tmp_path / "q.onnx")).run(x)["y"], OrtEngine(replayed).run(x)["y"])


def test_calibrate_tab_quantizes_to_a_target_with_the_cli_workflow(tmp_path: Path) -> None:
    from workbench.ui.calibrate_tab import CalibrateTab
    from workbench.ui.common import Status
    from workbench.workflows import quantize as wq

    data = _two_branch_data(0, True)
    tab = CalibrateTab(Session(_two_branch(), cache_dir=tmp_path / "tab"), Status())
    tab.use_data(data, "two-branch data")
    tab.run_button.click()  # calibrated without the target mode: its plans' scales are missing, and it says so
    tab.wait()
    tab.target_metric.value, tab.tolerance.value = "rel_l2", 0.05
    tab.quantize_button.click()
    tab.wait()
    assert tab.status.state == "error" and "target mode" in tab.status.hint and tab.session.recipe.edits == ()
    tab.run_button.click()  # calibrated with it on
    tab.wait()
    tab.quantize_button.click()
    tab.wait()
    assert tab.status.state == "ok", tab.status.message
    assert tab.result is not None and tab.result.target_metric is not None
    t = tab.result.target_metric
    assert t.met and "g2" in t.kept and "g2" in tab.target_result.value and "met" in tab.target_result.value
    assert "g2" in t.kept_fp16 and "g2 (FP16)" in tab.target_result.value  # TensorRT placement: FP16 first
    quantized = [e for e in tab.session.recipe.edits if e.kind == "quantize"][-1]
    assert tab.phase.value == "done: target met" and quantized.exclude == t.kept
    # the CLI's workflow on the same data (the tab measures on its calibration data) reaches the same plan
    same = wq.quantize(Session(_two_branch(), cache_dir=tmp_path / "cli"), data,
                       wq.QuantizeSettings(target_metric="rel_l2", tolerance=0.05)).target_metric
    assert same is not None and (same.kept, same.after, same.method) == (t.kept, t.after, t.method)


def test_target_mode_tries_per_tensor_methods_before_keeping_layers(tmp_path: Path) -> None:
    """Where the best whole-model method misses the target, the tensors that method clips try the other methods;
    a better one is kept in the recipe (Quantize.methods) before the plan search keeps layers in high precision."""
    from workbench.backends.ort import OrtEngine
    from workbench.workflows import quantize as wq

    def data(seed: int, outlier: float) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        x1 = (rng.standard_normal((256, 16)) * 0.1).astype(np.float32)
        x1[rng.choice(256, size=2, replace=False), 0] = 10.0  # rare large values: entropy clips them
        x2 = rng.standard_normal((256, 16)).astype(np.float32)
        x2[3, 5] = outlier  # one calibration outlier: only entropy's threshold ignores it
        return {"x1": x1, "x2": x2}

    session = Session(_two_branch(), cache_dir=tmp_path / "c")
    evaluation = data(1, 0.0)
    r = wq.quantize(session, data(0, 40.0), wq.QuantizeSettings(target_metric="rel_l2", tolerance=0.03),
                    eval_data=evaluation)
    t = r.target_metric
    assert t is not None and t.met and t.tensor_methods
    assert all(m != t.method for m in t.tensor_methods.values())
    k = max(i for i, e in enumerate(session.recipe.edits) if e.kind == "quantize")  # a ConvertPrecision of the
    edit = session.recipe.edits[k]  # layers kept in FP16 may follow it
    assert edit.method == t.method and dict(edit.methods) == dict(t.tensor_methods)
    # the per-tensor methods alone (no layer kept) beat the best whole-model method on the evaluation data, by the
    # target's metric (the mean over samples of each sample's relative L2 error)
    ref = OrtEngine(_two_branch()).run(evaluation)["y"]
    no_plan = session.recipe.replace(edits=(*session.recipe.edits[:k], dataclasses.replace(edit, exclude=())))
    whole = no_plan.replace(edits=(*no_plan.edits[:-1], dataclasses.replace(no_plan.edits[-1], methods={})))

    def error(recipe) -> float:
        from workbench.replay import replay

        out = OrtEngine(replay(session.original, recipe.edits, cache_dir=session.cache_dir)).run(evaluation)["y"]
        return float(np.mean(np.linalg.norm(out - ref, axis=1) / np.linalg.norm(ref, axis=1)))  # rel_l2 per sample

    assert error(no_plan) < error(whole)


def test_calibrate_tab_tolerance_follows_the_metric_as_the_cli_default(tmp_path: Path) -> None:
    """Accuracy's tolerance is a drop below FP32 (0.5 point), rel_l2's an error: one 0.05 for both let the tab accept
    a 5-point accuracy drop where the CLI's default is 0.5."""
    from workbench.choices import TARGET_TOLERANCE
    from workbench.ui.calibrate_tab import CalibrateTab
    from workbench.ui.common import Status

    tab = CalibrateTab(Session(_two_branch(), cache_dir=tmp_path / "tab"), Status())
    tab.target_metric.value = "accuracy"
    assert tab.tolerance.value == TARGET_TOLERANCE["higher"] == 0.005
    tab.target_metric.value = "rel_l2"
    assert tab.tolerance.value == TARGET_TOLERANCE["lower"] == 0.05
    tab.tolerance.value = 0.2  # the user's own value stays until the metric changes
    tab.target_metric.value = ""
    assert tab.tolerance.value == 0.2
