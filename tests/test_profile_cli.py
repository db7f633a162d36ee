"""`workbench profile`: ONNX Runtime and trtexec sources, the JSON contract, --html, bad input."""

from __future__ import annotations

import json
import subprocess

import pytest
from test_profile_trt import graph, prof, raw_profile

from workbench.cli import main

CONTRACT_KEYS = {"name", "onnx_nodes", "type", "precision", "median_ms", "pct"}


def run_json(capsys, *argv: str) -> tuple[int, dict]:
    code = main(["profile", "--json", *argv])
    return code, json.loads(capsys.readouterr().out)


def test_trtexec_files_json_contract(capsys):
    code, out = run_json(capsys, "--trt-layers", str(graph("int8")), "--trt-profile", str(prof("int8")))
    assert code == 0
    assert CONTRACT_KEYS <= set(out["layers"][0])
    assert [x["name"] for x in out["layers"]] == [e["name"] for e in raw_profile("int8")]
    assert out["total_ms"] == pytest.approx(sum(e["medianMs"] for e in raw_profile("int8")))
    conv = next(x for x in out["layers"] if x["name"].startswith("layer1.0.conv2.weight"))
    assert conv["onnx_nodes"] == ["QuantizeLinear_32", "Conv_34", "Add_36", "Relu_37"] and conv["precision"] == "int8"


def test_onnxruntime_sample_model(capsys, tmp_path):
    html = tmp_path / "charts.html"
    code, out = run_json(capsys, "digits_cnn", "--iterations", "2", "--no-optimize", "--html", str(html))
    assert code == 0 and out["source"] == "onnxruntime" and out["optimize"] is False
    from workbench.graph import load_model

    model = load_model("digits_cnn")
    assert [x["name"] for x in out["layers"]] == [n.name for n in model.graph.node]
    assert out["total_ms"] == pytest.approx(sum(x["median_ms"] for x in out["layers"]))
    text = html.read_text()
    assert text.count("Plotly.newPlot") == 4 and "Where the time goes" in text


def test_mismatched_files_exit_1_with_hint(capsys):
    code, out = run_json(capsys, "--trt-layers", str(graph("fp32")), "--trt-profile", str(prof("fp16")))
    assert code == 1
    assert "different engines" in out["error"] and "--exportProfile" in out["hint"]


def test_nothing_to_profile(capsys):
    code, out = run_json(capsys)
    assert code == 1 and "nothing to profile" in out["error"]


def test_console_script_human_output(cli_path):
    done = subprocess.run([str(cli_path), "profile", "--trt-layers", str(graph("fp32")), "--trt-profile",
                           str(prof("fp32")), "--top", "3"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].startswith("Conv_0 + Relu_1")  # the slowest layer of the fp32 engine, first
    assert "total 2.1238 ms over 32 layers (trtexec)" in done.stdout


def test_compare_engines(capsys, tmp_path):
    html = tmp_path / "cmp.html"
    code, out = run_json(capsys, "--trt-layers", str(graph("fp32")), "--trt-profile", str(prof("fp32")),
                         "--label", "fp32", "--compare", f"fp16={graph('fp16')},{prof('fp16')}",
                         "--compare", f"int8={graph('int8')},{prof('int8')}", "--html", str(html))
    assert code == 0
    summary = {r["label"]: r for r in out["comparison"]["summary"]}
    assert list(summary) == ["fp32", "fp16", "int8"]
    for label in summary:
        assert summary[label]["total_ms"] == pytest.approx(sum(e["medianMs"] for e in raw_profile(label)))
        assert sum(r[f"{label}_ms"] for r in out["comparison"]["layers"]) == pytest.approx(summary[label]["total_ms"])
    assert summary["int8"]["int8"] == 32 and summary["fp16"]["fp16"] == 36
    assert html.read_text().count("Plotly.newPlot") == 7
    code, out = run_json(capsys, "--trt-profile", str(prof("fp32")), "--compare", "fp16")
    assert code == 1 and "LABEL=LAYERS.json,PROFILE.json" in out["error"]


def test_onnxruntime_with_input_data(capsys):
    from workbench.graph import sample_path

    data = sample_path("digits_cnn").parent / "digits_test.npz"
    code, out = run_json(capsys, "digits_cnn", "--inputs", str(data), "--batch", "4", "--iterations", "2")
    assert code == 0 and out["optimize"] is True
    assert out["shapes"] == {"input": [4, 1, 8, 8]} and out["data"] == str(data)  # the shapes timed, shown
    conv_rows = [x for x in out["layers"] if any(n.endswith("/Conv") for n in x["onnx_nodes"])]
    assert conv_rows and all(len(x["onnx_nodes"]) > 1 for x in conv_rows)  # Conv+BN+Relu fused by ORT
    code, out = run_json(capsys, "digits_cnn", "--inputs", str(data.with_name("missing.npz")))
    assert code == 1 and "does not exist" in out["error"]
