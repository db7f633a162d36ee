"""debug: restoring layers, sensitivity (checked against one full run per layer), the plan, recipes, the CLI."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.test_compare import OUTLIERS, TEST, max_scales
from workbench.calibration import calibrate
from workbench.compare import accuracy, output_error
from workbench.data import Dataset
from workbench.debug import (
    debug_precision,
    estimated_cost,
    evaluate,
    find_plan,
    low_precision_layers,
    outlier_channel_model,
    plan_recipe,
    restore_layers,
    sensitivity,
)
from workbench.errors import DataError, RecipeError
from workbench.graph import load_model, save_model
from workbench.precision import convert_precision, quantize_model
from workbench.recipe import ConvertPrecision, FuseBatchNorm, Quantize, Recipe
from workbench.session import Session


@pytest.fixture(scope="module")
def models() -> dict[str, onnx.ModelProto]:
    ref = load_model(outlier_channel_model(load_model("digits_cnn"), OUTLIERS, channel=3, factor=64.0))
    scales = max_scales(ref)
    return {"ref": ref, "scales": scales, "q": load_model(quantize_model(ref, scales))}


def logits(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(["logits"], {"input": x})[0]


def test_outlier_model_is_the_same_function_in_fp32():
    ref = load_model("digits_cnn")
    x = np.load(TEST)["input"]
    broken = outlier_channel_model(ref, OUTLIERS, channel=3, factor=64.0)
    np.testing.assert_allclose(logits(broken, x), logits(ref, x), rtol=0, atol=1e-5)
    acts = {n.name: n for n in broken.graph.node}
    assert acts["/res2/res2.0/Conv"].input[1] == "res2.0.weight"


def test_restore_last_layer_equals_quantizing_without_it(models):
    x = np.load(TEST)["input"][:64]
    restored = restore_layers(models["q"], models["ref"], ["/fc/Gemm"])
    excluded = quantize_model(models["ref"], models["scales"], exclude=["/fc/Gemm"])
    np.testing.assert_allclose(logits(restored, x), logits(excluded, x), rtol=0, atol=1e-5)
    assert low_precision_layers(models["ref"], load_model(restored)).keys() == \
        low_precision_layers(models["ref"], models["q"]).keys() - {"/fc/Gemm"}


def test_restore_every_layer_gives_the_reference_back(models):
    x = np.load(TEST)["input"][:64]
    layers = list(low_precision_layers(models["ref"], models["q"]))
    assert "/res2/res2.0/Conv" in layers and "/fc/Gemm" in layers
    restored = restore_layers(models["q"], models["ref"], layers)
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in restored.graph.node)
    np.testing.assert_allclose(logits(restored, x), logits(models["ref"], x), rtol=0, atol=1e-4)
    # fp16: Cast nodes disappear the same way
    half = load_model(convert_precision(models["ref"], "fp16"))
    back = restore_layers(half, models["ref"], list(low_precision_layers(models["ref"], half)))
    np.testing.assert_allclose(logits(back, x), logits(models["ref"], x), rtol=0, atol=1e-4)


def test_sensitivity_equals_one_full_run_per_layer(models):
    data = np.load(TEST)
    ds = Dataset({"input": data["input"][:128], "label": data["label"][:128]})
    sens = sensitivity(models["ref"], models["q"], ds, metric=accuracy())
    ref_out = logits(models["ref"], ds.arrays["input"]).astype(np.float64)
    cand_acc = (logits(models["q"], ds.arrays["input"]).argmax(1) == ds.arrays["label"]).mean()
    assert sens.metric_before == pytest.approx(cand_acc)
    for row in sens.table.records():
        full = logits(restore_layers(models["q"], models["ref"], [row["node"]]), ds.arrays["input"]).astype(np.float64)
        per_sample = np.linalg.norm(full - ref_out, axis=1) / np.linalg.norm(ref_out, axis=1)
        assert row["rel_l2_restored"] == pytest.approx(per_sample.mean(), rel=2e-3, abs=1e-5), row["node"]
        acc = (full.argmax(1) == ds.arrays["label"]).mean()
        assert row["metric_restored"] == pytest.approx(acc, abs=1.5 / 128), row["node"]
    # the two layers reading an outlier channel are the most sensitive
    assert set(sens.ranking[:2]) == {"/res2/res2.0/Conv", "/fc/Gemm"}
    assert sens.ranking[0] == "/res2/res2.0/Conv"
    scores = sens.table.column("score")
    assert scores == sorted(scores, reverse=True)


def test_find_plan_greedy_then_bisect_then_prune():
    damage = {"a": 5.0, "b": 3.0, "c": 0.0, "d": 1.0, "e": 0.5}
    ranking = ["a", "b", "c", "d", "e"]
    calls = []

    def evaluate(keep):
        calls.append(keep)
        return 100.0 - sum(v for k, v in damage.items() if k not in keep), float(len(keep))

    plan = find_plan(ranking, evaluate, ok=lambda m: m >= 99.0, target=99.0, higher_is_better=True)
    assert plan.met and set(plan.keep) == {"a", "b", "d"}  # 'c' is pruned: keeping it does not help
    assert plan.metric == pytest.approx(99.5)
    assert plan.tried.column("step")[:2] == ["baseline", "all high precision"]
    assert "bisect" in plan.tried.column("step") or "greedy" in plan.tried.column("step")
    assert len(set(calls)) == len(calls)  # no plan evaluated twice
    never = find_plan(ranking, evaluate, ok=lambda m: m >= 101.0, target=101.0, higher_is_better=True)
    assert not never.met and "cannot be met" in never.message
    assert never.metric == 100.0 and set(never.keep) == set(ranking)
    nothing = find_plan(ranking, evaluate, ok=lambda m: m >= 80.0, target=80.0, higher_is_better=True)
    assert nothing.met and nothing.keep == ()


def test_debug_recovers_accuracy_within_a_tenth_of_a_point(models):
    result = debug_precision(models["ref"], models["q"], TEST, metric=accuracy(), tolerance=0.001)
    d = result.to_dict()
    data = np.load(TEST)
    fp32 = (logits(models["ref"], data["input"]).argmax(1) == data["label"]).mean()
    assert d["metric_reference"] == pytest.approx(fp32)
    assert d["metric_before"] < fp32 - 0.02
    assert d["met"] and d["metric_after"] >= fp32 - 0.001
    assert "/res2/res2.0/Conv" in d["keep_high_precision"] and len(d["keep_high_precision"]) <= 3
    # the plan really reaches that accuracy when re-quantized without those layers
    fixed = quantize_model(models["ref"], models["scales"], exclude=d["keep_high_precision"])
    assert (logits(fixed, data["input"]).argmax(1) == data["label"]).mean() >= fp32 - 0.001
    costs = [p["cost"] for p in d["plans"]]
    assert min(costs) == pytest.approx(0.25) and max(costs) == pytest.approx(1.0)
    assert estimated_cost(models["ref"]) == pytest.approx(1.0)


def test_error_metric_tolerance_that_cannot_be_met_stops_with_best_plan(models):
    # only layers that do not read an outlier may go back to FP32: no plan reaches 5% output error
    result = debug_precision(models["ref"], models["q"], TEST, metric=output_error(), tolerance=0.05,
                             layers=["/stem/stem.0/Conv", "/res1/res1.0/Conv"], max_samples=64)
    assert not result.plan.met and "cannot be met" in result.plan.message
    assert result.plan.metric == min(result.plan.tried.column("metric")) > 0.05
    assert len(result.plan.tried) == 2  # the baseline and all-high-precision plans, then it stops


def test_sensitivity_bad_input(models):
    with pytest.raises(DataError, match="no quantized or low-precision layer"):
        sensitivity(models["ref"], models["ref"], TEST)
    with pytest.raises(DataError, match="do not run in low precision"):
        sensitivity(models["ref"], models["q"], TEST, layers=["/gap/GlobalAveragePool"])
    with pytest.raises(DataError, match="label"):
        sensitivity(models["ref"], models["q"], {"input": np.load(TEST)["input"][:32]}, metric=accuracy())


def test_plan_recipe_adds_to_the_precision_edit():
    r = Recipe(edits=(FuseBatchNorm(), Quantize(exclude=("x",), scales="abc")))
    out = plan_recipe(r, ["y", "x"])
    assert out.edits[1].exclude == ("x", "y") and out.edits[0] == FuseBatchNorm()
    half = plan_recipe(Recipe(edits=(ConvertPrecision(),)), ["n1"])
    assert half.edits[0].keep == ("n1",)
    with pytest.raises(RecipeError, match="no quantize or convert_precision"):
        plan_recipe(Recipe(edits=(FuseBatchNorm(),)), ["n1"])


def _int8_recipe(models, tmp_path):
    """The outlier model saved to disk and a max-calibrated INT8 recipe for it (scales saved beside it)."""
    model_path = save_model(models["ref"], tmp_path / "outlier.onnx")
    session = Session(model_path, cache_dir=tmp_path / "cache")
    cache = calibrate(session.model, TEST.parent / "digits_calib.npz", method="max")
    session.apply(Quantize(method="max", scales=cache.save(session.cache_dir)))
    return model_path, session.save(tmp_path / "int8.json")


def test_cli_debug_writes_a_recipe_that_recovers_accuracy(models, tmp_path, cli_path):
    model_path, recipe = _int8_recipe(models, tmp_path)
    proc = subprocess.run([str(cli_path), "debug", str(model_path), "--recipe", str(recipe), "--inputs", str(TEST),
                           "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    out = json.loads(proc.stdout)
    assert {"sensitivity", "keep_high_precision", "metric_before", "metric_after"} <= set(out)
    assert out["sensitivity"][0]["node"] == "/res2/res2.0/Conv"
    assert out["metric_after"] >= out["metric_reference"] - 0.001 > out["metric_before"]
    fixed = Session.load(out["recipe"])
    assert fixed.recipe.edits[-1].exclude == tuple(out["keep_high_precision"])
    data = np.load(TEST)
    acc = (logits(fixed.model, data["input"]).argmax(1) == data["label"]).mean()
    assert acc == pytest.approx(out["metric_after"])
    bad = subprocess.run([str(cli_path), "debug", str(model_path), "--recipe", str(tmp_path / "none.json"),
                          "--inputs", str(TEST), "--json"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "none.json" in json.loads(bad.stdout)["error"]
    human = subprocess.run([str(cli_path), "debug", str(model_path), "--recipe", str(recipe), "--inputs", str(TEST)],
                           capture_output=True, text=True, timeout=300)
    assert human.returncode == 0, human.stderr
    assert f"ranked {len(out['sensitivity'])} layers on {out['samples']} samples in " in human.stdout
    assert f"s; {len(out['plans'])} plans measured" in human.stdout and out["seconds"] > 0


def test_sensitivity_with_a_requantizing_factory_equals_naive_exclusion(models):
    x = np.load(TEST)["input"][:96]
    ref_out = logits(models["ref"], x).astype(np.float64)

    def factory(keep):
        return quantize_model(models["ref"], models["scales"], exclude=keep)

    sens = sensitivity(models["ref"], models["q"], {"input": x}, factory=factory)
    for row in sens.table.records():
        full = logits(factory((row["node"],)), x).astype(np.float64)
        naive = (np.linalg.norm(full - ref_out, axis=1) / np.linalg.norm(ref_out, axis=1)).mean()
        assert row["rel_l2_restored"] == pytest.approx(naive, rel=2e-3, abs=1e-5), row["node"]


def test_ranking_on_a_subset_still_measures_plans_on_all_samples(models):
    result = debug_precision(models["ref"], models["q"], TEST, metric=accuracy(), tolerance=0.001, rank_samples=96)
    data = np.load(TEST)
    assert result.sensitivity.samples == 96
    assert result.metric_reference == pytest.approx((logits(models["ref"], data["input"]).argmax(1)
                                                     == data["label"]).mean())
    assert result.plan.met and result.sensitivity.ranking[0] == "/res2/res2.0/Conv"


def test_unsettled_pairs_match_the_per_sample_errors_of_full_runs(models):
    """The warning about neighbouring ranks within sampling noise counts exactly the pairs whose per-sample
    error differences (one full run per restored layer) average less than 2 paired standard errors."""
    from workbench.debug import SETTLED_Z

    x = np.load(TEST)["input"][:200]
    ref_out = logits(models["ref"], x).astype(np.float64)
    sens = sensitivity(models["ref"], models["q"], {"input": x})
    per = {}
    for node in sens.ranking:
        full = logits(restore_layers(models["q"], models["ref"], [node]), x).astype(np.float64)
        per[node] = np.linalg.norm(full - ref_out, axis=1) / np.linalg.norm(ref_out, axis=1)
    means = [per[n].mean() for n in sens.ranking]
    assert means == sorted(means)  # the ranking is the order of the full runs' mean errors
    expected = 0
    for a, b in zip(sens.ranking, sens.ranking[1:]):
        d = per[a] - per[b]
        expected += abs(d.mean()) < SETTLED_Z * d.std(ddof=1) / np.sqrt(len(d))
    assert 0 < expected < len(sens.ranking) - 1  # the digits model has both settled and unsettled neighbours
    assert sens.unsettled_pairs == expected
    assert any(f"{expected} of {len(sens.ranking) - 1} neighbouring pairs" in w for w in sens.warnings)


def test_pair_stats_streamed_equal_direct_paired_test():
    from workbench.debug.sensitivity import _PairStats

    rng = np.random.default_rng(0)
    base = rng.standard_normal(300)
    scores = np.stack([base + 1.0, base + 1.0, base + 0.5 + 0.01 * rng.standard_normal(300),
                       base + 0.5 + 0.01 * rng.standard_normal(300), base])
    stats = _PairStats(len(scores))
    for i in range(0, 300, 64):  # streamed in batches, as sensitivity() does
        stats.add(scores[:, i:i + 64])
    direct = sum(abs((scores[a] - scores[b]).mean()) <= 2 * (scores[a] - scores[b]).std(ddof=1) / np.sqrt(300)
                 for a, b in zip(range(4), range(1, 5)))
    assert stats.unsettled(list(range(5))) == direct == 2  # the exact tie (0, 1) and the noisy pair (2, 3)
    assert stats.unsettled([0, 2, 4]) == 0
    bad = _PairStats(2)
    bad.add(np.array([[np.inf, 1.0], [0.0, 1.0]]))
    assert bad.unsettled([0, 1]) == 0  # a non-finite score: its pair is not counted


def _rel_l2(out: np.ndarray, ref_out: np.ndarray) -> np.ndarray:
    return np.linalg.norm(out - ref_out, axis=1) / np.linalg.norm(ref_out, axis=1)


def test_quantize_only_sensitivity_equals_one_full_quantized_run_per_layer(models):
    """direction="quantize_only": each layer's score is the FP32 model with only that layer quantized (same
    scales), run in full in ONNX Runtime on the same samples; the outlier reader ranks first."""
    from workbench.debug import isolate_layers

    data = np.load(TEST)
    x, y = data["input"][:128], data["label"][:128]
    sens = sensitivity(models["ref"], models["q"], Dataset({"input": x, "label": y}), metric=accuracy(),
                       direction="quantize_only")
    assert sens.direction == "quantize_only"
    ref_out = logits(models["ref"], x).astype(np.float64)
    fp32 = (ref_out.argmax(1) == y).mean()
    assert sens.metric_reference == pytest.approx(fp32)
    assert sens.metric_before == pytest.approx((logits(models["q"], x).argmax(1) == y).mean())
    rows = sens.table.records()
    assert len(rows) == 6
    for row in rows:
        node = row["node"]
        # the Add's residual input is quantized only together with its convolution in quantize_model, so
        # the brute force for it is the candidate with every other layer restored
        full_model = restore_layers(models["q"], models["ref"], [r["node"] for r in rows if r["node"] != node]) \
            if node == "/Add" else quantize_model(models["ref"], models["scales"], nodes=[node])
        assert low_precision_layers(models["ref"], load_model(full_model)).keys() == {node}
        full = logits(full_model, x).astype(np.float64)
        err = _rel_l2(full, ref_out).mean()
        assert err > 0, node
        assert row["rel_l2_restored"] == pytest.approx(err, rel=1e-5, abs=1e-7), node
        assert row["score"] == pytest.approx(err, rel=1e-5, abs=1e-7), node
        acc = (full.argmax(1) == y).mean()
        assert row["metric_restored"] == pytest.approx(acc, abs=1e-9), node
        assert row["metric_gain"] == pytest.approx(acc - fp32, abs=1e-9), node
        # isolate_layers (the default variant) is that model
        np.testing.assert_allclose(logits(isolate_layers(models["q"], models["ref"], [node]), x), full,
                                   rtol=0, atol=1e-5)
    assert sens.ranking[0] == "/res2/res2.0/Conv"
    assert set(sens.ranking[:2]) == {"/res2/res2.0/Conv", "/fc/Gemm"}
    scores = sens.table.column("score")
    assert scores == sorted(scores, reverse=True)
    by_metric = sensitivity(models["ref"], models["q"], Dataset({"input": x, "label": y}), metric=accuracy(),
                            direction="quantize_only", rank_by="metric")
    assert by_metric.ranking[0] == "/res2/res2.0/Conv"
    assert by_metric.table.records()[0]["score"] == pytest.approx(-by_metric.table.records()[0]["metric_gain"])
    with pytest.raises(DataError, match="unknown direction"):
        sensitivity(models["ref"], models["q"], {"input": x}, direction="sideways")


def test_quantize_only_with_a_requantizing_factory_equals_quantizing_that_node_alone(models):
    x = np.load(TEST)["input"][:96]
    ref_out = logits(models["ref"], x).astype(np.float64)
    calls = []

    def factory(keep):
        calls.append(keep)
        return quantize_model(models["ref"], models["scales"], exclude=keep)

    layers = ["/stem/stem.0/Conv", "/res2/res2.0/Conv", "/fc/Gemm"]
    sens = sensitivity(models["ref"], models["q"], {"input": x}, factory=factory, layers=layers,
                       direction="quantize_only")
    all_low = set(low_precision_layers(models["ref"], models["q"]))
    assert sorted(set(all_low) - set(k) for k in calls) == sorted({n} for n in layers)
    for row in sens.table.records():
        full = logits(quantize_model(models["ref"], models["scales"], nodes=[row["node"]]), x).astype(np.float64)
        assert row["score"] == pytest.approx(_rel_l2(full, ref_out).mean(), rel=1e-5, abs=1e-7), row["node"]
    assert sens.ranking[0] == "/res2/res2.0/Conv"


def test_cli_debug_quantize_only_direction(models, tmp_path, cli_path):
    model_path, recipe = _int8_recipe(models, tmp_path)
    proc = subprocess.run([str(cli_path), "debug", str(model_path), "--recipe", str(recipe), "--inputs", str(TEST),
                           "--direction", "quantize_only", "--max-samples", "256", "--workers", "2", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    out = json.loads(proc.stdout)
    assert {"sensitivity", "keep_high_precision", "metric_before", "metric_after", "recipe"} <= set(out)
    assert out["direction"] == "quantize_only"
    assert out["sensitivity"][0]["node"] == "/res2/res2.0/Conv"
    assert out["sensitivity"][0]["metric_restored"] <= out["metric_reference"]
    assert out["met"] and "/res2/res2.0/Conv" in out["keep_high_precision"]
    bad = subprocess.run([str(cli_path), "debug", str(model_path), "--recipe", str(recipe), "--inputs", str(TEST),
                          "--workers", "0"], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "workers must be >= 1 (got 0)" in bad.stderr + bad.stdout
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize("direction", ["restore", "quantize_only"])
def test_worker_threads_do_not_change_the_result(models, direction):
    """3 threads (single-threaded ONNX Runtime sessions, batches of 11) give the same table, sums and noise
    count as one thread (ONNX Runtime's own threading, batches of 32): sums are taken sample by sample."""
    tf = load_model("digits_transformer")
    cases = [(models["ref"], models["q"]), (tf, load_model(convert_precision(tf, "fp16")))]
    x = np.load(TEST)
    for ref, cand in cases:
        xs = x["input"][:150].reshape(150, *[d.dim_value for d in ref.graph.input[0].type.tensor_type.shape.dim[1:]])
        ds = Dataset({"input": xs, "label": x["label"][:150]})  # 5 batches of 32, the last short
        one = sensitivity(ref, cand, ds, metric=accuracy(), batch_size=32, workers=1, direction=direction)
        three = sensitivity(ref, cand, ds, metric=accuracy(), batch_size=32, workers=3, direction=direction)
        assert one.table.records() == three.table.records()
        assert (one.samples, one.metric_before, one.unsettled_pairs) == (three.samples, three.metric_before,
                                                                         three.unsettled_pairs)
        assert one.samples == 150
        ref_outs = [{"logits": logits(ref, xs[i:i + 32])} for i in range(0, 150, 32)]
        a, b = (evaluate(cand, ds, output_error(), ref_outs, batch_size=32, max_samples=None, reference=ref,
                         workers=w) for w in (1, 3))
        direct = logits(cand, xs).astype(np.float64)
        r = np.concatenate([o["logits"] for o in ref_outs]).astype(np.float64)
        assert a == b == pytest.approx((np.linalg.norm(direct - r, axis=1) / np.linalg.norm(r, axis=1)).mean(),
                                       rel=1e-5)


def test_worker_threads_stop_when_cancelled(models):
    """Cancelling between batches stops the ranking with the samples done so far (2 workers share a batch of
    32: 16 samples each); no thread outlives it."""
    import threading

    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 2  # two batches get through

    before = threading.active_count()
    sens = sensitivity(models["ref"], models["q"], np.load(TEST), batch_size=32, workers=2, cancel=cancel)
    assert sens.samples == 32
    assert any("cancelled after 32 samples" in w for w in sens.warnings)
    assert threading.active_count() == before


def test_restoring_a_node_that_reads_a_converted_constant_reads_the_fp32_constant():
    """FP16 conversion turns Constant nodes (GELU's 1/sqrt(2), attention's scale) into fp16 in place; the
    restored FP32 node must read the reference's constant, not the fp16 tensor of the same name."""
    tf = load_model("digits_transformer")
    half = load_model(convert_precision(tf, "fp16"))
    node = "/layers/layers.0/mlp/mlp.1/Div"
    restored = restore_layers(half, tf, [node])
    div = next(n for n in restored.graph.node if n.name == node)
    const = next(n for n in restored.graph.node if div.input[1] in n.output)
    assert const.op_type == "Constant" and div.input[1].endswith("__fp32")
    ref_const = next(n for n in tf.graph.node if n.output[0] == div.input[1][:-len("__fp32")])
    assert onnx.numpy_helper.to_array(const.attribute[0].t).dtype == np.float32
    assert const.attribute[0].t.SerializeToString() == ref_const.attribute[0].t.SerializeToString()
    x = np.load(TEST)["input"][:16, 0]
    s = ort.InferenceSession(restored.SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.isfinite(s.run(None, {"input": x})[0]).all()


def test_the_workflow_says_what_is_missing_before_any_run():
    """workflows.debug: a session without a precision edit has nothing to debug, an empty candidate path and an
    unknown metric are named as such (each before any model runs)."""
    from workbench.errors import DataError
    from workbench.session import Session
    from workbench.workflows.debug import compare as compare_workflow
    from workbench.workflows.debug import debug

    session = Session("digits_cnn")
    with pytest.raises(DataError, match="no quantize or convert_precision edit") as info:
        debug(session, TEST)
    assert "another ONNX file" in info.value.hint
    with pytest.raises(DataError, match="no candidate file given"):
        compare_workflow(session, TEST, candidate=" ")
    with pytest.raises(DataError, match="unknown metric 'top5'"):
        debug(session, TEST, metric="top5")
