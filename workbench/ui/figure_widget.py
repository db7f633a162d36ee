"""plotly's FigureWidget with its front end's one leak fixed: a removed view stops listening to the figure.

plotly's anywidget front end (``plotly/package_data/widgetbundle.js``) registers each view's handlers for the
kernel's updates (``_py2js_relayout``, ``_py2js_restyle``, ...) on the *model* and never removes them: when a view
goes (the figure leaves a Box, e.g. a tab shows a graph in the chart's place, then the chart again), its plotly.js
div is purged but still gets every later update. Plotly.js then throws ("Cannot read properties of undefined
(reading '_guiEditing')", "gd.data must be an array"), and the throw stops the event there, so the view on display
is not updated either (it kept the old chart). :class:`FigureWidget` ships the same bundle with its default export
wrapped: the handlers a view adds while it renders are removed with the view.
"""

from __future__ import annotations

import functools
import re

import plotly.graph_objects as go

__all__ = ["FigureWidget", "figure_esm"]

# the bundle's last export statement names its default export (the anywidget module): ``export{A as FigureModel,
# B as FigureView,C as default}`` in plotly 6 and 7 (minified names)
_EXPORT = re.compile(r"export\{([^{}]*?)\b([\w$]+) as default\b,?([^{}]*)\}")

# the wrapper: initialize() gets a model whose ``on`` records the handlers added while a view renders; the view's
# clean-up removes them (anywidget's model ``off(name, callback)``) before plotly's own (purging the div)
_WRAPPER = """
const __wbPlotlyWidget = (make) => () => {
  const inner = make();
  let model = null, adding = null;
  return {
    initialize(ctx) {
      model = ctx.model;
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
export default __wbPlotlyWidget(%s);
"""


@functools.cache
def figure_esm() -> str:
    """plotly's widget bundle with its default export wrapped (see the module docstring); the bundle unchanged when
    its export statement is not the expected one (a plotly release that changed it: tests/test_figure_widget.py
    says so)."""
    bundle = str(go.FigureWidget._esm)
    found = next(reversed(list(_EXPORT.finditer(bundle))), None)  # the last export statement
    if found is None:
        return bundle
    rest = ",".join(p.strip(",") for p in (found.group(1), found.group(3)) if p.strip(","))
    export = f"export{{{rest}}};" if rest else ""
    return bundle[:found.start()] + export + bundle[found.end():] + _WRAPPER % found.group(2)


class FigureWidget(go.FigureWidget):
    """``plotly.graph_objects.FigureWidget`` whose removed views stop listening to it (:func:`figure_esm`)."""

    @property
    def _esm(self) -> str:  # read by anywidget when the widget is made
        return figure_esm()
