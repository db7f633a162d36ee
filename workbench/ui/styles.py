"""The dashboard's one stylesheet: nothing it shows is cut off on a narrow page.

ipywidgets gives buttons, checkboxes, description labels and tab titles fixed widths and cuts what does not fit
with an ellipsis ("workspac…", "Export…", "build in this process (a crash kills the ker…"), and its rows of controls
never wrap, so on a 1024 px laptop with JupyterLab's file browser open they squeeze their children instead.
Scoped to ``.wb-dashboard`` (and the report's graphs are not touched); the dashboard shows it as a ``<style>``.
Checked in the browser by tests/test_layout_browser.py at 1024 and 800 px.
"""

from __future__ import annotations

__all__ = ["DASHBOARD_CSS", "style_tag"]

DASHBOARD_CSS = """
/* rows of controls wrap onto the next line instead of squeezing their children */
.wb-dashboard .widget-hbox { flex-wrap: wrap; row-gap: 2px; }
/* a button is as wide as its label (a width set in Python is the least it gets) */
.wb-dashboard .jupyter-button { min-width: max-content !important; flex-shrink: 0; }
/* a checkbox's text wraps in its box, which grows to hold it */
.wb-dashboard .widget-checkbox { height: auto !important; min-height: var(--jp-widgets-inline-height); max-width: 100%; }
.wb-dashboard .widget-checkbox .widget-label-basic,
.wb-dashboard .widget-checkbox label { white-space: normal; overflow: visible; text-overflow: clip; height: auto; }
/* description labels ("workspace", "iterations") show whole */
.wb-dashboard .widget-inline-hbox > .widget-label { min-width: max-content !important; }
/* tab titles show whole; the tab bar wraps when they do not fit */
.wb-dashboard .widget-tab > .lm-TabBar .lm-TabBar-content { flex-wrap: wrap; }
.wb-dashboard .widget-tab > .lm-TabBar .lm-TabBar-tab { flex: 0 0 auto !important; min-width: max-content !important; }
.wb-dashboard .widget-tab > .lm-TabBar { overflow: visible; min-height: max-content; }
"""


def style_tag() -> str:
    """The stylesheet as HTML (the value of the dashboard's style widget)."""
    return f"<style>{DASHBOARD_CSS}</style>"
