"""Profile figures: pure functions of timing tables; values checked against the tables they draw."""

from __future__ import annotations

import pytest
from models import conv_bn_relu_model
from test_profile_trt import graph, prof

from workbench.plots.profile import (
    compare_layers,
    compare_totals,
    group_bar,
    layer_bar,
    precision_mix,
    time_treemap,
    timing_graph,
    write_html,
)
from workbench.profile import from_trtexec, node_times, precision_counts, total_ms
from workbench.table import Table


@pytest.fixture(scope="module")
def tables():
    return {k: from_trtexec(graph(k), prof(k)) for k in ("fp32", "fp16", "int8")}


def test_layer_bar_top_n(tables):
    t = tables["fp16"]
    fig = layer_bar(t, top=5)
    xs = sorted((x for tr in fig.data for x in tr.x), reverse=True)
    assert xs == pytest.approx(sorted(t.column("median_ms"), reverse=True)[:5])
    assert {tr.name for tr in fig.data} <= {"fp16", "fp32", "int8", "unknown"}


def test_group_bars_sum_to_total(tables):
    t = tables["int8"]
    by_op = group_bar(t, "op_type").data[0]
    assert sum(by_op.y) == pytest.approx(total_ms(t))
    by_prec = group_bar(t, "precision").data[0]
    assert set(by_prec.x) == set(precision_counts(t))


def test_treemap_leaves_are_layers(tables):
    t = tables["fp32"]
    tm = time_treemap(t).data[0]
    leaves = [v for i, v in zip(tm.ids, tm.values) if i.startswith("layer:")]
    assert len(leaves) == len(t) and sum(tm.values) == pytest.approx(total_ms(t))
    assert all(p.startswith("op:") for i, p in zip(tm.ids, tm.parents) if i.startswith("layer:"))


def test_comparison_figures(tables):
    tot = compare_totals(tables).data[0]
    assert list(tot.x) == ["fp32", "fp16", "int8"]
    assert list(tot.y) == pytest.approx([total_ms(t) for t in tables.values()])
    mix = precision_mix(tables)
    stacked = {tr.name: list(tr.y) for tr in mix.data}
    assert [stacked.get("int8", [0, 0, 0])[i] for i in range(3)] == [precision_counts(t).get("int8", 0)
                                                                     for t in tables.values()]
    layers = compare_layers(tables, top=5)
    assert [tr.name for tr in layers.data] == ["fp32", "fp16", "int8"] and len(layers.data[0].y) == 5


def test_timing_graph_colours_nodes_by_time():
    model = conv_bn_relu_model()
    names = [n.name for n in model.graph.node]
    table = Table(("name", "onnx_nodes", "type", "precision", "median_ms", "mean_ms", "pct"),
                  (("fused", names[:3], "Conv", "fp32", 3.0, 3.0, 75.0), ("fc", [names[-1]], "Gemm", "fp32", 1.0, 1.0, 25.0)))
    assert node_times(table) == {names[0]: 1.0, names[1]: 1.0, names[2]: 1.0, names[-1]: 1.0}
    data = timing_graph(model, table)
    assert [n["id"] for n in data["graph"]["nodes"]][1:-1] == names
    assert data["overlay"]["values"] == {names[0]: 1.0, names[1]: 1.0, names[2]: 1.0, names[-1]: 1.0}
    assert names[4] not in data["overlay"]["colors"]  # no time: drawn as missing


def test_write_html(tmp_path, tables):
    out = write_html([layer_bar(tables["fp32"]), compare_totals(tables)], tmp_path / "r.html", title="A100")
    text = out.read_text()
    assert text.count("Plotly.newPlot") == 2 and "<h1>A100</h1>" in text
