"""check_model and `workbench check`: real parser + AOT build in a child, suggestions, crash reports."""

from __future__ import annotations

import json
import subprocess
import threading

import onnx
import pytest
from models import conv_bn_relu_model, dynamic_model, if_model, integer_ops_model

from workbench.backends import worker
from workbench.backends.worker import TEST_CRASH_ENV
from workbench.check import CheckCancelled, check_model
from workbench.errors import BuildError, DataError, ModelError


def test_clean_model_is_parsable_and_buildable():
    model = conv_bn_relu_model()
    r = check_model(model)
    assert r.backend == "tensorrt-rtx" and r.parsable and r.buildable and r.ok
    assert r.unsupported == [] and r.errors == [] and r.crashed is None
    assert r.nodes == len(model.graph.node) == r.supported_nodes
    assert r.layers and r.layers > 0


def test_dynamic_dim_without_profile_names_the_input_and_gives_a_shapes_example():
    r = check_model(dynamic_model())
    assert r.buildable  # built with the derived defaults
    assert r.derived_profiles == ["input"]
    (s,) = [s for s in r.suggestions if "dynamic dims" in s]
    assert "input 'input'" in s and "--shapes input:1x3x32x32,1x3x256x256,8x3x1024x1024" in s
    r2 = check_model(dynamic_model(), shapes="input:1x3x8x8,1x3x16x16,2x3x32x32")
    assert r2.buildable and not any("dynamic dims" in s for s in r2.suggestions)
    assert r2.profiles == [{"input": "input", "min": [1, 3, 8, 8], "opt": [1, 3, 16, 16], "max": [2, 3, 32, 32]}]


def test_ort_integer_ops_are_unsupported_with_the_dequantize_edit_suggested():
    model = integer_ops_model()
    r = check_model(model)
    expected = [(n.name, n.op_type) for n in model.graph.node
                if n.op_type in ("DynamicQuantizeLinear", "ConvInteger", "MatMulInteger")]
    assert [(u["node"], u["op"]) for u in r.unsupported] == expected
    assert r.parsable is False and r.buildable is False
    assert any("input_QuantizeLinear" in e for e in r.errors)
    (s,) = [s for s in r.suggestions if "integer op" in s and "workbench edit" in s]
    assert "dequantize_integer_ops" in s and "workbench edit MODEL recipe.json" in s and "Q/DQ" in s
    assert [x["edits"] for x in r.repairs] == [[{"kind": "dequantize_integer_ops"}]]  # and it can apply it
    assert any(s.startswith("repairs the workbench can apply") and "--repair" in s for s in r.suggestions)


def test_constant_if_suggests_fold_constant_if():
    r = check_model(if_model())
    assert any("'if'" in s and "fold_constant_if" in s for s in r.suggestions)


def test_builder_crash_is_a_report_with_the_signal(monkeypatch):
    monkeypatch.setenv(TEST_CRASH_ENV, "segv")
    r = check_model(conv_bn_relu_model())
    assert r.crashed and r.crashed["signal"] == "SIGSEGV" and r.crashed["last_log"]
    assert r.buildable is False and any("SIGSEGV" in e for e in r.errors)
    assert any("crashed" in s for s in r.suggestions)


def test_missing_tensorrt_says_how_to_install():
    r = check_model(conv_bn_relu_model(), backend="tensorrt")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert r.backend is None and r.parsable is None and r.buildable is None
        assert any("pip install 'onnx-trt-workbench[" in s for s in r.suggestions)
    else:  # pragma: no cover - only where full TensorRT is installed
        assert r.backend == "tensorrt"


def test_bad_input_raises():
    with pytest.raises(DataError):
        check_model(dynamic_model(), shapes="input:1x3x8")
    with pytest.raises(ModelError):
        check_model(b"not a model")


def _record_children(monkeypatch) -> tuple[threading.Event, list]:
    """Record the child processes check_model takes (the real ones) and signal when one was taken."""
    taken, procs = threading.Event(), []
    real_take = worker._take

    def take(*args, **kwargs):
        proc = real_take(*args, **kwargs)
        procs.append(proc)
        taken.set()
        return proc

    monkeypatch.setattr(worker, "_take", take)
    return taken, procs


def test_cancel_before_start_raises_without_doing_any_work(monkeypatch):
    """Decision: a cancelled check raises CheckCancelled (a BuildError), never a partial report. Set before the
    call, it raises before the model is even loaded (bytes that are no model do not raise ModelError) and no
    child process is taken."""
    _, procs = _record_children(monkeypatch)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CheckCancelled, match="was cancelled") as info:
        check_model(b"not a model", cancel=cancel)
    assert isinstance(info.value, BuildError) and "run the check again" in info.value.hint
    with pytest.raises(CheckCancelled):
        check_model(conv_bn_relu_model(), cancel=lambda: True)
    assert procs == []


def test_cancel_during_the_check_stops_the_child(monkeypatch):
    taken, procs = _record_children(monkeypatch)
    with pytest.raises(CheckCancelled, match="the check of .* was cancelled"):
        check_model(conv_bn_relu_model(), cancel=taken)  # set as soon as the child has the job
    assert len(procs) == 1 and procs[0].poll() is not None
    assert check_model(conv_bn_relu_model(), cancel=threading.Event()).ok  # an unset cancel changes nothing


def _cli(cli_path, *args, env=None):
    return subprocess.run([str(cli_path), *args], capture_output=True, text=True, timeout=300, env=env)


def test_cli_check_contract_and_exit_codes(cli_path, tmp_path):
    path = tmp_path / "int.onnx"
    onnx.save(integer_ops_model(), path)
    p = _cli(cli_path, "check", str(path), "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert {"parsable", "buildable", "unsupported", "errors", "suggestions"} <= set(r)
    assert r["parsable"] is False and {u["op"] for u in r["unsupported"]} == {
        "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"}
    p = _cli(cli_path, "check", "digits_cnn", "--shapes", "input:1x1x8x8,8x1x8x8,4x1x8x8", "--json")
    assert p.returncode == 1 and "min <= opt <= max" in json.loads(p.stdout)["error"]
    p = _cli(cli_path, "check", str(tmp_path / "missing.onnx"), "--json")
    assert p.returncode == 1 and "missing.onnx" in json.loads(p.stdout)["error"]


def test_cli_check_reports_a_crash_with_exit_0(cli_path):
    import os

    env = dict(os.environ, **{TEST_CRASH_ENV: "abort"})
    p = _cli(cli_path, "check", "digits_cnn", "--json", env=env)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["crashed"]["signal"] == "SIGABRT" and r["buildable"] is False


def test_cli_check_without_any_tensorrt_says_how_to_install():
    """A Python where neither tensorrt nor tensorrt_rtx imports (None in sys.modules blocks the import)."""
    import sys

    code = ("import sys; sys.modules['tensorrt'] = None; sys.modules['tensorrt_rtx'] = None\n"
            "from workbench.cli import main; sys.exit(main(['check', 'digits_cnn', '--json']))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["backend"] is None and r["parsable"] is None and r["buildable"] is None
    assert "no TensorRT is installed" in r["errors"][0]
    assert "pip install 'onnx-trt-workbench[rtx]'" in r["suggestions"][0]


def test_qdq_placed_for_onnx_runtime_is_named_with_the_tensorrt_quantize_suggested():
    """Both placements of one calibration: TensorRT's parses; ONNX Runtime's (int32 biases, asymmetric uint8)
    is named node by node, with the way back."""
    import warnings

    from workbench.calibration import calibrate
    from workbench.edits import apply_edit
    from workbench.graph import SAMPLES_DIR, load_model
    from workbench.precision import activation_tensors, quantize_model
    from workbench.recipe import FuseBatchNorm

    folded = apply_edit(load_model("digits_cnn"), FuseBatchNorm())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scales = calibrate(folded, SAMPLES_DIR / "digits_calib.npz",
                           tensors=activation_tensors(folded, target="onnxruntime"))
    shapes = "input:1x1x8x8,8x1x8x8,32x1x8x8"
    trt = check_model(quantize_model(folded, scales), shapes=shapes)
    assert trt.parsable and trt.unsupported == [] and not any("ONNX Runtime's CPU" in s for s in trt.suggestions)
    ort_placed = quantize_model(folded, scales, target="onnxruntime")
    r = check_model(ort_placed, shapes=shapes)
    biases = [n.name for n in ort_placed.graph.node if n.op_type == "DequantizeLinear" and n.name.endswith(
        ("_B_bn__DequantizeLinear", "bias__DequantizeLinear"))]
    assert len(biases) == 5 and {u["node"] for u in r.unsupported} >= set(biases)
    assert all("symmetric" in u["reason"] for u in r.unsupported)
    (s,) = [s for s in r.suggestions if "ONNX Runtime's CPU placement" in s]
    assert "workbench quantize MODEL --calib DATA.npz" in s and r.parsable is False
