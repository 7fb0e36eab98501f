"""Compute accounting of a run list: training example-passes per run, and the plan against the
naive protocol (every ordered MTL pair trained, a support model per STILTs pair).
"""
from __future__ import annotations

import math

from . import sampling
from .plan import PlannedRun, run_train_sizes
from .profile import Profile


def example_passes(run: PlannedRun, profile: Profile, user) -> tuple[int, bool]:
    """Training examples a run processes (the sum over its epochs), and whether that is exact.
    A dynamic sampler's later epochs depend on dev scores: they count at the most any epoch can
    hold (sampling.epoch_examples_bound), so the figure is an upper bound."""
    cfg = run.spec.train
    sizes = run_train_sizes(run, profile, user)
    probs = sampling.task_probabilities(cfg.sampler, sizes, cfg.temperature) if len(sizes) > 1 else None
    first = sampling.EpochPlan(sizes, cfg.batch_size, probs, cfg.schedule, cfg.epoch_length, cfg.drop_last).rows
    if len(sizes) > 1 and cfg.sampler in sampling.DYNAMIC:
        return first + (cfg.epochs - 1) * sampling.epoch_examples_bound(sizes, cfg.batch_size, cfg.epoch_length), False
    return cfg.epochs * first, True


def compute_summary(plan: list[PlannedRun], profile: Profile, user) -> dict:
    """Runs and example-passes of this plan against the naive protocol: 72 ordered MTL runs per
    seed (both orders trained) and a support model trained for every STILTs pair and seed."""
    by_id = {r.run_id: r for r in plan}
    passes = {r.run_id: example_passes(r, profile, user) for r in plan}
    cost = {rid: n for rid, (n, _) in passes.items()}
    ours = sum(cost.values())
    naive = 0
    naive_runs = 0
    trained_supports = set()
    for r in plan:
        if r.kind == "mtl":
            naive += 2 * cost[r.run_id]
            naive_runs += 2
        elif r.kind == "stilts":
            naive += cost[r.run_id]
            naive_runs += 1
            pair = (tuple(r.spec.tasks), tuple(sorted(r.spec.tags.items())))
            if pair not in trained_supports:  # the pair's own support seeds, shared by its target seeds
                trained_supports.add(pair)
                naive += sum(cost[d] for d in r.spec.support_runs)
                naive_runs += len(r.spec.support_runs)
        else:  # single-task and MTL-All runs exist once in both protocols
            naive += cost[r.run_id]
            naive_runs += 1
    counts = {}
    for r in plan:
        counts[r.kind] = counts.get(r.kind, 0) + 1
    return {"runs": len(plan), "runs_by_method": counts, "example_passes": ours,
            "exact": all(exact for _, exact in passes.values()),
            "naive_runs": naive_runs, "naive_example_passes": naive,
            "ratio": ours / naive if naive else math.nan, "by_id": by_id}
