"""workbench.cluster and workbench.remote on a real Dask cluster: a scheduler and two worker processes on 127.0.0.1
with different resources (no mocks). Builds use TensorRT-RTX on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("distributed", reason="the cluster extra (dask.distributed), which make test installs")

from tests.models import conv_bn_relu_model  # noqa: E402
from workbench.backends.trt_runtime import read_engine  # noqa: E402
from workbench.cluster import (  # noqa: E402
    Cluster,
    ClusterError,
    Gpu,
    MachineInfo,
    connect,
    machine_resources,
    parse_address,
)
from workbench.errors import BackendUnavailable, BuildError  # noqa: E402
from workbench.recipe import BuildSettings  # noqa: E402
from workbench.remote import remote_build, remote_check, remote_profile, vet_engine  # noqa: E402

A = {"trt_rtx": 1, "trt_sm86": 1}
B = {"trt_rtx": 1, "trt_sm120": 1}


@pytest.fixture(scope="module")
def two_workers():
    from distributed import Client, Nanny, Scheduler, SpecCluster

    spec = {name: {"cls": Nanny, "options": {"nthreads": 1, "resources": res, "host": "127.0.0.1",
                                             "dashboard_address": None}}
            for name, res in (("a", A), ("b", B))}
    cluster = SpecCluster(scheduler={"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address":
                                                                   "127.0.0.1:0"}},
                          workers=spec, silence_logs=40)
    client = Client(cluster, set_as_default=False)
    client.wait_for_workers(2)
    c = Cluster(client, cluster.scheduler_address)
    yield c
    client.close()
    cluster.close()


def _worker_named(c: Cluster, name: str) -> str:
    return next(w.address for w in c.workers() if w.name == name)


def test_addresses_are_explicit():
    assert parse_address("local") == ("local", None)
    assert parse_address("local:3") == ("local", 3)
    assert parse_address("10.0.0.5:8786") == ("tcp://10.0.0.5:8786", None)
    assert parse_address("tls://sched.example:8786") == ("tls://sched.example:8786", None)
    for bad in ("10.0.0.5", "tcp://host", "local:0", "local:x", "host:99999"):
        with pytest.raises(ClusterError):
            parse_address(bad)


def test_unreachable_scheduler_offers_the_local_run():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ClusterError) as exc:
        connect(f"tcp://127.0.0.1:{port}", timeout=1.0)
    assert f"127.0.0.1:{port}" in exc.value.message and "cannot reach" in exc.value.message
    assert "leave out --cluster" in exc.value.hint and "local" in exc.value.hint


def test_machine_resources_from_what_the_machine_has():
    info = MachineInfo("h", 8, tensorrt={"tensorrt-rtx": "1.7"}, gpus=(Gpu("RTX 3090", "8.6"),))
    assert machine_resources(info) == {"trt_rtx": 1, "gpu": 1, "trt_sm86": 1}
    assert machine_resources(MachineInfo("h", 8)) == {}
    assert MachineInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info  # what a worker sends back
    here = machine_resources()
    assert here.get("trt_rtx") == 1  # tensorrt_rtx is installed here; no GPU here, so no trt_sm*
    assert not any(k.startswith("trt_sm") for k in here)


def test_describe_lists_workers_resources_and_machines(two_workers):
    c = two_workers
    machines = c.probe()
    info = c.describe()
    by_name = {w.name: w for w in info.workers}
    assert by_name["a"].resources == A and by_name["b"].resources == B
    assert all(w.host == "127.0.0.1" for w in info.workers)
    assert set(machines) == {w.address for w in info.workers}
    assert all("tensorrt-rtx" in m.tensorrt and m == w.machine for w in info.workers for m in [machines[w.address]])
    d = json.loads(json.dumps(info.to_dict()))  # plain JSON for the CLI and the dashboard
    assert [w["name"] for w in d["workers"]] == [w.name for w in info.workers] and d["address"] == c.address
    assert all(w["machine"]["cores"] >= 1 and "tensorrt-rtx" in w["machine"]["tensorrt"] for w in d["workers"])


def test_a_build_lands_on_the_worker_whose_resources_it_asked_for(two_workers, tmp_path):
    c = two_workers
    model = conv_bn_relu_model()
    settings = BuildSettings(backend="tensorrt-rtx", opt_level=0)
    for want, name in ((B, "b"), (A, "a")):
        r = remote_build(c, model, settings, resources={k: 1 for k in want if k.startswith("trt_sm")},
                         out=tmp_path / f"{name}.engine")
        assert r.extra["worker"] == _worker_named(c, name)
        meta = json.loads(r.metadata_path.read_text())
        assert meta["built_on"]["worker"] == _worker_named(c, name)
        assert meta["engine"] == f"{name}.engine" and meta["backend"] == "tensorrt-rtx"
        f = read_engine(r.engine_path)  # imported as usual: digest matches, metadata is ours
        assert f.trusted and len(f.data) == r.bytes == meta["bytes"] and r.layers > 0
        assert r.log_path.read_text().count("\n") == len(r.log) > 0


def test_nobody_offers_the_resource(two_workers):
    with pytest.raises(ClusterError) as exc:
        remote_build(two_workers, conv_bn_relu_model(), resources={"trt_sm90": 1})
    assert "trt_sm90" in exc.value.message and "trt_sm86=1" in exc.value.hint


def test_a_worker_without_the_tensorrt_or_the_gpu_answers_clearly(two_workers, tmp_path):
    c = two_workers
    # the workers have TensorRT-RTX only: a TensorRT build is refused by the worker, with the usual error
    with pytest.raises(BackendUnavailable) as exc:
        remote_build(c, conv_bn_relu_model(), BuildSettings(backend="tensorrt"), resources={"trt_sm86": 1})
    assert "tensorrt is not installed" in exc.value.message and _worker_named(c, "a") in exc.value.message
    assert "tensorrt-rtx" in exc.value.hint
    # profiling needs a GPU: the worker says it has none
    r = remote_build(c, conv_bn_relu_model(), BuildSettings(backend="tensorrt-rtx", opt_level=0),
                     resources={"trt_sm86": 1}, out=tmp_path / "p.engine")
    feeds = {"input": np.zeros((2, 3, 16, 16), np.float32)}
    with pytest.raises(BackendUnavailable) as exc:
        remote_profile(c, r, feeds, resources={"trt_sm86": 1})
    assert "no supported NVIDIA GPU" in exc.value.message
    with pytest.raises(ClusterError):  # by default a profile asks for a GPU, which no worker offers
        remote_profile(c, r, feeds)


def test_remote_check_reports_like_a_local_check(two_workers):
    report = remote_check(two_workers, conv_bn_relu_model(), backend="tensorrt-rtx", opt_level=0,
                          resources={"trt_sm120": 1})
    assert report.parsable and report.buildable and report.backend == "tensorrt-rtx"
    assert report.worker == _worker_named(two_workers, "b")


def test_a_damaged_engine_is_refused():
    data = b"\0trt" + bytes(100)
    import hashlib

    meta = {"workbench_engine": 1, "bytes": len(data), "engine_sha256": hashlib.sha256(data).hexdigest()}
    assert vet_engine(data, json.dumps(meta), "w")["bytes"] == 104
    for bad_data, bad_meta in ((data[:-1], meta), (b"PK\3\4" + data[4:], meta), (data, {**meta, "workbench_engine": 0}),
                               (data, "not json")):
        with pytest.raises(BuildError):
            vet_engine(bad_data, bad_meta if isinstance(bad_meta, str) else json.dumps(bad_meta), "w")
    with pytest.raises(BuildError):
        vet_engine(data, meta, "w")  # an object, not JSON text: nothing but plain data is accepted


def test_workbench_import_and_help_do_not_load_dask():
    code = ("import sys, workbench, workbench.cli; workbench.cli.commands(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_worker_cli_advertises_the_machine():
    out = subprocess.run([sys.executable, "-m", "workbench.cli", "worker", "tcp://127.0.0.1:8786", "--dry-run",
                          "--resources", "jetson=1", "--json"], capture_output=True, text=True)
    r = json.loads(out.stdout)
    assert r["resources"] == {**machine_resources(), "jetson": 1.0}
    cmd = r["command"]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"  # a loopback scheduler: the worker listens on loopback
    assert "trt_rtx=1" in cmd[cmd.index("--resources") + 1]


def test_share_broadcasts_only_without_the_active_memory_manager(two_workers):
    """A broadcast scatter hangs while the scheduler's Active Memory Manager removes its copies
    (dask/distributed#8796): on such a scheduler share() sends the value once and tasks on every worker still
    read it; a local cluster starts without the manager, and there the value reaches every worker at once."""
    x = np.arange(1000, dtype=np.float32)
    assert two_workers.client.amm.running()  # Dask's default: the user's scheduler as it comes
    fut = two_workers.share(x)
    assert two_workers._broadcast is False
    sums = [two_workers.client.submit(np.sum, fut, workers=[_worker_named(two_workers, n)], pure=False).result()
            for n in ("a", "b")]
    assert sums == [float(x.sum())] * 2
    with connect("local:2") as c:
        assert not c.client.amm.running()
        fut = c.share(x)
        assert c._broadcast is True
        assert len(c.client.who_has()[fut.key]) == 2
