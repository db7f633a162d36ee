"""Sweeps on a real LocalCluster (worker processes on 127.0.0.1): sensitivity, plan search, layerwise compare and the
commands and the Debug tab that run them give the same bits as the local run, also when a worker process is killed
mid-sweep."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

pytest.importorskip("distributed", reason="the cluster extra (dask.distributed), which make test installs")

from tests.test_compare import OUTLIERS, TEST, max_scales  # noqa: E402
from workbench.cluster import connect  # noqa: E402
from workbench.compare import accuracy, compare  # noqa: E402
from workbench.data import Dataset  # noqa: E402
from workbench.debug import debug_precision, outlier_channel_model, sensitivity  # noqa: E402
from workbench.graph import load_model  # noqa: E402
from workbench.precision import quantize_model  # noqa: E402


@pytest.fixture(scope="module")
def models():
    ref = load_model(outlier_channel_model(load_model("digits_cnn"), OUTLIERS, channel=3, factor=64.0))
    return ref, load_model(quantize_model(ref, max_scales(ref)))


@pytest.fixture(scope="module")
def cluster():
    c = connect("local:2")
    yield c
    c.close()


@pytest.mark.parametrize("direction", ["restore", "quantize_only"])
def test_sensitivity_on_the_cluster_is_bit_identical(models, cluster, direction):
    ref, q = models
    kw = dict(metric=accuracy(), batch_size=32, workers=3, direction=direction)
    here = sensitivity(ref, q, TEST, **kw)
    there = sensitivity(ref, q, TEST, cluster=cluster, **kw)
    assert there.table.records() == here.table.records()  # every float, not approximately
    assert (there.samples, there.metric_before, there.metric_reference, there.unsettled_pairs) == \
        (here.samples, here.metric_before, here.metric_reference, here.unsettled_pairs) and here.samples == 359


def test_debug_plan_on_the_cluster_is_bit_identical(models, cluster):
    ref, q = models
    here = debug_precision(ref, q, TEST, metric=accuracy(), tolerance=0.001).to_dict()
    there = debug_precision(ref, q, TEST, metric=accuracy(), tolerance=0.001, cluster=cluster).to_dict()
    here.pop("seconds"), there.pop("seconds")
    assert there == here and here["met"] and len(here["plans"]) > 2


@pytest.mark.parametrize("local", [True, False])
def test_layerwise_compare_on_the_cluster_is_bit_identical(models, cluster, local):
    ref, q = models
    kw = dict(layerwise=True, local=local, metrics=[accuracy()], batch_size=32, workers=3)
    here = compare(ref, q, TEST, **kw).to_dict()
    there = compare(ref, q, TEST, cluster=cluster, **kw).to_dict()
    assert there == here  # every float of every layer, not approximately
    assert here["samples"] == 359 and here["first_divergence"]["node"] == "/res2/res2.0/Conv"
    assert len(here["layers"]) == len(ref.graph.node) and (here["layers"][0]["local_rel_l2"] is None) != local


def test_compare_refuses_an_engine_candidate_on_a_cluster(models, cluster):
    from workbench.backends.ort import OrtEngine
    from workbench.errors import DataError

    ref, q = models
    with pytest.raises(DataError, match="cannot run on a cluster"):
        compare(ref, OrtEngine(q), TEST, cluster=cluster)


def _killer(c):
    """(victim address, killed progress list, a progress callback that SIGKILLs the victim's process once 16
    samples are done)."""
    pids = c.client.run(os.getpid)
    victim = sorted(pids)[0]
    killed: list[float] = []

    def kill_once(done, total, phase=""):
        if not killed and done >= 16:
            os.kill(pids[victim], signal.SIGKILL)
            killed.append(done)

    return victim, killed, kill_once


def test_a_worker_killed_mid_compare_changes_nothing_and_is_reported(models):
    ref, q = models
    x = np.load(TEST)
    ds = Dataset({"input": x["input"], "label": x["label"]})
    kw = dict(layerwise=True, metrics=[accuracy()], batch_size=8, workers=1)  # 45 tasks of 8 samples
    here = compare(ref, q, ds, **kw)
    with connect("local:2") as c:
        victim, killed, kill_once = _killer(c)
        there = compare(ref, q, ds, cluster=c, progress=kill_once, **kw)
        assert killed and there.samples == here.samples == 359
        notes = [w for w in there.warnings if "was lost" in w]
        assert notes and victim in notes[0] and "result is unchanged" in notes[0]
        assert {**there.to_dict(), "warnings": []} == {**here.to_dict(), "warnings": []}
        assert [w for w in there.warnings if w not in notes] == here.warnings


def test_a_worker_killed_mid_sweep_changes_nothing_and_is_reported(models):
    ref, q = models
    x = np.load(TEST)
    ds = Dataset({"input": x["input"], "label": x["label"]})
    kw = dict(metric=accuracy(), batch_size=8, workers=1)  # 45 tasks of 8 samples
    here = sensitivity(ref, q, ds, **kw)
    with connect("local:2") as c:
        victim, killed, kill_once = _killer(c)
        there = sensitivity(ref, q, ds, cluster=c, progress=kill_once, **kw)
        assert killed and there.table.records() == here.table.records()
        assert there.samples == here.samples == 359 and there.unsettled_pairs == here.unsettled_pairs
        notes = [w for w in there.warnings if "was lost" in w]
        assert notes and victim in notes[0] and "result is unchanged" in notes[0]
        assert c.events == notes
        c.client.wait_for_workers(2, timeout=60)  # the nanny restarted the killed process


def test_cli_debug_on_a_local_cluster_gives_the_local_answer(tmp_path, cli_path):
    import json
    import subprocess

    from tests.test_debug import _int8_recipe

    ref = load_model(outlier_channel_model(load_model("digits_cnn"), OUTLIERS, channel=3, factor=64.0))
    model_path, recipe = _int8_recipe({"ref": ref, "scales": max_scales(ref)}, tmp_path)
    base = [str(cli_path), "debug", str(model_path), "--recipe", str(recipe), "--inputs", str(TEST), "--json"]
    runs = [subprocess.run(base + extra, capture_output=True, text=True, timeout=600)
            for extra in ([], ["--cluster", "local:2"])]
    assert all(p.returncode == 0 for p in runs), runs[1].stderr[-2000:] + runs[1].stdout
    here, there = (json.loads(p.stdout) for p in runs)
    assert there.pop("cluster") == {"address": "local:2", "workers": 2, "events": []}
    for d in (here, there):
        d.pop("seconds")
    assert there == here
    bad = subprocess.run(base + ["--cluster", "tcp://127.0.0.1"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "not a scheduler address" in json.loads(bad.stdout)["error"]


def test_cli_compare_on_a_local_cluster_gives_the_local_answer(models, tmp_path, cli_path):
    import json
    import subprocess

    import onnx

    ref, q = models
    paths = tmp_path / "ref.onnx", tmp_path / "q.onnx"
    for model, path in zip(models, paths):
        onnx.save(model, path)
    base = [str(cli_path), "compare", *map(str, paths), "--inputs", str(TEST), "--layerwise", "--workers", "2",
            "--json"]
    runs = [subprocess.run(base + extra, capture_output=True, text=True, timeout=600)
            for extra in ([], ["--cluster", "local:2"])]
    assert all(p.returncode == 0 for p in runs), runs[1].stderr[-2000:] + runs[1].stdout
    here, there = (json.loads(p.stdout) for p in runs)
    assert there.pop("cluster") == {"address": "local:2", "workers": 2, "events": []}
    assert there == here and "cluster" not in here and len(here["layers"]) == len(ref.graph.node)


def test_the_debug_tab_runs_on_the_dashboards_cluster_with_the_local_ranking(tmp_path):
    """The Cluster box's cluster reaches the Debug tab the dashboard builds: the ranking, the plan and the layerwise
    errors are those of the local run."""
    from workbench.calibration import calibrate
    from workbench.graph import save_model
    from workbench.recipe import Quantize
    from workbench.session import Session
    from workbench.ui.dashboard import Workbench

    path = save_model(outlier_channel_model(load_model("digits_cnn"), OUTLIERS, channel=3, factor=64.0),
                      tmp_path / "outlier.onnx")
    session = Session(path, cache_dir=tmp_path / "cache")
    cache = calibrate(session.model, TEST.parent / "digits_calib.npz", method="max")
    session.apply(Quantize(method="max", scales=cache.save(session.cache_dir)))
    wb = Workbench(session)
    tab = wb.tabs["Debug"]
    assert tab.cluster_box is wb.cluster_box
    tab.data.value, tab.metric.value, tab.tolerance.value = str(TEST), "accuracy", 0.001

    def run_both():
        for button in (tab.compare_button, tab.debug_button):
            button.click()
            tab.wait()
            assert wb.status.state == "ok", wb.status.message
        return tab.report.to_dict(), tab.result.to_dict()

    here = run_both()
    wb.cluster_box.connect("local:2")
    try:
        assert wb.cluster_box.cluster is not None, wb.status.message
        there = run_both()
        executed = wb.cluster_box.cluster.client.run(lambda dask_worker: dask_worker.state.executed_count)
    finally:
        wb.cluster_box.disconnect()
    assert all(n > 0 for n in executed.values()) and len(executed) == 2  # both workers ran the tab's tasks
    (cmp_here, dbg_here), (cmp_there, dbg_there) = here, there
    dbg_here.pop("seconds"), dbg_there.pop("seconds")
    assert cmp_there == cmp_here and dbg_there == dbg_here
    assert dbg_here["sensitivity"][0]["node"] == "/res2/res2.0/Conv" and dbg_here["met"]
