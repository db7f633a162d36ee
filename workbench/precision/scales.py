"""Calibration results: per-tensor :class:`TensorStats` in a :class:`ScaleCache` (JSON, editable by hand)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CalibrationError
from ..fsio import atomic_write

__all__ = ["TensorStats", "ScaleCache", "latest_scales"]


@dataclass
class TensorStats:
    """Calibration statistics of one tensor: range, the threshold each method chose, a histogram summary."""

    amax: float
    min: float = 0.0
    max: float = 0.0
    thresholds: dict[str, float] = field(default_factory=dict)
    hist: list[int] = field(default_factory=list)
    hist_max: float = 0.0
    override: float | None = None
    clipped: dict[str, float] = field(default_factory=dict)  # {method: share of values its threshold clips}

    def to_dict(self) -> dict[str, Any]:
        """JSON types, as the scale cache file stores them."""
        out: dict[str, Any] = {"amax": self.amax, "min": self.min, "max": self.max, "thresholds": dict(self.thresholds),
               "hist": list(self.hist), "hist_max": self.hist_max, "override": self.override}
        if self.clipped:  # written only when measured: older caches keep their digest
            out["clipped"] = dict(self.clipped)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorStats:
        """The statistics from :meth:`to_dict`'s form."""
        return cls(amax=float(d["amax"]), min=float(d.get("min", 0.0)), max=float(d.get("max", 0.0)),
                   thresholds={k: float(v) for k, v in dict(d.get("thresholds") or {}).items()},
                   hist=[int(c) for c in d.get("hist") or []], hist_max=float(d.get("hist_max", 0.0)),
                   override=None if d.get("override") is None else float(d["override"]),
                   clipped={k: float(v) for k, v in dict(d.get("clipped") or {}).items()})

    @property
    def value(self) -> float:
        """The amax used for the scale: the hand override when set, else the method's."""
        return self.amax if self.override is None else self.override


@dataclass
class ScaleCache:
    """Per-tensor calibration results, keyed by model digest + data digest + method; JSON, editable by hand.

    Saved as ``<dir>/scales/<digest>.json`` where ``digest`` is the sha256 of the canonical JSON. To change a
    scale by hand, set ``"override"`` of a tensor (an amax, in the tensor's units) and save again.
    """

    tensors: dict[str, TensorStats]
    method: str = "entropy"
    model_digest: str = ""
    data_digest: str = ""
    samples: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def amax(self) -> dict[str, float]:
        """``{tensor: amax}`` (a hand override where there is one)."""
        return {k: v.value for k, v in self.tensors.items()}

    @property
    def key(self) -> str:
        """What a cached result is looked up by: model + data + method and its settings."""
        text = json.dumps([self.model_digest, self.data_digest, self.method, self.settings], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def with_method(self, method: str) -> ScaleCache:
        """The same statistics with each tensor's amax taken from another method's threshold."""
        tensors = {}
        for k, v in self.tensors.items():
            if method not in v.thresholds:
                raise CalibrationError(f"the scale cache has no '{method}' threshold for tensor '{k}'",
                                       hint=f"calibrate again with method='{method}'")
            tensors[k] = TensorStats(**{**v.__dict__, "amax": v.thresholds[method], "override": None})
        return ScaleCache(tensors, method, self.model_digest, self.data_digest, self.samples,
                          dict(self.settings), list(self.warnings), self.seconds)

    def with_methods(self, methods: Mapping[str, str]) -> ScaleCache:
        """The same cache with the tensors in ``methods`` ({tensor: method}) taking that method's threshold; the
        others, and hand overrides (which win over any method), stay as they are."""
        tensors = dict(self.tensors)
        for k, method in methods.items():
            if k not in tensors:
                raise CalibrationError(f"a per-tensor method names tensor '{k}', which the scale cache has not "
                                       f"calibrated", hint="pick tensors from the calibrated ones, or calibrate again")
            v = tensors[k]
            if method not in v.thresholds:
                raise CalibrationError(f"the scale cache has no '{method}' threshold for tensor '{k}'",
                                       hint=f"methods it has: {sorted(v.thresholds)}; calibrate again otherwise")
            tensors[k] = TensorStats(**{**v.__dict__, "amax": v.thresholds[method]})
        return ScaleCache(tensors, self.method, self.model_digest, self.data_digest, self.samples,
                          dict(self.settings), list(self.warnings), self.seconds)

    def to_dict(self) -> dict[str, Any]:
        """JSON types, as the scale cache file stores them."""
        return {"schema_version": 1, "kind": "scale_cache", "method": self.method,
                "model_digest": self.model_digest, "data_digest": self.data_digest, "samples": self.samples,
                "settings": dict(self.settings), "warnings": list(self.warnings), "seconds": self.seconds,
                "tensors": {k: v.to_dict() for k, v in sorted(self.tensors.items())}}

    def to_json(self) -> str:
        """The scale cache file's text."""
        return json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n"

    def digest(self) -> str:
        """sha256 of the canonical JSON without the calibration time (equal statistics: equal digests)."""
        d = self.to_dict()
        d.pop("seconds")
        return hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def save(self, directory: str | os.PathLike[str]) -> str:
        """Write ``<directory>/scales/<digest>.json`` atomically; return the digest."""
        digest = self.digest()
        atomic_write(Path(directory) / "scales" / f"{digest}.json", self.to_json())
        return digest

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, where: str = "scale cache") -> ScaleCache:
        """The cache from :meth:`to_dict`'s form; a malformed one is a :class:`CalibrationError` naming ``where``."""
        try:
            tensors = {str(k): TensorStats.from_dict(v) for k, v in dict(d["tensors"]).items()}
            return cls(tensors=tensors, method=str(d.get("method", "")), model_digest=str(d.get("model_digest", "")),
                       data_digest=str(d.get("data_digest", "")), samples=int(d.get("samples", 0)),
                       settings=dict(d.get("settings") or {}), warnings=list(d.get("warnings") or []),
                       seconds=float(d.get("seconds", 0.0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"{where} is not a scale cache ({type(exc).__name__}: {exc})",
                                   hint="each tensor needs at least an 'amax' number; recalibrate to rewrite it") from exc

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ScaleCache:
        """Read a scale cache file; a missing or malformed one is a :class:`CalibrationError`."""
        path = Path(path)
        if not path.is_file():
            raise CalibrationError(f"scale cache not found: {path}",
                                   hint="calibrate again (workbench quantize ... or the Calibrate tab)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CalibrationError(f"cannot read the scale cache {path}: {exc}",
                                   hint="fix the JSON by hand or calibrate again") from exc
        return cls.from_dict(data, where=str(path))


def latest_scales(cache_dir: str | os.PathLike[str], model_digest: str | None = None) -> tuple[str, ScaleCache] | None:
    """The newest scale cache in ``<cache_dir>/scales`` (for ``model_digest`` when given): (digest, cache)."""
    folder = Path(cache_dir) / "scales"
    if not folder.is_dir():
        return None
    for path in sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime_ns, reverse=True):
        if path.name == "index.json":
            continue
        try:
            cache = ScaleCache.load(path)
        except CalibrationError:
            continue
        if model_digest is None or cache.model_digest == model_digest:
            return path.stem, cache
    return None
