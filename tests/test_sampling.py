"""Task samplers (hand-computed probabilities), slots per batch, epoch lengths and schedules."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mtlstudy import sampling

SIZES = {"a": 300, "b": 100, "c": 600}
REF = {"a": 80.0, "b": 60.0, "c": 90.0}      # single-task dev scores (x100)
CUR = {"a": 70.0, "b": 65.0, "c": 60.0}      # gaps 0.10, -0.05 (b already above its reference), 0.30


def approx(d):
    return pytest.approx(d, abs=1e-12)


def test_uniform_size_temperature():
    assert sampling.task_probabilities("uniform", SIZES) == approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    assert sampling.task_probabilities("size", SIZES) == approx({"a": 0.3, "b": 0.1, "c": 0.6})
    r = [math.sqrt(300), math.sqrt(100), math.sqrt(600)]
    assert sampling.task_probabilities("temperature", SIZES, temperature=2.0) == \
        approx({"a": r[0] / sum(r), "b": r[1] / sum(r), "c": r[2] / sum(r)})
    # T=1 is size-proportional
    assert sampling.task_probabilities("temperature", SIZES, temperature=1.0) == approx({"a": 0.3, "b": 0.1, "c": 0.6})


def test_gap():
    # max(0, gap): 0.10, 0, 0.30 -> normalised; b is above its reference and gets nothing
    assert sampling.task_probabilities("gap", SIZES, reference=REF, current=CUR) == approx({"a": 0.25, "b": 0.0, "c": 0.75})
    # every task at or above its reference: uniform
    above = {"a": 85.0, "b": 60.0, "c": 95.0}
    assert sampling.task_probabilities("gap", SIZES, reference=REF, current=above) == approx({t: 1 / 3 for t in SIZES})


def test_softmax_gap():
    e = [math.exp(0.10), math.exp(-0.05), math.exp(0.30)]
    assert sampling.task_probabilities("softmax_gap", SIZES, reference=REF, current=CUR) == \
        approx({"a": e[0] / sum(e), "b": e[1] / sum(e), "c": e[2] / sum(e)})
    # equal gaps: uniform
    assert sampling.task_probabilities("softmax_gap", SIZES, reference=REF, current=REF) == approx({t: 1 / 3 for t in SIZES})


@pytest.mark.parametrize("sampler", ["gap", "softmax_gap"])
def test_dynamic_before_scores_is_size(sampler):
    size = {"a": 0.3, "b": 0.1, "c": 0.6}
    assert sampling.task_probabilities(sampler, SIZES, reference=REF, current=None) == approx(size)
    assert sampling.task_probabilities(sampler, SIZES) == approx(size)
    with pytest.raises(ValueError, match="no reference or current score"):
        sampling.task_probabilities(sampler, SIZES, reference={"a": 1.0}, current=CUR)


def test_unknown_sampler():
    with pytest.raises(ValueError, match="unknown sampler"):
        sampling.task_probabilities("dynamic", SIZES)


def test_slots_per_batch_hand_values():
    assert sampling.slots_per_batch({"a": 0.5, "b": 0.3, "c": 0.2}, 10) == {"a": 5, "b": 3, "c": 2}
    # 3.5, 2.1, 1.4 -> floors 3, 2, 1; the one left goes to the largest remainder (a)
    assert sampling.slots_per_batch({"a": 0.5, "b": 0.3, "c": 0.2}, 7) == {"a": 4, "b": 2, "c": 1}
    # the remainder goes to the largest fraction, not to task 0 (the released code's bug)
    assert sampling.slots_per_batch({"a": 0.28, "b": 0.72}, 5) == {"a": 1, "b": 4}  # 1.4, 3.6
    # tiny p is lifted to one slot; the excess is taken from the largest
    assert sampling.slots_per_batch({"a": 0.999, "b": 0.0005, "c": 0.0005}, 8) == {"a": 6, "b": 1, "c": 1}
    assert sampling.slots_per_batch({"a": 1.0, "b": 0.0}, 2) == {"a": 1, "b": 1}
    with pytest.raises(ValueError, match="smaller than the number of tasks"):
        sampling.slots_per_batch({"a": 0.5, "b": 0.3, "c": 0.2}, 2)


def test_slots_per_batch_random():
    rng = np.random.default_rng(0)
    for _ in range(500):
        k = int(rng.integers(1, 10))
        p = rng.dirichlet(np.full(k, 0.3))
        batch = int(rng.integers(k, 300))
        slots = sampling.slots_per_batch({str(i): float(x) for i, x in enumerate(p)}, batch)
        assert sum(slots.values()) == batch and min(slots.values()) >= 1
        assert all(abs(slots[str(i)] - p[i] * batch) < k + 1 for i in range(k))


def test_shortest_epoch_mnli_wnli():
    """docs/protocol.md: MNLI + WNLI, uniform, batch 128 -> 64 slots each; WNLI's 635 last 9 batches."""
    sizes = {"mnli": 392_702, "wnli": 635}
    slots = sampling.slots_per_batch(sampling.task_probabilities("uniform", sizes), 128)
    assert slots == {"mnli": 64, "wnli": 64}
    assert sampling.batches_per_epoch(slots, sizes, "shortest") == 9
    assert sampling.batches_per_epoch(slots, sizes, "longest") == math.ceil(392_702 / 64)
    with pytest.raises(ValueError, match="epoch_length"):
        sampling.batches_per_epoch(slots, sizes, "medium")


def _plan(schedule, sizes, batch=16, sampler="size", epoch_length="shortest", seed=0, lengths=None, probs=None):
    probs = probs or sampling.task_probabilities(sampler, sizes, reference={t: 100.0 for t in sizes},
                                                 current={t: 50.0 + 10 * i for i, t in enumerate(sizes)})
    epoch = sampling.EpochPlan(sizes, batch, probs, schedule, epoch_length)
    return epoch.batches(np.random.default_rng(seed), lengths), epoch.num_batches


def test_heterogeneous_batches_mix_tasks():
    sizes = {"a": 200, "b": 60}
    plan, n = _plan("heterogeneous", sizes)
    slots = sampling.slots_per_batch(sampling.task_probabilities("size", sizes), 16)
    assert len(plan) == n == 60 // slots["b"]
    for batch in plan:
        assert [t for t, _ in batch] == ["a", "b"]
        assert {t: len(ix) for t, ix in batch} == slots
    # within the epoch no example repeats (shortest: each task is drawn without replacement)
    for t in sizes:
        drawn = np.concatenate([ix for batch in plan for tt, ix in batch if tt == t])
        assert len(drawn) == len(set(drawn.tolist())) and drawn.max() < sizes[t]


def test_homogeneous_and_partition_batches_hold_one_task():
    sizes = {"a": 200, "b": 60, "c": 100}
    homo, n = _plan("homogeneous", sizes, sampler="uniform")
    assert len(homo) == n
    assert all(len(batch) == 1 and len(batch[0][1]) == 16 for batch in homo)
    order = [batch[0][0] for batch in homo]
    assert set(order) == set(sizes)
    part, _ = _plan("partition", sizes, sampler="uniform")
    porder = [batch[0][0] for batch in part]
    assert sorted(porder) == sorted(order)  # the same batches per task ...
    assert porder == sorted(porder, key=list(sizes).index)  # ... one task after the other, in task order
    assert order != porder  # homogeneous shuffles them
    with pytest.raises(ValueError, match="unknown schedule 'mixed'"):
        _plan("mixed", sizes)


def _seen(plan, task):
    return set(np.concatenate([ix for batch in plan for t, ix in batch if t == task]).tolist())


@pytest.mark.parametrize("sampler", ["uniform", "size", "temperature"])
def test_longest_sees_every_example_heterogeneous(sampler):
    rng = np.random.default_rng(1)
    for _ in range(40):
        sizes = {t: int(rng.integers(20, 900)) for t in "abc"}
        batch = int(rng.choice([8, 16, 32, 128]))
        plan, _ = _plan("heterogeneous", sizes, batch=batch, sampler=sampler, epoch_length="longest")
        for t in sizes:
            assert _seen(plan, t) == set(range(sizes[t]))


def test_longest_sees_every_example_homogeneous():
    sizes = {"a": 1269, "b": 2721, "c": 690}
    plan, _ = _plan("homogeneous", sizes, batch=32, sampler="uniform", epoch_length="longest")
    for t in sizes:
        assert _seen(plan, t) == set(range(sizes[t]))


def test_group_by_length_keeps_selection_random():
    sizes = {"a": 400, "b": 100}
    lengths = {t: np.random.default_rng(5).integers(3, 60, n) for t, n in sizes.items()}
    plan, n = _plan("heterogeneous", sizes, lengths=lengths)
    for t in sizes:
        drawn = np.concatenate([ix for batch in plan for tt, ix in batch if tt == t])
        assert len(drawn) == len(set(drawn.tolist()))
    # batches are more uniform in length than random ones
    spread = np.mean([np.ptp(lengths["a"][ix]) for batch in plan for t, ix in batch if t == "a"])
    plain, _ = _plan("heterogeneous", sizes)
    spread_plain = np.mean([np.ptp(lengths["a"][ix]) for batch in plain for t, ix in batch if t == "a"])
    assert spread < spread_plain / 2


def test_grouped_heterogeneous_epoch_is_not_ordered_by_length():
    """With group_by_length the streams hand out examples sorted by length inside a window of 50
    batches; unshuffled, a small task's whole epoch ran from its shortest to its longest
    examples (Spearman 1.0 between batch position and length), a curriculum that, where length
    predicts the label (gen_nli), fed the model one label at a time and collapsed MTL runs."""
    from scipy.stats import spearmanr

    sizes = {"a": 192, "b": 96}
    lengths = {t: np.random.default_rng(5).integers(3, 60, n) for t, n in sizes.items()}
    for seed in range(5):
        plan, _ = _plan("heterogeneous", sizes, lengths=lengths, seed=seed)
        mean_len = [lengths["a"][ix].mean() for batch in plan for t, ix in batch if t == "a"]
        assert spearmanr(np.arange(len(mean_len)), mean_len)[0] < 0.8


@pytest.mark.parametrize("schedule", sampling.SCHEDULES)
def test_epoch_reproducible_from_seed(schedule):
    sizes = {"a": 300, "b": 90}

    def flat(plan):
        return [(t, ix.tolist()) for batch in plan for t, ix in batch]

    assert flat(_plan(schedule, sizes, seed=4)[0]) == flat(_plan(schedule, sizes, seed=4)[0])
    assert flat(_plan(schedule, sizes, seed=4)[0]) != flat(_plan(schedule, sizes, seed=5)[0])


def test_single_task_epoch():
    rng = np.random.default_rng(0)
    batches = sampling.single_task_epoch(103, 16, rng)
    assert [len(b) for b in batches] == [16] * 6 + [7]
    assert sorted(np.concatenate(batches).tolist()) == list(range(103))
    lengths = np.random.default_rng(1).integers(1, 100, 103)
    grouped = sampling.single_task_epoch(103, 16, np.random.default_rng(0), lengths)
    assert sorted(np.concatenate(grouped).tolist()) == list(range(103))
    assert sampling.single_task_epoch(103, 16, np.random.default_rng(0), lengths)[0].tolist() == grouped[0].tolist()


def test_single_task_epoch_drop_last_like_the_released_loader():
    """drop_last (the released code's loader groups with zip, dropping the partial batch): 103
    examples in batches of 16 give 6 full batches; the 7 left out are drawn at random."""
    epoch = sampling.EpochPlan({"a": 103}, 16, drop_last=True)
    assert epoch.num_batches == 6 and epoch.rows == 96
    left_out = set()
    for seed in range(20):
        batches = epoch.batches(np.random.default_rng(seed), {"a": np.random.default_rng(1).integers(1, 100, 103)})
        drawn = np.concatenate([ix for b in batches for _, ix in b])
        assert [len(ix) for b in batches for _, ix in b] == [16] * 6 and len(set(drawn.tolist())) == 96
        left_out |= set(range(103)) - set(drawn.tolist())
    assert len(left_out) > 50  # not always the same (e.g. the longest) examples
    assert sampling.EpochPlan({"a": 103}, 16).num_batches == 7


def test_dynamic_epochs_follow_their_own_probabilities_rte_mnli():
    """The issue's worked example, checked against the released code's arithmetic by hand: RTE
    (2,490) with MNLI (392,702), batch 128, shortest. Epoch 1, size-proportional: RTE p = 0.0063
    -> round(0.81) = 1 slot, MNLI 127 -> the epoch ends when RTE runs out: 2,490 batches. Epoch 2
    with RTE p = 2/3 -> round(85.33) = 85 slots, MNLI 43 -> 2490 // 85 = 29 batches (MNLI would
    last 392702 // 43 = 9,132), not 2,490 batches that pass over RTE 85 times."""
    sizes = {"rte": 2490, "mnli": 392_702}
    first = sampling.EpochPlan(sizes, 128, sampling.task_probabilities("size", sizes))
    assert first.slots == {"rte": 1, "mnli": 127} and first.num_batches == 2490
    second = sampling.EpochPlan(sizes, 128, {"rte": 2 / 3, "mnli": 1 / 3})
    assert second.slots == {"rte": 85, "mnli": 43} and second.num_batches == 29
    batches = second.batches(np.random.default_rng(0))
    assert second.summary(2, batches) == {"epoch": 2, "batches": 29, "examples": {"rte": 29 * 85, "mnli": 29 * 43},
                                          "probs": {"rte": 2 / 3, "mnli": 1 / 3}}
    # the planner's bound for any epoch of this pair: RTE keeps >= 1 slot, so at most 2,490 batches
    assert sampling.epoch_examples_bound(sizes, 128, "shortest") == 2490 * 128
    assert sampling.epoch_examples_bound({"mnli": 392_702, "wnli": 635}, 128, "shortest") == 635 * 128
    assert sampling.epoch_examples_bound({"a": 100, "b": 100}, 16, "shortest") == 12 * 16  # 100//12 * 2 >= 16
    assert sampling.epoch_examples_bound(sizes, 128, "longest") == 392_702 * 128


@pytest.mark.parametrize("schedule", ["heterogeneous", "heterogeneous_random"])
@pytest.mark.parametrize("sampler", ["uniform", "size", "temperature", "gap", "softmax_gap"])
def test_no_example_repeats_within_a_shortest_epoch(sampler, schedule):
    rng = np.random.default_rng(3)
    for _ in range(25):
        sizes = {t: int(rng.integers(40, 900)) for t in "abc"}
        batch = int(rng.choice([8, 16, 32]))
        lengths = {t: rng.integers(3, 60, n) for t, n in sizes.items()}
        plan, n = _plan(schedule, sizes, batch=batch, sampler=sampler, lengths=lengths, seed=int(rng.integers(99)))
        assert len(plan) == n
        for t in sizes:
            drawn = [i for b in plan for tt, ix in b if tt == t for i in ix.tolist()]
            assert len(drawn) == len(set(drawn)) and max(drawn) < sizes[t]


def test_mtl_batches_come_in_random_length_order():
    """Length grouping sorts windows of each task's stream; the batch order of a multi-task epoch is
    then shuffled as a single-task epoch's is, so batch lengths do not climb within windows."""
    sizes = {"a": 3000, "b": 1000}
    lengths = {t: np.random.default_rng(5).integers(3, 120, n) for t, n in sizes.items()}
    plan, n = _plan("heterogeneous", sizes, lengths=lengths)
    width = [max(lengths[t][ix].max() for t, ix in b) for b in plan]
    rises = sum(b > a for a, b in zip(width, width[1:]))
    assert n > 100 and 0.3 < rises / (n - 1) < 0.7  # sorted windows would rise almost every step
    spread = np.mean([np.ptp(lengths["a"][ix]) for b in plan for t, ix in b if t == "a"])
    assert spread < 20  # ... while each batch still holds similar lengths


def test_released_heterogeneous_batches_have_a_random_task_mix():
    """heterogeneous_random (the released `heterogeneous`): the same examples per task as fixed
    slots, pooled and shuffled, so batches hold varying numbers of each task."""
    sizes = {"a": 600, "b": 200}
    fixed, n = _plan("heterogeneous", sizes, sampler="size")
    pooled, m = _plan("heterogeneous_random", sizes, sampler="size")
    assert n == m == len(pooled) and all(sum(len(ix) for _, ix in b) == 16 for b in pooled)
    count = lambda plan, t: sum(len(ix) for b in plan for tt, ix in b if tt == t)  # noqa: E731
    assert {t: count(pooled, t) for t in sizes} == {t: count(fixed, t) for t in sizes} == {"a": 600, "b": 200}
    mix = [dict((t, len(ix)) for t, ix in b).get("b", 0) for b in pooled]
    assert len(set(mix)) >= 4 and len({dict((t, len(ix)) for t, ix in b)["b"] for b in fixed}) == 1
