"""The Calibrate tab: choose data and method, calibrate in a background thread (progress, Cancel), see each
tensor's histogram with every method's threshold, override a scale, quantize with the result (Q/DQ placed for
TensorRT or for ONNX Runtime's CPU provider: ``target.value``, which also decides which tensors are calibrated).

Visible state lives in widget values so headless tests can assert it: ``data.options``/``data.value``,
``method.value``, ``target.value``, ``progress.value``, ``phase.value``, ``warnings.value``, ``tensor.options``,
``thresholds.value`` (HTML table), ``figure`` (a FigureWidget: histogram + ``threshold:<method>`` traces; None
until there is a calibration to draw, ``chart_placeholder`` says so meanwhile: no empty axes),
``digest.value`` (the scale cache in use), ``tensor_method.value`` (the selected tensor's own method, "" for the
tab's method), ``methods`` ({tensor: method}, passed to the Quantize edit) and ``methods_table.value``; ``target_metric.value`` ("" off, ``rel_l2``, ``accuracy``) and ``tolerance.value``: Quantize
then keeps the fewest layers in high precision until the metric on the calibration data is within the tolerance
(``target_result.value``, ``result``). Calibration and quantize-to-target run as ``job`` (a :class:`Job`) on a
fork of the session, which the kernel thread adopts when the job is done; ``wait()`` joins it. Every action is one
call of :mod:`workbench.workflows.quantize`.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import ipywidgets as W

from ..errors import CalibrationError
from ..plots.calibration import histogram_figure
from ..session import Session
from ..workflows import quantize as wq
from ..workflows.quantize import (
    DEFAULT_METHOD,
    METHODS,
    TARGET_TOLERANCE,
    Diagnostics,
    QuantizeResult,
    QuantizeSettings,
    ScaleCache,
)
from .common import Job, Status, refill

__all__ = ["CalibrateTab"]

RANDOM = "(random data: NOT representative)"


class CalibrateTab:
    """Calibrate the session's current model in ONNX Runtime and keep the scale cache in its cache folder."""

    title = "Calibrate"

    def __init__(self, session: Any, status: Status) -> None:
        self.session = session
        self.status = status
        self.cache: ScaleCache | None = None

        self.data = W.Combobox(options=[], placeholder="a folder of images/.wav, or an .npz (one array per input)",
                               description="data", ensure_option=False, layout=W.Layout(width="520px"))
        self.method = W.Dropdown(options=list(METHODS), value=DEFAULT_METHOD, description="method")
        self.percentile = W.BoundedFloatText(value=99.99, min=50.0, max=100.0, step=0.01, description="percentile")
        self.dtype = W.Dropdown(options=["int8", "fp8"], value="int8", description="dtype")
        self.target = W.Dropdown(options=[("TensorRT", "tensorrt"), ("ONNX Runtime CPU", "onnxruntime")],
                                 value="tensorrt", description="Q/DQ placement for",
                                 style={"description_width": "initial"})
        self.run_button = W.Button(description="Calibrate", icon="play", button_style="primary")
        self.cancel_button = W.Button(description="Cancel", icon="stop", disabled=True)
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, description="progress")
        self.phase = W.Label(value="")
        self.warnings = W.HTML(value="")
        self.diagnostics = W.HTML(value="")  # calibration_diagnostics: samples, clipping, memory
        self.digest = W.Label(value="")
        self.tensor = W.Dropdown(options=[], description="tensor", layout=W.Layout(width="520px"))
        self.thresholds = W.HTML(value="")
        self.methods: dict[str, str] = {}  # per-tensor method choices over ``method`` (Quantize.methods)
        self.tensor_method = W.Dropdown(options=[("as above", "")] + [(m, m) for m in METHODS], value="",
                                        description="method for this tensor", style={"description_width": "initial"})
        self.methods_table = W.HTML(value="")
        self._syncing = False
        self.figure: Any = None  # a plotly FigureWidget, created by the first calibration shown
        self.chart_placeholder = W.HTML("<i class='wb-calib-placeholder'>the histogram of the selected tensor, with "
                                        "each method's threshold, appears here after Calibrate</i>")
        self._chart_box = W.Box([self.chart_placeholder], layout=W.Layout(width="100%"))
        self._result_callbacks: list[Any] = []
        self.override = W.FloatText(value=0.0, description="amax")
        self.override_button = W.Button(description="Override scale", icon="pencil")
        self.clear_button = W.Button(description="Clear override")
        self.quantize_button = W.Button(description="Quantize with these scales", icon="compress",
                                        button_style="success", disabled=True, layout=W.Layout(width="auto"))
        # accuracy to a target (issue 13): after Quantize, keep the fewest layers in high precision until the metric
        # on the calibration data is within the tolerance of FP32 (the same workflow as workbench quantize
        # --target-metric)
        self.target_metric = W.Dropdown(options=[("off", ""), ("output error (rel_l2)", "rel_l2"),
                                                 ("accuracy (needs a 'label' array)", "accuracy")], value="",
                                        description="to a target", style={"description_width": "initial"})
        self.tolerance = W.BoundedFloatText(value=TARGET_TOLERANCE["lower"], min=0.0, max=1e6, step=0.005,
                                            description="tolerance")
        self.target_result = W.HTML(value="")
        self.result: QuantizeResult | None = None  # the last Quantize's result

        self.job = Job(status, run_button=self.run_button, cancel_button=self.cancel_button, progress=self.progress,
                       phase=self.phase)
        self.run_button.on_click(self._on_run)
        self.tensor.observe(self._show_tensor, names="value")
        self.target.observe(self._show_tensor, names="value")
        self.method.observe(self._on_method, names="value")
        self.target_metric.observe(self._on_target_metric, names="value")
        self.tensor_method.observe(self._on_tensor_method, names="value")
        self.override_button.on_click(self._on_override)
        self.clear_button.on_click(self._on_clear)
        self.quantize_button.on_click(self._on_quantize)
        session.on_change(lambda _s: self._refresh_data())

        self.widget = W.VBox([
            W.HTML("<p>Calibration runs the FP32 model in ONNX Runtime on representative data (100-500 samples) "
                   "and picks each quantized tensor's range (amax); scale = amax / 127 for INT8 placed for TensorRT. "
                   "Placed for ONNX Runtime CPU, activations are uint8 over [min, max] clipped to amax, and Q/DQ "
                   "surround each conv/gemm so ONNX Runtime runs integer kernels (faster than FP32 on a CPU).</p>"),
            self.data, W.HBox([self.method, self.percentile, self.dtype, self.target]),
            W.HBox([self.run_button, self.cancel_button, self.progress, self.phase]),
            self.warnings, self.diagnostics, self.digest, W.HBox([self.tensor, self.tensor_method]), self.thresholds,
            self.methods_table, self._chart_box,
            W.HBox([self.override, self.override_button, self.clear_button]),
            W.HBox([self.quantize_button, self.target_metric, self.tolerance]), self.target_result,
        ])
        self._refresh_data()

    # --- data choices --------------------------------------------------------------------------------

    def _refresh_data(self) -> None:
        folder = self.session.source_path.parent if self.session.source_path else None
        found = [str(p) for p in wq.find_inputs(self.session.model, folder)] if folder else []
        self.data.options = tuple(found + [RANDOM])
        if not self.data.value:
            self.data.value = found[0] if found else ""

    # --- calibration ---------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while a calibration or a quantize-to-target runs."""
        return self.job.running

    def use_data(self, data: Any, label: str = "custom data") -> None:
        """Calibrate from Python data (a :func:`~workbench.data.load_data` Dataset, a dict of arrays, ...)."""
        self._custom = (data, label)
        self.data.options = tuple(dict.fromkeys([label, *self.data.options]))
        self.data.value = label

    def _source(self) -> Any:
        text = self.data.value.strip()
        custom = getattr(self, "_custom", None)
        if custom is not None and text == custom[1]:
            return custom
        if text == RANDOM:
            return wq.random_inputs(self.session.model, samples=128), "random"
        if not text:
            raise CalibrationError("no calibration data chosen",
                                   hint="pick an .npz with one array per model input, or a folder of images or .wav "
                                        "files (100-500 samples)")
        return Path(text), text

    def _on_run(self, _button: Any = None) -> None:
        if self.running:
            return
        source = None
        with self.status.guard("reading the calibration data choice"):
            source = self._source()
        if source is None:
            return
        self.warnings.value = ""
        # every tensor of the placement (output heads too), so the Precision tab's choices find their scales; with
        # the target mode on, also those its plans need
        settings = QuantizeSettings(method=self.method.value, percentile=float(self.percentile.value),
                                    dtype=self.dtype.value, target=self.target.value, float_heads=False,
                                    target_metric=self.target_metric.value or None)
        fork = self.session.fork()  # the worker records the calibration in a private copy; _calibrated adopts it
        self.job.start(f"calibrating ({settings.method})", lambda job: self._run(job, fork, source, settings),
                       on_done=lambda result: self._calibrated(fork, result))

    def _on_progress(self, done: float, total: float, phase: str = "") -> None:
        self.job.report(done, total, f"{int(done)} samples" + (f" of {int(total)}" if total else ""))

    def _run(self, job: Job, fork: Session, source: tuple[Any, str], settings: QuantizeSettings
             ) -> wq.CalibrationResult:
        """The calibration itself, on ``fork`` (off the kernel thread: it changes no widget and not the session)."""
        data, label = source
        return wq.calibrate(fork, data, settings, label=label,
                            progress=lambda d, t, p="": self._on_progress(d, t, p), cancel=job.cancel_event)

    def _calibrated(self, fork: Session, result: wq.CalibrationResult) -> str:
        """Record a calibration in the session and show it (on the kernel thread); the final phase label."""
        if self.session.model is not fork.model:
            self.status.ok("the model changed during the calibration, so its scales are not used: run it again")
            return "outdated"
        self.session.set_calibration(fork.recipe.calibration)
        self._show_cache(result.cache)
        if result.label == "random":
            self.warnings.value = ('<p style="color:#b00020"><b>⚠ calibrated on RANDOM data: these scales do '
                                   "not fit real inputs; use 100-500 representative samples</b></p>"
                                   + self.warnings.value)
        self.status.ok(f"calibrated {len(result.cache.tensors)} tensors on {result.samples} samples "
                       f"({result.method}) in {result.seconds:.2f} s")
        return f"done: {result.samples} samples"

    def wait(self, timeout: float | None = 300.0) -> None:
        """Block until a running calibration ends (headless tests, scripts)."""
        self.job.wait(timeout)

    # --- results -------------------------------------------------------------------------------------

    def _show_cache(self, cache: ScaleCache) -> None:
        self.cache = cache
        self.digest.value = f"scale cache {cache.digest()[:16]}… ({cache.method}, {cache.samples} samples)"
        self.warnings.value = "".join(f'<p style="color:#b26a00">⚠ {html.escape(w)}</p>' for w in cache.warnings)
        self.diagnostics.value = _diagnostics_html(wq.calibration_diagnostics(cache))
        names = list(cache.tensors)
        self.methods = {k: m for k, m in self.methods.items() if k in cache.tensors and m in cache.tensors[k].thresholds}
        self._show_methods()
        self.tensor.options = names
        self.tensor.value = names[0] if names else None
        self._show_tensor()
        self.quantize_button.disabled = False
        for callback in list(self._result_callbacks):
            callback()

    def on_result(self, callback: Any) -> None:
        """Call ``callback()`` after each calibration result is shown (the dashboard's joined view and the graph's
        calibration-range overlay follow it)."""
        self._result_callbacks.append(callback)

    def _show_tensor(self, _change: Any = None) -> None:
        if self.cache is None or self.tensor.value not in (self.cache.tensors if self.cache else {}):
            return
        stats = self.cache.tensors[self.tensor.value]
        used = self.methods.get(self.tensor.value, self.cache.method)
        self._syncing = True
        try:
            self.tensor_method.value = self.methods.get(self.tensor.value, "")
        finally:
            self._syncing = False
        fig = histogram_figure(self.tensor.value, stats, chosen=used)
        first = self.figure is None
        self.figure = refill(self.figure, fig)
        if first:
            self._chart_box.children = (self.figure,)
        self.override.value = stats.thresholds.get(used, stats.amax) if stats.override is None else stats.override
        uint8 = self.target.value == "onnxruntime"

        def scale(v: float) -> str:
            p = wq.quant_params(stats, v, target=self.target.value, dtype=self.dtype.value)
            return f"{p.scale:.4g}" + (f" (zero point {p.zero_point})" if p.zero_point is not None else "")

        rows = "".join(
            f"<tr><td>{html.escape(m)}</td><td>{v:.5g}</td><td>{scale(v)}</td>"
            f"<td>{'◀ used' if m == used and stats.override is None else ''}</td></tr>"
            for m, v in stats.thresholds.items())
        if stats.override is not None:
            rows += f"<tr><td>override</td><td>{stats.override:.5g}</td><td>{scale(stats.override)}</td>" \
                    "<td>◀ used</td></tr>"
        head = "uint8 scale" if uint8 else f"{self.dtype.value} scale"
        self.thresholds.value = ("<table class='wb-thresholds'><tr><th>method</th><th>amax</th>"
                                 f"<th>{head}</th><th></th></tr>{rows}</table>")

    def _on_target_metric(self, change: Any) -> None:
        """The tolerance box follows the metric's default (accuracy: a 0.5-point drop; rel_l2: 0.05), as the CLI's."""
        if change["new"]:
            self.tolerance.value = TARGET_TOLERANCE["higher" if change["new"] == "accuracy" else "lower"]

    def _on_method(self, _change: Any = None) -> None:
        """Switching the method on a finished calibration re-reads the thresholds (no new run)."""
        if self.cache is None:
            return
        with self.status.guard(f"using the {self.method.value} thresholds"):
            cache = self.cache.with_method(self.method.value)
            cache.save(self.session.cache_dir)
            self._show_cache(cache)

    def _on_override(self, _button: Any = None) -> None:
        with self.status.guard("overriding a scale"):
            self._set_override(float(self.override.value))

    def _on_clear(self, _button: Any = None) -> None:
        with self.status.guard("clearing the override"):
            self._set_override(None)

    def _set_override(self, value: float | None) -> None:
        if self.cache is None or self.tensor.value is None:
            raise CalibrationError("nothing calibrated yet", hint="click Calibrate first")
        if value is not None and not value > 0:
            raise CalibrationError(f"amax {value} for tensor '{self.tensor.value}' must be positive",
                                   hint="type the largest |value| the tensor should represent")
        self.cache.tensors[self.tensor.value].override = value
        self.cache.save(self.session.cache_dir)
        tensor = self.tensor.value
        self._show_cache(self.cache)
        self.tensor.value = tensor

    def _quantize_settings(self) -> QuantizeSettings:
        tolerance = float(self.tolerance.value) if self.target_metric.value else None
        return QuantizeSettings(method=self.cache.method if self.cache else DEFAULT_METHOD, dtype=self.dtype.value,
                                target=self.target.value, methods=dict(self.methods),
                                target_metric=self.target_metric.value or None, tolerance=tolerance)

    def _on_quantize(self, _button: Any = None) -> None:
        if self.running:
            return
        with self.status.guard("quantizing"):
            if self.cache is None:
                raise CalibrationError("nothing calibrated yet", hint="click Calibrate first")
            settings = self._quantize_settings()
            if settings.target_metric is None:
                self._show_result(wq.apply_quantize(self.session, self.cache, settings))
                return
            data, _label = self._source()  # the target's metric is measured on the calibration data
            cache = self.cache
            fork = self.session.fork()  # the worker quantizes a private copy; _adopt_result takes its recipe
            self.job.start(f"quantizing to a target ({settings.target_metric} within {settings.tolerance})",
                           lambda job: wq.apply_quantize(fork, cache, settings, eval_data=data,
                                                         progress=job.report, cancel=job.cancel_event),
                           on_done=lambda result: self._adopt_result(fork, result))

    def _adopt_result(self, fork: Session, result: QuantizeResult) -> str:
        """On the kernel thread: the quantized fork's recipe becomes the session's (one undoable step), unless the
        session changed meanwhile."""
        if self.session.recipe != fork.history[0]:
            self.status.ok("the session changed while quantizing to the target, so the result is not applied: "
                           "run it again")
            return "outdated"
        self.session.adopt(fork)
        return self._show_result(result)

    def _show_result(self, result: QuantizeResult) -> str:
        """Show a Quantize's result (on the kernel thread); the final phase label."""
        self.result = result
        t = result.target_metric
        if t is None:
            self.target_result.value = ""
            self.status.ok(f"quantized {len(result.quantized)} nodes ({result.dtype}, placed for {result.target})")
            return "done"
        kept = ", ".join(html.escape(k) + (" (FP16)" if k in t.kept_fp16 else "") for k in t.kept) or "none"
        self.target_result.value = (
            f"<p class='wb-target-result'><b>{html.escape(t.metric)}</b> within {t.tolerance:g} of FP32 "
            f"({t.fp32:.4g}): method {html.escape(t.method)}, {t.before:.4g} → {t.after:.4g} "
            f"({'met' if t.met else 'NOT met'}); kept in high precision: {kept}; estimated cost "
            f"{t.estimated_cost if t.estimated_cost is not None else '?'} (all INT8 {t.cost_all_int8}, FP32 1.0)</p>")
        self.status.ok(f"quantized to a target: {t.metric} {t.after:.4g} ({'met' if t.met else 'NOT met'}), "
                       f"{len(t.kept)} layer(s) kept in high precision")
        return "done: target met" if t.met else "done: target NOT met"

    # --- per-tensor methods --------------------------------------------------------------------------

    def set_tensor_method(self, tensor: str, method: str | None) -> None:
        """Use ``method``'s threshold for ``tensor`` (None or "": back to the tab's method)."""
        if self.cache is None:
            raise CalibrationError("nothing calibrated yet", hint="click Calibrate first")
        if tensor not in self.cache.tensors:
            raise CalibrationError(f"tensor '{tensor}' was not calibrated",
                                   hint="pick one from the tensor list (the calibrated ones)")
        if method:
            if method not in self.cache.tensors[tensor].thresholds:
                raise CalibrationError(f"the calibration has no '{method}' threshold for tensor '{tensor}'",
                                       hint=f"choose one of {sorted(self.cache.tensors[tensor].thresholds)}")
            self.methods[tensor] = method
        else:
            self.methods.pop(tensor, None)
        self._show_methods()
        if self.tensor.value == tensor:
            self._show_tensor()

    def _on_tensor_method(self, _change: Any = None) -> None:
        if self._syncing or self.cache is None or self.tensor.value is None:
            return
        with self.status.guard(f"choosing the method for tensor '{self.tensor.value}'"):
            self.set_tensor_method(self.tensor.value, self.tensor_method.value or None)

    def _show_methods(self) -> None:
        if not self.methods or self.cache is None:
            self.methods_table.value = ""
            return
        rows = "".join(
            f"<tr><td><code>{html.escape(t)}</code></td><td>{html.escape(m)}</td>"
            f"<td>{self.cache.tensors[t].thresholds[m]:.5g}</td></tr>" for t, m in sorted(self.methods.items()))
        self.methods_table.value = (f"<p>per-tensor methods (others use {html.escape(self.cache.method)}):</p>"
                                    "<table class='wb-tensor-methods'><tr><th>tensor</th><th>method</th><th>amax</th>"
                                    f"</tr>{rows}</table>")


def _diagnostics_html(d: Diagnostics) -> str:
    """The diagnostics area: samples, memory estimate, the tensors whose chosen threshold clips most."""
    rows = "".join(f"<tr><td>{html.escape(r.tensor)}</td><td>{html.escape(r.method)}</td>"
                   f"<td>{r.amax:.4g}</td><td>{r.max:.4g}</td><td>{r.clipped * 100:.3g} %</td></tr>"
                   for r in d.clipped[:5] if r.clipped > 0)
    table = ("<table><tr><th>tensor</th><th>method</th><th>amax</th><th>|max|</th><th>clipped</th></tr>"
             f"{rows}</table>") if rows else ""
    return (f"<p><b>diagnostics</b>: {d.samples} samples, {d.clipped_tensors} tensors clip some calibration "
            f"values, calibration memory ~{d.memory_mb:.3g} MB</p>{table}")
