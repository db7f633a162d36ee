"""workflows.build: the build and profile actions the tabs and the CLI call (real TensorRT-RTX builds, real ONNX
Runtime profiles, the A100 trtexec exports)."""

from __future__ import annotations

import hashlib
import json
import shlex
import threading

import pytest
from test_profile_trt import graph, prof, raw_profile

from workbench.errors import DataError
from workbench.graph import load_model, model_bytes
from workbench.recipe import SetShapes
from workbench.session import Session
from workbench.workflows import build as wf
from workbench.workflows.base import Result


@pytest.fixture
def session(tmp_path):
    return Session("fcn_dynamic", cache_dir=tmp_path / "cache")


def _onnx(command: str) -> str:
    return next(a for a in shlex.split(command) if a.startswith("--onnx="))[len("--onnx="):]


def test_build_of_an_unedited_session_names_the_users_file(session):
    settings = wf.build_settings(session, shapes="input:1x3x16x16,1x3x32x32,2x3x64x64", opt_level=0, in_process=True)
    r = wf.build(session, settings)
    assert isinstance(r, Result) and r.engine_path.is_file() and session.cache_dir in r.engine_path.parents
    assert r.model_path == session.source_path and _onnx(r.trtexec) == str(session.source_path)
    assert _onnx(wf.trtexec_line(session, settings).command) == str(session.source_path)
    assert r.recipe_digest == session.digest and r.profiles[0].max == (2, 3, 64, 64)
    d = json.loads(json.dumps(r.to_dict()))  # plain JSON types
    assert d["engine"] == str(r.engine_path) and d["bytes"] == r.engine_path.stat().st_size and d["layers"] > 0
    listed = wf.engines(session)
    assert [e.path for e in listed] == [str(r.engine_path)]
    assert listed[0].bytes == r.bytes and listed[0].recipe_digest == session.digest and listed[0].engine_layers


def test_build_of_an_edited_session_builds_and_names_the_edited_model(session):
    session.apply(SetShapes(shapes={"input": ("N", 3, 64, None)}))
    r = wf.build(session, wf.build_settings(session, opt_level=0, in_process=True))
    assert r.model_path != session.source_path and r.model_path.parent == r.engine_path.parent
    assert model_bytes(load_model(r.model_path)) == model_bytes(session.model)
    assert _onnx(r.trtexec) == str(r.model_path)
    assert r.derived_profiles == ("input",) and r.profiles[0].min[1:3] == (3, 64)  # the edited shape's profile


def test_bad_shapes_name_the_input(session):
    with pytest.raises(DataError, match="dim 1 is fixed to 3"):
        wf.build_settings(session, shapes="input:1x4x16x16")
    assert wf.build_settings(session, shapes="  ").profiles == ()  # an empty box: derived defaults


def test_ort_profile_reports_each_run_and_stops_on_cancel(tmp_path):
    session = Session("digits_cnn", cache_dir=tmp_path / "cache")
    steps = []
    r = wf.profile_onnxruntime(session, iterations=3, save=True, progress=lambda d, t, p="": steps.append((d, t, p)))
    assert [d for d, _, _ in steps] == [1, 2, 3, 4, 5] and {t for _, t, _ in steps} == {5}  # 2 warm-up + 3 timed
    assert steps[0][2] == "warm-up" and steps[-1][2] == "timed runs"
    assert r.saved is not None and [s.label for s in wf.saved_profiles(session)] == ["ort-cpu"]
    assert wf.saved_profiles(session)[0].table == r.table
    stop = threading.Event()

    def cancel_after_two(done, total, phase=""):
        if done == 2:
            stop.set()

    with pytest.raises(DataError, match="cancelled after 2 of 5 runs"):
        wf.profile_onnxruntime(session, iterations=3, label="again", save=True, progress=cancel_after_two, cancel=stop)
    assert [s.label for s in wf.saved_profiles(session)] == ["ort-cpu"]  # nothing saved for the cancelled run


def test_profile_report_of_trtexec_files_keeps_the_cli_keys():
    r = wf.profile(None, layers=graph("fp32"), trt_profile=prof("fp32"), label="fp32",
                   others=[("fp16", graph("fp16"), prof("fp16"))])
    d = json.loads(json.dumps(r.to_dict()))
    assert set(d) == {"source", "layers", "total_ms", "by_op_type", "precisions", "top", "comparison"}
    assert d["total_ms"] == pytest.approx(sum(e["medianMs"] for e in raw_profile("fp32")))
    assert [x["label"] for x in d["comparison"]["summary"]] == ["fp32", "fp16"]
    with pytest.raises(DataError, match="used twice"):
        wf.profile(None, layers=graph("fp32"), trt_profile=prof("fp32"), label="x", others=[("x", graph("fp16"), prof("fp16"))])
    with pytest.raises(DataError, match="nothing to profile"):
        wf.profile(None)


def test_import_labels_and_engine_errors(tmp_path):
    session = Session("digits_cnn", cache_dir=tmp_path / "cache")
    imported = wf.import_trtexec(session, graph("fp16"), prof("fp16"))
    assert imported.label == prof("fp16").name.split(".")[0] and imported.info is not None
    assert imported.tactics and set(imported.tactics) == {la.name for la in imported.info.layers}
    with pytest.raises(DataError, match="names none of the model"):
        wf.import_trtexec(session, graph("fp16"), prof("fp16"), map_to_model=True)
    with pytest.raises(DataError, match="Build tab"):
        wf.open_engine(session, str(tmp_path / "none.engine"))
    with pytest.raises(DataError, match="at least two"):
        wf.compare({"a": imported.table})


@pytest.fixture(scope="module")
def one_worker():
    pytest.importorskip("distributed", reason="the cluster extra (dask.distributed), which make test installs")
    from distributed import Client, Nanny, Scheduler, SpecCluster

    from workbench.cluster import Cluster

    spec = {"w": {"cls": Nanny, "options": {"nthreads": 1, "resources": {"trt_rtx": 1, "trt_sm86": 1},
                                            "host": "127.0.0.1", "dashboard_address": None}}}
    cluster = SpecCluster(scheduler={"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": None}},
                          workers=spec, silence_logs=40)
    client = Client(cluster, set_as_default=False)
    client.wait_for_workers(1)
    yield Cluster(client, cluster.scheduler_address)
    client.close()
    cluster.close()


def test_remote_build_lands_in_the_sessions_engine_cache(one_worker, session):
    from workbench.errors import BackendUnavailable

    session.apply(SetShapes(shapes={"input": ("N", 3, 64, None)}))
    steps = []
    r = wf.remote_build(session, one_worker, wf.build_settings(session, backend="tensorrt-rtx", opt_level=0),
                        resources={"trt_sm86": 1}, progress=lambda d, t, p="": steps.append((d, t, p)))
    assert isinstance(r, wf.EngineBuild) and r.extra["worker"] == one_worker.workers()[0].address
    assert session.cache_dir in r.engine_path.parents and r.recipe_digest == session.digest
    assert r.model_sha256 == hashlib.sha256(model_bytes(session.model)).hexdigest()  # the edited model was built
    assert [e.path for e in wf.engines(session)] == [str(r.engine_path)] and steps[-1][:2] == (1, 1)
    with pytest.raises(BackendUnavailable, match="no supported NVIDIA GPU"):  # the worker has no GPU to time it on
        wf.remote_profile(session, one_worker, r, shapes="input:1x3x64x32", resources={"trt_sm86": 1})


def test_the_engine_holds_the_sessions_model_even_when_its_file_changed_on_disk(tmp_path):
    import onnx
    from models import conv_bn_relu_model, dynamic_model

    path = tmp_path / "m.onnx"
    onnx.save(dynamic_model(), path)
    session = Session(path, cache_dir=tmp_path / "cache")
    onnx.save(conv_bn_relu_model(), path)  # overwritten by another tool while the session is open
    r = wf.build(session, wf.build_settings(session, opt_level=0, in_process=True))
    assert r.model_sha256 == hashlib.sha256(model_bytes(session.model)).hexdigest()
    assert r.model_path == path and not list(r.engine_path.parent.glob("*.model.onnx"))  # unedited: no copy
