"""The CPU-checkable parts of the GPU runtime: engine vetting, buffer planning, layer times, latency stats."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from models import dynamic_model

from workbench.backends.trt_runtime import (
    EngineTrustWarning,
    LayerTimes,
    TrtEngine,
    gpu_status,
    latency_stats,
    plan_buffers,
    read_engine,
)
from workbench.build import build_engine
from workbench.errors import BackendUnavailable, BuildError, DataError
from workbench.recipe import BuildSettings, ShapeProfile

PROFILE = ShapeProfile("input", (1, 3, 16, 16), (2, 3, 32, 32), (4, 3, 64, 64))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("engines") / "dyn.engine"
    return build_engine(dynamic_model(), BuildSettings(profiles=(PROFILE,)), out=out, in_process=True)


def test_own_engine_reads_without_warning(built):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f = read_engine(built.engine_path, backend_version=built.version)
    assert f.trusted and f.metadata["engine_sha256"] and len(f.data) == built.bytes


def test_foreign_engine_warns_it_is_code(built, tmp_path):
    copy = tmp_path / "foreign.engine"
    copy.write_bytes(built.engine_path.read_bytes())
    with pytest.warns(EngineTrustWarning, match="foreign.engine"):
        f = read_engine(copy)
    assert not f.trusted


def test_corrupted_truncated_and_other_version_engines_raise_naming_the_file(built, tmp_path):
    eng = tmp_path / "c.engine"
    data = bytearray(built.engine_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    eng.write_bytes(bytes(data))
    (tmp_path / "c.engine.json").write_text(built.metadata_path.read_text())
    with pytest.raises(BuildError, match="c.engine is corrupted"):
        read_engine(eng)
    with pytest.raises(BuildError, match="is not a TensorRT engine"):
        (tmp_path / "t.engine").write_bytes(b"vtrt")
        read_engine(tmp_path / "t.engine")
    with pytest.raises(BuildError, match="is not a TensorRT engine"):
        (tmp_path / "m.engine").write_bytes(b"\x08\x07" * 100)  # an ONNX file renamed
        read_engine(tmp_path / "m.engine")
    with pytest.raises(BuildError, match="was built with tensorrt-rtx"):
        read_engine(built.engine_path, backend_version="0.9")
    with pytest.raises(BuildError, match="does not exist"):
        read_engine(tmp_path / "nothing.engine")


def test_buffer_planning_from_the_build_time_io_description(built):
    meta = json.loads(built.metadata_path.read_text())
    io, profiles = meta["io"], meta["profiles"]
    plans = {p.name: p for p in plan_buffers(io, {"input": (3, 3, 20, 40)}, profiles=profiles)}
    assert plans["input"].shape == (3, 3, 20, 40) and plans["input"].dtype == "float32"
    assert plans["input"].nbytes == 3 * 3 * 20 * 40 * 4
    assert plans["output"].shape is None and plans["output"].nbytes is None  # known only after set_input_shape
    opt = {p.name: p for p in plan_buffers(io, profiles=profiles, output_shapes={"output": (2, 2, 32, 32)})}
    assert opt["input"].shape == PROFILE.opt and opt["output"].nbytes == 2 * 2 * 32 * 32 * 4
    with pytest.raises(DataError, match="outside the engine's profile 16..64"):
        plan_buffers(io, {"input": (1, 3, 8, 8)}, profiles=profiles)
    with pytest.raises(DataError, match="dim 1 is fixed to 3"):
        plan_buffers(io, {"input": (1, 4, 16, 16)}, profiles=profiles)
    with pytest.raises(DataError, match="no input"):
        plan_buffers(io, {"x": (1,)}, profiles=profiles)


def test_layer_times_collect_report_layer_time_calls():
    lt = LayerTimes()
    samples = {"conv0 + relu0": [0.5, 0.7, 0.6], "Reformat": [0.1, 0.1, 0.2]}
    for i in range(3):
        for name, values in samples.items():
            lt.report_layer_time(name, values[i])
    assert lt.times == samples and lt.order == list(samples) and lt.iterations == 3
    assert lt.totals() == pytest.approx([0.6, 0.8, 0.8])


def test_layer_times_feed_the_profile_aggregator():
    from workbench import profile
    lt = LayerTimes()
    for v in (1.0, 3.0, 2.0):
        lt.report_layer_time("conv0 + relu0", v)
        lt.report_layer_time("pool", v / 2)
    table = profile.from_layer_times(lt.times)
    rows = {r["name"]: r for r in table.records()}
    assert rows["conv0 + relu0"]["median_ms"] == pytest.approx(2.0)
    assert rows["pool"]["median_ms"] == pytest.approx(1.0)


def test_latency_stats_match_numpy():
    rng = np.random.default_rng(0)
    s = rng.gamma(2.0, 1.5, 500)
    st = latency_stats(s, batch=8)
    assert st["median_ms"] == pytest.approx(np.median(s)) and st["p99_ms"] == pytest.approx(np.percentile(s, 99))
    assert st["throughput_per_s"] == pytest.approx(8000.0 / s.mean()) and st["samples"] == 500
    with pytest.raises(DataError):
        latency_stats([])


def test_no_gpu_here_is_said_plainly(built):
    reason = gpu_status()
    if reason is None:  # pragma: no cover - only on a machine with a GPU
        pytest.skip("a GPU is present")
    assert "no supported NVIDIA GPU" in reason
    with pytest.raises(BackendUnavailable) as err:
        TrtEngine(built.engine_path)
    assert "no supported NVIDIA GPU" in err.value.message and str(built.engine_path) in err.value.message
