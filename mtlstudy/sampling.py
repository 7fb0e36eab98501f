"""Task samplers and the epoch plan: how one epoch is cut into batches.

Samplers give each task a probability p_i:
  uniform      1 / n
  size         |D_i| / sum |D|
  temperature  |D_i|^(1/T), normalised
  gap          max(0, ref_i - cur_i), normalised (Gottumukkala et al. 2020); uniform if every gap is 0
  softmax_gap  softmax(ref_i - cur_i) on 0-1 scores, no temperature (the paper's released code)
The two dynamic samplers use size-proportional p until dev scores exist (epoch 1), then the
scores of the evaluation that ends each epoch.

An `EpochPlan` is one epoch, computed from that epoch's p: task i gets n_i slots per batch of B
(n_i = p_i x B by largest remainder, at least 1, summing to B; the released code's rounding fix
always went to task 0). Its length follows `epoch_length`, recomputed every epoch as the released
code does:
  shortest  batches = min_i floor(|D_i| / n_i): the epoch ends when the first task's share runs
            out, so no example of any task repeats inside an epoch and large tasks are subsampled
            without replacement
  longest   batches = max_i ceil(|D_i| / n_i): every example of every task is seen each epoch;
            smaller tasks are reshuffled and repeated
So under a dynamic sampler later epochs may be shorter or longer than epoch 1; the learning-rate
schedule is defined on progress through the run (train.py), so it still ends at exactly 0.

Schedules (how an epoch's sampled examples form batches):
  heterogeneous         every batch holds each task's n_i slots (the released `forced_heterogeneous`)
  heterogeneous_random  the same examples, pooled and shuffled, then cut into batches of B: each
                        batch's task mix is random (the released `heterogeneous`)
  homogeneous           each batch holds one task; task i gets its share p_i of the batches, shuffled
  partition             the same batches, all of one task, then the next
Length grouping (`lengths`, train.group_by_length; a speed option, off in the paper profiles): each
task's shuffled pass is sorted by length within windows of 50 batches' worth, each task's slice of a
batch is cut from that order and the batch order is shuffled, in single-task epochs and in the
other three schedules. Batch-mates are then neighbours in length, not a random draw: a task of 50
batches or fewer is one window, so nearly the same batches recur every epoch. `heterogeneous_random`
pools and shuffles the drawn examples, so its batch-mates stay random with or without it.
A single-task epoch is every example once in batches of B (the last one smaller, or dropped with
`drop_last` as the released code's data loader does).
"""
from __future__ import annotations

import math

import numpy as np

DYNAMIC = ("gap", "softmax_gap")


def task_probabilities(sampler: str, sizes: dict[str, int], temperature: float = 2.0,
                       reference: dict[str, float] | None = None,
                       current: dict[str, float] | None = None) -> dict[str, float]:
    """p per task. Scores (reference: single-task dev score; current: latest dev score) are x100."""
    names = list(sizes)
    s = np.array([sizes[t] for t in names], dtype=float)
    if sampler == "uniform":
        w = np.ones(len(names))
    elif sampler == "size" or (sampler in DYNAMIC and not current):
        w = s
    elif sampler == "temperature":
        w = s ** (1.0 / temperature)
    elif sampler in DYNAMIC:
        missing = [t for t in names if t not in (reference or {}) or t not in current]
        if missing:
            raise ValueError(f"sampler {sampler}: no reference or current score for {missing}")
        gap = np.array([reference[t] - current[t] for t in names]) / 100.0
        if sampler == "gap":
            w = np.maximum(gap, 0.0)
            if w.sum() == 0:
                w = np.ones(len(names))
        else:
            w = np.exp(gap - gap.max())
    else:
        raise ValueError(f"unknown sampler '{sampler}'; known: uniform, size, temperature, gap, softmax_gap")
    w = w / w.sum()
    return {t: float(p) for t, p in zip(names, w)}


def slots_per_batch(probs: dict[str, float], batch_size: int) -> dict[str, int]:
    """n_i = p_i x B by largest remainder, each at least 1, summing to B."""
    if batch_size < len(probs):
        raise ValueError(f"batch size {batch_size} is smaller than the number of tasks {len(probs)}")
    names = list(probs)
    raw = np.array([probs[t] * batch_size for t in names])
    n = np.maximum(np.floor(raw).astype(int), 1)
    order = np.argsort(-(raw - np.floor(raw)), kind="stable")
    i = 0
    while n.sum() < batch_size:
        n[order[i % len(n)]] += 1
        i += 1
    while n.sum() > batch_size:  # only when several tasks were lifted to 1
        j = int(np.argmax(n))
        n[j] -= 1
    return {t: int(k) for t, k in zip(names, n)}


def batches_per_epoch(slots: dict[str, int], sizes: dict[str, int], epoch_length: str,
                      schedule: str = "heterogeneous", probs: dict[str, float] | None = None) -> int:
    """Batches in a multi-task epoch. Heterogeneous: from each task's slots per batch. Homogeneous
    and partition give task i about p_i x N whole batches of B, so `longest` takes the N at which
    every task's share covers its data: N = max_i ceil(ceil(|D_i| / B) / p_i), with p_i at least
    1/B (a dynamic sampler may give a task p = 0; it still gets its one slot)."""
    if epoch_length not in ("shortest", "longest"):
        raise ValueError(f"unknown epoch_length '{epoch_length}'; known: shortest, longest")
    batch = sum(slots.values())
    if schedule in ("homogeneous", "partition") and epoch_length == "longest":
        return max(math.ceil(math.ceil(sizes[t] / batch) / max(probs[t], 1 / batch) - 1e-9) for t in sizes)
    if epoch_length == "shortest":
        return max(1, min(sizes[t] // slots[t] for t in slots))
    return max(math.ceil(sizes[t] / slots[t]) for t in slots)


SCHEDULES = ("heterogeneous", "heterogeneous_random", "homogeneous", "partition")


class EpochPlan:
    """One epoch: its probabilities, each task's slots per batch, its number of batches, and the
    batches themselves (`batches(rng)`). The training loop, the planner's compute figure and the
    GPU throughput script all take an epoch from here. One task: a single-task epoch."""

    def __init__(self, sizes: dict[str, int], batch_size: int, probs: dict[str, float] | None = None,
                 schedule: str = "heterogeneous", epoch_length: str = "shortest", drop_last: bool = False):
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule '{schedule}'; known: {', '.join(SCHEDULES)}")
        self.sizes, self.batch_size, self.schedule = dict(sizes), batch_size, schedule
        self.single = len(sizes) == 1
        if self.single:
            (n,) = sizes.values()
            self.probs = {t: 1.0 for t in sizes}
            self.slots = {t: batch_size for t in sizes}
            self.drop_last = drop_last and n >= batch_size
            self.num_batches = n // batch_size if self.drop_last else math.ceil(n / batch_size)
        else:
            self.probs = dict(probs)
            self.slots = slots_per_batch(self.probs, batch_size)
            self.num_batches = batches_per_epoch(self.slots, self.sizes, epoch_length, schedule, self.probs)

    @property
    def rows(self) -> int:
        """Training examples in the epoch (all tasks)."""
        if self.single:
            n = next(iter(self.sizes.values()))
            return self.num_batches * self.batch_size if self.drop_last else n
        return self.num_batches * self.batch_size

    def batches(self, rng: np.random.Generator, lengths: dict | None = None) -> list[list[tuple[str, np.ndarray]]]:
        """The epoch's batches, each a list of (task, example indices). `lengths` (per task) groups
        similar lengths within a batch; the batch order is then shuffled."""
        lengths = lengths or {}
        names = list(self.sizes)
        if self.single:
            t = names[0]
            return [[(t, b)] for b in single_task_epoch(self.sizes[t], self.batch_size, rng, lengths.get(t),
                                                         self.drop_last)]
        if self.schedule in ("heterogeneous", "heterogeneous_random"):
            streams = {t: _Stream(self.sizes[t], rng, lengths.get(t), self.slots[t]) for t in names}
            out = [[(t, streams[t].take(self.slots[t])) for t in names] for _ in range(self.num_batches)]
            if self.schedule == "heterogeneous_random":
                return self._pool(out, rng)
            return _shuffled(out, rng) if lengths else out
        counts = slots_per_batch(self.probs, self.num_batches) if self.num_batches >= len(names) else \
            {t: int(k) for t, k in zip(names, np.bincount(rng.choice(len(names), self.num_batches,
                                                                      p=list(self.probs.values())),
                                                           minlength=len(names)))}
        streams = {t: _Stream(self.sizes[t], rng, lengths.get(t), self.batch_size) for t in names}
        out = [[(t, streams[t].take(self.batch_size))] for t in names for _ in range(counts[t])]
        return _shuffled(out, rng) if self.schedule == "homogeneous" else out

    def _pool(self, fixed, rng):
        """The released `heterogeneous`: all of the epoch's drawn examples shuffled together and cut
        into batches of B, so each batch's task mix is random (length grouping does not apply)."""
        pool = [(t, i) for batch in fixed for t, ix in batch for i in ix.tolist()]
        pool = [pool[k] for k in rng.permutation(len(pool))]
        out = []
        for start in range(0, len(pool), self.batch_size):
            chunk = pool[start:start + self.batch_size]
            out.append([(t, np.array([i for tt, i in chunk if tt == t], dtype=np.int64))
                        for t in self.sizes if any(tt == t for tt, _ in chunk)])
        return out

    def summary(self, epoch: int, batches: list) -> dict:
        """The record of one epoch: its number (1-based), batches, examples per task and p."""
        examples = {t: 0 for t in self.sizes}
        for batch in batches:
            for t, ix in batch:
                examples[t] += len(ix)
        return {"epoch": epoch, "batches": len(batches), "examples": examples, "probs": dict(self.probs)}


def _shuffled(batches, rng):
    return [batches[i] for i in rng.permutation(len(batches))]


def epoch_examples_bound(sizes: dict[str, int], batch_size: int, epoch_length: str) -> int:
    """The most training examples any epoch of a multi-task run can hold, whatever p a dynamic
    sampler picks (every task keeps at least one slot). `shortest`: the largest N for which some
    slots n_i >= 1 summing to B have N x n_i <= |D_i| for every task, i.e. sum_i floor(|D_i| / N) >= B.
    `longest`: max |D_i| batches (the largest task left with one slot)."""
    if epoch_length == "longest":
        return max(sizes.values()) * batch_size
    lo, hi = 1, min(sizes.values())  # N batches is possible iff sum floor(|D_i| / N) >= B (monotone in N)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if sum(d // mid for d in sizes.values()) >= batch_size else (lo, mid - 1)
    return lo * batch_size


class _Stream:
    """Endless shuffled passes over one task's examples, without replacement inside a pass.
    With `lengths`, each window of 50 draws' worth is sorted by length so that slices of
    consecutive draws have similar lengths; which examples come in a pass stays random."""

    def __init__(self, size, rng, lengths=None, chunk=None):
        self.size, self.rng, self.lengths, self.chunk = size, rng, lengths, chunk
        self.buf = np.zeros(0, dtype=np.int64)

    def _refill(self):
        order = self.rng.permutation(self.size)
        if self.lengths is not None and self.chunk:
            window = 50 * self.chunk
            order = np.concatenate([w[np.argsort(self.lengths[w], kind="stable")]
                                    for w in np.array_split(order, max(1, math.ceil(len(order) / window)))])
        self.buf = np.concatenate([self.buf, order])

    def take(self, k):
        while len(self.buf) < k:
            self._refill()
        out, self.buf = self.buf[:k], self.buf[k:]
        return out


def single_task_epoch(size: int, batch_size: int, rng: np.random.Generator, lengths=None,
                      drop_last: bool = False) -> list[np.ndarray]:
    """All examples once, in batches of B (the last may be smaller), batch order shuffled. With
    `drop_last`, size mod B examples drawn at random sit the epoch out, so every batch is full."""
    keep = None
    if drop_last and size % batch_size:
        keep = np.sort(rng.permutation(size)[:size - size % batch_size])
        size, lengths = len(keep), lengths[keep] if lengths is not None else None
    order = _Stream(size, rng, lengths, batch_size).take(size)
    if keep is not None:
        order = keep[order]
    batches = [order[i:i + batch_size] for i in range(0, size, batch_size)]
    if lengths is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches
