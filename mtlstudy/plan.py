"""A study profile -> the run list: every run and its dependencies.

Single-task runs come first: they are the baselines, the STILTs support models (the best seed's
checkpoint is kept) and the dynamic samplers' reference scores, all at once. One MTL run per
unordered pair gives both (A|B) and (B|A). STILTs target runs depend on the support's single
runs; dynamic-sampler MTL runs depend on their tasks' single runs.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from . import sampling
from .data import subsample_size
from .profile import Ablation, Profile, ProfileError, task_size
from .spec import RunSpec
from .tasks import Task


@dataclass
class PlannedRun:
    spec: RunSpec
    deps: list[str] = field(default_factory=list)
    kind: str = ""            # single | stilts | mtl | mtl_all, for counting

    @property
    def run_id(self) -> str:
        return self.spec.run_id()


def make_plan(profile: Profile, user: dict[str, Task]) -> list[PlannedRun]:
    runs: dict[str, PlannedRun] = {}

    def add(run: PlannedRun) -> str:
        planned = runs.setdefault(run.run_id, run)
        if run.spec.train.keep_checkpoint != planned.spec.train.keep_checkpoint:  # planned twice: one needs it
            planned.spec.train = planned.spec.train.model_copy(update={"keep_checkpoint": "best"})
        return run.run_id

    def spec(method, tasks, seed, train=None, counts=None, fractions=None, **kw):
        caps = {t: c for t, c in profile.train_counts.items() if t in tasks}
        return RunSpec(method=method, tasks=tasks, seed=seed, model=profile.model, data=profile.data,
                       train=train or profile.train, train_counts={**caps, **(counts or {})},
                       train_fractions=fractions or {}, data_seed=profile.data_seed,
                       support_choice=profile.support_choice, user_tasks=user, **kw)

    keep = profile.train.model_copy(update={"keep_checkpoint": "best"})
    stilts = "stilts" in profile.methods

    def singles(task, counts=None, fractions=None, checkpoint=False):
        return [add(PlannedRun(spec("single", [task], s, train=keep if checkpoint else None, counts=counts,
                                    fractions=fractions), kind="single")) for s in profile.seeds]

    single_ids = {t: singles(t, checkpoint=stilts) for t in profile.tasks} \
        if {"single", "stilts", "mtl", "mtl_all"} & set(profile.methods) else {}
    dynamic = profile.train.sampler in sampling.DYNAMIC

    if "mtl" in profile.methods:
        for a, b in itertools.combinations(profile.tasks, 2):
            refs = {t: single_ids[t] for t in (a, b)} if dynamic else {}
            for s in profile.seeds:
                add(PlannedRun(spec("mtl", [a, b], s, reference_runs=refs),
                               deps=sorted(set(sum(refs.values(), []))), kind="mtl"))
    if stilts:
        for sup, tgt in itertools.permutations(profile.tasks, 2):
            for s in profile.seeds:
                add(PlannedRun(spec("stilts", [sup, tgt], s, support_runs=single_ids[sup]),
                               deps=list(single_ids[sup]), kind="stilts"))
    if "mtl_all" in profile.methods:
        for sampler in profile.mtl_all_samplers:
            train = profile.train.model_copy(update={"sampler": sampler})
            refs = {t: single_ids[t] for t in profile.tasks} if sampler in sampling.DYNAMIC else {}
            for s in profile.seeds:
                add(PlannedRun(spec("mtl_all", list(profile.tasks), s, train=train, reference_runs=refs),
                               deps=sorted(set(sum(refs.values(), []))), kind="mtl_all"))
    if "ablation" in profile.methods:
        ab = profile.ablation
        full_target = task_size(profile, user, ab.target)
        support_size = task_size(profile, user, ab.support)
        by_task = {t: singles(t) for t in (ab.target, ab.support)} if dynamic and ab.references == "by_task" else {}
        for frac in ab.target_fractions:
            n_target = ablation_target_size(ab, full_target, frac)
            if n_target <= 0:
                raise ProfileError(f"ablation: target {ab.target} is empty at fraction {frac}")
            # the target's subset: a fraction (data.subsample_size rounds it) or, for the released sizes, a count
            tf = {ab.target: frac} if frac < 1 and ab.sizes == "multiply" else {}
            tc = {ab.target: n_target} if n_target < full_target and ab.sizes == "released" else {}
            target_singles = [] if by_task else singles(ab.target, counts=tc, fractions=tf)  # by_task: unused
            for k in ab.ks:
                n_support = ablation_support_size(ab, n_target, k)
                if n_support > support_size:
                    raise ProfileError(f"ablation: support {ab.support} has {support_size} examples, too few for "
                                       f"K={k:g} beside {n_target} target examples ({n_support} needed)")
                if n_support <= 0:
                    raise ProfileError(f"ablation: support {ab.support} is empty for K={k:g}")
                tags = {"k": float(k), "target_fraction": float(frac)}
                counts = {**tc, ab.support: n_support}
                sup_counts = {ab.support: n_support}
                sup_singles = [add(PlannedRun(spec("single", [ab.support], s, train=keep, counts=sup_counts,
                                                   tags=tags), kind="single")) for s in profile.seeds]
                refs = by_task or ({ab.target: target_singles, ab.support: sup_singles} if dynamic else {})
                for s in profile.seeds:
                    add(PlannedRun(spec("mtl", [ab.target, ab.support], s, counts=counts, fractions=tf,
                                        reference_runs=refs, tags=tags),
                                   deps=sorted(set(sum(refs.values(), []))), kind="mtl"))
                    add(PlannedRun(spec("stilts", [ab.support, ab.target], s, counts=counts, fractions=tf,
                                        support_runs=sup_singles, tags=tags), deps=list(sup_singles), kind="stilts"))
    for run in runs.values():  # a batch larger than a training set would repeat its examples in a batch
        for t, n in run_train_sizes(run, profile, user).items():
            if run.spec.train.batch_size > n:
                raise ProfileError(f"key 'train.batch_size': {run.spec.train.batch_size} is larger than the "
                                   f"training set of task {t} ({n} examples in run {run.run_id})")
    return list(runs.values())


def ablation_target_size(ab: Ablation, full: int, fraction: float) -> int:
    """The size ablation's target examples at one fraction of its `full` training set."""
    return int(fraction * full) if ab.sizes == "released" else round(fraction * full)  # create_differing_sizes.py:48-51


def ablation_support_size(ab: Ablation, n_target: int, k: float) -> int:
    """The support's examples at K beside `n_target` target examples: K x target, or the released
    code's target // d with d = round(1 / K, 2) (create_differing_sizes.py:38, 98; relabelled as K by
    plot_validation_exp.py:11-13), so its K = 3 (d = 0.33) is 3.03 x target."""
    if ab.sizes == "multiply":
        return round(k * n_target)
    divisor = round(1 / k, 2)
    return int(n_target // divisor) if divisor > 0 else 0


def run_train_sizes(run: PlannedRun, profile: Profile, user) -> dict[str, int]:
    """Training examples of each task a run trains on, after its caps and fractions."""
    return {t: subsample_size(task_size(profile, user, t), run.spec.train_counts.get(t), run.spec.train_fractions.get(t))
            for t in run.spec.trained_tasks}


def earlier_ids(runs: list[PlannedRun]) -> dict[str, str]:
    """run id -> the id the same run had before 2026-12, when data files entered run ids by their
    path (RunSpec.run_id(by_path=True)), for the runs whose id changed: a STILTs or dynamic-sampler
    run's earlier id holds its dependencies' earlier ids. `runs` in plan order (dependencies first)."""
    earlier: dict[str, str] = {}
    for run in runs:
        spec = run.spec.model_copy(update={
            "support_runs": [earlier[r] for r in run.spec.support_runs],
            "reference_runs": {t: [earlier[r] for r in ids] for t, ids in run.spec.reference_runs.items()}})
        earlier[run.run_id] = spec.run_id(by_path=True)
    return {new: old for new, old in earlier.items() if new != old}
