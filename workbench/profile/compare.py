"""Several timing tables side by side: layers matched by the ONNX nodes they cover (or by op order)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..backends.ort_profile import PRECISION_RANK
from ..errors import DataError
from ..table import Table
from .layer_info import is_reformat
from .tables import MAIN_OPS, check_table, op_type_of, precision_counts, total_ms

__all__ = ["compare_profiles", "profile_summary"]


def _main_node(rec: Mapping[str, Any]) -> str | None:
    """The node that names a layer's work: its first Conv/Gemm/MatMul-like node, else its first non-Q/DQ node."""
    nodes = list(rec["onnx_nodes"] or [])
    if not nodes:
        return None
    for main in MAIN_OPS:
        for n in nodes:
            if op_type_of(n) == main:
                return n
    rest = [n for n in nodes if op_type_of(n) not in ("QuantizeLinear", "DequantizeLinear")]
    return (rest or nodes)[0]


def _ordinal_keys(table: Table) -> dict[str, str]:
    """Main ONNX node of each layer -> "Op#k": the k-th such node of that op type, by the number in its name."""
    mains = list(dict.fromkeys(m for m in (_main_node(r) for r in table.records()) if m))

    def number(item: tuple[int, str]) -> tuple[int, int]:
        i, n = item
        m = re.search(r"(\d+)$", n)
        return (int(m.group(1)) if m else i, i)

    counts: dict[str, int] = {}
    keys = {}
    for _, n in sorted(enumerate(mains), key=number):
        op = op_type_of(n)
        keys[n] = f"{op}#{counts.get(op, 0)}"
        counts[op] = counts.get(op, 0) + 1
    return keys


def compare_profiles(profiles: Mapping[str, Table], *, match: str = "auto") -> Table:
    """Match layers of several engines/profiles by the ONNX nodes they cover and put their times side by side.

    Layers that share an ONNX node in any profile fall in one group (so "Conv_5 + Add_6 + Relu_7" in one
    engine and "Conv_5" + "Add_6 + Relu_7" in another compare as one row). ``match``: "name" joins by
    ONNX node name; "op_order" by op type and rank ("the 3rd Conv"), for engines built from different
    exports of one network (e.g. a QAT export renumbers nodes); "auto" picks "name" when the profiles
    share at least half their nodes. Columns: group, onnx_nodes, ``<label>_ms`` per profile, delta_ms
    (last minus first) and speedup (first / last). Layers with no ONNX node match by layer name.
    """
    if len(profiles) < 2:
        raise DataError(f"comparing needs at least two profiles, got {len(profiles)}", hint="add another profile")
    for t in profiles.values():
        check_table(t)
    labels = list(profiles)
    if match == "auto":
        sets = [{n for ns in t.column("onnx_nodes") for n in (ns or [])} for t in profiles.values()]
        shared = all(len(a & b) >= 0.5 * min(len(a), len(b)) for a in sets for b in sets if a and b)
        match = "name" if shared else "op_order"
    if match not in ("name", "op_order"):
        raise DataError(f"unknown match mode '{match}'", hint="use auto, name or op_order")
    keymaps = {label: _ordinal_keys(t) for label, t in profiles.items()} if match == "op_order" else None

    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        parent[find(a)] = find(b)

    layer_keys: dict[str, list[tuple[list[str], dict[str, Any]]]] = {}
    for label, table in profiles.items():
        entries = []
        for rec in table.records():
            nodes = rec["onnx_nodes"] or []
            if keymaps is not None:
                main = _main_node(rec)
                keys = [keymaps[label][main]] if main else []
            else:
                keys = [f"node:{n}" for n in nodes]
            keys = keys or [f"layer:{rec['name']}"]
            for k in keys[1:]:
                union(keys[0], k)
            find(keys[0])
            entries.append((keys, rec))
        layer_keys[label] = entries

    groups: dict[str, dict[str, Any]] = {}
    for label in labels:
        for keys, rec in layer_keys[label]:
            root = find(keys[0])
            g = groups.setdefault(root, {"times": dict.fromkeys(labels, 0.0), "nodes": [], "names": {}})
            g["times"][label] += rec["median_ms"]
            for n in rec["onnx_nodes"] or []:
                if n not in g["nodes"]:
                    g["nodes"].append(n)
            if not is_reformat(rec["name"], rec["type"]):
                best = g["names"].get(label)
                if best is None or rec["median_ms"] > best[1]:
                    g["names"][label] = (rec["name"], rec["median_ms"])
    columns = ("group", "onnx_nodes", *[f"{lab}_ms" for lab in labels], "delta_ms", "speedup")
    rows = []
    for g in groups.values():
        name = next((g["names"][lab][0] for lab in labels if lab in g["names"]), None) or ", ".join(g["nodes"]) or "?"
        first, last = g["times"][labels[0]], g["times"][labels[-1]]
        rows.append((name, g["nodes"], *[g["times"][lab] for lab in labels], last - first,
                     first / last if last > 0 and first > 0 else None))
    return Table(columns, tuple(rows))


def profile_summary(profiles: Mapping[str, Table]) -> Table:
    """One row per profile: label, total_ms, layers, speedup vs the first, then layer counts per precision."""
    for t in profiles.values():
        check_table(t)
    counts = {label: precision_counts(t) for label, t in profiles.items()}
    precisions = sorted({p for c in counts.values() for p in c}, key=lambda p: -PRECISION_RANK.get(p, -1))
    labels = list(profiles)
    base = total_ms(profiles[labels[0]]) if labels else 0.0
    rows = []
    for label in labels:
        tot = total_ms(profiles[label])
        rows.append((label, tot, len(profiles[label]), base / tot if tot > 0 else None,
                     *[counts[label].get(p, 0) for p in precisions]))
    return Table(("label", "total_ms", "layers", "speedup", *precisions), tuple(rows))
