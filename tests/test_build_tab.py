"""The Build tab, headless: set widget values, click, wait, assert widget and session state (real builds)."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.backends.worker import TEST_CRASH_ENV
from workbench.errors import DataError
from workbench.graph import load_model, sample_names
from workbench.recipe import SetShapes
from workbench.session import Session
from workbench.ui.build_tab import BuildTab
from workbench.ui.common import Status


@pytest.fixture
def tab(tmp_path):
    session = Session("fcn_dynamic", cache_dir=tmp_path / "cache")
    return BuildTab(session, Status())


def test_prefilled_profiles_backends_and_gpu_note(tab):
    assert tab.profiles.value == "input:1x3x32x32,1x3x256x256,8x3x1024x1024"  # derived for the dynamic input
    assert "derived defaults" in tab.profiles_note.value
    values = [v for _, v in tab.backend.options]
    assert values == ["auto", "tensorrt", "tensorrt-rtx"]
    labels = dict((v, label) for label, v in tab.backend.options)
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert labels["tensorrt"] == "tensorrt (unavailable)"
        tab.backend.value = "tensorrt"
        assert tab.build_button.disabled and "not installed" in tab.backend_note.value
        tab.backend.value = "tensorrt-rtx"
        assert not tab.build_button.disabled and tab.backend_note.value == ""
    assert "No GPU here" in tab.gpu_note.value
    assert "--maxShapes=input:8x3x1024x1024" in tab.trtexec.value


def test_build_click_builds_in_a_worker_and_lists_the_engine(tab):
    tab.profiles.value = "input:1x3x16x16,1x3x32x32,2x3x64x64"
    tab.opt_level.value = 1
    assert "--maxShapes=input:2x3x64x64" in tab.trtexec.value  # the command follows the controls
    tab.build_button.click()
    tab.wait()
    assert tab.status.state == "ok", tab.status.message
    r = tab.result
    assert r is not None and r.engine_path.is_file() and not r.in_process
    assert tab.session.cache_dir in r.engine_path.parents and r.engine_path.name.startswith("fcn_dynamic-")
    assert tab.progress.value == 1.0 and "Input filename" in tab.log.value
    assert tab.engines.value == str(r.engine_path) and len(tab.engines.options) == 1
    assert f"--saveEngine={r.engine_path}" in tab.trtexec.value
    assert "min [1, 3, 16, 16] opt [1, 3, 32, 32] max [2, 3, 64, 64]" in tab.engine_details.value
    assert r.model_sha256[:12] in tab.engine_details.value and f"<b>{tab.session.model.graph.output[0].name}</b> float32" in tab.engine_details.value
    assert tab.session.recipe.build.opt_level == 1  # the settings went into the recipe
    assert tab.session.recipe.build.profiles[0].max == (2, 3, 64, 64)
    assert not tab.build_button.disabled and tab.cancel_button.disabled


@pytest.mark.parametrize("name", sample_names())
def test_every_sample_builds_from_the_tab_with_prefilled_profiles(name, tmp_path):
    tab = BuildTab(Session(name, cache_dir=tmp_path / "cache"), Status())
    dynamic = [i for i in load_model(name).graph.input if any(not d.dim_value for d in i.type.tensor_type.shape.dim)]
    assert len(tab.profiles.value.splitlines()) == len(dynamic)  # one derived SPEC per dynamic input
    tab.build_button.click()
    tab.wait()
    assert tab.status.state == "ok", tab.status.message
    assert tab.result.engine_path.is_file() and len(tab.engines.options) == 1


def test_gpu_targets_reach_the_build_and_bad_ones_are_shown(tab):
    tab.targets.value = "SM86, sm_89"
    tab.in_process.value = True
    tab.build_button.click()
    tab.wait()
    assert tab.status.state == "ok", tab.status.message
    assert tab.session.recipe.build.compute_capabilities == ("SM86", "sm_89")
    assert tab.result.in_process
    tab.targets.value = "SM99"
    tab.build_button.click()
    tab.wait()
    assert tab.status.state == "error" and "SM99" in tab.status.message and "SM120" in tab.status.hint


def test_bad_profile_shows_error_and_starts_nothing(tab):
    tab.profiles.value = "input:1x4x16x16"
    tab.build_button.click()
    assert tab.status.state == "error" and "dim 1 is fixed to 3" in tab.status.message
    assert not tab.building and tab.result is None
    assert tab.phase.value == "" and tab.progress.value == 0.0 and tab.cancel_button.disabled  # the job never started


def test_cancel_stops_the_build(tab):
    tab.build_button.click()
    tab.cancel_button.click()
    tab.wait()
    assert tab.status.message.endswith("cancelled") and tab.phase.value == "cancelled"
    assert tab.result is None and list(Path(tab.session.cache_dir).glob("engines/*.engine")) == []


def test_builder_crash_is_shown_and_the_tab_keeps_working(tab, monkeypatch):
    monkeypatch.setenv(TEST_CRASH_ENV, "segv")
    tab.build_button.click()
    tab.wait()
    assert tab.status.state == "error" and "SIGSEGV" in tab.status.message
    monkeypatch.delenv(TEST_CRASH_ENV)
    tab.build_button.click()
    tab.wait()
    assert tab.status.state == "ok" and tab.result is not None and tab.result.engine_path.is_file()


def test_session_change_rederives_profiles_without_touching_the_status(tab):
    tab.status.ok("applied fuse_batchnorm: 0 nodes added, 2 removed")  # what the Edit tab just said
    tab.session.apply(SetShapes(shapes={"input": ("N", 3, 64, None)}))
    assert tab.profiles.value == "input:1x3x64x32,1x3x64x256,8x3x64x1024"  # re-derived for the new shape...
    assert (tab.status.state, tab.status.message) == ("ok", "applied fuse_batchnorm: 0 nodes added, 2 removed")
    assert "applied fuse_batchnorm" in tab.status.widget.value  # ...and the Edit tab's message survives


def test_a_failing_rederivation_is_shown(tab, monkeypatch):
    import workbench.workflows.build as wf

    def fails(_session):
        raise DataError("input 'input' has no declared shape, so no profile can be derived", hint="give --shapes")

    before = tab.profiles.value
    monkeypatch.setattr(wf, "default_profiles", fails)
    tab.status.ok("applied fuse_batchnorm")
    tab.session.apply(SetShapes(shapes={"input": ("N", 3, 64, None)}))
    assert tab.status.state == "error" and tab.status.message.startswith("input 'input' has no declared shape")
    assert tab.status.hint == "give --shapes" and tab.profiles.value == before  # the last derived profiles stay


def _onnx_arg(tab) -> Path:
    import shlex

    return Path(next(a for a in shlex.split(tab.trtexec.value) if a.startswith("--onnx="))[len("--onnx="):])


def test_trtexec_line_names_a_file_holding_the_sessions_current_model(tab):
    """It named the original .onnx after edits, and ``model.onnx`` (which did not exist) after a build."""
    from workbench.graph import model_bytes

    assert _onnx_arg(tab) == tab.session.source_path  # nothing edited: the user's own file
    tab.session.apply(SetShapes(shapes={"input": ("N", 3, 64, None)}))
    edited = _onnx_arg(tab)
    assert edited != tab.session.source_path and tab.session.cache_dir in edited.parents
    assert model_bytes(load_model(edited)) == model_bytes(tab.session.model)
    tab.profiles.value = "input:1x3x64x16,1x3x64x32,2x3x64x64"
    tab.in_process.value = True
    tab.build_button.click()
    tab.wait()
    assert tab.status.state == "ok", tab.status.message
    built = _onnx_arg(tab)
    assert built.is_file() and built.parent == tab.result.engine_path.parent
    assert model_bytes(load_model(built)) == model_bytes(tab.session.model)
    tab.session.goto(0)  # back to the opened model: the user's file
    assert _onnx_arg(tab) == tab.session.source_path


def test_messages_say_what_to_do_in_the_tab_not_on_the_command_line(tab, tmp_path):
    """The derived-profile note said "Choose your own with --shapes ..." and failures "run `workbench check MODEL`"."""
    import onnx
    from models import integer_ops_model

    assert "profiles box" in tab.profiles_note.value and "--shapes" not in tab.profiles_note.value
    path = tmp_path / "int.onnx"
    onnx.save(integer_ops_model(), path)
    bad = BuildTab(Session(path, cache_dir=tmp_path / "cache2"), Status())
    bad.in_process.value = True
    bad.build_button.click()
    bad.wait()
    assert bad.status.state == "error" and "input_QuantizeLinear" in bad.status.message
    assert "Check with TensorRT in the Model tab" in bad.status.hint and "workbench check" not in bad.status.hint
