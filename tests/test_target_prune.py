"""Pruning a large passing plan drops blocks of layers first: where a task metric is not monotone in the layers
kept, the greedy and bisection can stop at a large prefix of which two layers suffice (blazeface_back_256, ONNX
Runtime placement: 74-82 of 102 layers kept when pruning dropped one layer per plan evaluation)."""

from __future__ import annotations

from workbench.debug import find_plan


def test_pruning_finds_the_two_layers_of_a_64_layer_prefix_within_the_budget() -> None:
    ranking = [f"l{i}" for i in range(64)]  # l63, ranked last, is needed: only the whole prefix passes

    def evaluate(keep: tuple[str, ...]) -> tuple[float, float | None]:
        return (1.0 if {"l0", "l63"} <= set(keep) else 0.9), float(len(keep))

    plan = find_plan(ranking, evaluate, ok=lambda m: m >= 0.995, target=0.995, higher_is_better=True)
    assert plan.met and plan.keep == ("l0", "l63")
    assert len(plan.tried.rows) <= 40  # one layer per evaluation would have kept 38 after the 40-plan budget
    steps = plan.tried.column("step")
    assert steps[-1] == "prune" and steps.count("prune") < len(plan.tried.rows)


def test_small_plans_prune_one_layer_at_a_time() -> None:
    damage = {"a": 5.0, "b": 3.0, "c": 0.0, "d": 1.0, "e": 0.5}

    def evaluate(keep: tuple[str, ...]) -> tuple[float, float | None]:
        return 100.0 - sum(v for k, v in damage.items() if k not in keep), float(len(keep))

    plan = find_plan(list(damage), evaluate, ok=lambda m: m >= 99.0, target=99.0, higher_is_better=True)
    pruned = [r["keep"] for r in plan.tried.records() if r["step"] == "prune"]
    assert set(plan.keep) == {"a", "b", "d"}  # 'c' is pruned: keeping it does not help
    assert len(pruned[0]) == 3  # four kept: one layer dropped per plan, no blocks
