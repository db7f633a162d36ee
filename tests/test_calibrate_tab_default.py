"""The Calibrate tab's method starts at the one default the CLI and calibration.calibrate use (it said "entropy"
while they said "auto"), and a click with the default records that method in the recipe."""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

from workbench.calibration import DEFAULT_METHOD, calibrate
from workbench.cli import quantize as quantize_cli
from workbench.session import Session
from workbench.ui.calibrate_tab import CalibrateTab
from workbench.ui.common import Status


def test_calibrate_tab_cli_and_api_share_one_default_method(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    quantize_cli.add_arguments(parser)
    cli_default = parser.parse_args(["model.onnx", "--calib", "data.npz", "-o", "q.onnx"]).method
    api_default = inspect.signature(calibrate).parameters["method"].default
    assert cli_default == api_default == DEFAULT_METHOD == "auto"
    tab = CalibrateTab(Session("digits_cnn", cache_dir=tmp_path / "cache"), Status())
    assert tab.method.value == DEFAULT_METHOD
    tab.run_button.click()
    tab.wait()
    assert tab.status.state == "ok", tab.status.message
    assert tab.cache.method == DEFAULT_METHOD and tab.session.recipe.calibration.method == DEFAULT_METHOD
