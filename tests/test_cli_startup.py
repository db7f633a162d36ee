"""Start-up of the command line: ``workbench --help`` imports no command module and no numerical, runtime or UI
library, and neither does ``workbench CMD --help`` for any command (its choices come from the stdlib-only
:mod:`workbench.choices`); ``workbench inspect`` imports onnx and numpy but no runtime, UI or graph-editing
library; the static command table matches the command modules. Each runs ``python -m workbench.cli`` in a fresh
process and reads its ``sys.modules`` at exit (``-X importtime`` would miss modules imported through importlib, as
the command modules are)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import onnx
import pytest
from onnx import TensorProto, helper

import workbench.cli as cli

HEAVY = ("onnx", "onnxruntime", "numpy", "ml_dtypes", "dask", "distributed", "ipywidgets", "plotly", "IPython",
         "tensorrt", "tensorrt_rtx", "onnx_graphsurgeon")
RUNTIME_AND_UI = ("onnxruntime", "tensorrt", "tensorrt_rtx", "dask", "distributed", "ipywidgets", "plotly", "IPython")


# Runs the package's __main__ as `python -m workbench.cli` does; prints sys.modules once the command has exited.
_RUN = ("import atexit, json, runpy, sys\n"
        "atexit.register(lambda: print('\\nMODULES=' + json.dumps(sorted(sys.modules)), file=sys.stderr))\n"
        "sys.argv = ['workbench', *sys.argv[1:]]\n"
        "runpy.run_module('workbench.cli', run_name='__main__', alter_sys=True)\n")


def _imported(*argv: str) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    """Every module the command line ``workbench ARGV`` imported, and the finished process."""
    proc = subprocess.run([sys.executable, "-c", _RUN, *argv], capture_output=True, text=True, timeout=120)
    line = next(x for x in reversed(proc.stderr.splitlines()) if x.startswith("MODULES="))
    return set(json.loads(line.removeprefix("MODULES="))), proc


def _packages(names: set[str]) -> set[str]:
    return {n.split(".")[0] for n in names}


def test_help_imports_no_command_module_and_no_heavy_library():
    names, proc = _imported("--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "workbench.cli" in names
    assert _packages(names) & set(HEAVY) == set()
    assert {n for n in names if n.startswith("workbench.cli.")} == set()
    for name, help in cli.COMMANDS.items():  # the help lists every command with its one-liner
        assert name in proc.stdout and help.split()[0] in proc.stdout


def test_inspect_imports_its_own_command_and_no_runtime_or_ui(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    names, proc = _imported("inspect", str(path), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '"Relu": 1' in proc.stdout
    assert {"onnx", "workbench.graph", "workbench.cli.inspect"} <= names
    assert _packages(names) & set(RUNTIME_AND_UI) == set()
    # only what inspect uses: no graph editing (the edits package and onnx-graphsurgeon load on the first edit)
    assert "onnx_graphsurgeon" not in _packages(names) and "workbench.edits" not in names
    others = {n for n in names if n.startswith("workbench.cli.")} - {"workbench.cli.inspect"}
    assert others == set()


def test_command_table_matches_the_command_modules():
    modules = {m.name for m in pkgutil.iter_modules(cli.__path__) if not m.name.startswith("_")}
    with_command = {name for name in modules if hasattr(cli.command_module(name), "COMMAND")}
    assert with_command == set(cli.COMMANDS)  # a new command module must be listed in COMMANDS
    for name, help in cli.COMMANDS.items():
        module = cli.command_module(name)
        assert (module.COMMAND, module.HELP) == (name, help)
        assert callable(module.add_arguments) and callable(module.run)


def test_an_unknown_command_is_a_usage_error_that_names_the_commands():
    names, proc = _imported("nosuch")
    assert proc.returncode == 1
    assert "invalid choice: 'nosuch'" in proc.stderr and "'inspect'" in proc.stderr
    assert _packages(names) & set(HEAVY) == set()


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_command_help_imports_no_heavy_library_and_no_other_command(command):
    names, proc = _imported(command, "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"usage: workbench {command}" in proc.stdout and "--json" in proc.stdout
    own = {n for n in names if n.startswith("workbench.cli.")}
    assert f"workbench.cli.{command}" in own
    # shared argument helpers (modules named for what they add, not commands) may come along; no other command
    assert {n.removeprefix("workbench.cli.") for n in own} - {command} <= {"data_args", "_cluster"}
    assert _packages(names) & set(HEAVY) == set()


def test_help_shows_the_choices_the_core_accepts():
    """The choices --help offers (workbench.choices, stdlib only) are the ones the core checks against."""
    from workbench import calibration, choices, precision
    from workbench.workflows import debug

    assert calibration.METHODS is choices.METHODS and precision.TARGETS is choices.TARGETS
    assert debug.METRICS is choices.METRICS and precision.FP16_MAX == 65504.0
    _, proc = _imported("quantize", "--help")
    assert "{max,percentile,entropy,mse,auto}" in proc.stdout and "{tensorrt,onnxruntime}" in proc.stdout
