"""What makes a cluster sweep scale: the task (the models) is pickled once on the client, sent out of band to one
worker, fetched by the others from whoever has it, unpickled once per worker process and warmed up there (sessions
opened) before the batches; the phases' times are recorded (``Cluster.last_sweep``)."""

from __future__ import annotations

import pickle

import pytest

pytest.importorskip("distributed", reason="the cluster extra (dask.distributed), which make test installs")

from tests.test_compare import OUTLIERS, TEST, max_scales  # noqa: E402
from workbench import cluster as cluster_mod  # noqa: E402
from workbench.cluster import _counts, _Packed, _unpack, connect  # noqa: E402
from workbench.debug import outlier_channel_model, sensitivity  # noqa: E402
from workbench.graph import load_model  # noqa: E402
from workbench.precision import quantize_model  # noqa: E402


def test_a_packed_task_travels_out_of_band():
    data = pickle.dumps({"weights": b"\x01" * 100_000})
    buffers: list[pickle.PickleBuffer] = []
    wire = pickle.dumps(_Packed("t", data), protocol=5, buffer_callback=buffers.append)
    assert len(buffers) == 1 and len(wire) < 200  # the payload is a frame of its own, not copied into the pickle
    back = pickle.loads(wire, buffers=buffers)
    assert back.token == "t" and bytes(back.data) == data
    assert bytes(pickle.loads(pickle.dumps(_Packed("t", data), protocol=4)).data) == data  # without buffers too


def test_a_process_unpickles_each_task_once_and_keeps_the_last_few():
    import cloudpickle

    packs = [_Packed(f"scaling-{k}", cloudpickle.dumps([k])) for k in range(cluster_mod._TASKS_KEPT + 1)]
    before = _counts()["unpacked"]
    first = _unpack(packs[0])
    assert _unpack(packs[0]) is first and _counts()["unpacked"] == before + 1  # the same object: sessions reused
    for p in packs[1:]:
        _unpack(p)
    assert _counts()["unpacked"] == before + len(packs)
    assert _unpack(packs[0]) == [0] and _counts()["unpacked"] == before + len(packs) + 1  # the oldest was let go


def test_a_sweep_warms_every_worker_once_and_matches_the_local_run():
    ref = load_model(outlier_channel_model(load_model("digits_cnn"), OUTLIERS, channel=3, factor=64.0))
    q = load_model(quantize_model(ref, max_scales(ref)))
    kw = dict(batch_size=32, workers=4)  # batches of 8: 45 tasks for 359 samples
    here = sensitivity(ref, q, TEST, **kw)
    with connect("local:2") as c:
        before = c.client.run(_counts)
        there = sensitivity(ref, q, TEST, cluster=c, **kw)
        after = c.client.run(_counts)
        times = c.last_sweep
        again = sensitivity(ref, q, TEST, cluster=c, **kw)
        last = c.client.run(_counts)
    assert there.table.records() == here.table.records() and again.table.records() == here.table.records()
    # each worker process unpickled the task (and so opened its sessions) once per sweep, not once per batch
    assert {a: after[a]["unpacked"] - before[a]["unpacked"] for a in after} == dict.fromkeys(after, 1)
    assert {a: last[a]["unpacked"] - after[a]["unpacked"] for a in after} == dict.fromkeys(after, 1)
    # and every worker ran batches (queued before the others had the task, they all went to the first one)
    ran = {a: after[a]["applied"] - before[a]["applied"] for a in after}
    assert sum(ran.values()) == 45 and min(ran.values()) > 0, ran
    assert times.tasks == 45 and len(times.warm_up) == 2 and all(t > 0 for t in times.warm_up)
    assert 0 < times.pack and 0 < times.ready <= times.done
