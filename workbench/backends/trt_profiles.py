"""Optimisation profiles for TensorRT: the ``--shapes`` SPEC, validation against the model, derived defaults.

SPEC is ``name:1x3x224x224`` (fixed) or ``name:1x3x32x32,1x3x640x640,1x3x1280x1280`` (min,opt,max); several
inputs are separated by spaces or ``;``. Dynamic dims the user did not cover get derived defaults, each with
an explanation, so every build has a complete, valid profile.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import onnx

from ..errors import DataError
from ..graph import TensorInfo, tensor_infos
from ..recipe import ShapeProfile
from ..specs import format_dims, parse_specs

__all__ = [
    "ResolvedProfiles",
    "model_inputs",
    "dynamic_inputs",
    "parse_shapes",
    "validate_profile",
    "derive_profile",
    "resolve_profiles",
    "format_spec",
    "example_spec",
]

@dataclass(frozen=True)
class ResolvedProfiles:
    """The profiles a build uses: given ones (validated) plus derived defaults, and why."""

    profiles: tuple[ShapeProfile, ...]
    derived: tuple[str, ...]  # input names whose profile was derived
    notes: tuple[str, ...]  # one explanation per derived profile

    def spec(self) -> str:
        """The profiles as one SPEC string."""
        return " ".join(format_spec(p) for p in self.profiles)


def model_inputs(model: onnx.ModelProto) -> dict[str, TensorInfo]:
    """The model's real inputs (not initializers), in graph order."""
    inits = {i.name for i in model.graph.initializer}
    infos = tensor_infos(model)
    return {i.name: infos[i.name] for i in model.graph.input if i.name not in inits}


def _is_dynamic(d: object) -> bool:
    return not (isinstance(d, int) and d > 0)


def dynamic_inputs(model: onnx.ModelProto) -> dict[str, TensorInfo]:
    """Inputs with at least one dim that is not a fixed positive integer."""
    return {n: i for n, i in model_inputs(model).items() if i.shape is not None and any(map(_is_dynamic, i.shape))}


def parse_shapes(spec: str | Sequence[str] | None, model: onnx.ModelProto) -> tuple[ShapeProfile, ...]:
    """Parse a SPEC (string or list of strings; the grammar of :mod:`workbench.specs`) and validate it against
    ``model``'s inputs."""
    inputs = model_inputs(model)
    out: list[ShapeProfile] = []
    for item in parse_specs(spec):
        where = f"--shapes {item.name}:{','.join(format_dims(s) for s in item.shapes)}"
        if item.name not in inputs:
            raise DataError(f"{where}: the model has no input '{item.name}'", hint=f"the inputs are {list(inputs)}")
        shapes = [tuple(int(d) for d in s if isinstance(d, int)) for s in item.shapes]  # whole numbers only here
        lo, mid, hi = shapes * 3 if len(shapes) == 1 else shapes
        out.append(validate_profile(ShapeProfile(item.name, lo, mid, hi), inputs[item.name]))
    return tuple(out)


def validate_profile(p: ShapeProfile, info: TensorInfo) -> ShapeProfile:
    """Check a profile against the input's declared shape: rank, static dims, min <= opt <= max, dims >= 1."""
    where = f"shape profile for input '{p.input}'"
    ranks = {len(p.min), len(p.opt), len(p.max)}
    if len(ranks) != 1:
        raise DataError(f"{where}: min/opt/max have different ranks {sorted(ranks)}",
                        hint="give the same number of dims for min, opt and max")
    if info.shape is not None and len(p.min) != len(info.shape):
        raise DataError(f"{where}: rank {len(p.min)} does not match the model's rank {len(info.shape)} "
                        f"(declared shape {_show(info.shape)})", hint=f"give {len(info.shape)} dims, e.g. "
                        f"{format_spec(derive_profile(info)[0])}")
    for i, (lo, mid, hi) in enumerate(zip(p.min, p.opt, p.max)):
        if lo < 1:
            raise DataError(f"{where}: dim {i} is {lo}; dims must be >= 1", hint="use positive dims")
        if not lo <= mid <= hi:
            raise DataError(f"{where}: dim {i} has min {lo}, opt {mid}, max {hi}; it needs min <= opt <= max",
                            hint="order the shapes as min,opt,max")
        if info.shape is not None and not _is_dynamic(info.shape[i]) and {lo, mid, hi} != {info.shape[i]}:
            raise DataError(f"{where}: dim {i} is fixed to {info.shape[i]} in the model "
                            f"(declared shape {_show(info.shape)}), the spec says {lo},{mid},{hi}",
                            hint=f"use {info.shape[i]} for dim {i}, or make it dynamic first (set_shapes edit)")
    return p


def _show(shape: Sequence[object]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def derive_profile(info: TensorInfo) -> tuple[ShapeProfile, str]:
    """A default profile for one input and the sentence that explains it.

    Batch (dim 0): 1..8, optimised for 1. Spatial dims of 4-D/5-D inputs: 32..1024, opt 256.
    Any other dynamic dim (e.g. a sequence length): 1..512, opt 128.
    """
    if info.shape is None:
        raise DataError(f"input '{info.name}' has no declared shape, so no profile can be derived",
                        hint=f"give it with --shapes {info.name}:DIMS (min,opt,max)")
    dims: list[tuple[int, int, int]] = []
    why: list[str] = []
    rank = len(info.shape)
    for i, d in enumerate(info.shape):
        label = d if isinstance(d, str) and d else f"dim {i}"
        if not _is_dynamic(d):
            dims.append((int(d), int(d), int(d)))  # type: ignore[arg-type]
        elif i == 0:
            dims.append((1, 1, 8))
            why.append(f"{label}: 1..8, opt 1 (batch)")
        elif rank >= 4 and i >= 2:
            dims.append((32, 256, 1024))
            why.append(f"{label}: 32..1024, opt 256 (spatial)")
        else:
            dims.append((1, 128, 512))
            why.append(f"{label}: 1..512, opt 128")
    lo, mid, hi = (tuple(d[k] for d in dims) for k in range(3))
    p = ShapeProfile(info.name, lo, mid, hi)
    note = (f"input '{info.name}' {_show(info.shape)} has dynamic dims and no profile; derived defaults: "
            f"{'; '.join(why)}. Choose your own with --shapes {format_spec(p)}")
    return p, note


def resolve_profiles(model: onnx.ModelProto, given: Iterable[ShapeProfile] = ()) -> ResolvedProfiles:
    """Validate ``given`` profiles and derive defaults for dynamic inputs they leave out."""
    inputs = model_inputs(model)
    chosen: dict[str, ShapeProfile] = {}
    for p in given:
        if p.input not in inputs:
            raise DataError(f"shape profile for '{p.input}': the model has no such input",
                            hint=f"the inputs are {list(inputs)}")
        chosen[p.input] = validate_profile(p, inputs[p.input])
    derived, notes = [], []
    dyn = dynamic_inputs(model)
    for name, info in dyn.items():
        if name not in chosen:
            chosen[name], note = derive_profile(info)
            derived.append(name)
            notes.append(note)
    # TensorRT needs every input in a profile once any profile exists: add fixed ones as fixed.
    if chosen:
        for name, info in inputs.items():
            if name not in chosen and info.shape is not None:
                fixed = tuple(int(d) for d in info.shape)  # type: ignore[arg-type]
                chosen[name] = ShapeProfile(name, fixed, fixed, fixed)
    ordered = tuple(chosen[n] for n in inputs if n in chosen)
    return ResolvedProfiles(ordered, tuple(derived), tuple(notes))


def format_spec(p: ShapeProfile) -> str:
    """``name:MIN,OPT,MAX`` (or ``name:SHAPE`` when all three agree)."""
    def j(s: Sequence[int]) -> str:
        return "x".join(map(str, s))

    if p.min == p.opt == p.max:
        return f"{p.input}:{j(p.min)}"
    return f"{p.input}:{j(p.min)},{j(p.opt)},{j(p.max)}"


def example_spec(model: onnx.ModelProto) -> str:
    """A --shapes example derived from the model's dynamic inputs ('' when every input is fixed)."""
    return " ".join(format_spec(derive_profile(i)[0]) for i in dynamic_inputs(model).values())


def profiles_to_json(profiles: Iterable[ShapeProfile]) -> list[dict[str, object]]:
    """Profiles as JSON objects {input, min, opt, max}."""
    return [{"input": p.input, "min": list(p.min), "opt": list(p.opt), "max": list(p.max)} for p in profiles]


def profiles_from_json(items: Iterable[Mapping[str, object]]) -> tuple[ShapeProfile, ...]:
    """The inverse of :func:`profiles_to_json`."""
    return tuple(ShapeProfile(str(d["input"]), tuple(d["min"]), tuple(d["opt"]), tuple(d["max"]))  # type: ignore[arg-type]
                 for d in items)


__all__ += ["profiles_to_json", "profiles_from_json"]
