"""Captures within a memory budget: layerwise compare plans its batch step and its runs per batch from the bytes
one sample's captured tensors need; a small budget (forced with the override) gives the same report as the
unbounded run, a budget below one tensor is refused naming the bytes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.test_compare import OUTLIERS, TEST, max_scales
from workbench.backends.capture import BUDGET_ENV, capture_budget, plan_capture, sample_bytes
from workbench.compare import compare
from workbench.debug import outlier_channel_model
from workbench.errors import DataError
from workbench.graph import load_model
from workbench.precision import quantize_model


@pytest.fixture(scope="module")
def models():
    ref = load_model(outlier_channel_model(load_model("digits_cnn"), OUTLIERS, channel=3, factor=64.0))
    return ref, load_model(quantize_model(ref, max_scales(ref)))


@pytest.fixture(scope="module")
def data():
    return {"input": np.load(TEST)["input"][:24]}


def _same(a, b):
    a, b = a.to_dict(), b.to_dict()
    a.pop("warnings"), b.pop("warnings")
    return a == b


@pytest.fixture(scope="module")
def unbounded(models, data):
    ref, q = models
    report = compare(ref, q, data, layerwise=True, batch_size=1, workers=1, memory_budget=1 << 40)
    assert not any("memory budget" in w for w in report.warnings)
    return report


@pytest.mark.parametrize("budget", [150_000, 100_000])
def test_a_small_budget_splits_the_capture_and_changes_no_bit(models, data, unbounded, budget):
    ref, q = models
    report = compare(ref, q, data, layerwise=True, batch_size=32, workers=1, memory_budget=budget)
    note = next(w for w in report.warnings if "memory budget" in w)
    runs = int(note.split(" runs per batch")[0].rsplit(" ", 1)[1])
    assert "batches of 1 sample(s)" in note and runs >= 2
    assert _same(report, unbounded)  # every float of every layer, local errors included
    assert all(r["local_rel_l2"] is not None for r in report.to_dict()["layers"])


def test_the_batch_step_shrinks_to_the_budget_as_the_same_step_would_give(models, data):
    ref, q = models
    per_sample = 195_000  # the digits CNN's capture is about 190 KiB per sample (in the note below)
    report = compare(ref, q, data, layerwise=True, batch_size=32, workers=1, memory_budget=4 * per_sample)
    note = next(w for w in report.warnings if "memory budget" in w)
    assert "batches of 4 sample(s)" in note and "runs per batch" not in note
    assert _same(report, compare(ref, q, data, layerwise=True, batch_size=4, workers=1, memory_budget=1 << 40))


def test_local_errors_are_left_out_where_one_local_run_does_not_fit(models, data, unbounded):
    ref, q = models
    report = compare(ref, q, data, layerwise=True, batch_size=32, workers=1, memory_budget=60_000)
    assert any("local errors were left out" in w for w in report.warnings)
    layers = report.to_dict()["layers"]
    assert all(r["local_rel_l2"] is None for r in layers)
    full = unbounded.to_dict()["layers"]
    assert [{**r, "local_rel_l2": None, "local_snr_db": None} for r in full] == layers


def test_a_budget_below_one_tensor_is_refused_naming_the_bytes(models, data):
    ref, q = models
    with pytest.raises(DataError, match=r"layerwise compare: 17 tensors need .* KiB per sample, and "
                                        r"'/stem/stem.0/Conv_output_0' alone needs .* memory budget") as err:
        compare(ref, q, data, layerwise=True, workers=1, memory_budget=20_000)
    assert "--tensors" in err.value.hint and BUDGET_ENV in err.value.hint


def test_the_budget_is_shared_by_the_workers_and_read_from_the_environment(monkeypatch):
    assert capture_budget(4, 8 << 20) == 2 << 20
    monkeypatch.setenv(BUDGET_ENV, "3G")
    assert capture_budget(2) == 3 << 29
    monkeypatch.setenv(BUDGET_ENV, "lots")
    with pytest.raises(DataError, match=BUDGET_ENV):
        capture_budget(1)
    monkeypatch.delenv(BUDGET_ENV)
    assert 0 < capture_budget(1) < capture_budget(1, 1 << 50)


def _dynamic_model() -> onnx.ModelProto:
    """x [N, 3, H, W] -> Relu -> NonZero -> Cast float: a shape that only the data gives."""
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("NonZero", ["r"], ["nz"], name="nonzero"),
             helper.make_node("Cast", ["nz"], ["y"], name="cast", to=TensorProto.FLOAT)]
    g = helper.make_graph(nodes, "dyn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, "nnz"])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_sizes_come_from_the_concrete_shapes_and_unknown_ones_are_named():
    x = np.ones((2, 3, 8, 5), np.float32)
    known, unknown = sample_bytes(_dynamic_model(), ["x", "r", "y"], {"x": x}, 2)
    assert known == {"x": 3 * 8 * 5 * 4, "r": 3 * 8 * 5 * 4} and unknown == ["y"]


def test_a_model_with_unknown_shapes_is_measured_and_compared(data):
    m = _dynamic_model()
    x = np.abs(np.random.default_rng(0).standard_normal((6, 3, 4, 4))).astype(np.float32) + 0.1
    small = compare(m, m, {"x": x}, layerwise=True, batch_size=1, workers=1, memory_budget=1 << 40)
    # 'y' is [4, 48] per sample, 768 bytes (measured on the first sample), the others 192: with the outputs, the
    # input and the working arrays about 12.6 KiB per sample, so 16 KiB holds one sample and not two
    bounded = compare(m, m, {"x": x}, layerwise=True, batch_size=4, workers=1, memory_budget=16 << 10)
    assert "batches of 1 sample(s)" in next(w for w in bounded.warnings if "memory budget" in w)
    assert _same(small, bounded) and [r["tensor"] for r in bounded.to_dict()["layers"]] == ["r", "y"]


def test_the_planner_packs_consecutive_units_and_keeps_shared_tensors_once():
    sizes = {"a": 10, "b": 10, "c": 10, "d": 30}
    units = [["a"], ["a", "b"], ["b", "c"], ["d"]]
    plan = plan_capture(units, sizes, labels=["u0", "u1", "u2", "u3"], fixed=5, requested=8, fixed_step=None,
                        budget=40, what="test", hint="h")
    assert plan is not None and plan.step == 1 and plan.groups == ((0, 1, 2), (3,)) and plan.per_sample == 65
    roomy = plan_capture(units, sizes, labels=["u0", "u1", "u2", "u3"], fixed=5, requested=8, fixed_step=None,
                         budget=65 * 3, what="test", hint="h")
    assert roomy is not None and roomy.step == 2 and roomy.groups == ((0, 1, 2, 3),)  # 3 fit, a power of two
    with pytest.raises(DataError, match="'u3' alone needs 35 B"):
        plan_capture(units, sizes, labels=["u0", "u1", "u2", "u3"], fixed=5, requested=8, fixed_step=None,
                     budget=30, what="test", hint="h")
    assert plan_capture(units, sizes, labels=["u0", "u1", "u2", "u3"], fixed=5, requested=8, fixed_step=None,
                        budget=30, what="test", hint="h", refuse=False) is None


def test_sensitivity_in_a_small_budget_scores_the_layers_in_groups_and_changes_no_bit(models, data):
    from workbench.debug import sensitivity

    ref, q = models
    full = sensitivity(ref, q, data, batch_size=1, workers=1, memory_budget=1 << 40)
    assert not any("memory budget" in w for w in full.warnings)
    for budget in (12_000, 9_000):  # the digits CNN's 6 layers need 13.7 KiB per sample
        small = sensitivity(ref, q, data, batch_size=16, workers=1, memory_budget=budget)
        note = next(w for w in small.warnings if "memory budget" in w)
        assert "batches of 1 sample(s), layers scored in" in note
        assert small.table.records() == full.table.records()  # every float, not approximately
        assert (small.metric_before, small.unsettled_pairs) == (full.metric_before, full.unsettled_pairs)
    with pytest.raises(DataError, match="sensitivity: 6 layers need .* and '/res1/res1.0/Conv' alone needs .* "
                                        "memory budget") as err:
        sensitivity(ref, q, data, workers=1, memory_budget=1_000)
    assert "--layers" in err.value.hint
