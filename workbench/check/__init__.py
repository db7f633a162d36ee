"""Can TensorRT take this model? The real ONNX parser and an ahead-of-time build, in a child process.

Modules: :mod:`.run` (the check in a child process, the builder's errors, the report merged), :mod:`.static` (what
the graph alone tells), :mod:`.repair` (applying the repairs), :mod:`.report` (the report type).

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

from ..backends.trt import ORT_INTEGER_OPS
from .repair import repair_model, static_shapes
from .report import CheckCancelled, CheckReport
from .run import check_model
from .static import static_findings

__all__ = ["CheckCancelled", "CheckReport", "check_model", "repair_model", "ORT_INTEGER_OPS", "static_findings",
           "static_shapes"]
