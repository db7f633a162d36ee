"""Session: one model, the recipe of everything decided about it, undo/redo, caches keyed by digest.

The edited model is always derived from (original model, recipe): ``Session.model`` replays the
recipe's edits on the original (incrementally, from the nearest cached prefix) and caches each result
by digest, so undo/redo are cursor moves and each apply copies the model once. The user's model file is
never written; exports are atomic.

Threads: every read and change of the state holds the session's lock (a ``threading.RLock``), so a background job
reading ``session.model`` never sees half a change; ``busy`` says whether another thread holds it now. Change
events run after the lock is released, through the dispatcher the owner set (:meth:`Session.set_dispatcher`; the
dashboard delivers them on the kernel thread), else in the thread that made the change.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

# .edits (with onnx-graphsurgeon) is imported where an edit is described or diffed: inspect never loads it
from .errors import EditError, ModelError, RecipeError, WorkbenchError
from .fsio import atomic_write, cache_root
from .graph import (
    ModelSummary,
    layer_table,
    load_model,
    model_bytes,
    name_nodes,
    sample_path,
    save_model,
    sha256_bytes,
    sha256_file,
)
from .graph import summary as graph_summary
from .recipe import BuildSettings, CalibrationSettings, Edit, ModelRef, Quantize, Recipe
from .replay import apply
from .result import Result
from .table import Table

__all__ = ["EditPreview", "NodeChange", "Session", "default_cache_dir"]

Source = str | os.PathLike[str] | bytes | onnx.ModelProto
Callback = Callable[["Session"], Any]
Dispatcher = Callable[[Callable[[], None]], None]
_CACHE_LIMIT = 64
_EXTERNAL_SCAN_LIMIT = 64 << 20  # .onnx files up to this size are scanned for external data files


@dataclass(frozen=True)
class NodeChange(Result):
    """What the session's last step did to the graph: its ``action`` (``open``, ``apply``, ``undo``, ``redo``,
    ``goto``, ...), the ``edit`` it named, and the node names ``added``, ``removed`` and ``changed`` (same name,
    another op, inputs, outputs or attributes)."""

    action: str
    edit: str | None
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()


@dataclass(frozen=True)
class EditPreview(Result):
    """What an edit would change (:meth:`Session.preview`): its description, the node names ``added``, ``removed``
    and ``changed``, and the node count before and after."""

    edit: str
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    nodes_before: int
    nodes_after: int


def _node_diff(before: onnx.ModelProto,
               after: onnx.ModelProto) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(added, removed, changed) node names (:func:`workbench.edits.node_diff`); nothing when the model is the same."""
    if before is after:
        return (), (), ()
    from .edits import node_diff

    diff = node_diff(before, after)
    return tuple(diff["added"]), tuple(diff["removed"]), tuple(diff["changed"])


def default_cache_dir(model_sha256: str) -> Path:
    """``<cache root>/<sha256[:16]>`` (see :func:`workbench.fsio.cache_root`)."""
    return cache_root() / model_sha256[:16]


def _resolve_source(source: Source) -> tuple[Path | None, str]:
    """(path or None, sha256 of the bytes the model came from)."""
    if isinstance(source, onnx.ModelProto):
        return None, sha256_bytes(model_bytes(source))
    if isinstance(source, (bytes, bytearray, memoryview)):
        return None, sha256_bytes(bytes(source))
    path = Path(source)
    if not path.exists() and path.suffix == "" and os.sep not in str(source):
        path = sample_path(str(source))
    if not path.is_file():
        raise ModelError(f"model file not found: {path}", hint="check the path, or pass a sample model name")
    return path.resolve(), _file_sha(path)


def _file_sha(path: Path) -> str:
    """sha256 of the .onnx file, extended with its external data files (so new weights mean a new model)."""
    sha = sha256_file(path)
    if path.stat().st_size > _EXTERNAL_SCAN_LIMIT:  # weights inline: a file this big holds them itself
        return sha
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # unreadable: load_model reports it properly
        return sha
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    locations = sorted({e.value for t in _get_all_tensors(proto) if uses_external_data(t)
                        for e in t.external_data if e.key == "location"})
    if not locations:
        return sha
    parts = [sha] + [f"{loc}:{sha256_file(path.parent / loc) if (path.parent / loc).is_file() else 'missing'}"
                     for loc in locations]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


class Session:
    """A model and the recipe applied to it, with undo/redo and change events."""

    def __init__(self, source: Source, *, recipe: Recipe | None = None,
                 cache_dir: str | os.PathLike[str] | None = None) -> None:
        self.source_path, sha = _resolve_source(source)
        where = str(self.source_path) if self.source_path else "the given model"
        recipe = recipe if recipe is not None else Recipe()
        if recipe.model is not None and recipe.model.sha256 != sha:
            raise RecipeError(
                f"the recipe is pinned to model sha256 {recipe.model.sha256[:12]}… ({recipe.model.path or 'no path'}) "
                f"but {where} has sha256 {sha[:12]}…",
                hint="open the model the recipe was made for, or remove the recipe's \"model\" key to use it "
                "as a template on any model",
            )
        original = load_model(self.source_path if self.source_path else source, names=False)
        given = [n.name for n in original.graph.node]
        if recipe.model is not None and recipe.node_names:
            self._apply_names(original, recipe.node_names, where)
        name_nodes(original)
        names = {str(i): n.name for i, n in enumerate(original.graph.node) if n.name != given[i]}
        self.original: onnx.ModelProto = original
        self.sha256 = sha
        ref = ModelRef(path=str(self.source_path) if self.source_path else "", sha256=sha)
        recipe = recipe.replace(model=ref, node_names=names)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(sha)
        self._lock = threading.RLock()
        self._owner: threading.Thread | None = None  # the thread holding the lock (for ``busy``)
        self.dispatcher: Dispatcher | None = None
        self._models: OrderedDict[str, onnx.ModelProto] = OrderedDict()
        self._models[self._model_key(recipe.replace(edits=()))] = original
        self._callbacks: list[Callback] = []
        self._history: list[Recipe] = [recipe.replace(edits=())]
        self._cursor = 0
        self.last_change = NodeChange("open", None)
        if recipe.edits:
            for k, edit in enumerate(recipe.edits):
                try:
                    self._model_for(recipe.replace(edits=recipe.edits[: k + 1]))
                except WorkbenchError as exc:
                    raise RecipeError(f"replaying the recipe on {where} failed at edit {k + 1} of "
                                      f"{len(recipe.edits)} ({edit.kind}): {exc.message}", hint=exc.hint) from exc
            self._history = [recipe.replace(edits=recipe.edits[:k]) for k in range(len(recipe.edits) + 1)]
            self._cursor = len(recipe.edits)

    # --- opening -----------------------------------------------------------------------------------

    @classmethod
    def load(cls, recipe_path: str | os.PathLike[str], *, model: Source | None = None,
             cache_dir: str | os.PathLike[str] | None = None) -> Session:
        """Open the model a saved recipe is pinned to (or ``model`` for a template) and replay the recipe.

        A ``<recipe stem>.cache`` folder beside the recipe (written by :meth:`save`) is the default cache dir.
        """
        recipe_path = Path(recipe_path)
        try:
            text = recipe_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise RecipeError(f"cannot read recipe {recipe_path}: {exc}", hint="check the path") from exc
        recipe = Recipe.from_json(text, where=str(recipe_path))
        if model is None:
            if recipe.model is None:
                raise RecipeError(f"{recipe_path} is a template (it names no model)",
                                  hint="pass the model: Session.load(recipe, model='model.onnx') or "
                                  "`workbench edit MODEL RECIPE -o OUT`")
            model = _find_model(recipe.model, recipe_path)
        beside = recipe_path.with_suffix(".cache")
        if cache_dir is None and beside.is_dir():
            cache_dir = beside
        return cls(model, recipe=recipe, cache_dir=cache_dir)

    @staticmethod
    def _apply_names(model: onnx.ModelProto, names: dict[str, str], where: str) -> None:
        nodes = model.graph.node
        for key, name in names.items():
            if not key.isdigit() or int(key) >= len(nodes):
                raise RecipeError(f"recipe node_names: index {key!r} is not a node index of {where} "
                                  f"({len(nodes)} nodes)", hint="the recipe was made for another model; "
                                  "remove node_names or use the matching model")
            nodes[int(key)].name = name
        seen: set[str] = set()
        for n in nodes:
            if n.name and n.name in seen:
                raise RecipeError(f"recipe node_names: the name '{n.name}' is used twice in {where}",
                                  hint="give each index in node_names a unique name")
            seen.add(n.name)

    # --- state -------------------------------------------------------------------------------------

    @property
    def recipe(self) -> Recipe:
        """The current recipe (the edits and settings applied to the original model)."""
        with self._lock:
            return self._history[self._cursor]

    @property
    def model(self) -> onnx.ModelProto:
        """The edited model for the current recipe (shared and cached: never mutate it)."""
        with self._locked():
            return self._model_for(self._history[self._cursor])

    @property
    def model_file(self) -> Path | None:
        """The model file, when the current model is what it holds (no edit changed the model, no node was named on
        loading): ONNX Runtime can read it instead of the model serialised again. None otherwise."""
        with self._locked():
            same = self._model_for(self._history[self._cursor]) is self.original
            return self.source_path if same and not self.recipe.node_names else None

    @property
    def digest(self) -> str:
        """The current recipe's digest (names its cached models and engines)."""
        return self.recipe.digest()

    @property
    def history(self) -> list[Recipe]:
        """Every recipe value reachable by undo/redo, oldest first (``position`` is the current one)."""
        with self._lock:
            return list(self._history)

    @property
    def position(self) -> int:
        """The current step's index in :attr:`history` (0: the original model)."""
        return self._cursor

    @property
    def can_undo(self) -> bool:
        """True when there is a step to undo."""
        return self._cursor > 0

    @property
    def can_redo(self) -> bool:
        """True when an undone step can be redone."""
        with self._lock:
            return self._cursor < len(self._history) - 1

    @property
    def busy(self) -> bool:
        """True while another thread reads or changes the session (e.g. replays the recipe for a background job)."""
        owner = self._owner
        return owner is not None and owner is not threading.current_thread()

    def layer_table(self) -> Table:
        """The current model's per-node table (op, shapes, parameters, FLOPs)."""
        return layer_table(self.model)

    def summary(self) -> ModelSummary:
        """The current model's summary (inputs, outputs, op counts, parameters, FLOPs; ``to_dict()`` for JSON)."""
        return graph_summary(self.model)

    def on_change(self, callback: Callback) -> Callable[[], None]:
        """Call ``callback(session)`` after every change; returns a function that unsubscribes it."""
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback) if callback in self._callbacks else None

    def set_dispatcher(self, dispatcher: Dispatcher | None) -> None:
        """Deliver change events through ``dispatcher(run)`` (e.g. posting ``run`` to the kernel thread); None: call
        them in the thread that made the change."""
        self.dispatcher = dispatcher

    def fork(self) -> Session:
        """A private copy at the current step: the same model, recipe and cache folder (and the models replayed so
        far), no history and no subscribers. A background job changes the copy; the kernel thread then adopts what
        it wants of the copy's recipe (:meth:`set_recipe`, :meth:`set_calibration`) as one undoable step."""
        with self._locked():
            twin = copy.copy(self)
            twin._lock, twin._owner, twin.dispatcher, twin._callbacks = threading.RLock(), None, None, []
            twin._models = OrderedDict(self._models)
            twin._history, twin._cursor = [self.recipe], 0
        return twin

    def adopt(self, twin: Session) -> onnx.ModelProto:
        """Take a :meth:`fork`'s recipe as one undoable step (:meth:`set_recipe`), reusing the models the fork
        replayed instead of replaying them again."""
        if twin.sha256 != self.sha256:
            raise RecipeError("the forked session is of another model (sha256 mismatch)",
                              hint="adopt only a fork of this session")
        with twin._locked():
            recipe, models = twin.recipe, list(twin._models.items())
        with self._locked():
            for key, model in models:
                if key not in self._models:
                    self._remember(key, model)
        return self.set_recipe(recipe)

    # --- changing ----------------------------------------------------------------------------------

    def apply(self, edit: Edit) -> onnx.ModelProto:
        """Apply ``edit``; on a WorkbenchError nothing changes (the last good state is kept)."""
        from .edits import describe

        if not isinstance(edit, Edit):
            raise TypeError(f"apply() takes a recipe Edit, got {type(edit).__name__}")
        with self._locked():
            before = self.model
            new = self.recipe.with_edit(edit)
            after = self._model_for(new)
            self._push(new, "apply", describe(edit), before, after)
        self._fire()
        return after

    def apply_all(self, edits: list[Edit] | tuple[Edit, ...]) -> onnx.ModelProto:
        """Apply several edits as one step (one undo); if any fails, none is applied."""
        from .edits import describe

        edits = tuple(edits)
        if not edits:
            raise EditError("no edits to apply", hint="select nodes or pick a whole-graph action first")
        if len(edits) == 1:
            return self.apply(edits[0])
        with self._locked():
            before = self.model
            new = self.recipe.replace(edits=self.recipe.edits + edits)
            after = self._model_for(new)
            self._push(new, "apply", "; ".join(describe(e) for e in edits), before, after)
        self._fire()
        return after

    def preview(self, edit: Edit | list[Edit] | tuple[Edit, ...]) -> EditPreview:
        """What ``edit`` (or a list of edits) would change: node names added/removed/changed; nothing applied.

        The previewed model is cached, so applying the same edit next costs nothing.
        """
        from .edits import describe

        edits = tuple(edit) if isinstance(edit, (list, tuple)) else (edit,)
        with self._locked():
            before = self.model
            after = self._model_for(self.recipe.replace(edits=self.recipe.edits + edits))
        return EditPreview("; ".join(describe(e) for e in edits), *_node_diff(before, after),
                           nodes_before=len(before.graph.node), nodes_after=len(after.graph.node))

    def load_recipe(self, recipe_path: str | os.PathLike[str]) -> onnx.ModelProto:
        """Read a recipe file (pinned to this model, or a template) and make it the current recipe (undoable)."""
        path = Path(recipe_path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise RecipeError(f"cannot read recipe {path}: {exc}", hint="check the path") from exc
        return self.set_recipe(Recipe.from_json(text, where=str(path)))

    def undo(self) -> None:
        """Go back one step (the previous recipe); EditError at the original model."""
        from .edits import describe

        with self._locked():
            if not self.can_undo:
                raise EditError("nothing to undo", hint="the session is at the original model")
            before = self.model
            label = describe(self.recipe.edits[-1]) if self.recipe.edits else "settings"
            self._cursor -= 1
            self._changed("undo", label, before, self.model)
        self._fire()

    def redo(self) -> None:
        """Go forward one undone step; EditError when nothing was undone."""
        from .edits import describe

        with self._locked():
            if not self.can_redo:
                raise EditError("nothing to redo", hint="redo follows an undo; a new edit clears the redo list")
            before = self.model
            self._cursor += 1
            label = describe(self.recipe.edits[-1]) if self.recipe.edits else "settings"
            self._changed("redo", label, before, self.model)
        self._fire()

    def goto(self, position: int) -> None:
        """Jump to a point in the history (0 = the original model), like several undos or redos at once."""
        from .edits import describe

        with self._locked():
            if not 0 <= position < len(self._history):
                raise EditError(f"no history step {position}", hint=f"steps go from 0 to {len(self._history) - 1}")
            if position == self._cursor:
                return
            before = self.model
            action = "undo" if position < self._cursor else "redo"
            self._cursor = position
            label = describe(self.recipe.edits[-1]) if self.recipe.edits else "original model"
            self._changed(action, label, before, self.model)
        self._fire()

    def set_calibration(self, settings: CalibrationSettings | None) -> None:
        """Record calibration settings in the recipe (undoable)."""
        self._set_settings("calibration", settings, CalibrationSettings)

    def set_build(self, settings: BuildSettings | None) -> None:
        """Record engine build settings in the recipe (undoable)."""
        self._set_settings("build", settings, BuildSettings)

    def _set_settings(self, key: str, settings: object, kind: type) -> None:
        """Record ``settings`` (a ``kind`` or None) as the recipe's ``key`` field: one undoable ``set_<key>`` step."""
        if settings is not None and not isinstance(settings, kind):
            raise TypeError(f"set_{key}() takes {kind.__name__}")
        with self._locked():
            model = self.model
            self._push(self.recipe.replace(**{key: settings}), f"set_{key}", key, model, model)
        self._fire()

    def set_recipe(self, recipe: Recipe) -> onnx.ModelProto:
        """Replace the whole recipe (e.g. a loaded template), as one undoable step."""
        if recipe.model is not None and recipe.model.sha256 != self.sha256:
            raise RecipeError("the recipe is pinned to another model (sha256 mismatch)",
                              hint="remove its \"model\" key to use it as a template")
        with self._locked():
            before = self.model
            new = recipe.replace(model=self.recipe.model, node_names=self.recipe.node_names)
            try:
                after = self._model_for(new)
            except WorkbenchError as exc:
                raise RecipeError(f"the recipe does not apply to this model: {exc.message}", hint=exc.hint) from exc
            self._push(new, "set_recipe", f"{len(new.edits)} edits", before, after)
        self._fire()
        return after

    # --- writing -----------------------------------------------------------------------------------

    def save(self, recipe_path: str | os.PathLike[str]) -> Path:
        """Write the recipe as canonical JSON (atomically); the model path is stored relative to it."""
        recipe_path = Path(recipe_path)
        with self._locked():
            recipe = self.recipe
            self._copy_scales(recipe, recipe_path.with_suffix(".cache"))
        if recipe.model is not None and recipe.model.path:
            try:
                rel = os.path.relpath(recipe.model.path, recipe_path.resolve().parent)
            except ValueError:  # another drive on Windows
                rel = recipe.model.path
            if Path(rel).parts[:2] == ("..", ".."):  # far away: an absolute path reads better
                rel = recipe.model.path
            recipe = recipe.replace(model=ModelRef(path=Path(rel).as_posix(), sha256=recipe.model.sha256))
        return atomic_write(recipe_path, recipe.to_json())

    def export(self, onnx_path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the edited model atomically; the source model is refused unless ``overwrite=True``."""
        return save_model(self.model, onnx_path, protect=None if overwrite else self.source_path)

    # --- internals ---------------------------------------------------------------------------------

    def _copy_scales(self, recipe: Recipe, target: Path) -> None:
        """Copy scale caches referenced by ``recipe``'s Quantize edits next to a saved recipe."""
        digests = [e.scales for e in recipe.edits if isinstance(e, Quantize) and e.scales]
        for d in digests:
            src = self.cache_dir / "scales" / f"{d}.json"
            dst = target / "scales" / f"{d}.json"
            if src.is_file() and src.resolve() != dst.resolve():
                atomic_write(dst, src.read_bytes())

    def _model_key(self, recipe: Recipe) -> str:
        data = {"sha256": self.sha256 if hasattr(self, "sha256") else "", "node_names": recipe.node_names,
                "edits": [e.to_dict() for e in recipe.edits]}
        return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def _model_for(self, recipe: Recipe) -> onnx.ModelProto:
        key = self._model_key(recipe)
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key]
        edits = recipe.edits
        start, model = 0, self.original
        for k in range(len(edits) - 1, -1, -1):
            prefix_key = self._model_key(recipe.replace(edits=edits[:k]))
            if prefix_key in self._models:
                start, model = k, self._models[prefix_key]
                break
        for k in range(start, len(edits)):
            model = apply(model, edits[k], cache_dir=self.cache_dir)
            self._remember(self._model_key(recipe.replace(edits=edits[: k + 1])), model)
        return model

    def _remember(self, key: str, model: onnx.ModelProto) -> None:
        self._models[key] = model
        self._models.move_to_end(key)
        first = next(iter(self._models))
        while len(self._models) > _CACHE_LIMIT:
            victim = next(k for k in self._models if k != first)
            del self._models[victim]

    def _push(self, recipe: Recipe, action: str, label: str, before: onnx.ModelProto,
              after: onnx.ModelProto) -> None:
        del self._history[self._cursor + 1:]
        self._history.append(recipe)
        self._cursor += 1
        self._changed(action, label, before, after)

    def _changed(self, action: str, label: str, before: onnx.ModelProto, after: onnx.ModelProto) -> None:
        self.last_change = NodeChange(action, label, *_node_diff(before, after))

    def _fire(self) -> None:
        """Tell the subscribers about a change (after the lock is released), through the dispatcher if one is set."""
        callbacks = list(self._callbacks)

        def run() -> None:
            for callback in callbacks:
                callback(self)

        if self.dispatcher is not None:
            self.dispatcher(run)
        else:
            run()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the session's lock, recording the holder for :attr:`busy`."""
        with self._lock:
            outer, self._owner = self._owner, threading.current_thread()
            try:
                yield
            finally:
                self._owner = outer

    def __repr__(self) -> str:
        where = self.source_path.name if self.source_path else "<model>"
        return (f"Session({where}, {len(self.recipe.edits)} edits, {len(self.model.graph.node)} nodes, "
                f"undo={self.can_undo}, redo={self.can_redo})")


def _find_model(ref: ModelRef, recipe_path: Path) -> Path:
    path = Path(ref.path)
    candidates = [path] if path.is_absolute() else [recipe_path.resolve().parent / path, Path.cwd() / path]
    for c in candidates:
        if c.is_file():
            return c
    raise RecipeError(
        f"{recipe_path}: the model it was made for ({ref.path or 'no path recorded'}) is not found",
        hint="pass the model explicitly: Session.load(recipe, model=PATH) or `workbench edit MODEL RECIPE -o OUT`",
    )
