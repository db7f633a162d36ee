"""One engine registry: `workbench build` (the real CLI, a subprocess) and the Build tab list the same engines
(workflows.build.engines), with real TensorRT-RTX builds of a tiny model on the CPU."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import onnx
from models import conv_bn_relu_model

from workbench.session import Session
from workbench.ui.build_tab import BuildTab
from workbench.ui.common import Status
from workbench.workflows import build as wf


def _cli_build(cli_path, *args: str) -> dict:
    p = subprocess.run([str(cli_path), "build", *args, "--opt-level", "0", "--json"], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout)


def _model(tmp_path, name: str, seed: int = 0):
    path = tmp_path / f"{name}.onnx"
    onnx.save(conv_bn_relu_model(size=8, width=4, seed=seed), path)
    return path


def test_an_engine_built_by_the_cli_is_listed_by_the_build_tab(cli_path, tmp_path):
    path = _model(tmp_path, "tiny")
    r = _cli_build(cli_path, str(path))
    session = Session(path)  # the dashboard's session for the same file (the default cache, as the CLI's)
    assert session.cache_dir in Path(r["engine"]).parents
    listed = wf.engines(session)
    assert [e.path for e in listed] == [r["engine"]] and listed[0].bytes == r["bytes"]
    tab = BuildTab(session, Status())
    assert [v for _, v in tab.engines.options] == [r["engine"]]
    tab.engines.value = r["engine"]
    assert r["engine"] in tab.engine_details.value  # its details shown from the same metadata


def test_an_engine_built_elsewhere_is_listed_until_another_build_overwrites_it(cli_path, tmp_path):
    path, other = _model(tmp_path, "tiny"), _model(tmp_path, "other", seed=1)
    out = tmp_path / "out" / "tiny.engine"
    r = _cli_build(cli_path, str(path), "-o", str(out))
    assert r["engine"] == str(out) and out.is_file()
    session = Session(path)
    assert [e.path for e in wf.engines(session)] == [str(out)]
    assert wf.engines(Session(other)) == ()  # another model's list does not show it
    # the tab's own build lands in the cache; both are listed
    tab_build = wf.build(session, wf.build_settings(session, opt_level=0, in_process=True))
    assert session.cache_dir in tab_build.engine_path.parents
    assert sorted(e.path for e in wf.engines(session)) == sorted([str(tab_build.engine_path), str(out)])
    # another model's build over the same -o path: it is no longer this model's engine
    _cli_build(cli_path, str(other), "-o", str(out))
    assert [e.path for e in wf.engines(session)] == [str(tab_build.engine_path)]
    assert [e.path for e in wf.engines(Session(other))] == [str(out)]
    out.unlink()  # a removed engine is not listed
    assert wf.engines(Session(other)) == ()
