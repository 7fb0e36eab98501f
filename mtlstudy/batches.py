"""A run's data, ready for the loop: each trained task's examples read, tokenized, subsampled and
its dev set split for selection; a step's encoder passes (cut in passes.py) collated and merged.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import data as data_mod
from .spec import RunSpec
from .tasks import get_task


@dataclass
class TaskData:
    task: object
    train: data_mod.Tokenized
    select: data_mod.Tokenized   # dev examples that choose the checkpoint
    report: data_mod.Tokenized   # dev examples that give the reported score (the same unless split_dev)
    label_mean: float = 0.0      # regression with standardized targets: the head learns
    label_sd: float = 1.0        # (label - mean) / sd, and predicts mean + sd * output

    def target(self, labels: torch.Tensor) -> torch.Tensor:
        """What the head is trained to output for these labels."""
        return (labels - self.label_mean) / self.label_sd if self.task.is_regression else labels

    def prediction(self, outputs: np.ndarray) -> np.ndarray:
        """Predictions on the labels' scale from the head's outputs."""
        return self.label_mean + self.label_sd * outputs if self.task.is_regression else outputs


def load_task_examples(spec: RunSpec) -> dict[str, tuple]:
    """(task, train examples, dev examples) per trained task: read (and checked) before any model loads."""
    out = {}
    for name in spec.trained_tasks:
        task = get_task(name, spec.user_tasks)
        out[name] = (task, data_mod.load_examples(task, "train", spec.data), data_mod.load_examples(task, "dev", spec.data))
    return out


def prepare_data(spec: RunSpec, tokenizer, cache_dir=None, examples: dict | None = None) -> dict[str, TaskData]:
    out = {}
    examples = examples or load_task_examples(spec)
    for name in spec.trained_tasks:
        task, train_ex, dev_ex = examples[name]
        train = data_mod.tokenize(tokenizer, train_ex, spec.train.max_length, cache_dir)
        dev = data_mod.tokenize(tokenizer, dev_ex, spec.train.max_length, cache_dir)
        try:
            keep = data_mod.subsample_indices(len(train), spec.data_seed, count=spec.train_counts.get(name),
                                              fraction=spec.train_fractions.get(name))
        except ValueError as e:
            raise data_mod.DataError(f"task {name}: {e}") from None
        if len(keep) < len(train):
            train = train.subset(keep)
        if spec.train.selection == "split_dev":
            order = np.random.default_rng([spec.data_seed, 7]).permutation(len(dev))
            half = len(dev) // 2
            select, report = dev.subset(np.sort(order[:half])), dev.subset(np.sort(order[half:]))
        else:
            select = report = dev
        scale = {}
        if task.is_regression and spec.train.regression_targets == "standardized":
            labels = train.labels.astype(np.float64)
            scale = {"label_mean": float(labels.mean()), "label_sd": float(labels.std()) or 1.0}
        out[name] = TaskData(task, train, select, report, **scale)
    return out


def pad_multiple(device: torch.device) -> int:
    """Sequence lengths rounded up to a multiple of 8 on CUDA (tensor-core tiles); on the CPU to
    the longest row, as before (a CPU gains nothing from the extra padding)."""
    return 8 if device.type == "cuda" else 1


def row_lengths(data: data_mod.Tokenized, indices: np.ndarray) -> np.ndarray:
    """Token counts of the rows `indices`."""
    return data.offsets[np.asarray(indices) + 1] - data.offsets[np.asarray(indices)]


def merge(parts: list[tuple[str, dict]], pad_id: int, multiple: int = 1):
    """Concatenate per-task collated batches into one, padded to the longest (rounded up to a
    multiple): (batch, rows_of). The batch holds the inputs and, under "labels", each task's labels;
    rows_of gives each task's rows, a contiguous range (a slice: indexing with it copies nothing)."""
    width = max(b["input_ids"].shape[1] for _, b in parts)
    width = -(-width // multiple) * multiple
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in parts[0][1]]
    merged, rows_of, labels, start = {k: [] for k in keys}, {}, {}, 0
    for task, b in parts:
        n = b["input_ids"].shape[0]
        for k in keys:
            fill = pad_id if k == "input_ids" else 0
            merged[k].append(torch.nn.functional.pad(b[k], (0, width - b[k].shape[1]), value=fill))
        rows_of[task] = slice(start, start + n)
        labels[task] = b["labels"]
        start += n
    return {**{k: torch.cat(v) for k, v in merged.items()}, "labels": labels}, rows_of


def chunk_batch(tasks: dict[str, TaskData], chunk: list[tuple[str, int]], pad_id: int, multiple: int = 1):
    """One encoder pass's inputs and labels (`merge`), its rows collated per task; rows per task."""
    by_task: dict[str, list] = {}
    for t, i in chunk:
        by_task.setdefault(t, []).append(i)
    parts = [(t, data_mod.collate(tasks[t].train, np.array(ix), pad_id)) for t, ix in by_task.items()]
    return merge(parts, pad_id, multiple)


def to_device(batch: dict, device: torch.device) -> dict:
    """A collated batch (its labels included) on the device. On CUDA each tensor is pinned and copied
    with non_blocking=True, so the host goes on queueing work while the copy runs: a copy from
    pageable memory would make the host wait for the GPU at every step."""
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if device.type == "cuda":
        return batch.pin_memory().to(device, non_blocking=True)
    return batch.to(device)
