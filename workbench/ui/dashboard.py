"""The dashboard: ``Workbench(path_or_session)`` -> header, status line and one tab per workflow step.

Tabs are classes ``XTab(session, status)`` in ``workbench/ui/<name>_tab.py``; a tab whose module does
not exist yet is skipped; any other import error (a dependency missing inside it) is our bug: the open fails and
the status shows it as an internal error with its log (as for any tab that fails to build). A model that cannot be opened leaves a
usable dashboard in an error state: the status shows message and hint, and the path box + Open button
load another model.

The dashboard wires the tabs together (a tab knows no other tab): a node the user picks in the Model tab
(row or graph click) becomes the Edit tab's selection (kept until the Edit tab is built, if it is not yet),
and after every change of the model (an edit applied, undo, redo, a recipe loaded) the Model tab's graph
rings the nodes the change added and says how many it added and removed.

One selection signal (``selection``, a :class:`~workbench.ui.node_view.Selection`): every tab with an
``on_select(callback)`` hook publishes the ONNX nodes the user picked there (an engine layer: its ONNX nodes), and
the joined view beside the tabs (``node_view``) shows what is known about them: the ONNX node, its weights, the
engine layers and profile rows, its precision, calibration range, layerwise error and sensitivity.
"""

from __future__ import annotations

import html
import importlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import ipywidgets as W

from ..errors import WorkbenchError
from ..session import Session
from ..workflows.model import inspect, layer_table, recipe_scales
from .common import Status, kernel_thread, on_kernel_thread
from .model_tab import ModelTab
from .node_view import NodeView, Selection

__all__ = ["Workbench", "LazyTabs", "UnavailableTab", "TAB_MODULES", "EDIT_TITLE", "close_widgets"]

EDIT_TITLE = "Edit"  # the tab that receives the node picked in the Model tab

# (module in workbench.ui, class) in display order, after the Model tab
TAB_MODULES: tuple[tuple[str, str], ...] = (
    ("edit_tab", "EditTab"),
    ("precision_tab", "PrecisionTab"),
    ("calibrate_tab", "CalibrateTab"),
    ("build_tab", "BuildTab"),
    ("profile_tab", "ProfileTab"),
    ("debug_tab", "DebugTab"),
)


def _tab_classes() -> list[type]:
    classes: list[type] = [ModelTab]
    for module, cls in TAB_MODULES:
        full = f"{__package__}.{module}"
        try:
            mod = importlib.import_module(full)
        except ModuleNotFoundError as exc:
            if exc.name == full:  # not written yet: skip; a missing dependency inside it must surface
                continue
            raise
        classes.append(getattr(mod, cls))
    return classes


def close_widgets(*roots: Any, keep: tuple[Any, ...] = ()) -> int:
    """Close ``roots`` (widgets or tab objects) and every widget they hold: children, layouts, styles and, for a tab
    object, the widgets among its attributes (charts not on display, pooled rows). ``keep`` is left open. Returns
    how many widgets were closed."""
    kept = {id(w) for w in keep}
    seen: set[int] = set()
    closed = 0
    stack = list(roots)
    while stack:
        obj = stack.pop()
        if id(obj) in seen or id(obj) in kept:
            continue
        seen.add(id(obj))
        if isinstance(obj, (list, tuple)):
            stack.extend(obj)
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, W.Widget):
            stack.extend(getattr(obj, name, None) for name in ("children", "layout", "style"))
            if obj.comm is not None:
                obj.close()
                closed += 1
        elif obj is not None and hasattr(obj, "__dict__") and hasattr(obj, "widget"):  # a tab object
            stack.extend(v for v in vars(obj).values() if isinstance(v, (W.Widget, list, tuple, dict)))
    return closed


class UnavailableTab:
    """Stands in for a tab whose constructor refused the model: shows the message and hint."""

    def __init__(self, title: str, error: WorkbenchError) -> None:
        self.title = title
        self.error = error
        hint = f"<br><i>hint: {html.escape(error.hint)}</i>" if error.hint else ""
        self.widget = W.HTML(f'<div class="wb-tab-unavailable"><b>{html.escape(title)} is not available for this '
                             f"model:</b> {html.escape(error.message)}{hint}</div>")


class LazyTabs(Mapping[str, Any]):
    """``{title: tab}`` of a dashboard; a tab other than the first is built when its page is first shown or when
    it is looked up here: building every tab (and its charts and graphs) up front made the dashboard slow to
    appear."""

    def __init__(self, owner: Workbench, session: Session, classes: list[type], first: Any) -> None:
        self._owner, self._session, self._classes = owner, session, classes
        self._titles = [getattr(c, "title", c.__name__) for c in classes]
        self._built: dict[int, Any] = {0: first}
        self._placeholders: dict[int, W.HTML] = {}
        self._pages: dict[int, W.VBox] = {}

    def page(self, index: int) -> W.VBox:
        """The Tab's page for tab ``index``: a box holding a placeholder until the tab is built, then the tab's widget.
        A built tab goes into its page, not in place of a Tab child: a new ``Tab.children`` makes the browser
        re-create the view of every page after the one replaced (each build re-drew the later tabs, and the plotly
        charts' re-created views left their old views' handlers behind, which failed on the chart's next update:
        "Error setting state: gd.data must be an array")."""
        widget = W.HTML(f"<i>opening the {html.escape(self._titles[index])} tab…</i>")
        widget.add_class("wb-tab-placeholder")
        self._placeholders[index] = widget
        page = W.VBox([widget], layout=W.Layout(width="100%", overflow="visible"))
        page.add_class("wb-tab-page")
        self._pages[index] = page
        return page

    def widgets(self) -> list[Any]:
        """The built tabs, the pages and the placeholders: what replacing this set of tabs must close."""
        return [*self._built.values(), *self._pages.values(), *self._placeholders.values()]

    def built(self, title: str) -> bool:
        """Whether the tab ``title`` was built already."""
        return self._titles.index(title) in self._built

    def build(self, index: int) -> Any:
        """Tab ``index``, built now if it was not (a failure is shown in the status and in its page, then raised)."""
        if index in self._built:
            return self._built[index]
        try:
            tab = self._owner._make_tab(self._classes[index], self._session)
        except Exception as exc:  # an internal bug: logged, shown in the status and where the tab should be; raised
            title = self._titles[index]
            report = self._owner.status.internal_error(exc, f"opening the {title} tab")
            if index in self._placeholders:
                self._placeholders[index].value = (
                    f"<div class='wb-tab-crashed'><b>the {html.escape(title)} tab failed to open:</b> "
                    f"{html.escape(report.line)}<br><i>{html.escape(report.hint)}</i></div>")
            raise
        self._built[index] = tab
        placeholder = self._placeholders.pop(index, None)
        self._owner._hook_selection(self._session, tab)
        if self._owner.session is self._session:
            if index in self._pages:
                self._pages[index].children = (tab.widget,)
            self._owner._tab_built(self._titles[index], tab)
        if placeholder is not None:
            close_widgets(placeholder)
        return tab

    def __getitem__(self, title: str) -> Any:
        if title not in self._titles:
            raise KeyError(title)
        return self.build(self._titles.index(title))

    def __contains__(self, title: object) -> bool:  # without building the tab (Mapping's would)
        return title in self._titles

    def __iter__(self) -> Iterator[str]:
        return iter(self._titles)

    def __len__(self) -> int:
        return len(self._titles)


class Workbench:
    """The ONNX -> TensorRT workbench for one model: ``Workbench("model.onnx")``, ``Workbench("recipe.json")``
    or ``Workbench(session)``.

    Attributes: ``session`` (None while no model is open), ``status`` (the shared status line),
    ``tabs`` ({title: tab object}; tabs after Model are built when first shown or looked up), ``widget``.
    """

    def __init__(self, path_or_session: Any, *, cache_dir: str | os.PathLike[str] | None = None) -> None:
        self.cache_dir = cache_dir
        self._kernel = kernel_thread()  # the thread every widget of the dashboard is written on
        self.session: Session | None = None
        self.status = Status()
        self.tabs: Mapping[str, Any] = {}
        self._unsubscribe: Any = None
        self._pending_edit_selection: list[str] | None = None  # picked in the Model tab before Edit was built
        self._model_shown: Any = None  # the model whose last change the Model tab's graph rings
        self._scales_key: tuple[int, str] | None = None  # the recipe whose calibration _scales_found is
        self._scales_found: Any = None
        self.selection = Selection()  # the one selection signal: tabs publish, the joined view follows
        self.node_view = NodeView(self._gather)
        self.node_view.follow(self.selection)

        self.name = W.HTML()
        self.line = W.HTML()
        self.path = W.Text(placeholder="path/to/model.onnx or a sample name", description="model",
                           layout=W.Layout(width="420px"))
        self.open_button = W.Button(description="Open", icon="folder-open", layout=W.Layout(width="90px"))
        self.open_button.on_click(lambda _b: self.open(self.path.value.strip()))
        self.path.add_class("wb-path")
        self.open_button.add_class("wb-open")
        self.export_button = W.Button(description="Export HTML report", icon="file-code-o",
                                      tooltip="a self-contained HTML file of the session (summary, recipe, charts, "
                                              "layer table): <model>-report.html in the notebook's folder",
                                      layout=W.Layout(width="auto"))
        self.export_button.on_click(lambda _b: self._on_export())
        self.export_button.add_class("wb-export")
        self.tab = W.Tab(children=[])
        self.tab.observe(self._on_tab_selected, "selected_index")
        from .cluster_box import ClusterBox

        self.cluster_box = ClusterBox(self.status)  # sweeps on a Dask cluster: self.cluster_box.cluster
        cluster = W.Accordion(children=[self.cluster_box.widget], selected_index=None)
        cluster.set_title(0, "Cluster")
        header = W.VBox([W.HBox([self.name, self.line], layout=W.Layout(align_items="baseline", grid_gap="1em")),
                         W.HBox([self.path, self.open_button, self.export_button]), cluster])
        # the joined view beside the tabs; on a narrow page it wraps below them
        self.tab.layout = W.Layout(flex="1 1 720px", min_width="0")
        body = W.HBox([self.tab, self.node_view.widget], layout=W.Layout(flex_flow="row wrap", width="100%",
                                                                         align_items="flex-start"))
        from .styles import style_tag

        # the dashboard's stylesheet (nothing cut off on a narrow page) last: children[0] stays the header
        self.widget = W.VBox([header, self.status.widget, body, W.HTML(style_tag())], layout=W.Layout(width="100%"))
        self.widget.add_class("wb-dashboard")

        if isinstance(path_or_session, Session):
            self._attach(path_or_session)
            self.status.ok(f"opened {self._model_name()}")
        else:
            self.open(path_or_session)

    # --- opening models -----------------------------------------------------------------------------

    def open(self, source: Any) -> bool:
        """Open a model (path, sample name, ModelProto) or a saved recipe (``.json``: its model, edits replayed).

        On bad input the status shows the error and the dashboard keeps its current model (or none).
        """
        if isinstance(source, (str, os.PathLike)):
            self.path.value = str(source)
        if isinstance(source, str) and not source:
            self.status.error(WorkbenchError("no model given", hint="type a path to an .onnx file or a sample name"))
            return False
        before = self.session
        recipe = isinstance(source, (str, os.PathLike)) and Path(source).suffix.lower() == ".json"
        with self.status.guard(f"opening {source if isinstance(source, (str, os.PathLike)) else 'the model'}"):
            if recipe:  # a saved recipe: its model with the edits replayed
                self._attach(Session.load(source, cache_dir=self.cache_dir))
            else:
                self._attach(Session(source, cache_dir=self.cache_dir))
        if self.session is before and self.status.state == "error":
            if before is None:
                self._show_empty()
            return False
        self.status.ok(f"opened {self._model_name()}")
        return True

    def _attach(self, session: Session) -> None:
        on_kernel_thread(session)  # change events reach the tabs on this (the kernel) thread, whoever changed it
        classes = _tab_classes()
        first = self._make_tab(classes[0], session)
        if self._unsubscribe is not None:
            self._unsubscribe()
        replaced = self.tabs  # closed only once the Tab shows the new pages (see below)
        self.session = session
        if session.source_path is not None:
            self.path.value = str(session.source_path)
        self._pending_edit_selection = None
        self._model_shown = session.model
        self.selection.set([], "")
        self.tabs = LazyTabs(self, session, classes, first)
        if hasattr(first, "on_select"):
            first.on_select(lambda name: self._on_model_select(session, [name]))
        self.tab.children = [first.widget] + [self.tabs.page(i) for i in range(1, len(classes))]
        for i, cls in enumerate(classes):
            self.tab.set_title(i, getattr(cls, "title", cls.__name__))
        self.tab.selected_index = 0
        self.tab.send_state("selected_index")  # already 0 in the kernel, so no change would be sent
        # Close the old pages only now. Closed while still the Tab's pages, the browser removed them from the tab
        # bar one by one; with the last gone it sent selected_index null, and the new pages arrived with none
        # selected: every page hidden, the dashboard's controls "not visible".
        self._close_tabs(replaced)
        self._refresh_header()
        unsubscribe = session.on_change(lambda _s: self._on_session_change(session, first))
        self._unsubscribe = unsubscribe if callable(unsubscribe) else None
        self._hook_selection(session, first)

    def _on_tab_selected(self, change: dict[str, Any]) -> None:
        index = change["new"]
        if index is None and self.tab.children:  # the browser lost its page (pages removed under it): show one
            self.tab.selected_index = 0
            return
        if self.status.state == "error":  # another tab's error: it does not belong on this one
            self.status.clear()
        if isinstance(self.tabs, LazyTabs) and index is not None:
            try:
                self.tabs.build(index)
            except Exception:  # noqa: S110 - shown in the status (with its log) and in the tab's place by build;
                pass  # raised on from a click it reached only JupyterLab's log console

    # --- wiring between tabs --------------------------------------------------------------------------

    def _on_model_select(self, session: Session, names: list[str]) -> None:
        """The user picked a node in the Model tab: select it in the Edit tab now, or when that is built."""
        if session is not self.session or not isinstance(self.tabs, LazyTabs) or EDIT_TITLE not in self.tabs:
            return
        if self.tabs.built(EDIT_TITLE):
            self._select_in_edit(self.tabs[EDIT_TITLE], names)
        else:
            self._pending_edit_selection = list(names)

    def _tab_built(self, title: str, tab: Any) -> None:
        """Called by LazyTabs when a tab of the current session is built."""
        if title == EDIT_TITLE and self._pending_edit_selection is not None:
            names, self._pending_edit_selection = self._pending_edit_selection, None
            self._select_in_edit(tab, names)

    @staticmethod
    def _select_in_edit(tab: Any, names: list[str]) -> None:
        select = getattr(tab, "select", None)  # an UnavailableTab has none
        if callable(select):
            select(names)

    def _hook_selection(self, session: Session, tab: Any) -> None:
        """Subscribe the selection signal to a tab's ``on_select`` hook (a name or names) and its ``on_result``
        hook (a new result the joined view may show: a calibration, a profile, a comparison). A hook called from a
        tab's worker thread is delivered on the kernel thread (the joined view and the graph are widgets)."""
        title = getattr(tab, "title", type(tab).__name__)
        kernel = self._kernel
        if callable(getattr(tab, "on_select", None)):
            tab.on_select(lambda names: kernel.post(
                lambda: self.selection.set(names, title) if session is self.session else None))
        if callable(getattr(tab, "on_result", None)):
            tab.on_result(lambda: kernel.post(lambda: self._on_result(session)))

    def _on_result(self, session: Session) -> None:
        if session is not self.session:
            return
        scales = self._scales()
        model_tab = self.tabs.get("Model") if isinstance(self.tabs, LazyTabs) else None
        graph = getattr(model_tab, "graph", None)
        if scales is not None and graph is not None:  # the calibration-range overlay in the graph's colour menu
            from ..plots.node_facts import output_amax

            graph.add_overlay("calibration amax", output_amax(session.model, scales), log=True)
        self.node_view.refresh()

    def _built_tab(self, title: str) -> Any:
        if isinstance(self.tabs, LazyTabs) and title in self.tabs and self.tabs.built(title):
            return self.tabs[title]
        return None

    def _scales(self) -> Any:
        """The calibration the joined view shows: the Calibrate tab's, else the session's
        (:func:`~workbench.workflows.model.recipe_scales`, looked up once per recipe)."""
        cache = getattr(self._built_tab("Calibrate"), "cache", None)
        if cache is not None or self.session is None:
            return cache
        key = (id(self.session), self.session.digest)
        if self._scales_key != key:
            self._scales_key, self._scales_found = key, recipe_scales(self.session)
        return self._scales_found

    def _gather(self, name: str) -> Any:
        """The joined view's facts about node ``name`` from the session and whatever the built tabs hold."""
        from ..plots.node_facts import NodeFacts, node_facts

        if self.session is None:
            return NodeFacts(name, False)
        profile, debug = self._built_tab("Profile"), self._built_tab("Debug")
        report, result = getattr(debug, "report", None), getattr(debug, "result", None)
        return node_facts(name, self.session.model, profiles=getattr(profile, "profiles", None),
                          engines=getattr(profile, "engine_infos", None), scales=self._scales(),
                          layer_errors=getattr(report, "layers", None),
                          sensitivity=result.sensitivity.table if result is not None else None)

    def _on_session_change(self, session: Session, model_tab: Any) -> None:
        self._refresh_header()
        if session is self.session:
            self.node_view.refresh()  # the node may have changed (precision, weights) or gone
        if session is not self.session or session.model is self._model_shown:
            return  # another session's late event, or a settings change (same model)
        self._model_shown = session.model
        if not callable(getattr(model_tab, "highlight", None)):
            return
        model_tab.refresh()  # no-op if its own change handler ran first; the rings need the new graph
        change = session.last_change
        added, removed = list(change.added), list(change.removed)
        note = (f"last {change.action}: {len(added)} node(s) added"
                + (" (ringed)" if added else "") + f", {len(removed)} removed"
                + (" (not in the graph any more)" if removed else ""))
        model_tab.highlight(added, note=note)

    def _make_tab(self, cls: type, session: Session) -> Any:
        """A tab for ``session``; a tab that cannot serve this model (WorkbenchError) shows why in its place."""
        try:
            tab = cls(session, self.status)
        except WorkbenchError as exc:
            return UnavailableTab(getattr(cls, "title", cls.__name__), exc)
        if hasattr(tab, "cluster_box"):  # a tab whose sweeps run on the Cluster box's cluster when one is connected
            tab.cluster_box = self.cluster_box
        return tab

    def _close_tabs(self, tabs: Mapping[str, Any]) -> None:
        """Close the widgets of ``tabs``, which the dashboard no longer shows: a closed widget's model leaves the kernel
        and the page. Left open, every model opened stayed, and a page reload restored them all (minutes for a used
        dashboard)."""
        if isinstance(tabs, LazyTabs):
            close_widgets(*tabs.widgets(), keep=(self.status.widget,))

    def _show_empty(self) -> None:
        replaced = self.tabs
        self.session = None
        self.tabs = {}
        self.tab.children = []
        self._close_tabs(replaced)
        self.name.value = "<b>no model open</b>"
        self.line.value = "<span class='wb-summary-line'>open an .onnx file or a sample name above</span>"

    def _model_name(self) -> str:
        if self.session is None:
            return "no model"
        if self.session.source_path is not None:
            return Path(self.session.source_path).name
        return self.session.original.graph.name or "in-memory model"

    def _refresh_header(self) -> None:
        assert self.session is not None
        self.name.value = f"<b class='wb-model-name'>{html.escape(self._model_name())}</b>"
        self.line.value = f"<span class='wb-summary-line'>{html.escape(inspect(self.session).line())}</span>"

    # --- report -------------------------------------------------------------------------------------

    def charts(self) -> list[Any]:
        """The plotly charts the built tabs hold with data, as plain Figures, in tab order."""
        import plotly.graph_objects as go

        if not isinstance(self.tabs, LazyTabs):
            return []
        found: list[Any] = []
        for tab in self.tabs._built.values():
            for value in vars(tab).values():
                if isinstance(value, go.FigureWidget) and len(value.data):
                    found.append(go.Figure(data=value.data, layout=value.layout))
        return found

    def graphs(self) -> list[tuple[str, Any]]:
        """(title, GraphWidget) of the graphs worth a report: the Model tab's graph (with the overlay it shows), the
        Profile tab's engine graph and the Debug tab's error graph when they were drawn."""
        found = []
        for title, tab_title, attr in (("Graph", "Model", "graph"), ("Engine layers", "Profile", "engine_graph"),
                                       ("Layerwise error", "Debug", "graph_fig")):
            graph = getattr(self._built_tab(tab_title), attr, None)
            if graph is not None and getattr(graph, "graph", None):
                overlay = (graph.overlay or {}).get("title")
                found.append((f"{title}" + (f" coloured by {overlay}" if overlay else ""), graph))
        return found

    def export_html(self, path: str | os.PathLike[str]) -> Path:
        """Write a self-contained HTML report of the session (atomically): the model's summary, the recipe, every
        chart the tabs show (interactive plotly, plotly.js embedded once), the graphs (the Model tab's with its
        current overlay; engine and error graphs when drawn; bundle and data inline) and the layer table. Opens
        offline."""
        from ..plots.profile import write_html

        if self.session is None:
            raise WorkbenchError("no model is open, so there is nothing to report", hint="open a model first")
        s = self.session
        esc = html.escape
        edits = "".join(f"<li>{esc(e.kind)}</li>" for e in s.recipe.edits) or "<li>none (the model as opened)</li>"
        blocks: list[Any] = [
            f"<p class='wb-report-summary'><b>{esc(self._model_name())}</b> · {esc(inspect(s).line())}</p>",
            f"<h2>Recipe</h2><ol class='wb-report-edits'>{edits}</ol>"
            f"<details><summary>recipe JSON (replay: <code>workbench edit MODEL recipe.json</code>)</summary>"
            f"<pre class='wb-report-recipe'>{esc(s.recipe.to_json())}</pre></details>",
        ]
        charts = self.charts()
        blocks.append("<h2>Charts</h2>" if charts else "<h2>Charts</h2><p>no charts yet: profile, calibrate or "
                      "compare in the dashboard first</p>")
        blocks += charts
        blocks += [f"<h2>{esc(title)}</h2>{graph.to_html()}" for title, graph in self.graphs()]
        table = layer_table(s)
        blocks.append(f"<h2>Layers ({len(table)})</h2><div class='wb-report-layers'>"
                      f"{table._repr_html_(limit=len(table))}</div>")
        css = ("body{font-family:sans-serif;margin:1.5em} table{border-collapse:collapse;font-size:12px} "
               "td,th{border:1px solid #ddd;padding:2px 6px;text-align:left} pre{white-space:pre-wrap}")
        return write_html(blocks, Path(path), title=f"Workbench report: {self._model_name()}", style=css)

    def _on_export(self) -> None:
        with self.status.guard("exporting the HTML report"):
            if self.session is None:
                raise WorkbenchError("no model is open, so there is nothing to report", hint="open a model first")
            src = self.session.source_path
            stem = src.stem if src is not None else "model"
            path = self.export_html(Path.cwd() / f"{stem}-report.html")
            self.status.ok(f"wrote the report to {path}")

    # --- Jupyter display ----------------------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def __repr__(self) -> str:
        return f"Workbench({self._model_name()!r}, tabs={list(self.tabs)})"
