"""workbench edit MODEL RECIPE -o OUT: replay a recipe's edits on a model (byte-identical to the Session)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from ..edits import describe
from ..errors import RecipeError
from ..recipe import EDIT_KINDS, Recipe, edit_from_dict
from ..session import Session

COMMAND = "edit"
BARE_KINDS = tuple(k for k, cls in EDIT_KINDS.items() if not dataclasses.fields(cls))
HELP = "apply a recipe (or a template recipe) to a model and write the edited model"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="an .onnx file or a sample model name")
    p.add_argument("recipe", help="a recipe .json saved by the workbench (a template without 'model' fits any "
                   "model), or argument-free edit kinds separated by commas, e.g. fold_constants,fuse_batchnorm")
    p.add_argument("-o", "--output", required=True, help="where to write the edited .onnx (never the input model)")


def _inline(text: str) -> Recipe | None:
    """``fold_constants,fuse_batchnorm`` -> a template recipe, when every part is an argument-free edit kind."""
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    if not kinds or any(k not in BARE_KINDS for k in kinds):
        return None
    return Recipe(edits=tuple(edit_from_dict({"kind": k}) for k in kinds))


def run(args: argparse.Namespace) -> dict[str, Any]:
    path = Path(args.recipe)
    inline = None if path.exists() else _inline(args.recipe)
    if inline is not None:
        session = Session(args.model, recipe=inline)
        return _result(session, session.export(args.output))
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc}",
                          hint=f"give a recipe .json, or edit kinds that need no arguments separated by commas: "
                          f"{', '.join(BARE_KINDS)}") from exc
    recipe = Recipe.from_json(text, where=str(path))
    cache = path.with_suffix(".cache")
    session = Session(args.model, recipe=recipe, cache_dir=cache if cache.is_dir() else None)
    return _result(session, session.export(args.output))


def _result(session: Session, out: Path) -> dict[str, Any]:
    return {
        "output": str(out),
        "edits": len(session.recipe.edits),
        "nodes_before": len(session.original.graph.node),
        "nodes_after": len(session.model.graph.node),
        "applied": [describe(e) for e in session.recipe.edits],
        "digest": session.digest,
    }


def render(r: dict[str, Any]) -> str:
    lines = [f"applied {r['edits']} edits: {r['nodes_before']} -> {r['nodes_after']} nodes"]
    lines += [f"  {i + 1}. {d}" for i, d in enumerate(r["applied"])]
    lines.append(f"wrote {r['output']}")
    return "\n".join(lines)
