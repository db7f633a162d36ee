"""The Build tab: backend, optimisation profiles, opt level; Build (background thread) with progress, log
and Cancel; the engines built for this session; the equivalent trtexec command line.

Visible state lives in widget values so headless tests can assert it: ``backend.options``/``backend_note``,
``profiles.value`` (one SPEC per line, prefilled with derived defaults for dynamic inputs),
``progress.value``, ``phase.value``, ``log.value``, ``engines.options``, ``trtexec.value``,
``build_button.disabled``/``cancel_button.disabled``. The build runs as ``job`` (a :class:`Job`); ``wait()`` joins it.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import ipywidgets as W

from ..errors import WorkbenchError
from ..recipe import BuildSettings
from ..session import Session
from ..workflows import build as wf
from .common import Job, Status, kernel_thread

__all__ = ["BuildTab"]

_LOG_LINES = 400


# CLI advice in messages from the build API, said the way this tab does it
_WIDGET_WORDS = ((re.compile(r"[Cc]hoose your own with --shapes (\S+)"), r"Edit the profiles box to choose your own (\1)"),
                 (re.compile(r"run `workbench check MODEL`"), "click Check with TensorRT in the Model tab"),
                 (re.compile(r"\(--shapes\)"), "(the profiles box)"),
                 (re.compile(r"--opt-level"), "the opt level slider"),
                 (re.compile(r"\(BuildSettings\.timeout_s / --timeout\)"), "(BuildSettings.timeout_s)"))


def widget_words(text: str) -> str:
    """``text`` with its command-line advice (``--shapes``, ``workbench check``) turned into this tab's controls."""
    for pattern, repl in _WIDGET_WORDS:
        text = pattern.sub(repl, text)
    return text


def _engine_label(e: wf.EngineEntry) -> str:
    return (f"{e.name} · {e.bytes:,} B · {e.layers} layers · {e.build_seconds:.2f} s · "
            f"{e.backend} {e.version}")


class BuildTab:
    """Build TensorRT engines for the session's current model (child process by default)."""

    title = "Build"

    def __init__(self, session: Any, status: Status) -> None:
        self.session = session
        self.status = status
        self._ui = kernel_thread()  # the thread that made the widgets: the only one that writes them
        self.result: wf.EngineBuild | None = None
        self._prefill = ""
        self._engines: dict[str, wf.EngineEntry] = {}

        self._status = wf.backend_status()
        options = [("auto", "auto")] + [
            (name if why is None else f"{name} (unavailable)", name) for name, why in self._status.items()]
        self.backend = W.Dropdown(options=options, value="auto", description="backend")
        self.backend_note = W.HTML()
        self.opt_level = W.IntSlider(value=3, min=0, max=5, description="opt level")
        self.workspace = W.IntText(value=0, description="workspace MiB", layout=W.Layout(width="220px"),
                                   style={"description_width": "initial"})
        self.targets = W.Text(value="", description="GPU targets", placeholder="e.g. SM86 SM89 (TensorRT-RTX; empty: default)",
                              layout=W.Layout(width="420px"))
        self.in_process = W.Checkbox(value=False, description="build in this process (a crash kills the kernel)",
                                     indent=False, layout=W.Layout(width="auto"))
        self.profiles = W.Textarea(placeholder="input:1x3x32x32,1x3x256x256,8x3x1024x1024  (one input per line)",
                                   description="profiles", layout=W.Layout(width="100%", height="70px"))
        self.profiles_note = W.HTML()
        self.build_button = W.Button(description="Build engine", icon="cogs", button_style="primary")
        self.cancel_button = W.Button(description="Cancel", icon="stop", disabled=True)
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, description="progress")
        self.phase = W.Label(value="")
        self.log = W.Textarea(value="", description="log", disabled=True,
                              layout=W.Layout(width="100%", height="160px"))
        self.engines = W.Select(options=[], description="engines", rows=5, layout=W.Layout(width="100%"))
        self.engine_details = W.HTML()
        self.trtexec = W.Textarea(value="", description="trtexec", disabled=True,
                                  layout=W.Layout(width="100%", height="60px"))
        reason = wf.gpu_status()
        self.gpu_note = W.HTML(
            '<p class="wb-gpu-note"><b>No GPU here:</b> engines can be built (ahead of time, TensorRT-RTX) but not '
            "run on this machine; run them where a supported NVIDIA GPU is, with the trtexec line below.</p>"
            if reason else '<p class="wb-gpu-note">A CUDA GPU is available: built engines can run here.</p>')

        self.backend.observe(self._on_backend, names="value")
        for w in (self.backend, self.opt_level, self.workspace, self.profiles):
            w.observe(self._refresh_trtexec, names="value")
        self.job = Job(status, run_button=self.build_button, cancel_button=self.cancel_button, progress=self.progress,
                       phase=self.phase, ready=lambda: self._unavailable() is None)
        self.build_button.on_click(self._on_build)
        self.engines.observe(self._show_engine, names="value")
        session.on_change(self._on_session)

        self.widget = W.VBox([
            self.gpu_note,
            W.HBox([self.backend, self.backend_note]),
            W.HBox([self.opt_level, self.workspace, self.targets]),
            self.profiles, self.profiles_note, self.in_process,
            W.HBox([self.build_button, self.cancel_button, self.progress, self.phase]),
            self.log, self.engines, self.engine_details, self.trtexec,
        ])
        self._load_settings(getattr(session.recipe, "build", None))
        self._on_backend()
        self._prefill_profiles()
        self._refresh_engines()
        self._refresh_trtexec()

    # --- state from the session ----------------------------------------------------------------------

    def _prefill_profiles(self) -> None:
        """Derive default profiles; the shared status line is only written if that fails (it is the acting tab's)."""
        try:
            defaults = wf.default_profiles(self.session)
        except WorkbenchError as exc:
            self.status.error(exc)
            return
        text = "\n".join(defaults.specs)
        if self.profiles.value in ("", self._prefill):
            self.profiles.value = text
        self._prefill = text
        self.profiles_note.value = "".join(f"<p><i>{html.escape(widget_words(n))}</i></p>" for n in defaults.notes)

    def _load_settings(self, settings: BuildSettings | None) -> None:
        """Show build settings recorded in the recipe (a loaded recipe brings its profiles and options)."""
        if settings is None:
            return
        if settings.backend in [v for _, v in self.backend.options]:
            self.backend.value = settings.backend
        self.opt_level.value = settings.opt_level
        self.workspace.value = settings.workspace_mb or 0
        self.in_process.value = settings.in_process
        self.targets.value = " ".join(settings.compute_capabilities)
        if settings.profiles:
            self.profiles.value = "\n".join(wf.format_spec(p) for p in settings.profiles)

    def _on_session(self, _session: Any) -> None:
        self._prefill_profiles()
        self._refresh_trtexec()

    def _refresh_engines(self) -> None:
        self._engines = {e.path: e for e in wf.engines(self.session)}
        self.engines.options = [(_engine_label(e), path) for path, e in self._engines.items()]

    def _show_engine(self, _change: Any = None) -> None:
        e = self._engines.get(self.engines.value or "")
        if e is None:
            self.engine_details.value = ""
            return
        esc = html.escape
        io = "".join(f"<li>{esc(t['mode'])} <b>{esc(t['name'])}</b> {esc(t['dtype'])} {t['shape']}</li>" for t in e.io)
        prof = "".join(f"<li>{esc(p['input'])}: min {p['min']} opt {p['opt']} max {p['max']}</li>" for p in e.profiles)
        fused = sum(1 for la in e.engine_layers if len(la.get("onnx_nodes", [])) > 1)
        self.engine_details.value = (
            f'<div class="wb-engine" style="overflow-wrap:anywhere"><p><b>{esc(e.path)}</b> · model sha256 '
            f'{esc(e.model_sha256[:12])}… · recipe {esc((e.recipe_digest or "-")[:12])} · '
            f'{e.layers} engine layers ({fused} fused from several ONNX nodes) · opt level '
            f'{e.opt_level} · built {esc(e.created)}</p>'
            f"<p>I/O:</p><ul>{io}</ul>" + (f"<p>profiles:</p><ul>{prof}</ul>" if prof else "") + "</div>")

    def _unavailable(self) -> str | None:
        """Why the chosen backend cannot build here (None: it can)."""
        if self.backend.value == "auto" and all(v is not None for v in self._status.values()):
            return "no TensorRT installed: pip install 'onnx-trt-workbench[rtx]'"
        return self._status.get(self.backend.value)

    def _on_backend(self, _change: Any = None) -> None:
        why = self._unavailable()
        self.backend_note.value = f'<span style="color:#888">{html.escape(why)}</span>' if why else ""
        self.build_button.disabled = bool(why) or self.building

    def _settings(self) -> BuildSettings:
        targets = tuple(t for t in self.targets.value.replace(",", " ").split() if t)
        return wf.build_settings(self.session, shapes=self.profiles.value, backend=self.backend.value,
                                 opt_level=int(self.opt_level.value), workspace_mb=int(self.workspace.value) or None,
                                 in_process=bool(self.in_process.value), compute_capabilities=targets)

    def _refresh_trtexec(self, _change: Any = None) -> None:
        try:
            settings = self._settings()
        except WorkbenchError:
            return  # the Build button reports a bad SPEC; keep the last good command line
        try:
            self.trtexec.value = wf.trtexec_line(self.session, settings).command
        except WorkbenchError as exc:
            self.trtexec.value = f"(no trtexec line: {exc.message})"

    def model_file(self) -> Path:
        """A file holding the session's current model (:func:`workbench.workflows.build.model_file`)."""
        return wf.model_file(self.session)

    # --- build ---------------------------------------------------------------------------------------

    @property
    def building(self) -> bool:
        """True while a build runs."""
        return self.job.running

    def _on_build(self, _button: Any = None) -> None:
        if self.building:
            return
        settings = None
        with self.status.guard("reading the build settings"):
            settings = self._settings()
        if settings is None:
            return
        if self.session.recipe.build != settings:
            with self.status.guard("recording the build settings in the recipe"):
                self.session.set_build(settings)
        self.log.value = ""
        fork = self.session.fork()  # the model (and digest) of the click, whatever the user edits meanwhile
        self.job.start("building the engine", lambda job: self._run_build(job, fork, settings),
                       on_done=self._show_result)

    def _append_log(self, line: str) -> None:
        lines = (self.log.value.splitlines() + [line])[-_LOG_LINES:]
        self.log.value = "\n".join(lines)

    def _run_build(self, job: Job, fork: Session, settings: BuildSettings) -> wf.EngineBuild:
        """The build of ``fork``'s model, in the job's worker thread: its log lines are shown on the kernel thread."""
        try:
            return wf.build(fork, settings, progress=job.report, cancel=job.cancel_event,
                            log=lambda line: self._ui.post(lambda: self._append_log(line)))
        except WorkbenchError as exc:
            exc.message, exc.hint = widget_words(exc.message), widget_words(exc.hint)
            raise

    def _show_result(self, result: wf.EngineBuild) -> None:
        """On the kernel thread: the engine built, listed and selected; its trtexec line."""
        self.result = result
        self.trtexec.value = result.trtexec
        self._refresh_engines()
        self.engines.value = str(result.engine_path)
        self.status.ok(f"built {result.engine_path.name}: {result.bytes:,} bytes, "
                       f"{result.layers} layers in {result.seconds:.2f} s")

    def wait(self, timeout: float | None = 300.0) -> None:
        """Block until the running build (if any) ends: for headless tests and scripts."""
        self.job.wait(timeout)
