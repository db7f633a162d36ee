"""plotly's FigureWidget, shipping plotly.js once per kernel, with its front end's one leak fixed.

- **Once per kernel.** plotly's FigureWidget is an anywidget whose ES module is plotly's whole widget bundle
  (``plotly/package_data/widgetbundle.js``, ~5 MB): every FigureWidget sent it to the browser when made and again
  in the state a page reload fetches, and the page imported and ran it once per figure. Here the bundle is the
  ``bundle`` trait of one :class:`PlotlyBundle` widget per kernel; each figure's module is a small loader that
  imports it once per page (by that widget's id) and hands its factory the figure's model.
- **Removed views stop listening.** plotly's front end registers each view's handlers for the kernel's updates
  (``_py2js_relayout``, ``_py2js_restyle``, ...) on the *model* and never removes them: when a view goes (the
  figure leaves a Box, e.g. a tab shows a graph in the chart's place, then the chart again), its plotly.js div is
  purged but still gets every later update. Plotly.js then throws ("Cannot read properties of undefined (reading
  '_guiEditing')", "gd.data must be an array"), and the throw stops the event there, so the view on display is not
  updated either (it kept the old chart). The loader removes the handlers a view added when the view goes.
- **No view counting.** plotly sets ipywidgets' ``_view_count`` and never reads it (see ``__init__``).
"""

from __future__ import annotations

import ipywidgets as W
import plotly.graph_objects as go
import traitlets as T

__all__ = ["FigureWidget", "PlotlyBundle", "plotly_bundle", "LOADER"]

# the figure's ES module: import the kernel's one bundle (once per page and bundle widget), then run plotly's
# factory with a model whose ``on`` records the handlers added while a view renders; the view's clean-up removes them
# (anywidget's ``off(name, callback)``) before plotly's own (purging the div)
LOADER = """
const modules = (globalThis.__wbPlotlyBundles = globalThis.__wbPlotlyBundles || new Map());

function bundleModule(model) {
  const id = String(model.get("_wb_bundle") || "").replace(/^IPY_MODEL_/, "");
  if (!modules.has(id)) {
    modules.set(id, (async () => {
      let holder = null;
      for (let tries = 0; !holder; tries++) { // on a reload the bundle's model may be made after this figure's
        try { holder = await model.widget_manager.get_model(id); } catch (err) {
          if (tries > 600) throw err;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      const url = URL.createObjectURL(new Blob([holder.get("bundle")], { type: "text/javascript" }));
      try { return await import(url); } finally { URL.revokeObjectURL(url); }
    })());
  }
  return modules.get(id);
}

export default () => {
  let inner = null, model = null, adding = null;
  return {
    async initialize(ctx) {
      model = ctx.model;
      inner = (await bundleModule(model)).default();
      const on = (name, callback) => { if (adding) adding.push([name, callback]); model.on(name, callback); };
      const proxied = new Proxy(model, { get: (t, k) => (k === "on" ? on : t[k]) });
      return inner.initialize({ ...ctx, model: proxied });
    },
    render(ctx) {
      adding = [];
      let dispose, mine;
      try { dispose = inner.render(ctx); } finally { mine = adding; adding = null; }
      return () => {
        for (const [name, callback] of mine) model.off(name, callback);
        if (typeof dispose === "function") dispose();
      };
    },
  };
};
"""


class PlotlyBundle(W.Widget):
    """Holds plotly's widget bundle for the page (no view): one per kernel, see :func:`plotly_bundle`."""

    bundle = T.Unicode().tag(sync=True)


_BUNDLE: PlotlyBundle | None = None


def plotly_bundle() -> PlotlyBundle:
    """The kernel's one :class:`PlotlyBundle` (made again if it was closed, e.g. by ``Widget.close_all()``)."""
    global _BUNDLE
    if _BUNDLE is None or _BUNDLE.comm is None:
        _BUNDLE = PlotlyBundle(bundle=str(go.FigureWidget._esm))
    return _BUNDLE


class FigureWidget(go.FigureWidget):
    """``plotly.graph_objects.FigureWidget`` that loads plotly.js from the kernel's one :class:`PlotlyBundle` and
    whose removed views stop listening to it (see the module docstring)."""

    _esm = LOADER
    _wb_bundle = T.Instance(PlotlyBundle).tag(sync=True, **W.widget_serialization)

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        # plotly turns ipywidgets' view counting on and never reads it: each view's removal then syncs the count, which
        # logs "Could not send widget sync message" when the notebook closes (its comm already gone)
        self._view_count = None

    @T.default("_wb_bundle")
    def _default_bundle(self) -> PlotlyBundle:
        return plotly_bundle()
