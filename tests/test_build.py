"""build_engine, its metadata JSON, the trtexec line and `workbench build` (real TensorRT-RTX builds)."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import subprocess

import onnx
import pytest
from models import conv_bn_relu_model, dynamic_model, integer_ops_model

from workbench.backends.trt_profiles import parse_shapes
from workbench.build import build_engine, default_cache_dir, trtexec_command
from workbench.errors import BuildError, DataError
from workbench.graph import load_model, model_bytes, sample_names
from workbench.recipe import BuildSettings, ShapeProfile


def test_worker_build_writes_engine_and_metadata(tmp_path):
    model = load_model(dynamic_model())
    out = tmp_path / "dyn.engine"
    steps, lines = [], []
    settings = BuildSettings(profiles=parse_shapes("input:1x3x16x16,2x3x32x32,4x3x64x64", model), opt_level=2)
    r = build_engine(model, settings, out=out, progress=lambda done, total, phase: steps.append((done, total, phase)),
                     log=lines.append,
                     recipe_digest="abc123")
    data = out.read_bytes()
    assert r.engine_path == out and r.bytes == len(data) and not r.in_process
    meta = json.loads(r.metadata_path.read_text())
    assert r.metadata_path == tmp_path / "dyn.engine.json"
    assert meta["engine_sha256"] == hashlib.sha256(data).hexdigest()
    assert meta["model_sha256"] == hashlib.sha256(model_bytes(model)).hexdigest()
    assert meta["recipe_digest"] == "abc123" and meta["backend"] == "tensorrt-rtx" and meta["opt_level"] == 2
    assert meta["profiles"] == [{"input": "input", "min": [1, 3, 16, 16], "opt": [2, 3, 32, 32],
                                 "max": [4, 3, 64, 64]}]
    assert meta["derived_profiles"] == []
    assert [t["name"] for t in meta["io"]] == ["input", "output"]
    assert meta["layers"] == r.layers == len(meta["engine_layers"]) > 0
    top = [(d, t) for d, t, _ in steps if t]  # (done, total) of the builder's top-level phase
    assert top and top[-1][0] == top[-1][1] and all(0 <= d <= t for d, t in top)
    assert any("Input filename" in line for line in lines)
    assert r.to_dict()["engine"] == str(out)


def test_in_process_build_matches_and_derives_profiles(tmp_path):
    model = dynamic_model()
    r = build_engine(model, BuildSettings(), out=tmp_path / "d.engine", in_process=True)
    assert r.in_process and r.derived_profiles == ("input",)
    assert any("derived defaults" in n and "--shapes input:" in n for n in r.notes)
    assert r.profiles[0].max[0] == 8 and r.profiles[0].min[2] == 32


def test_default_output_goes_to_the_cache_and_is_keyed(tmp_path):
    r1 = build_engine(conv_bn_relu_model(), BuildSettings(), in_process=True)
    assert default_cache_dir() in r1.engine_path.parents
    r2 = build_engine(conv_bn_relu_model(), BuildSettings(opt_level=1), in_process=True)
    assert r1.engine_path != r2.engine_path  # settings are part of the cache key


@pytest.mark.parametrize("name", sample_names())
def test_every_sample_model_builds(name, tmp_path):
    r = build_engine(name, BuildSettings(), out=tmp_path / f"{name}.engine")  # through the worker child
    model = load_model(name)
    assert r.bytes > 0 and r.layers > 0
    covered = {n for layer in r.engine_layers for n in layer["onnx_nodes"]}
    assert covered <= {n.name for n in model.graph.node}


def test_parse_failure_names_the_node(tmp_path):
    with pytest.raises(BuildError) as err:
        build_engine(integer_ops_model(), BuildSettings(), out=tmp_path / "x.engine", in_process=True)
    assert "input_QuantizeLinear" in err.value.message and "DynamicQuantizeLinear" in err.value.message
    assert "workbench check" in err.value.hint
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no engine, no model written beside it


def test_settings_profile_contradicting_the_model_is_refused(tmp_path):
    bad = BuildSettings(profiles=(ShapeProfile("input", (1, 4, 8, 8), (1, 4, 8, 8), (1, 4, 8, 8)),))
    with pytest.raises(DataError) as err:
        build_engine(dynamic_model(), bad, out=tmp_path / "x.engine", in_process=True)
    assert "dim 1 is fixed to 3" in err.value.message


def test_never_overwrites_the_model(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(conv_bn_relu_model(), path)
    before = path.read_bytes()
    with pytest.raises(BuildError):
        build_engine(path, BuildSettings(), out=path, in_process=True)
    assert path.read_bytes() == before


def test_trtexec_command_mirrors_the_settings():
    profiles = (ShapeProfile("input", (1, 3, 32, 32), (2, 3, 64, 64), (8, 3, 128, 128)),)
    s = BuildSettings(backend="tensorrt", profiles=profiles, opt_level=4, workspace_mb=512)
    cmd = shlex.split(trtexec_command("my model.onnx", s, engine_path="m.engine", timing_cache="t.cache"))
    assert cmd[0] == "trtexec" and "--onnx=my model.onnx" in cmd and "--saveEngine=m.engine" in cmd
    assert "--stronglyTyped" in cmd and not any(a in cmd for a in ("--fp16", "--int8", "--best"))
    assert "--minShapes=input:1x3x32x32" in cmd and "--optShapes=input:2x3x64x64" in cmd
    assert "--maxShapes=input:8x3x128x128" in cmd and "--builderOptimizationLevel=4" in cmd
    assert "--memPoolSize=workspace:512M" in cmd and "--timingCacheFile=t.cache" in cmd
    assert "--exportLayerInfo=m.layers.json" in cmd and "--profilingVerbosity=detailed" in cmd
    rtx = shlex.split(trtexec_command("m.onnx", BuildSettings(backend="tensorrt-rtx"), model=dynamic_model()))
    assert rtx[0] == "tensorrt_rtx" and "--stronglyTyped" not in rtx
    assert "--maxShapes=input:8x3x1024x1024" in rtx  # derived defaults when the model is given


def _cli(cli_path, *args):
    p = subprocess.run([str(cli_path), *args], capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout, p.stderr


def test_cli_build_json(cli_path, tmp_path):
    out = tmp_path / "cnn.engine"
    code, stdout, stderr = _cli(cli_path, "build", "digits_cnn", "-o", str(out), "--shapes", "input:1x1x8x8,4x1x8x8,16x1x8x8",
                                "--opt-level", "1", "--json")
    assert code == 0, stderr
    r = json.loads(stdout)
    assert r["engine"] == str(out) and r["bytes"] == out.stat().st_size and r["backend"] == "tensorrt-rtx"
    assert r["layers"] > 0 and r["seconds"] > 0
    assert r["profiles"][0]["max"] == [16, 1, 8, 8]
    # TensorRT's info log stays out of the terminal on success (it printed 24 lines here); it is in <engine>.log
    assert "[info]" not in stderr and "Input filename" not in stderr, stderr
    assert r["log_path"] == str(out) + ".log" and "[info] Input filename" in (tmp_path / "cnn.engine.log").read_text()
    code, _, stderr = _cli(cli_path, "build", "digits_cnn", "-o", str(out), "--opt-level", "1", "--verbose")
    assert code == 0 and "[info] Input filename" in stderr  # --verbose streams it


def test_cli_build_failure_shows_the_log_tail(cli_path, tmp_path):
    path = tmp_path / "int.onnx"
    onnx.save(integer_ops_model(), path)
    code, _, stderr = _cli(cli_path, "build", str(path), "-o", str(tmp_path / "x.engine"))
    assert code == 1 and "the ONNX parser rejected node 'input_QuantizeLinear'" in stderr
    assert re.search(r"builder log, last \d+ of \d+ lines:", stderr) and "[error] ModelImporter" in stderr
    assert stderr.count("checkDynamicQuantizeLinear") == 2  # each parser error once (two such nodes), not repeated


def test_a_model_built_from_memory_is_written_beside_the_engine_and_named(tmp_path):
    """The trtexec line of a session's (in-memory, edited) model named ``model.onnx``, a file that did not exist."""
    model = load_model(dynamic_model())
    r = build_engine(model, BuildSettings(), out=tmp_path / "dyn.engine", in_process=True)
    assert r.model_path == tmp_path / "dyn.model.onnx"
    assert f"--onnx={r.model_path}" in shlex.split(r.trtexec)
    assert r.model_path.read_bytes() == model_bytes(model)


def test_cli_build_bad_shapes_exit_1(cli_path, tmp_path):
    code, stdout, _ = _cli(cli_path, "build", "digits_cnn", "-o", str(tmp_path / "x.engine"),
                           "--shapes", "input:4x1x8x8,1x1x8x8,8x1x8x8", "--json")
    r = json.loads(stdout)
    assert code == 1 and "min <= opt <= max" in r["error"] and r["hint"]
    assert not (tmp_path / "x.engine").exists()


def test_quantized_and_fp16_sample_builds_keep_the_graph_precision(tmp_path):
    """INT8 Q/DQ and fp16 Casts from the precision module become int8/fp16 engine layers (strongly typed)."""
    from workbench.calibration import calibrate
    from workbench.graph import sample_path
    from workbench.precision import convert_precision, quantize_model

    model = load_model("digits_cnn")
    scales = calibrate(model, sample_path("digits_cnn").with_name("digits_calib.npz"), method="max")
    qdq = quantize_model(model, scales)
    r = build_engine(qdq, BuildSettings(), out=tmp_path / "int8.engine", in_process=True)
    convs = [n.name for n in qdq.graph.node if n.op_type == "Conv"]
    dtypes = {t["DataType"] for la in r.engine_layers if set(convs) & set(la["onnx_nodes"])
              for t in la["Inputs"] + la["Outputs"]}
    assert "Int8" in dtypes
    half = convert_precision(model, "fp16")
    r16 = build_engine(half, BuildSettings(), out=tmp_path / "fp16.engine", in_process=True)
    dtypes16 = {t["DataType"] for la in r16.engine_layers if set(convs) & set(la["onnx_nodes"])
                for t in la["Inputs"] + la["Outputs"]}
    assert "Half" in dtypes16 and "Int8" not in dtypes16
    assert r.bytes != r16.bytes


def test_crashed_build_leaves_no_partial_files(tmp_path, monkeypatch):
    from workbench.backends.worker import TEST_CRASH_ENV, WorkerCrash

    out = tmp_path / "x.engine"
    leftover = tmp_path / ".x.engine.k3j2.tmp"  # what a child killed inside atomic_write leaves behind
    leftover.write_bytes(b"partial")
    monkeypatch.setenv(TEST_CRASH_ENV, "segv")
    with pytest.raises(WorkerCrash, match="SIGSEGV"):
        build_engine(conv_bn_relu_model(), BuildSettings(), out=out)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
