"""The Debug tab: compare a candidate with the FP32 reference layer by layer, rank the layers that break
accuracy, and apply the fewest-layers-in-high-precision plan to the session's recipe in one click.

The controls are read on the kernel thread when a run starts; the run computes in a background thread (progress
bar, Cancel) and is shown on the kernel thread (``Job``'s ``on_done``); with the dashboard's Cluster box connected
its batches run on that cluster. Visible state lives in widget values (``summary.value``, ``plan.value``, the
figures' trace data) so headless tests can read it.

``errors_fig``/``graph_fig`` are created by the first Compare and ``sensitivity_fig``/``pareto_fig`` by the first
Find culprits (None until then, no empty axes), and later runs refill the same widgets.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import ipywidgets as W
import plotly.graph_objects as go

from ..errors import WorkbenchError
from ..plots.compare import error_growth, node_error_colours, pareto, sensitivity_bars
from ..workflows import debug as workflow
from .common import Job, Status, refill
from .graph_widget import GraphWidget

if TYPE_CHECKING:
    import onnx

    from ..workflows.cluster import Cluster
    from ..workflows.debug import CompareReport, CompareResult, DebugResult, DebugRun
    from .cluster_box import ClusterBox

__all__ = ["DebugTab"]

T = TypeVar("T")


def _f(v: Any, fmt: str = ".4g") -> str:
    return "-" if v is None else format(v, fmt)


class DebugTab:
    """Pick reference, candidate, data, metric and tolerance; Compare; Find culprits; Apply plan.

    With ``cluster_box`` (the dashboard's Cluster box, set by the dashboard) connected, both runs fan their batches
    out on that cluster (the same result as locally)."""

    title = "Debug"

    def __init__(self, session: Any, status: Status) -> None:
        self.session = session
        self.status = status
        self.report: CompareReport | None = None
        self.result: DebugResult | None = None
        self.cluster_box: ClusterBox | None = None
        self._select_callbacks: list[Any] = []  # on_select: nodes picked in the error graph (the dashboard's)
        self._result_callbacks: list[Any] = []  # on_result: after a comparison or a ranking is shown
        style = {"description_width": "110px"}
        self.reference = W.Dropdown(options=[("session model, precision edits left out (FP32)", "fp32"),
                                             ("original file", "original")], value="fp32",
                                    description="reference", style=style, layout=W.Layout(width="480px"))
        self.candidate = W.Dropdown(options=[("session model (current recipe)", "session"),
                                             ("another ONNX file", "file")], value="session",
                                    description="candidate", style=style, layout=W.Layout(width="480px"))
        self.candidate_path = W.Text(placeholder="path/to/candidate.onnx", description="candidate file", style=style,
                                     layout=W.Layout(width="480px"))
        self.data = W.Text(value=self._default_data(),
                           placeholder="a folder of images/.wav, or an .npz (one array per input + optional label)",
                           description="data", style=style, layout=W.Layout(width="480px"))
        self.metric = W.Dropdown(options=[("accuracy (needs a label array)", "accuracy"),
                                          ("output relative L2 error", "rel_l2")], value="accuracy",
                                 description="metric", style=style, layout=W.Layout(width="480px"))
        # two limits, each named for what it bounds: the plan's (on the metric) and the layer-by-layer compare's
        self.tolerance = W.FloatText(value=0.001, step=0.001, description="accuracy drop", style=style,
                                     tooltip="Find culprits: the largest accuracy drop below FP32 a plan may keep")
        self.layer_limit = W.FloatText(value=0.1, step=0.01, description="rel L2 limit", style=style,
                                       tooltip="Compare layer by layer: a tensor whose relative L2 error passes this "
                                               "diverges (the chart's dashed line)")
        self.max_samples = W.IntText(value=0, description="max samples", style=style, tooltip="0 = all")
        self.direction = W.Dropdown(options=[("gain when only it goes back to FP32", "restore"),
                                             ("damage when only it is quantized", "quantize_only")],
                                    value="restore", description="rank layers by", style=style,
                                    layout=W.Layout(width="480px"))
        self.compare_button = W.Button(description="Compare layer by layer", icon="search", layout=W.Layout(width="auto"))
        self.debug_button = W.Button(description="Find culprits + plan", icon="bug", button_style="primary",
                                  layout=W.Layout(width="auto"))
        self.apply_button = W.Button(description="Apply plan to recipe", icon="check", disabled=True,
                                     button_style="success", layout=W.Layout(width="auto"))
        self.cancel_button = W.Button(description="Cancel", icon="stop", disabled=True)
        self.progress = W.IntProgress(value=0, min=0, max=100, description="", layout=W.Layout(width="300px"))
        self.progress_label = W.Label(value="")
        self.summary = W.HTML(value="")
        self.plan = W.HTML(value="")
        # created on first use (see the module docstring), refilled by later runs
        self.errors_fig: go.FigureWidget | None = None
        self.graph_fig: GraphWidget | None = None  # the graph coloured by layerwise error
        self.sensitivity_fig: go.FigureWidget | None = None
        self.pareto_fig: go.FigureWidget | None = None
        # side by side when the page is wide enough, else one under the other (never cut off at the right edge)
        self._compare_figs = W.HBox([], layout=W.Layout(flex_flow="row wrap"))
        self._debug_figs = W.HBox([], layout=W.Layout(flex_flow="row wrap"))
        # one Job per run button, sharing Cancel, the progress bar and the phase label
        # one Job per run button, sharing Cancel, the progress bar and the phase label; at a job's end the other
        # run button and Apply follow the tab's state again (``ready``)
        self.compare_job = Job(status, run_button=self.compare_button, cancel_button=self.cancel_button,
                               progress=self.progress, phase=self.progress_label, ready=self._job_ended)
        self.debug_job = Job(status, run_button=self.debug_button, cancel_button=self.cancel_button,
                             progress=self.progress, phase=self.progress_label, ready=self._job_ended)
        self.compare_button.on_click(lambda _: self._start(self.compare_job, "comparing layer by layer",
                                                           self._compare(), self._compared))
        self.debug_button.on_click(lambda _: self._start(self.debug_job, "ranking layers and searching a plan",
                                                         self._debug(), self._debugged))
        self.apply_button.on_click(self._apply)
        self.candidate.observe(lambda _: self._sync(), names="value")
        self.metric.observe(self._on_metric, names="value")
        self._sync()
        controls = W.VBox([self.reference, W.HBox([self.candidate, self.candidate_path]), self.data,
                           W.HBox([self.metric, self.tolerance, self.max_samples]),
                           W.HBox([self.direction, self.layer_limit]),
                           W.HBox([self.compare_button, self.debug_button, self.apply_button, self.cancel_button]),
                           W.HBox([self.progress, self.progress_label])])
        self.widget = W.VBox([controls, self.summary, self._compare_figs, self.plan, self._debug_figs])

    # --- helpers -------------------------------------------------------------------------------------------

    def _on_metric(self, change: Any) -> None:
        """The plan's limit box says what it bounds for the metric picked (with that metric's usual default)."""
        if change["new"] == "rel_l2":
            self.tolerance.description, self.tolerance.step = "output rel L2", 0.01
            self.tolerance.tooltip = "Find culprits: the largest relative L2 error of the outputs a plan may keep"
            if self.tolerance.value == 0.001:
                self.tolerance.value = 0.05
        else:
            self.tolerance.description, self.tolerance.step = "accuracy drop", 0.001
            self.tolerance.tooltip = "Find culprits: the largest accuracy drop below FP32 a plan may keep"
            if self.tolerance.value == 0.05:
                self.tolerance.value = 0.001

    def _default_data(self) -> str:
        """The bundled test split for a sample model, else empty."""
        path = getattr(self.session, "source_path", None)
        if path is None:
            return ""
        names = {"digits_cnn": "digits_test.npz", "digits_transformer": "digits_test_seq.npz"}
        guess = path.with_name(names.get(path.stem, f"{path.stem}_test.npz"))
        return str(guess) if guess.is_file() else ""

    def _sync(self) -> None:
        self.candidate_path.layout.display = "" if self.candidate.value == "file" else "none"

    def wait(self, timeout: float | None = 300.0) -> None:
        """Block until the running job (if any) finishes (for tests and scripts)."""
        self.compare_job.wait(timeout)
        self.debug_job.wait(timeout)

    @property
    def busy(self) -> bool:
        """A comparison or a ranking is running."""
        return self.compare_job.running or self.debug_job.running

    def _start(self, job: Job, doing: str, compute: Callable[[Job], T], show: Callable[[T], None]) -> None:
        if self.busy:
            self.status.busy(f"{doing}: wait for the running task or cancel it")
            return
        for b in (self.compare_button, self.debug_button, self.apply_button):
            if b is not job.run_button:
                b.disabled = True
        if job is self.debug_job:
            self.result = None  # a failed or cancelled run leaves no plan to apply
        job.start(doing, compute, show)

    def _job_ended(self) -> bool:
        """At a job's end, on the kernel thread: both run buttons enabled, Apply when a plan can be applied."""
        self.compare_button.disabled = self.debug_button.disabled = False
        self.apply_button.disabled = not self._can_apply()
        return True

    def _choices(self) -> dict[str, Any]:
        """The workflow arguments the reference, candidate, data and cluster controls say."""
        candidate = "session" if self.candidate.value == "session" else self.candidate_path.value.strip()
        return {"reference": self.reference.value, "candidate": candidate, "data": self.data.value.strip(),
                "max_samples": self.max_samples.value or None, "cluster": self._cluster()}

    def _cluster(self) -> Cluster | None:
        """The dashboard's connected cluster, else None (this machine's threads)."""
        return self.cluster_box.cluster if self.cluster_box is not None else None

    def _can_apply(self) -> bool:
        return (self.result is not None and self.result.plan.met and bool(self.result.plan.keep)
                and self.candidate.value == "session")

    # --- jobs: the controls are read on the kernel thread, the work runs on the job's thread -----------------

    def _compare(self) -> Callable[[Job], CompareResult]:
        """The layerwise comparison the controls say, to run on the job's thread."""
        choices = self._choices()
        data = choices.pop("data")
        limit = float(self.layer_limit.value)

        def compute(job: Job) -> CompareResult:
            return workflow.compare(self.session, data, layerwise=True, tolerance=limit,
                                    progress=lambda done, total, phase="": job.report(
                                        done, total, f"compared {done}/{total} samples"),
                                    cancel=job.is_cancelled, **choices)

        return compute

    def _compared(self, result: CompareResult) -> None:
        """Show a comparison (on the kernel thread)."""
        self.report = result.report
        self._show_compare(result.report, result.reference)
        for callback in list(self._result_callbacks):
            callback()

    def _show_compare(self, r: CompareReport, reference: onnx.ModelProto | None) -> None:
        rows = "".join(
            f"<tr><td><code>{html.escape(n)}</code></td><td>{_f(m['max_abs'])}</td><td>{_f(m['mean_abs'])}</td>"
            f"<td>{_f(m['rel_l2'])}</td><td>{_f(m['cosine'], '.5f')}</td><td>{_f(m['snr_db'], '.1f')}</td>"
            f"<td>{_f(m.get('top1_agreement'), '.3f')}</td><td>{'pass' if m['passed'] else 'FAIL'}</td></tr>"
            for n, m in r.outputs.items())
        metrics = "".join(f"<p><b>{html.escape(k)}</b>: FP32 {v['reference']:.4f} → candidate {v['candidate']:.4f}</p>"
                          for k, v in r.metrics.items())
        fd = r.first_divergence
        first = (f"<p class='wb-first-divergence'><b>first divergence</b>: <code>{html.escape(fd['tensor'])}</code> "
                 f"(node <code>{html.escape(fd['node'])}</code>, {fd['op']}), rel_l2 {_f(fd['rel_l2'])}, "
                 f"local {_f(fd['local_rel_l2'])}</p>") if fd else "<p>no tensor past the tolerance</p>"
        nan = (f"<p style='color:#b00020'><b>NaN/Inf</b> first in <code>{html.escape(str(r.nan['tensor']))}</code>"
               f" (node {html.escape(str(r.nan['node']))})</p>") if r.nan else ""
        warn = "".join(f"<p><i>{html.escape(w)}</i></p>" for w in r.warnings)
        self.summary.value = (
            f"<div class='wb-compare'><p>{r.samples} samples</p><table><tr><th>output</th><th>max abs</th>"
            f"<th>mean abs</th><th>rel L2</th><th>cosine</th><th>SNR dB</th><th>top-1 agree</th><th></th></tr>"
            f"{rows}</table>{metrics}{first}{nan}{warn}</div>")
        if r.layers is not None:
            fig = error_growth(r.layers, tolerance=r.tolerance.rel_l2, first_divergence=fd)
            if r.tolerance.rel_l2 is not None:  # the dashed line is the "rel L2 limit" box, so it says so
                fig.update_annotations(text=f"rel L2 limit {r.tolerance.rel_l2:g}", selector={"text": f"tolerance {r.tolerance.rel_l2:g}"})
            new_figs = self.errors_fig is None
            self.errors_fig = refill(self.errors_fig, fig)
            if self.graph_fig is None:
                self.graph_fig = GraphWidget(height=520)
                self.graph_fig.observe(lambda c: [cb(list(c["new"])) for cb in self._select_callbacks if c["new"]],
                                       "selected")
            with self.graph_fig.hold_trait_notifications():
                if reference is not None:
                    self.graph_fig.set_model(reference, title="Graph coloured by log10 rel L2 error")
                self.graph_fig.add_overlay("log10 rel L2", node_error_colours(r.node_errors()), show=True)
                self.graph_fig.highlight = [fd["node"]] if fd else []
            if new_figs:
                self._compare_figs.children = (self.errors_fig, self.graph_fig)

    def _debug(self) -> Callable[[Job], DebugRun]:
        """The ranking and plan search the controls say, to run on the job's thread."""
        choices = self._choices()
        data = choices.pop("data")
        metric, tolerance, direction = self.metric.value, float(self.tolerance.value), self.direction.value

        def compute(job: Job) -> DebugRun:
            return workflow.debug(self.session, data, metric=metric, tolerance=tolerance, direction=direction,
                                  progress=lambda done, total, phase="": job.report(done, total,
                                                                                    f"{phase} {done}/{total}"),
                                  cancel=job.is_cancelled, **choices)

        return compute

    def _debugged(self, run: DebugRun) -> None:
        """Show a ranking and its plan (on the kernel thread)."""
        self.result = run.result
        self._show_debug(run.result)
        for callback in list(self._result_callbacks):
            callback()

    def on_select(self, callback: Any) -> None:
        """Call ``callback(names)`` when the user picks nodes in the error graph (the dashboard's selection)."""
        self._select_callbacks.append(callback)

    def on_result(self, callback: Any) -> None:
        """Call ``callback()`` after a comparison or a ranking is shown (the joined view re-reads them)."""
        self._result_callbacks.append(callback)

    def _show_debug(self, r: DebugResult) -> None:
        plan = r.plan
        keep = ", ".join(f"<code>{html.escape(k)}</code>" for k in plan.keep) or "nothing"
        colour = "#1b5e20" if plan.met else "#b00020"
        warn = "".join(f"<p><i>{html.escape(w)}</i></p>" for w in r.sensitivity.warnings)
        self.plan.value = (
            f"<div class='wb-plan' style='color:{colour}'><p><b>{html.escape(plan.message)}</b></p>"
            f"<p>{r.sensitivity.metric}: FP32 {r.metric_reference:.4f} · candidate {r.metric_before:.4f} · "
            f"with the plan {plan.metric:.4f} (estimated cost {_f(plan.cost, '.3f')}, all FP32 = 1)</p>"
            f"<p>keep in high precision: {keep}</p>"
            f"<p>ranked {len(r.sensitivity.table)} layers on {r.sensitivity.samples} samples in "
            f"{r.sensitivity.seconds:.1f} s; {len(plan.tried)} plans measured</p>{warn}</div>")
        bars = sensitivity_bars(r.sensitivity.table, keep=plan.keep, title=None if r.sensitivity.direction == "restore"
                                else "Sensitivity: output error with only this layer quantized")
        par = pareto(plan.tried, chosen=plan.keep, target=plan.target,
                     higher_is_better=r.sensitivity.higher_is_better, metric=r.sensitivity.metric)
        if self.graph_fig is not None:  # the graph's colour menu offers the ranking too
            self.graph_fig.add_overlay("sensitivity", dict(zip(r.sensitivity.table.column("node"),
                                                               r.sensitivity.table.column("score"))))
        first = self.sensitivity_fig is None
        self.sensitivity_fig = refill(self.sensitivity_fig, bars)
        self.pareto_fig = refill(self.pareto_fig, par)
        if first:
            self._debug_figs.children = (self.sensitivity_fig, self.pareto_fig)

    # --- apply (main thread, quick) ------------------------------------------------------------------------

    def _apply(self, _: Any = None) -> None:
        with self.status.guard("applying the plan to the recipe"):
            if self.result is None or not self.result.plan.keep:
                raise WorkbenchError("no plan to apply", hint="run 'Find culprits + plan' first")
            workflow.apply_plan(self.session, self.result.plan.keep)
            self.apply_button.disabled = True
            self.plan.value += (f"<p class='wb-applied'>applied: {len(self.result.plan.keep)} layer(s) now excluded "
                                "from the precision edit</p>")
