"""Calibrate, quantize and convert: the calibrate-then-quantize workflow, written once for the CLI
(``workbench quantize`` / ``convert``), the Calibrate and Precision tabs and notebooks.

- :func:`calibrate`: representative data through the FP32 model in ONNX Runtime (locally or as Dask tasks on a
  ``cluster``, the same scales bit for bit), the scale cache saved in the session's cache folder, the calibration
  recorded in the recipe, with its :class:`~workbench.calibration.Diagnostics`.
- :func:`apply_quantize`: Q/DQ placed with a calibration's scales (for TensorRT or ONNX Runtime's CPU provider).
- :func:`quantize`: both, after folding BatchNorm; with ``settings.target_metric`` the accuracy-to-a-target mode
  (:func:`to_target`): per-tensor calibration methods, then the fewest layers kept in high precision.
- :func:`convert`: fp16/bf16 through Cast nodes, with activation ranges measured on a reference run.
- :func:`apply_precisions`: the Precision tab's per-node choices (:func:`node_choices` says which are allowed).
- Data: :func:`load_inputs`, :func:`find_inputs`, :func:`random_inputs` (the data layer, for the CLI and the tabs).
"""

from __future__ import annotations

import dataclasses
import resource
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx

from ..calibration import Diagnostics, activation_ranges, calibration_diagnostics
from ..calibration import calibrate as calibrate_model
from ..choices import DEFAULT_METHOD, FP16_MAX, METHODS, TARGET_METRICS, TARGET_TOLERANCE, TARGETS
from ..cluster import Cluster
from ..data import (
    Dataset,
    DataSummary,
    data_kind,
    find_data,
    load_data,
    parse_run_length,
    parse_sample_axes,
    preprocessing_for,
    random_data,
)
from ..errors import CalibrationError, DataError, EditError
from ..graph import model_bytes, sha256_bytes
from ..precision import (
    ScaleCache,
    TensorStats,
    activation_tensors,
    latest_scales,
    node_precisions,
    output_heads,
    plan_conversion,
    precision_guards,
    quantization_targets,
    select_nodes,
    weight_bytes,
)
from ..precision.allowed import NodeChoices
from ..precision.allowed import allowed_precisions as node_choices
from ..precision.convert import range_guards, selection_notes
from ..precision.qdq import fp8_float_convs
from ..precision.qdq_ort import uint8_params
from ..recipe import CalibrationSettings, ConvertPrecision, Edit, FuseBatchNorm, Quantize
from ..session import Session
from .base import Cancel, Progress, Result, cancelled, report
from .cluster import ClusterUse

if TYPE_CHECKING:
    from ..compare.metrics import Metric

__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "TARGETS",
    "FP16_MAX",
    "Dataset",
    "Diagnostics",
    "ScaleCache",
    "TensorStats",
    "NodeChoices",
    "QuantizeSettings",
    "CalibrationResult",
    "TargetResult",
    "QuantizeResult",
    "ConvertResult",
    "PrecisionResult",
    "QuantParams",
    "load_inputs",
    "find_inputs",
    "random_inputs",
    "calibrate",
    "calibration_diagnostics",
    "apply_quantize",
    "quantize",
    "to_target",
    "convert",
    "node_choices",
    "weight_bytes",
    "precision_edits",
    "apply_precisions",
    "quant_params",
    "RANDOM_SAMPLES",
    "TARGET_METRICS",
    "TARGET_TOLERANCE",
]

RANDOM_SAMPLES = 8  # convert's reference run on random data
RANDOM_WARNING = ("fp16 activation ranges measured on RANDOM data (no --inputs): nodes whose real values leave the "
                  "fp16 range may be missed; give --inputs DATA (100-500 representative samples) for real ranges")


# --- data ------------------------------------------------------------------------------------------------


def load_inputs(source: Any, model: onnx.ModelProto, *, sample_axes: Sequence[str] = (), input: str | None = None,
                preprocessing: Mapping[str, Any] | None = None, run_length: str | int | None = None) -> Dataset:
    """``source`` (an ``.npz``, a folder of images/audio/``.npy``, token files, a dict of arrays, a Dataset) read by
    the data layer and bound to ``model``. ``sample_axes``: ``NAME=AXIS`` / ``NAME=none`` specs;
    ``preprocessing``: ``{flag: value}`` (size, layout, mean, std, ...) for folders of images or audio and token
    files; ``run_length``: ``N`` consecutive sample-axis entries per model run (``--run-length``)."""
    axes = parse_sample_axes(list(sample_axes))
    pre = None
    given = {k: v for k, v in (preprocessing or {}).items() if v is not None}
    if given:
        kind = data_kind(source)
        if kind not in ("image", "audio", "tokens"):
            raise DataError(f"preprocessing flags ({', '.join('--' + k.replace('_', '-') for k in given)}) apply to "
                            f"folders of images or audio and token files, not to {source}",
                            hint="an .npz holds the model's inputs as they are; drop the flags")
        pre = preprocessing_for(model, input, kind=kind, **given)
    return load_data(source, model, sample_axes=axes, preprocessing=pre, input=input,
                     run_length=parse_run_length(run_length))


def find_inputs(model: onnx.ModelProto, folder: str | Path | None) -> list[Path]:
    """``.npz`` files in ``folder`` that fit ``model``'s inputs, calibration data first."""
    return find_data(model, folder)


def random_inputs(model: onnx.ModelProto, *, samples: int = 128, shapes: Sequence[str] | None = None,
                  warn: bool = True) -> Dataset:
    """Seeded random data for every input (NOT representative: a loud warning unless ``warn=False``); ``shapes``:
    SPECs (``name:1x3x224x224``) for inputs with dynamic dims."""
    dims = None
    if shapes:
        from ..backends.trt_profiles import parse_shapes

        dims = {p.input: p.opt for p in parse_shapes(list(shapes), model)}
    return random_data(model, samples=samples, shapes=dims, warn=warn)


# --- settings and results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuantizeSettings:
    """Everything :func:`calibrate`, :func:`apply_quantize` and :func:`quantize` take besides the data.

    ``exclude``: node selectors (names, ``op:Gemm``, globs) left in float; ``float_heads``: output heads stay
    float (and are not calibrated); ``methods``: per-tensor methods over ``method``; ``target_metric``
    (``rel_l2`` | ``accuracy``, or from Python any per-sample :class:`~workbench.compare.metrics.Metric`, e.g. a
    task metric) and ``tolerance``: the accuracy-to-a-target mode of :func:`quantize` (:func:`to_target`).
    """

    method: str = DEFAULT_METHOD
    percentile: float = 99.99
    dtype: str = "int8"
    target: str = "tensorrt"
    exclude: tuple[str, ...] = ()
    per_channel: bool = True
    float_heads: bool = True
    fold_batchnorm: bool = True
    methods: Mapping[str, str] = field(default_factory=dict)
    target_metric: str | Metric | None = None
    tolerance: float | None = None
    batch_size: int = 16


@dataclass(frozen=True)
class CalibrationResult(Result):
    """A calibration: its scale cache (``scales``: the digest it is saved under), what it read, its diagnostics."""

    cache: ScaleCache = field(repr=False, compare=False)
    scales: str
    method: str
    samples: int
    seconds: float
    peak_rss_mb: float
    warnings: tuple[str, ...]
    data: DataSummary
    diagnostics: Diagnostics
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The CLI's ``calibration`` object (the cache itself is in the cache folder, under ``scales``)."""
        out = super().to_dict()
        del out["cache"], out["label"]
        return out


@dataclass(frozen=True)
class TargetResult(Result):
    """Accuracy to a target: the metric before and after, the method per tensor, the layers kept in high precision
    (``kept``; of them ``kept_fp16`` in FP16, the rest FP32) and what they cost (estimated, relative to
    FP32 = 1.0)."""

    metric: str
    tolerance: float
    methods: Mapping[str, float]  # whole-model metric per calibration method
    method: str
    tensor_methods: Mapping[str, str]  # per-tensor methods over ``method`` that improved the metric
    fp32: float
    before: float
    after: float
    met: bool
    kept: tuple[str, ...]
    message: str
    estimated_cost: float | None
    cost_all_int8: float | None
    plans_tried: int
    samples: int
    kept_fp16: tuple[str, ...] = ()  # of ``kept``, those in FP16 (TensorRT placement); the rest FP32
    layers: Mapping[str, int] = field(default_factory=dict)  # the plan's layers per precision: int8, fp16, fp32


@dataclass(frozen=True)
class QuantizeResult(Result):
    """A quantized model (in the session; written to ``output`` when asked) and how it was made."""

    output: str | None
    dtype: str
    target: str
    quantized: tuple[str, ...]
    excluded: tuple[str, ...]
    float_heads: tuple[str, ...]
    fused_batchnorm: int
    calibration: CalibrationResult | None
    target_metric: TargetResult | None = None
    recipe: str | None = None
    cluster: ClusterUse | None = None

    def to_dict(self) -> dict[str, Any]:
        """The CLI's JSON (``target_metric``, ``recipe`` and ``cluster`` only when there is one)."""
        out = super().to_dict()
        for key in ("target_metric", "recipe", "cluster"):
            if out[key] is None:
                del out[key]
        return out


@dataclass(frozen=True)
class ConvertResult(Result):
    """An fp16/bf16 model: converted nodes, those kept fp32 and why, the measured ranges' data and limit."""

    output: str | None
    precision: str
    converted: tuple[str, ...]
    kept: tuple[str, ...]
    kept_reasons: Mapping[str, str]
    guards: tuple[Mapping[str, str], ...]
    range_kept: tuple[str, ...]
    range_limit: float | None
    warnings: tuple[str, ...]
    data: DataSummary | None = None
    recipe: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The CLI's JSON (``data`` only after a reference run, ``recipe`` only when saved)."""
        out = super().to_dict()
        for key in ("data", "recipe"):
            if out[key] is None:
                del out[key]
        return out


@dataclass(frozen=True)
class PrecisionResult(Result):
    """The recipe edits the Precision tab's choices became, and the nodes per precision they changed."""

    edits: tuple[str, ...]
    nodes: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class QuantParams:
    """A tensor's quantization parameters at a threshold: ``scale`` and, for uint8 (ONNX Runtime), ``zero_point``."""

    scale: float
    zero_point: int | None = None


def quant_params(stats: TensorStats, threshold: float, *, target: str = "tensorrt", dtype: str = "int8"
                 ) -> QuantParams:
    """The scale (and zero point) :func:`~workbench.precision.quantize_model` gives a tensor clipped at
    ``threshold``: symmetric ``threshold / 127`` (fp8: ``/ 448``) for TensorRT, uint8 over the calibrated range
    clipped to it for ONNX Runtime."""
    if target == "onnxruntime":
        scale, zero_point = uint8_params(stats, threshold)
        return QuantParams(scale, zero_point)
    return QuantParams(threshold / (448.0 if dtype == "fp8" else 127.0))


# --- calibrate and quantize ------------------------------------------------------------------------------


def _excluded(model: onnx.ModelProto, settings: QuantizeSettings) -> list[str]:
    """The user's exclusions; for fp8 (TensorRT placement) also the convs FP8 leaves float (precision.qdq, rule 10)."""
    chosen = select_nodes(model, list(settings.exclude), what="exclude") if settings.exclude else []
    if settings.dtype == "fp8" and settings.target == "tensorrt":
        chosen += [n for n in fp8_float_convs(model) if n not in set(chosen)]
    return chosen


def _calibrated_tensors(model: onnx.ModelProto, excluded: list[str], settings: QuantizeSettings) -> list[str]:
    """The tensors the placement needs; in the target mode also every input (ONNX Runtime: and output) of each
    quantized node, so that the plans keeping some layers in high precision find their scales too (keeping a
    residual Add's one input branch in float moves its Q/DQ onto the other input)."""
    tensors = activation_tensors(model, exclude=excluded, target=settings.target, float_heads=settings.float_heads)
    if settings.target_metric is None:
        return tensors
    consts = {i.name for i in model.graph.initializer} | {
        o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    targets = quantization_targets(model, exclude=excluded, target=settings.target, float_heads=settings.float_heads)
    seen = set(tensors)
    for node in model.graph.node:
        if node.name not in targets:
            continue
        for t in (*node.input, *(node.output if settings.target == "onnxruntime" else ())):
            if t and t not in consts and t not in seen:
                seen.add(t)
                tensors.append(t)
    return tensors


def calibrate(session: Session, data: Any, settings: QuantizeSettings = QuantizeSettings(), *, label: str = "",
              eval_data: Any = None, progress: Progress | None = None, cancel: Cancel = None,
              cluster: Cluster | None = None) -> CalibrationResult:
    """Calibrate the session's model on ``data`` (a path, a Dataset, a dict of arrays; :func:`load_inputs` for
    folders with preprocessing): the tensors ``settings`` quantizes, every method's threshold, the scale cache saved
    in the session's cache folder (reused for the same model, file and settings) and the calibration recorded in
    the recipe (``label``: how the recipe names the data, default the path). ``eval_data``: the diagnostics say
    where it leaves the calibrated range. ``cluster``: the batches run as Dask tasks (the same scales)."""
    model = session.model
    start = time.perf_counter()
    tensors = _calibrated_tensors(model, _excluded(model, settings), settings)
    if not tensors and settings.dtype == "fp8" and fp8_float_convs(model):
        raise CalibrationError(
            f"nothing to quantize in fp8: FP8 leaves float the {len(fp8_float_convs(model))} convs of this model that "
            "TensorRT's FP8 kernels do not serve (16 or fewer channels, depthwise, more than 32 filter taps), and the "
            "output heads stay float", hint="use --dtype int8 for this model (docs/fp8.md)")
    ds = data if isinstance(data, Dataset) else load_data(data, model)
    source = data if isinstance(data, (str, Path)) else ds  # a path: the cache is keyed by the file's digest
    cache = calibrate_model(model, source, method=settings.method, percentile=settings.percentile,
                            dtype=settings.dtype, tensors=tensors, batch_size=settings.batch_size,
                            cache_dir=session.cache_dir, progress=progress, cancel=cancel, cluster=cluster)
    digest = cache.save(session.cache_dir)
    axes = {k: ds.sample_axes[k] for k in ds.inputs}
    label = label or str(data if isinstance(data, (str, Path)) else ds.description)
    session.set_calibration(CalibrationSettings(
        method=settings.method, percentile=settings.percentile, samples=cache.samples, data=label,
        preprocessing=ds.preprocessing, sample_axes=axes if any(a != 0 for a in axes.values()) else {},
        run_length=ds.given_run_length or 0))
    seconds = round(time.perf_counter() - start, 3)
    report(progress, 0, 0, "diagnostics")
    evaluation = None
    if eval_data is not None:
        evaluation = eval_data if isinstance(eval_data, Dataset) else load_data(eval_data, model)
    diagnostics = calibration_diagnostics(cache, model, evaluation, batch_size=settings.batch_size)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return CalibrationResult(cache, digest, cache.method, cache.samples, seconds, round(peak, 1), tuple(cache.warnings), ds.describe(), diagnostics, label)


def apply_quantize(session: Session, cache: ScaleCache, settings: QuantizeSettings = QuantizeSettings(), *,
                   eval_data: Any = None, progress: Progress | None = None, cancel: Cancel = None,
                   cluster: Cluster | None = None) -> QuantizeResult:
    """Place Q/DQ on the session's model with ``cache``'s scales (saved in the session's cache folder) for
    ``settings.target``; refused when the scales do not cover the tensors that placement needs. With
    ``settings.target_metric``, then :func:`to_target` on ``eval_data``."""
    model = session.model
    excluded = _excluded(model, settings)
    evaluation = None
    if settings.target_metric is not None:
        if isinstance(settings.target_metric, str) and settings.target_metric not in TARGET_METRICS:
            raise CalibrationError(f"unknown target metric '{settings.target_metric}'",
                                   hint=f"use one of {list(TARGET_METRICS)}")
        if eval_data is None:
            raise DataError("the target mode needs evaluation data", hint="give data to measure the metric on")
        evaluation = eval_data if isinstance(eval_data, Dataset) else load_data(eval_data, model)
        if settings.target_metric == "accuracy" and "label" not in evaluation:
            raise DataError("--target-metric accuracy needs a 'label' array in the evaluation data",
                            hint="add labels to the .npz, or use --target-metric rel_l2")
    missing = [t for t in _calibrated_tensors(model, excluded, settings) if t not in cache.tensors]
    if missing:
        raise CalibrationError(f"the scales do not cover {missing[:3]} of the current model",
                               hint="the model or the Q/DQ placement changed since calibration: calibrate again"
                                    + (" (with the target mode on: its plans need scales for every input of the "
                                       "quantized nodes)" if settings.target_metric else ""))
    digest = cache.save(session.cache_dir)
    targets = quantization_targets(model, exclude=excluded, target=settings.target, float_heads=settings.float_heads)
    session.apply(Quantize(dtype=settings.dtype, exclude=tuple(excluded), method=cache.method,
                           per_channel=settings.per_channel, scales=digest, target=settings.target,
                           float_heads=settings.float_heads, methods=dict(settings.methods)))
    heads = tuple(h for h in output_heads(model) if h not in targets) if settings.float_heads else ()
    quantized = tuple(n.name for n in model.graph.node if n.name in targets)
    kept: tuple[str, ...] = ()
    target = None
    if evaluation is not None and settings.target_metric is not None:
        target = to_target(session, evaluation, settings.target_metric, settings.tolerance, progress=progress,
                           cancel=cancel, cluster=cluster)
        kept = target.kept
    return QuantizeResult(None, settings.dtype, settings.target, tuple(n for n in quantized if n not in kept),
                          (*excluded, *kept), heads, 0, None, target)


def _foldable_batchnorms(model: onnx.ModelProto) -> int:
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    return sum(1 for n in model.graph.node if n.op_type == "BatchNormalization"
               and producers.get(n.input[0]) in ("Conv", "ConvTranspose", "Gemm"))


def quantize(session: Session, data: Any, settings: QuantizeSettings = QuantizeSettings(), *, label: str = "",
             eval_data: Any = None, output: str | Path | None = None, recipe_out: str | Path | None = None,
             progress: Progress | None = None, cancel: Cancel = None, cluster: Cluster | None = None
             ) -> QuantizeResult:
    """Fold BatchNorm (``settings.fold_batchnorm``, as TensorRT does), :func:`calibrate` and :func:`apply_quantize`
    (with ``settings.target_metric``: to the target on ``eval_data``, else on the calibration data). The result is
    in the session (one recipe); ``output`` / ``recipe_out``: also written there."""
    fused = 0
    if settings.fold_batchnorm and _foldable_batchnorms(session.model):
        before = len(session.model.graph.node)
        session.apply(FuseBatchNorm())
        fused = before - len(session.model.graph.node)
    model = session.model
    ds = data if isinstance(data, Dataset) else load_data(data, model)
    evaluation = None if eval_data is None else eval_data if isinstance(eval_data, Dataset) \
        else load_data(eval_data, model)
    if settings.target_metric == "accuracy" and "label" not in (evaluation if evaluation is not None else ds):
        raise DataError("--target-metric accuracy needs a 'label' array in the evaluation data",
                        hint="add labels to the .npz, or use --target-metric rel_l2")
    calibration = calibrate(session, data, settings, label=label, eval_data=evaluation, progress=progress,
                            cancel=cancel, cluster=cluster)
    placed = apply_quantize(session, calibration.cache, settings,
                            eval_data=evaluation if evaluation is not None else ds, progress=progress, cancel=cancel,
                            cluster=cluster)
    if placed.target_metric is not None:
        calibration = dataclasses.replace(calibration, method=placed.target_metric.method)
    out = str(session.export(output)) if output is not None else None
    recipe = str(session.save(recipe_out)) if recipe_out is not None else None
    return dataclasses.replace(placed, output=out, fused_batchnorm=fused, calibration=calibration, recipe=recipe,
                               cluster=ClusterUse.of(cluster))


def to_target(session: Session, data: Dataset, metric: str | Metric, tolerance: float | None = None, *,
              progress: Progress | None = None, cancel: Cancel = None, cluster: Cluster | None = None
              ) -> TargetResult:
    """Accuracy to a target (issue 13, part 3) for the session's last edit (a Quantize): the calibration method
    whose whole-model metric is best (one evaluation per method, from the same statistics), then per tensor,
    where the metric is still off, the method that serves it better, then the debugger's sensitivity ranking and
    plan search (:func:`workbench.debug.debug_precision`) for the fewest layers kept in high precision until the
    metric is within ``tolerance`` of FP32. ``metric``: ``rel_l2`` | ``accuracy`` or any per-sample
    :class:`~workbench.compare.metrics.Metric` (a task metric); ``tolerance``: for a higher-is-better metric the
    largest drop below FP32's value (default 0.005), for an error the largest value (default 0.05). For the
    TensorRT placement a kept layer tries FP16 first (a Cast region, half FP32's cost) and stays FP32 only where
    FP16 misses the target (:func:`workbench.debug.mixed_plan`); ONNX Runtime's CPU placement keeps FP32. The
    session's Quantize edit is replaced by the result (one recipe)."""
    from ..backends.ort import OrtEngine
    from ..compare import accuracy, output_error
    from ..debug import debug_precision, estimated_cost, evaluate, low_precision_layers, mixed_models, recipe_models
    from ..replay import replay

    if isinstance(metric, str):
        if metric == "accuracy" and "label" not in data:
            raise DataError("--target-metric accuracy needs a 'label' array in the evaluation data",
                            hint="add labels to the .npz, or use --target-metric rel_l2")
        metric = accuracy() if metric == "accuracy" else output_error()
    higher = metric.higher_is_better
    tol = tolerance if tolerance is not None else TARGET_TOLERANCE["higher" if higher else "lower"]
    last = session.recipe.edits[-1] if session.recipe.edits else None
    if not isinstance(last, Quantize):
        raise EditError("the target mode needs the session's last edit to be a quantize edit",
                        hint="quantize first (workbench quantize, or the Calibrate tab's Quantize)")
    reference, _ = recipe_models(session.original, session.recipe, session.cache_dir)
    ref_outs = [OrtEngine(reference).run(b.feeds) for b in data.batches(64)]
    better = max if higher else min

    def score(edit: Quantize) -> float:  # the whole model with ``edit`` for the last edit (nothing kept)
        model = replay(session.original, (*session.recipe.edits[:-1], edit), cache_dir=session.cache_dir)
        return evaluate(model, data, metric, ref_outs, batch_size=64, max_samples=None, reference=reference,
                        cluster=cluster)

    scores: dict[str, float] = {}
    for i, method in enumerate(METHODS):
        report(progress, i, len(METHODS), f"target: method {method}")
        scores[method] = score(dataclasses.replace(last, method=method))
    best = better(scores, key=lambda m: scores[m])
    chosen = dataclasses.replace(last, method=best)
    fp32 = 0.0
    if higher:
        fp32 = evaluate(reference, data, metric, ref_outs, batch_size=64, max_samples=None, reference=reference,
                        cluster=cluster)

    def met(value: float) -> bool:
        return fp32 - value <= tol + 1e-12 if higher else value <= tol + 1e-12

    tensor_methods: dict[str, str] = {}
    value = scores[best]
    if not met(value):  # per tensor, where the chosen method clips most, the method that serves it better
        chosen, tensor_methods, value = _tensor_methods(session, chosen, value, score, met, higher_is_better=higher,
                                                        progress=progress, cancel=cancel)
    recipe = session.recipe.replace(edits=(*session.recipe.edits[:-1], chosen))
    reference, mixed = mixed_models(session.original, recipe, session.cache_dir)
    candidate = mixed((), ())
    all_int8 = estimated_cost(candidate, reference)
    rounded = {k: round(v, 6) for k, v in scores.items()}
    if met(value):  # the methods alone meet it: no layer to keep, no sensitivity pass
        session.set_recipe(recipe)
        layers = len(low_precision_layers(reference, candidate))
        return TargetResult(metric.name, tol, rounded, best, tensor_methods, fp32 if higher else 0.0, value, value,
                            True, (), "the calibration methods alone meet the tolerance: nothing kept in high "
                            "precision", all_int8, all_int8, 0, data.samples, (), {"int8": layers, "fp16": 0, "fp32": 0})
    report(progress, 0, 0, "target: sensitivity and plan")
    result = debug_precision(reference, candidate, data, factory=lambda keep: mixed(keep, ()),
                             mixed=mixed if chosen.target == "tensorrt" else None, metric=metric, tolerance=tol,
                             recipe=recipe, batch_size=64, progress=progress, cancel=cancel, cluster=cluster)
    session.set_recipe(result.recipe if result.recipe is not None else recipe)
    plan = result.plan
    layers = len(result.sensitivity.ranking)
    counts = {"int8": layers - len(plan.keep), "fp16": len(plan.fp16), "fp32": len(plan.keep) - len(plan.fp16)}
    return TargetResult(metric.name, tol, rounded, best, tensor_methods, result.metric_reference,
                        result.metric_before, plan.metric, plan.met, tuple(plan.keep), plan.message, plan.cost,
                        all_int8, len(plan.tried.rows), result.sensitivity.samples, tuple(plan.fp16), counts)


TENSOR_SEARCH = 8  # tensors tried per-tensor methods in the target mode (those whose chosen threshold clips most)


def _tensor_methods(session: Session, edit: Quantize, value: float, score: Callable[[Quantize], float],
                    met: Callable[[float], bool], *, higher_is_better: bool, progress: Progress | None,
                    cancel: Cancel) -> tuple[Quantize, dict[str, str], float]:
    """Greedy per-tensor calibration methods over ``edit.method``: for the :data:`TENSOR_SEARCH` tensors whose
    chosen threshold clips the largest share of their calibration values, each other method whose threshold
    differs, kept where the whole-model metric improves; stops once ``met``. (edit, {tensor: method}, metric)."""
    cache = ScaleCache.load(Path(session.cache_dir) / "scales" / f"{edit.scales}.json").with_method(edit.method)
    clip = {t: s.clipped.get(edit.method, 0.0) for t, s in cache.tensors.items() if s.override is None}
    order = sorted((t for t in clip if clip[t] > 0), key=lambda t: -clip[t])[:TENSOR_SEARCH]
    methods = dict(edit.methods)
    for i, t in enumerate(order):
        if met(value):
            break
        if cancelled(cancel):
            raise CalibrationError("the target mode was cancelled", hint="run it again to finish")
        report(progress, i, len(order), f"target: methods for {t}")
        th = cache.tensors[t].thresholds
        current = th.get(methods.get(t, edit.method), 0.0)
        tried = {m: score(dataclasses.replace(edit, methods={**methods, t: m})) for m in METHODS
                 if m in th and abs(th[m] - current) > 1e-6 * max(abs(current), 1e-12)}
        if tried:
            m = (max if higher_is_better else min)(tried, key=lambda k: tried[k])
            if (tried[m] > value) if higher_is_better else (tried[m] < value):
                methods[t], value = m, tried[m]
    chosen = {t: m for t, m in methods.items() if m != edit.method}
    return dataclasses.replace(edit, methods=chosen), {t: chosen[t] for t in chosen if t not in edit.methods}, value


# --- convert ---------------------------------------------------------------------------------------------


def convert(session: Session, precision: str = "fp16", *, data: Any = None, shapes: Sequence[str] | None = None,
            range_limit: float = FP16_MAX, keep: Sequence[str] = (), nodes: Sequence[str] = (), guard: bool = True,
            low_io: bool = False, output: str | Path | None = None, recipe_out: str | Path | None = None
            ) -> ConvertResult:
    """Run the session's model in fp16/bf16 through Cast nodes. For fp16 with guards on, every float tensor's
    magnitude is measured on a reference run (``data``, else seeded random data with ``shapes``, said in the
    warnings): a node touching a tensor beyond ``range_limit`` stays fp32, by name in the recipe (so it replays
    without the data), as ModelOpt's AutoCast does."""
    model = session.model
    ranges = None
    described = None
    notes: list[str] = []
    plan = plan_conversion(model, precision, keep=tuple(keep), nodes=tuple(nodes), guard=guard)
    converts = any(p["precision"] == precision for p in plan.values())
    if precision == "fp16" and guard:
        if not range_limit > 0:
            raise DataError(f"--range-limit must be positive, got {range_limit}", hint="e.g. --range-limit 65504")
        if data is not None and shapes:
            raise DataError("give either --inputs DATA or --shapes for the reference run, not both",
                            hint="the data's own shapes are the ones measured")
        if converts:  # no node to convert (a tree ensemble): no reference run, no copy of the model for it
            if data is not None:
                ds = data if isinstance(data, Dataset) else load_data(data, model)
            else:
                ds = random_inputs(model, samples=RANDOM_SAMPLES, shapes=shapes, warn=False)
                warnings.warn(RANDOM_WARNING, UserWarning, stacklevel=2)
                notes.append(RANDOM_WARNING)
            ranges = activation_ranges(model, ds)
            described = ds.describe()
    elif data is not None:
        raise DataError(f"--inputs feeds the fp16 reference run, which {'bf16' if precision == 'bf16' else '--no-guard'}"
                        " does not make", hint="drop --inputs")
    by_range = range_guards(model, ranges, limit=range_limit) if ranges is not None else {}
    # measured out-of-range nodes go into the recipe by name (a node named exactly in ``nodes`` is converted anyway)
    extra = tuple(n for n in by_range if n not in set(nodes))
    edit = ConvertPrecision(precision=precision, nodes=tuple(nodes), keep=(*keep, *extra), keep_io_types=not low_io,
                            guard=guard)
    for n in extra:
        if plan[n]["precision"] != "fp32":
            plan[n] = {"precision": "fp32", "reason": f"range: {by_range[n]}"}
    notes.extend(selection_notes(model, {n for n, p in plan.items() if p["precision"] == precision}))
    session.apply(edit)
    out = str(session.export(output)) if output is not None else None
    recipe = str(session.save(recipe_out)) if recipe_out is not None else None
    return ConvertResult(
        output=out, precision=precision,
        converted=tuple(n for n, p in plan.items() if p["precision"] == precision),
        kept=tuple(n for n, p in plan.items() if p["reason"] == "kept by the user"
                   or p["reason"].startswith(("guard", "range"))),
        kept_reasons={n: p["reason"] for n, p in plan.items() if p["precision"] == "fp32"},
        guards=tuple(precision_guards(session.original)), range_kept=extra,
        range_limit=range_limit if ranges is not None else None, warnings=tuple(notes), data=described,
        recipe=recipe)


# --- per-node precision choices (the Precision tab) -------------------------------------------------------


def precision_edits(session: Session, choices: Mapping[str, str], *, target: str = "tensorrt") -> tuple[Edit, ...]:
    """The recipe edits that realise ``choices`` ({node: precision}; only changes from the current precision
    count): int8/fp8 with the latest scales calibrated for the current model, fp16/bf16 as Cast nodes."""
    current = node_precisions(session.model)
    by: dict[str, list[str]] = {}
    for name, value in choices.items():
        now = current.get(name, "fp32")
        if value == now:
            continue
        if value == "fp32":
            raise EditError(f"node '{name}' already runs in {now}; going back to fp32 is an undo",
                            hint="use Undo (Edit tab) to remove the precision edit, then apply again")
        by.setdefault(value, []).append(name)
    edits: list[Edit] = []
    if by.get("int8") or by.get("fp8"):
        found = latest_scales(session.cache_dir, sha256_bytes(model_bytes(session.model)))
        if found is None:
            raise CalibrationError("int8/fp8 needs calibrated scales for the current model",
                                   hint="calibrate in the Calibrate tab first, then apply")
        for dtype in ("int8", "fp8"):
            if by.get(dtype):
                edits.append(Quantize(dtype=dtype, nodes=tuple(by[dtype]), method=found[1].method, scales=found[0],
                                      target=target))
    for precision in ("fp16", "bf16"):
        if by.get(precision):
            edits.append(ConvertPrecision(precision=precision, nodes=tuple(by[precision])))
    if not edits:
        raise EditError("no precision changes to apply", hint="pick a precision per row or by op type first")
    return tuple(edits)


def apply_precisions(session: Session, choices: Mapping[str, str], *, target: str = "tensorrt") -> PrecisionResult:
    """Apply :func:`precision_edits` to the session in one step."""
    edits = precision_edits(session, choices, target=target)
    session.apply_all(edits)
    nodes: dict[str, tuple[str, ...]] = {}
    for e in edits:
        key = e.dtype if isinstance(e, Quantize) else e.precision if isinstance(e, ConvertPrecision) else e.kind
        nodes[key] = tuple(getattr(e, "nodes", ()))
    return PrecisionResult(tuple(e.kind for e in edits), nodes)
