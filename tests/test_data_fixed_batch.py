"""A model exported with a fixed batch > 1 on the sample axis, fed a sample count that is not a multiple of it.

The smallest form of logreg_iris_onnxmltools (input ``float_input`` [3, 2]) fed 8 samples: the data layer splits
the samples into runs of 3 along axis 0 and drops the last 2 with a warning that says so, in calibration,
compare, debug and profile (it used to treat the [8, 2] array as one value shared by every sample and fail in
ONNX Runtime with "has shape [8, 2], the model expects [3, 2]").
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper, numpy_helper

from workbench.backends.ort import OrtEngine
from workbench.calibration import calibrate
from workbench.cli import main as cli_main
from workbench.compare import compare
from workbench.data import find_data, load_data, timing_feeds
from workbench.debug import debug_precision, sensitivity
from workbench.errors import DataError
from workbench.graph import load_model
from workbench.precision import quantize_model

pytestmark = pytest.mark.filterwarnings(r"ignore:only \d+ calibration samples:UserWarning")
DROPPED = r"batch is fixed at 3: 2 of 8 samples were dropped"


def fixed3() -> onnx.ModelProto:
    """float_input [3, 2] -> MatMul -> Relu -> MatMul -> y [3, 4] (the batch of 3 is fixed in the export)."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((2, 8)).astype(np.float32)
    w2 = rng.standard_normal((8, 4)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["float_input", "w1"], ["h"], name="mm1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("float_input", T.FLOAT, [3, 2])],
                          [helper.make_tensor_value_info("y", T.FLOAT, [3, 4])],
                          [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    return onnx.shape_inference.infer_shapes(m)


def eight() -> dict[str, np.ndarray]:
    return {"float_input": np.random.default_rng(1).standard_normal((8, 2)).astype(np.float32)}


def test_samples_are_split_in_runs_of_the_fixed_batch_and_the_remainder_dropped_with_a_warning() -> None:
    model, data = fixed3(), eight()
    ds = load_data(data, model)
    assert ds.sample_axes == {"float_input": 0} and ds.run_length == 3 and ds.samples == 8
    said: list[str] = []
    batches = list(ds.batches(16, warnings=said))
    assert [b.feeds["float_input"].shape for b in batches] == [(3, 2), (3, 2)]
    np.testing.assert_array_equal(np.concatenate([b.feeds["float_input"] for b in batches]), data["float_input"][:6])
    assert len(said) == 1 and "2 of 8 samples were dropped" in said[0]
    with pytest.warns(UserWarning, match=DROPPED):  # no list to say it in: a UserWarning
        assert len(list(ds.batches(16))) == 2
    with pytest.raises(DataError, match="2 samples, fewer than the model's fixed batch size 3"):
        list(load_data({"float_input": data["float_input"][:2]}, model).batches(16))
    # a multiple of the batch: nothing dropped, nothing said
    nine = {"float_input": np.zeros((9, 2), np.float32)}
    quiet: list[str] = []
    assert len(list(load_data(nine, model).batches(16, warnings=quiet))) == 3 and quiet == []
    # a wrong feature size is not mistaken for a sample count: ONNX Runtime's shape error stays
    assert load_data({"float_input": np.zeros((8, 5), np.float32)}, model).sample_axes == {"float_input": None}


def test_fixed_batch_of_three_through_calibration_compare_debug_and_profile(tmp_path: Path, capsys) -> None:
    model, data = fixed3(), eight()
    with pytest.warns(UserWarning, match=DROPPED):
        cache = calibrate(model, data, method="max")
    assert cache.samples == 6
    assert cache.tensors["float_input"].amax == pytest.approx(float(np.abs(data["float_input"][:6]).max()))
    report = compare(model, model, data)
    assert report.samples == 6 and report.outputs["y"]["max_abs"] == 0.0
    assert any("2 of 8 samples were dropped" in w for w in report.warnings)
    cand = load_model(quantize_model(model, cache))
    layer = compare(model, cand, data, layerwise=True)
    assert layer.samples == 6 and 0.0 < layer.outputs["y"]["rel_l2"] < 0.5
    sens = sensitivity(model, cand, data, batch_size=16)
    assert sens.samples == 6 and {"mm1", "mm2"} <= set(sens.ranking)
    assert any("2 of 8 samples were dropped" in w for w in sens.warnings)
    with pytest.warns(UserWarning, match=DROPPED):  # each plan's evaluation says it too
        result = debug_precision(model, cand, data, tolerance=1e-9, batch_size=16)
    assert result.plan.met and result.plan.metric <= 1e-9
    assert any("2 of 8 samples were dropped" in w for w in result.sensitivity.warnings)
    feeds = timing_feeds(model, data, batch=1)  # the model's batch, whatever --batch says
    assert feeds["float_input"].shape == (3, 2)
    assert OrtEngine(model).run(feeds)["y"].shape == (3, 4)
    # the CLI: an .npz of 8 samples fits the model and compare/profile read it
    src, npz = tmp_path / "m.onnx", tmp_path / "calib.npz"
    onnx.save(model, src)
    np.savez(npz, **data)
    assert find_data(model, tmp_path) == [npz]
    assert cli_main(["compare", str(src), str(src), "--inputs", str(npz), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["samples"] == 6 and any("2 of 8 samples were dropped" in w for w in out["warnings"])
    assert cli_main(["profile", str(src), "--inputs", str(npz), "--iterations", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["shapes"] == {"float_input": [3, 2]}
