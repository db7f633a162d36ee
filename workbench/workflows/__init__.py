"""The façade: every user action, for the CLI, the tabs and notebooks alike.

One module per family of actions, each a function ``action(session, ..., progress=None, cancel=None)`` returning a
frozen result dataclass (:class:`~workbench.workflows.base.Result`, with ``to_dict()`` for JSON). ``ui`` and
``cli`` reach the core only through this package, :mod:`workbench.session`, :mod:`workbench.plots`,
:mod:`workbench.errors` and plain types (the recipe, tables); an import-linter contract checks it.

Modules are imported on first use, so ``workbench --help`` stays fast.
"""

from __future__ import annotations

from .base import Cancel, Progress, Result, report

__all__ = ["Cancel", "Progress", "Result", "report"]
