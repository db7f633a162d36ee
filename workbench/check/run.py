"""The check itself: the real TensorRT parser and an ahead-of-time build in a child process, merged with what the
graph tells into a :class:`~workbench.check.report.CheckReport`."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx

from ..backends.trt import INSTALL_HINT, import_backend, resolve_backend, run_job
from ..backends.trt_profiles import model_inputs, profiles_to_json, resolve_profiles
from ..backends.worker import WorkerCrash, run_in_child
from ..cancel import Cancel, cancelled
from ..edits.repairs import fill_values, find_repairs, shared_dims
from ..errors import BackendUnavailable, BuildError
from ..graph import load_model, save_model
from ..recipe import ShapeProfile
from .repair import given_profiles as _given
from .repair import repair_model, static_shapes
from .report import CheckCancelled, CheckReport
from .static import static_findings

__all__ = ["check_model"]


def check_model(
    model: onnx.ModelProto | str | os.PathLike[str],
    *,
    shapes: str | Sequence[str] | Sequence[ShapeProfile] | None = None,
    backend: str = "auto",
    timeout: float = 600.0,
    in_process: bool = False,
    opt_level: int = 3,
    cancel: Cancel = None,
    repair: bool = False,
    values: Mapping[str, Any] | None = None,
) -> CheckReport:
    """Parse and build ``model`` with TensorRT (child process by default) and say what to do about problems.

    ``shapes`` is a SPEC string (or list) or ShapeProfiles. Raises ModelError/DataError for bad input;
    an unavailable TensorRT, an unsupported node, a failed or crashed build are reported, not raised.
    ``cancel`` (a ``threading.Event`` or a callable returning True) stops the check: :class:`CheckCancelled`
    is raised, promptly and without loading the model when it is already set at the call, and the child
    process is stopped when it is set during the build (``in_process=True`` checks it between build steps).
    ``repair=True`` applies the ready repairs (``values``: {input: value} for ``freeze_input``) and checks the
    repaired model as well (``report.repaired``, ``report.repaired_model``); without it repairs are only listed.
    """
    where = str(model) if not isinstance(model, onnx.ModelProto) else (model.graph.name or "the model")
    _stop_if_cancelled(cancel, where)
    loaded = load_model(model)
    report = _check_once(loaded, where, shapes=shapes, backend=backend, timeout=timeout, in_process=in_process,
                         opt_level=opt_level, cancel=cancel, values=values)
    if not repair:
        return report
    fixed, applied, skipped = repair_model(loaded, values=values, shapes=static_shapes(loaded, _given(shapes, loaded)))
    report.repaired = {"edits": [e.to_dict() for e in applied], "skipped": skipped, "parsable": None,
                       "buildable": None, "errors": [], "unsupported": []}
    if not applied:
        return report
    names = set(model_inputs(fixed))
    kept = [p for p in _given(shapes, loaded) if p.input in names]
    again = _check_once(fixed, f"{where} (repaired)", shapes=kept, backend=backend, timeout=timeout, in_process=in_process,
                        opt_level=opt_level, cancel=cancel, values=values)
    report.repaired.update(parsable=again.parsable, buildable=again.buildable, errors=again.errors,
                           unsupported=again.unsupported, suggestions=again.suggestions, repairs=again.repairs)
    report.repaired_model = fixed
    verdict = "builds" if again.buildable else "parses" if again.parsable else "still fails"
    report.suggestions.append(f"with the repairs applied ({', '.join(e.kind for e in applied)}) the model {verdict}")
    return report



def _stop_if_cancelled(cancel: Cancel, where: str,
                       cause: BaseException | None = None) -> None:
    if cancelled(cancel):
        raise CheckCancelled(f"the check of {where} was cancelled",
                             hint="nothing was checked to the end; run the check again when ready") from cause


def _check_once(
    model: onnx.ModelProto,
    where: str,
    *,
    shapes: str | Sequence[str] | Sequence[ShapeProfile] | None,
    backend: str,
    timeout: float,
    in_process: bool,
    opt_level: int,
    cancel: Cancel,
    values: Mapping[str, Any] | None,
) -> CheckReport:
    def stop_if_cancelled(cause: BaseException | None = None) -> None:
        _stop_if_cancelled(cancel, where, cause)

    stop_if_cancelled()
    given = _given(shapes, model)
    resolved = resolve_profiles(model, given)
    unsupported, suggestions = static_findings(model, given)
    repairs = fill_values(find_repairs(model), values or {}, static_shapes(model, given))
    report = CheckReport(model=where, backend=None, version=None, parsable=None, buildable=None,
                         unsupported=unsupported, suggestions=suggestions, nodes=len(model.graph.node),
                         profiles=profiles_to_json(resolved.profiles), derived_profiles=list(resolved.derived),
                         notes=list(resolved.notes), repairs=[r.to_dict() for r in repairs])
    try:
        name = resolve_backend(backend)
        report.backend = name
        report.version = str(getattr(import_backend(name), "__version__", "unknown"))
    except BackendUnavailable as exc:
        report.errors.append(exc.message)
        report.suggestions.insert(0, f"install TensorRT to check the model: {exc.hint or INSTALL_HINT}")
        return report

    with tempfile.TemporaryDirectory(prefix="wb-check-") as tmp:
        path = Path(tmp) / "model.onnx"
        save_model(model, path)
        job = {"backend": name, "model_path": str(path), "build": True, "support": True,
               "engine_path": None, "profiles": profiles_to_json(resolved.profiles), "opt_level": opt_level,
               "timing_cache": None}
        stop_if_cancelled()

        def poll() -> bool:
            return cancelled(cancel)

        builder_log = _BuilderLog()
        try:
            result = (run_job(job, builder_log, poll) if in_process
                      else run_in_child(job, timeout=timeout, what=f"the check of {where}", cancel=poll,
                                        on_event=builder_log))
        except WorkerCrash as exc:
            stop_if_cancelled(exc)
            report.crashed = {"signal": exc.signal_name, "returncode": exc.returncode, "last_log": list(exc.log_tail)}
            report.buildable = False
            report.errors.append(exc.message)
            report.suggestions.append(
                f"the {name} builder crashed ({exc.signal_name or 'no result'}); try another TensorRT version, or "
                f"bisect the graph with the extract edit to find the node that crashes it")
            return report
        except BuildError as exc:  # timeout or cancel
            stop_if_cancelled(exc)
            report.errors.append(exc.message)
            report.suggestions.append(exc.hint)
            return report
    stop_if_cancelled()
    report.builder_errors = list(builder_log.errors)
    _merge(report, result, name, shared_dims(model))
    if not report.ok and repairs:
        report.suggestions.append(
            "repairs the workbench can apply: " + "; ".join(r.title for r in repairs)
            + " (`workbench check MODEL --repair -o fixed.onnx --recipe-out repairs.json"
            + "".join(f" --freeze {r.needs_value}=VALUE" for r in repairs if not r.ready and r.needs_value)
            + "".join(f" --shapes {k}:DIMS" for r in repairs if not r.ready for k in r.needs_shapes) + "`)")
    return report


class _BuilderLog:
    """Collects the builder's own error messages (verbatim) from the job's log events, build stage only (the
    parse stage's errors come with their node from the parser)."""

    def __init__(self) -> None:
        self.stage = ""
        self.errors: list[str] = []

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("event") == "stage":
            self.stage = str(event.get("stage"))
        elif (event.get("event") == "log" and self.stage == "build"
              and event.get("level") in ("error", "internal_error")):
            message = str(event.get("message", "")).strip()
            if message and message not in self.errors:
                self.errors.append(message)


_EQUAL_DIMS = re.compile(r"Dimensions with name (\S+?)\.? must be equal")
# TensorRT-RTX, when a profile gives different values to dims of one name ('?' in a Paddle export [-1, 3, ?, ?]):
# "API Usage Error (?: Input dimensions with this name have different constant values or have contradictory
# IOptimizationProfile kMIN/kMAX constraints. ...)"
_CONFLICTING_DIMS = re.compile(r"\(([^()\s:]+): Input dimensions with this name have different constant values")


def _build_hints(report: CheckReport, shared: dict[str, dict[str, list[int]]]) -> list[str]:
    """Our reading of a failed build, said after the builder's own message (never instead of it). ``shared``:
    {input: {symbol: [axes]}} of the dims that share a name within one input (``shared_dims``)."""
    text = " ".join(report.builder_errors)
    hints = []
    for name in dict.fromkeys(_EQUAL_DIMS.findall(text)):
        hints.append(f"the builder demands that all dims named '{name}' be equal: the model gives one symbolic name "
                     f"to different dims; give the shapes you run with equal values there, or apply the "
                     f"split_shared_dims repair so each dim is free")
    for name in dict.fromkeys(_CONFLICTING_DIMS.findall(text)):
        where = [f"input '{i}' names dims {syms[name]} '{name}'" for i, syms in shared.items() if name in syms]
        if where:
            hints.append(f"the builder takes dims of one name as one dim, and the profile gives the dims named "
                         f"'{name}' different values ({'; '.join(where)}): apply the split_shared_dims repair "
                         f"(`workbench check MODEL --repair`) so each dim has its own name, or give them equal values")
        else:
            hints.append(f"the builder takes dims of one name as one dim, and the profile gives the dims named "
                         f"'{name}' different values: give them equal values in --shapes, or rename them")
    if not report.builder_errors or ("profile" in text.lower() and not hints):
        hints.append("check the shape profiles: --shapes NAME:MIN,OPT,MAX for each dynamic input")
    return hints


def _merge(report: CheckReport, result: dict[str, Any], backend: str,
           shared: dict[str, dict[str, list[int]]]) -> None:
    report.parsable = bool(result.get("parsable"))
    report.buildable = bool(result.get("built"))
    report.build_seconds = result.get("seconds")
    report.layers = result.get("layers")
    report.io = list(result.get("io") or [])
    report.notes += [n for n in result.get("notes", []) if "timing cache" not in n]
    support = result.get("support") or {}
    errors = list(support.get("errors") or []) + list(result.get("errors") or [])
    seen = {u["node"] for u in report.unsupported}
    for err in errors:
        label = f"node '{err['node']}'" + (f" ({err['op']})" if err.get("op") else "")
        line = f"{label}: {err['code']}: {err['reason']}"
        if line not in report.errors:
            report.errors.append(line)
        if err["code"] == "UNSUPPORTED_NODE" and err["node"] not in seen:
            seen.add(err["node"])
            report.unsupported.append({"node": err["node"], "op": err.get("op", ""),
                                       "reason": err["reason"]})
    if support.get("supported") is not None or report.parsable:
        report.supported_nodes = report.nodes - len({u["node"] for u in report.unsupported})
    if report.parsable and not report.buildable:
        if report.builder_errors:  # the builder's own words first, verbatim; our hints come after, never instead
            report.errors += [f"{backend} builder: {text}" for text in report.builder_errors]
        else:
            report.errors.append(f"the {backend} builder produced no engine and logged no error")
        report.suggestions += _build_hints(report, shared)
    if not report.parsable and not report.unsupported:
        report.suggestions.append("the parser rejected the model: see errors for the node; "
                                  "`workbench inspect MODEL --layers` shows its inputs and shapes")

