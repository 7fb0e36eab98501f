"""Token lengths of the GLUE tasks, for estimates where the data are not at hand: quantiles 0, 5,
..., 100 % (21 values) per task and split, computed from the real GLUE files with all-MiniLM-L6-v2's
WordPiece tokenizer (uncased BERT vocabulary) at max length 128. RoBERTa's byte-level BPE gives
lengths within about 10% of these on English text. MNLI and QNLI train use their dev distribution
and QQP a 23,497-row sample of its train set, for both splits (the full files were not on the
machine where this was made). Used by `mtlstudy plan` (compute.py) and benchmarks/gpu_throughput.py.
"""
from __future__ import annotations

import numpy as np

LENGTH_QUANTILES = {
    "mnli": {"train": [6, 15, 18, 21, 23, 26, 28, 30, 32, 34, 36, 38, 41, 43, 46, 49, 53, 57, 63, 72, 128],
             "dev": [6, 15, 18, 21, 23, 26, 28, 30, 32, 34, 36, 38, 41, 43, 46, 49, 53, 57, 63, 72, 128]},
    "qqp": {"train": [11, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 29, 30, 32, 33, 36, 38, 42, 47, 55, 128],
            "dev": [11, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 29, 30, 32, 33, 36, 38, 42, 47, 55, 128]},
    "qnli": {"train": [15, 27, 31, 33, 36, 38, 40, 42, 44, 46, 48, 50, 52, 54, 57, 60, 63, 68, 75, 87, 128],
             "dev": [15, 27, 31, 33, 36, 38, 40, 42, 44, 46, 48, 50, 52, 54, 57, 60, 63, 68, 75, 87, 128]},
    "sst2": {"train": [3, 4, 4, 5, 6, 6, 7, 8, 8, 9, 10, 11, 13, 14, 16, 18, 20, 23, 27, 33, 66],
             "dev": [4, 10, 12, 14, 16, 17, 19, 20, 21, 23, 24, 26, 27, 29, 30, 32, 34, 37, 40, 44, 55]},
    "cola": {"train": [4, 6, 7, 8, 8, 9, 9, 9, 10, 10, 10, 11, 11, 12, 12, 13, 14, 15, 17, 20, 47],
             "dev": [5, 6, 7, 8, 8, 9, 9, 9, 10, 10, 10, 11, 11, 12, 13, 14, 15, 16, 18, 21, 35]},
    "stsb": {"train": [10, 15, 16, 17, 18, 19, 19, 20, 21, 22, 23, 24, 25, 26, 28, 31, 35, 42, 51, 60, 125],
             "dev": [11, 16, 17, 18, 19, 20, 21, 22, 23, 25, 28, 30, 33, 35, 38, 41, 43, 46, 51, 60, 87]},
    "mrpc": {"train": [19, 32, 36, 39, 41, 44, 45, 47, 50, 51, 53, 55, 57, 59, 61, 62, 64, 67, 70, 74, 103],
             "dev": [26, 32, 37, 40, 42, 44, 45, 47, 49, 51, 53, 55, 57, 59, 61, 63, 64, 67, 70, 74, 86]},
    "rte": {"train": [13, 29, 33, 37, 40, 43, 45, 47, 50, 53, 56, 59, 62, 67, 72, 85, 103, 120, 128, 128, 128],
            "dev": [17, 29, 34, 36, 38, 41, 43, 46, 48, 50, 53, 56, 60, 64, 71, 79, 99, 115, 128, 128, 128]},
    "wnli": {"train": [16, 21, 23, 24, 26, 27, 28, 28, 30, 31, 32, 34, 35, 37, 38, 42, 45, 52, 63, 72, 108],
             "dev": [16, 22, 23, 25, 26, 27, 28, 29, 30, 31, 33, 34, 36, 38, 42, 44, 47, 50, 62, 70, 105]},
}


def sample_lengths(task: str, split: str, n: int, rng: np.random.Generator, max_length: int = 128) -> np.ndarray:
    """`n` lengths drawn from a GLUE task's quantiles (interpolated), capped at `max_length`."""
    q = np.asarray(LENGTH_QUANTILES[task][split], dtype=float)
    u = rng.random(n)
    return np.clip(np.rint(np.interp(u, np.linspace(0, 1, len(q)), q)), 3, max_length).astype(np.int64)
