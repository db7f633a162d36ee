"""The public results that were plain dicts are frozen dataclasses with ``to_dict()`` (JSON types): the session's
preview and last change, a machine's and a cluster's description, a dataset's description, error metrics."""

from __future__ import annotations

import dataclasses
import json
import subprocess

import pytest
from models import conv_bn_relu_model

from workbench import recipe as R
from workbench.session import EditPreview, NodeChange, Session


def _frozen(value: object) -> None:
    field = dataclasses.fields(value)[0].name  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(value, field, None)


def test_preview_and_last_change_are_typed(tmp_path):
    s = Session(conv_bn_relu_model(), cache_dir=tmp_path / "cache")
    assert s.last_change == NodeChange("open", None)
    p = s.preview(R.BypassNode(node="block2.relu"))
    assert isinstance(p, EditPreview) and p.removed == ("block2.relu",) and p.added == ()
    assert p.changed == ("block3.conv",) and (p.nodes_before, p.nodes_after) == (13, 12)
    assert json.loads(json.dumps(p.to_dict())) == {
        "edit": "bypass_node(node='block2.relu', input_index=0)", "added": [], "removed": ["block2.relu"],
        "changed": ["block3.conv"], "nodes_before": 13, "nodes_after": 12}
    assert s.last_change.action == "open" and not s.can_undo  # a preview applies nothing
    s.apply(R.FuseBatchNorm())
    c = s.last_change
    assert c == NodeChange("apply", "fuse_batchnorm", (), ("block1.bn", "block2.bn", "block3.bn"),
                           ("block1.conv", "block2.conv", "block3.conv"))
    assert c.to_dict()["removed"] == ["block1.bn", "block2.bn", "block3.bn"]
    s.undo()
    assert s.last_change.action == "undo" and s.last_change.added == c.removed
    _frozen(p)
    _frozen(c)


def test_machine_info_and_the_worker_command_keep_the_cli_json_shape(cli_path):
    from workbench.workflows.cluster import MachineInfo, WorkerCommand, machine_info, worker_command

    info = machine_info()
    assert isinstance(info, MachineInfo) and info.cores >= 1 and "tensorrt-rtx" in info.tensorrt  # installed here
    _frozen(info)
    w = worker_command("tcp://127.0.0.1:8786", resources="jetson=2")
    assert isinstance(w, WorkerCommand) and w.machine == info and w.resources["jetson"] == 2.0
    assert {"jetson=2", "trt_rtx=1"} <= set(w.command[w.command.index("--resources") + 1].split())
    p = subprocess.run([str(cli_path), "worker", "tcp://127.0.0.1:8786", "--dry-run", "--resources", "jetson=2",
                        "--json"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out == json.loads(json.dumps(w.to_dict()))
    assert set(out) == {"scheduler", "resources", "machine", "command"}
    assert set(out["machine"]) == {"host", "cores", "tensorrt", "gpus", "onnxruntime", "workbench"}
    assert out["machine"]["gpus"] == [] and out["machine"]["tensorrt"] == info.tensorrt  # no GPU on this machine


def test_dataset_describe_is_typed_and_keeps_its_json():
    import numpy as np

    from workbench.data import DataColumn, Dataset, DataSummary

    ds = Dataset({"x": np.zeros((5, 3, 4), np.float32), "scale": np.ones(3, np.float32)}, {"x": 0, "scale": None},
                 description="two arrays")
    d = ds.describe()
    assert isinstance(d, DataSummary) and d.samples == 5 and d.data == "two arrays"
    assert d.inputs == {"x": DataColumn((5, 3, 4), 0), "scale": DataColumn((3,), None)} and d.preprocessing is None
    assert json.loads(json.dumps(d.to_dict())) == {
        "data": "two arrays", "samples": 5, "preprocessing": None,
        "inputs": {"x": {"shape": [5, 3, 4], "sample_axis": 0}, "scale": {"shape": [3], "sample_axis": None}}}
    _frozen(d)


def test_error_metrics_are_typed():
    import math

    import numpy as np

    from workbench.compare import ErrorMetrics, ErrorStats, Tolerance

    stats = ErrorStats()
    stats.update(np.array([1, 2, 3, 4], np.float32), np.array([1, 2, 3, 5], np.float32))
    stats.update(np.array([1.0], np.float32), np.array([np.nan], np.float32))  # counted, not summed
    m = stats.metrics()
    assert isinstance(m, ErrorMetrics) and (m.max_abs, m.mean_abs, m.nan, m.samples) == (1.0, 0.25, 1, 2)
    # the NaN's reference element is left out with it: |ref|^2 = 30, |cand|^2 = 39, ref.cand = 34
    assert m.rel_l2 == pytest.approx(1 / math.sqrt(30)) and m.snr_db == pytest.approx(10 * math.log10(30))
    assert m.cosine == pytest.approx(34 / math.sqrt(30 * 39))
    assert set(json.loads(json.dumps(m.to_dict()))) == {"max_abs", "mean_abs", "rel_l2", "cosine", "snr_db", "nan",
                                                        "samples", "padded"}
    assert not Tolerance(rel_l2=1.0).passed(m)  # a NaN never passes
    assert ErrorStats().metrics() == ErrorMetrics(None, None, None, None, None, 0, 0)  # no data: nothing defined
    _frozen(m)
