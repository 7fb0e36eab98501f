"""Task samplers and batch schedules for multi-task epochs.

Samplers give each task a probability p_i:
  uniform      1 / n
  size         |D_i| / sum |D|
  temperature  |D_i|^(1/T), normalised
  gap          max(0, ref_i - cur_i), normalised (Gottumukkala et al. 2020); uniform if every gap is 0
  softmax_gap  softmax(ref_i - cur_i) on 0-1 scores, no temperature (the paper's released code)
The two dynamic samplers use size-proportional p until dev scores exist (epoch 1).

An epoch gives task i n_i slots per batch of B (n_i = p_i x B by largest remainder, at least 1,
summing to B; the released code's rounding fix always went to task 0). Epoch length:
  shortest  the released code: batches = min_i floor(|D_i| / n_i), so the epoch ends when the
            shortest task runs out and large tasks are subsampled without replacement
  longest   batches = max_i ceil(|D_i| / n_i): every example of every task is seen each epoch;
            smaller tasks are reshuffled and repeated
Every epoch of a run has the number of batches of epoch 1, so the learning-rate schedule's length
(epochs x batches) is known at the start and the rate decays fully to 0, also when a dynamic
sampler changes p later (the released code sized the schedule from epoch 1 while later epochs
were shorter). A task that runs out inside an epoch is reshuffled and continues.

Schedules: heterogeneous (every batch mixes the tasks by their slots), homogeneous (each batch
holds one task; task i gets its share p_i of the epoch's batches, in shuffled order), partition
(the same batches, all of one task, then the next).
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
    """Batches in an epoch. Heterogeneous: from each task's slots per batch. Homogeneous and
    partition give task i about p_i x N whole batches of B, so `longest` takes the N at which
    every task's share covers its data: N = max_i ceil(ceil(|D_i| / B) / p_i)."""
    if schedule != "heterogeneous" and epoch_length == "longest":
        batch = sum(slots.values())
        return max(math.ceil(math.ceil(sizes[t] / batch) / probs[t] - 1e-9) for t in sizes)
    if epoch_length == "shortest":
        return max(1, min(sizes[t] // slots[t] for t in slots))
    if epoch_length == "longest":
        return max(math.ceil(sizes[t] / slots[t]) for t in slots)
    raise ValueError(f"unknown epoch_length '{epoch_length}'; known: shortest, longest")


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


def single_task_epoch(size: int, batch_size: int, rng: np.random.Generator, lengths=None) -> list[np.ndarray]:
    """All examples once, in batches of B (the last may be smaller), batch order shuffled."""
    order = _Stream(size, rng, lengths, batch_size).take(size)
    batches = [order[i:i + batch_size] for i in range(0, size, batch_size)]
    if lengths is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def plan_epoch(schedule: str, probs: dict[str, float], sizes: dict[str, int], batch_size: int,
               rng: np.random.Generator, num_batches: int, lengths: dict | None = None
               ) -> list[list[tuple[str, np.ndarray]]]:
    """One multi-task epoch: a list of batches, each a list of (task, example indices)."""
    slots = slots_per_batch(probs, batch_size)
    lengths = lengths or {}
    if schedule == "heterogeneous":
        streams = {t: _Stream(sizes[t], rng, lengths.get(t), slots[t]) for t in sizes}
        batches = [[(t, streams[t].take(slots[t])) for t in sizes] for _ in range(num_batches)]
        if lengths:  # grouped streams come out sorted by length: without this, every epoch runs short to long
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches
    if schedule not in ("homogeneous", "partition"):
        raise ValueError(f"unknown schedule '{schedule}'; known: heterogeneous, homogeneous, partition")
    counts = slots_per_batch(probs, num_batches) if num_batches >= len(probs) else \
        {t: int(k) for t, k in zip(sizes, np.bincount(rng.choice(len(sizes), num_batches, p=list(probs.values())),
                                                      minlength=len(sizes)))}
    streams = {t: _Stream(sizes[t], rng, lengths.get(t), batch_size) for t in sizes}
    batches = [[(t, streams[t].take(batch_size))] for t in sizes for _ in range(counts[t])]
    if schedule == "homogeneous":
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches
