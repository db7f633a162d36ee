"""workbench edit MODEL RECIPE -o OUT: replay a recipe's edits on a model (byte-identical to the Session)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..workflows.model import EditResult

COMMAND = "edit"
HELP = "apply a recipe (or a template recipe) to a model and write the edited model"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command's arguments."""
    p.add_argument("model", help="an .onnx file or a sample model name")
    p.add_argument("recipe", help="a recipe .json saved by the workbench (a template without 'model' fits any "
                   "model), or argument-free edit kinds separated by commas, e.g. fold_constants,fuse_batchnorm")
    p.add_argument("-o", "--output", required=True, help="where to write the edited .onnx (never the input model)")


def run(args: argparse.Namespace) -> EditResult:
    """Replay the recipe and write the model."""
    from ..workflows.model import edit

    return edit(args.model, args.recipe, args.output)


def render(r: EditResult) -> str:
    """The result for people (``--json`` prints ``r.to_dict()``)."""
    lines = [f"applied {r.edits} edits: {r.nodes_before} -> {r.nodes_after} nodes"]
    lines += [f"  {i + 1}. {d}" for i, d in enumerate(r.applied)]
    lines.append(f"wrote {r.output}")
    return "\n".join(lines)
