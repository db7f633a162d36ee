"""Can TensorRT take this model? The real ONNX parser and an ahead-of-time build, in a child process.

:func:`check_model` reports per-node support (``supports_model_v2``), parse errors naming the node, whether
a build succeeds with the given (or derived) optimisation profiles, a builder crash with its signal, and
concrete suggestions: a dynamic input without a profile (with a ``--shapes`` example), ONNX Runtime-only
integer ops (the ``dequantize_integer_ops`` edit), an ``If`` with a constant condition
(``fold_constant_if``), custom-domain ops (plugins). Bad input (not a model, a wrong SPEC) raises a
WorkbenchError; everything about TensorRT itself is a report.

Repairs: where TensorRT cannot take the model, the report quotes the builder's own error (``builder_errors``,
verbatim; our hints come after it in ``suggestions``) and lists ``repairs`` the workbench can apply, each with the
recipe edits that apply it (:mod:`workbench.edits.repairs`): dims sharing one symbolic name (``split_shared_dims``),
an ``If`` on an input the user can freeze (``freeze_input`` + ``fold_constant_if``, needs the value), ONNX
Runtime integer ops (``dequantize_integer_ops``), a constant ``If`` (``fold_constant_if``). ``check_model(...,
repair=True, values={"sr": 16000})`` applies every ready repair, checks the repaired model too and says so in
``repaired`` ({edits, applied, skipped, parsable, buildable, errors, unsupported}); the repaired model itself is
``report.repaired_model`` (not in the JSON). For counting a corpus::

    report = check_model(path, shapes=spec, repair=True, values=manifest_values)
    raw_builds = report.buildable                                   # the model as shipped
    repaired_builds = report.buildable or bool(report.repaired and report.repaired["buildable"])

Cancel: ``check_model(..., cancel=event_or_callable)``. A check whose cancel is set before it returns raises
:class:`CheckCancelled` (a BuildError) instead of returning a report: before any work when it is set before the
call, otherwise after the child process has been told to stop (and killed if it does not stop within a few
seconds). A partial report would look like a verdict about the model, so there is none.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import onnx

from . import recipe as R
from .backends.trt import INSTALL_HINT, ORT_INTEGER_OPS, import_backend, resolve_backend, run_job
from .backends.trt_profiles import (
    dynamic_inputs,
    format_spec,
    model_inputs,
    parse_shapes,
    profiles_to_json,
    resolve_profiles,
)
from .backends.worker import WorkerCrash, run_in_child
from .cancel import cancelled
from .edits import apply_edits
from .edits.repairs import Repair, fill_values, find_repairs
from .errors import BackendUnavailable, BuildError, EditError
from .graph import load_model, save_model
from .precision import onnxruntime_only_qdq
from .recipe import ShapeProfile

__all__ = ["CheckCancelled", "CheckReport", "check_model", "repair_model", "ORT_INTEGER_OPS", "static_findings",
           "static_shapes"]


class CheckCancelled(BuildError):
    """The check was cancelled (its ``cancel`` was set before it finished): there is no report."""


_RECIPE = '{"schema_version": 1, "edits": [{"kind": "%s"}]}'


@dataclass
class CheckReport:
    """The CLI keys (``parsable``, ``buildable``, ``unsupported``, ``errors``, ``suggestions``) and more."""

    model: str
    backend: str | None
    version: str | None
    parsable: bool | None
    buildable: bool | None
    unsupported: list[dict[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)
    crashed: dict[str, Any] | None = None
    profiles: list[dict[str, Any]] = field(default_factory=list)
    derived_profiles: list[str] = field(default_factory=list)
    nodes: int = 0
    supported_nodes: int | None = None
    build_seconds: float | None = None
    layers: int | None = None
    io: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    builder_errors: list[str] = field(default_factory=list)
    repairs: list[dict[str, Any]] = field(default_factory=list)
    repaired: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return bool(self.parsable and self.buildable)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))


def _const_names(model: onnx.ModelProto) -> set[str]:
    names = {i.name for i in model.graph.initializer}
    names |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return names


def static_findings(model: onnx.ModelProto, profiles: Sequence[ShapeProfile] = ()) -> tuple[list[dict[str, str]],
                                                                                               list[str]]:
    """What the graph alone tells: (unsupported nodes we can name, suggestions)."""
    unsupported: list[dict[str, str]] = []
    suggestions: list[str] = []
    given = {p.input for p in profiles}
    for name, info in dynamic_inputs(model).items():
        if name in given:
            continue
        resolved = resolve_profiles(model, [p for p in profiles if p.input != name])
        mine = next(p for p in resolved.profiles if p.input == name)
        shape = "x".join("?" if not isinstance(d, int) or d <= 0 else str(d) for d in info.shape or ())
        suggestions.append(
            f"input '{name}' has dynamic dims ({shape}) and no profile: the check used derived defaults; "
            f"give the shapes you will run, e.g. --shapes {format_spec(mine)}")
    integer = [n for n in model.graph.node if n.op_type in ORT_INTEGER_OPS]
    for n in integer:
        unsupported.append({"node": n.name, "op": n.op_type,
                            "reason": f"{n.op_type} is an ONNX Runtime integer op; TensorRT has no kernel for it"})
    if integer:
        suggestions.append(
            f"{len(integer)} ONNX Runtime integer op(s) ({', '.join(sorted({n.op_type for n in integer}))}: "
            f"{', '.join(n.name for n in integer[:5])}{'...' if len(integer) > 5 else ''}) must be turned back to float "
            f"first: apply the dequantize_integer_ops edit (`workbench edit MODEL recipe.json -o float.onnx` with "
            f"recipe.json = {_RECIPE % 'dequantize_integer_ops'}), then quantize to Q/DQ for TensorRT "
            f"(`workbench quantize float.onnx --calib DATA.npz -o qdq.onnx`)")
    ort_qdq = onnxruntime_only_qdq(model)
    for name, why in ort_qdq.items():
        op = next(n.op_type for n in model.graph.node if n.name == name)
        unsupported.append({"node": name, "op": op,
                            "reason": f"{why}; TensorRT takes symmetric int8/fp8 Q/DQ (zero point 0, float bias)"})
    if ort_qdq:
        suggestions.append(
            f"{len(ort_qdq)} Q/DQ node(s) ({', '.join(list(ort_qdq)[:3])}{'...' if len(ort_qdq) > 3 else ''}) follow "
            "ONNX Runtime's CPU placement (asymmetric uint8 activations, int32 biases), which TensorRT does not take: "
            "quantize the FP32 model for TensorRT instead (`workbench quantize MODEL --calib DATA.npz`, "
            "target tensorrt is the default)")
    consts = _const_names(model)
    const_ifs = [n for n in model.graph.node if n.op_type == "If" and n.input and n.input[0] in consts]
    if const_ifs:
        suggestions.append(
            f"If node(s) {', '.join(repr(n.name) for n in const_ifs)} have a constant condition: fold them with the "
            f"fold_constant_if edit (recipe {_RECIPE % 'fold_constant_if'}) so TensorRT sees a plain graph")
    custom = sorted({(n.domain, n.op_type) for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    for domain, op in custom:
        suggestions.append(f"op {op} from domain '{domain}' is not standard ONNX: TensorRT needs a plugin for it, "
                           f"or replace it with standard ops (replace_node edit)")
    return unsupported, suggestions


def check_model(
    model: onnx.ModelProto | str | os.PathLike[str],
    *,
    shapes: str | Sequence[str] | Sequence[ShapeProfile] | None = None,
    backend: str = "auto",
    timeout: float = 600.0,
    in_process: bool = False,
    opt_level: int = 3,
    cancel: Callable[[], bool] | threading.Event | None = None,
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
    report.repaired_model = None  # type: ignore[attr-defined]
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
    report.repaired_model = fixed  # type: ignore[attr-defined]
    verdict = "builds" if again.buildable else "parses" if again.parsable else "still fails"
    report.suggestions.append(f"with the repairs applied ({', '.join(e.kind for e in applied)}) the model {verdict}")
    return report


def _given(shapes: str | Sequence[str] | Sequence[ShapeProfile] | None, model: onnx.ModelProto
           ) -> tuple[ShapeProfile, ...]:
    if shapes is None or isinstance(shapes, str) or all(isinstance(s, str) for s in shapes):
        return parse_shapes(shapes, model)  # type: ignore[arg-type]
    return tuple(shapes)  # type: ignore[arg-type]


def static_shapes(model: onnx.ModelProto, given: Sequence[ShapeProfile] = ()) -> dict[str, tuple[int, ...]]:
    """{input: dims} of the inputs whose profile is one shape (min = opt = max): the given profiles, else derived
    ones. What a ``static_shapes`` repair fixes the inputs to (a profile with a range gives none)."""
    return {p.input: tuple(p.opt) for p in resolve_profiles(model, given).profiles if p.min == p.opt == p.max}


def repair_model(model: onnx.ModelProto, repairs: Sequence[Repair] | None = None,
                 values: Mapping[str, Any] | None = None, shapes: Mapping[str, Sequence[int]] | None = None,
                 ) -> tuple[onnx.ModelProto, list[R.Edit], list[dict[str, str]]]:
    """Apply ``repairs`` (default: every one :func:`find_repairs` offers) with ``values`` (for ``freeze_input``)
    and static ``shapes`` ({input: dims}, for ``static_shapes``) filled in: (repaired model, the edits applied in
    order, [{title, reason}] of repairs skipped: a value or shape missing, or an edit that refused this model)."""
    todo = fill_values(find_repairs(model) if repairs is None else repairs, values or {}, shapes)
    applied: list[R.Edit] = []
    skipped: list[dict[str, str]] = []
    for r in todo:
        if not r.ready and r.needs_shapes:
            example = " ".join(f"--shapes {k}:DIMS" for k in r.needs_shapes)
            skipped.append({"title": r.title, "reason": f"needs one static shape for each of {list(r.needs_shapes)}: "
                            f"pass shapes={{input: dims}} or {example} (one shape, not a MIN,OPT,MAX range)"})
            continue
        if not r.ready:
            skipped.append({"title": r.title, "reason": f"needs the value of input '{r.needs_value}'"
                            + (f" (e.g. {r.examples[0]!r})" if r.examples else "")
                            + f": pass values={{'{r.needs_value}': ...}} or --freeze {r.needs_value}=VALUE"})
            continue
        try:
            model = apply_edits(model, list(r.edits))
        except EditError as exc:
            skipped.append({"title": r.title, "reason": f"{exc.message} ({exc.hint})" if exc.hint else exc.message})
            continue
        applied += r.edits
    return model, applied, skipped


def _stop_if_cancelled(cancel: Callable[[], bool] | threading.Event | None, where: str,
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
    cancel: Callable[[], bool] | threading.Event | None,
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
    _merge(report, result, name)
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


def _build_hints(report: CheckReport) -> list[str]:
    """Our reading of a failed build, said after the builder's own message (never instead of it)."""
    text = " ".join(report.builder_errors)
    hints = []
    for name in dict.fromkeys(_EQUAL_DIMS.findall(text)):
        hints.append(f"the builder demands that all dims named '{name}' be equal: the model gives one symbolic name "
                     f"to different dims; give the shapes you run with equal values there, or apply the "
                     f"split_shared_dims repair so each dim is free")
    if not report.builder_errors or "profile" in text.lower():
        hints.append("check the shape profiles: --shapes NAME:MIN,OPT,MAX for each dynamic input")
    return hints


def _merge(report: CheckReport, result: dict[str, Any], backend: str) -> None:
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
        report.suggestions += _build_hints(report)
    if not report.parsable and not report.unsupported:
        report.suggestions.append("the parser rejected the model: see errors for the node; "
                                  "`workbench inspect MODEL --layers` shows its inputs and shapes")
