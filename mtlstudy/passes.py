"""A batch's rows cut into encoder passes (train.padding, micro_batch_size, multitask_forward), and
the tokens those passes compute. No torch: `mtlstudy plan` counts a study's tokens with it.
"""
from __future__ import annotations

import numpy as np


def sorted_cut(lengths: np.ndarray, passes: int, multiple: int = 1) -> list[np.ndarray]:
    """The rows (positions in `lengths`) sorted longest first and cut into at most `passes` runs of
    consecutive rows, each padded to its first (longest) row rounded up to `multiple`, where the
    fewest tokens are computed; the fewest passes among equal cuts. Dynamic programming over the
    cut points: best[j][i] is the fewest tokens of the first i rows in j passes."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    width = -(-np.asarray(lengths)[order] // multiple) * multiple
    n = len(order)
    start, end = np.arange(n + 1)[:, None], np.arange(n + 1)[None, :]
    cost = np.where(start < end, (end - start) * np.append(width, 0)[:, None], np.inf)  # rows start..end-1 as one pass
    best, choice = [np.where(np.arange(n + 1) == 0, 0.0, np.inf)], []
    for _ in range(min(passes, n)):
        total = best[-1][:, None] + cost
        choice.append(total.argmin(0))
        best.append(total.min(0))
    used = min(range(1, len(best)), key=lambda j: (best[j][n], j)) if n else 0
    cuts, i = [], n
    for j in range(used, 0, -1):
        s = int(choice[j - 1][i])
        cuts.append(order[s:i])
        i = s
    return cuts[::-1]


def pass_chunks(batch_plan, micro: int | None, per_task: bool, lengths: dict[str, np.ndarray] | None = None,
                passes: int = 1, multiple: int = 1) -> list[list[tuple[str, int]]]:
    """The batch's (task, row) pairs cut into encoder passes: all rows together, or each task's
    rows apart; with `lengths` (per task, of its rows in the plan: train.padding `sorted_passes`)
    each of those sorted by length and cut into at most `passes` (`sorted_cut`); then into chunks of
    at most `micro` rows (gradient accumulation)."""
    groups = [[(t, i) for i in ix] for t, ix in batch_plan] if per_task else \
        [[(t, i) for t, ix in batch_plan for i in ix]]
    if lengths is not None:
        length_groups = [list(lengths[t]) for t, _ in batch_plan] if per_task else \
            [[n for t, _ in batch_plan for n in lengths[t]]]
        groups = [[rows[k] for k in part] for rows, ls in zip(groups, length_groups) if rows
                  for part in sorted_cut(np.array(ls), passes, multiple)]
    return [rows[s:s + (micro or len(rows))] for rows in groups if rows
            for s in range(0, len(rows), micro or len(rows))]


def pass_tokens(chunks: list[list[tuple[str, int]]], lengths: dict[str, dict[int, int]], multiple: int = 1) -> int:
    """Tokens the encoder computes for these passes: each pass's rows times its longest row
    (rounded up to `multiple`). `lengths`: per task, row -> token count."""
    return sum(len(c) * -(-max(lengths[t][i] for t, i in c) // multiple) * multiple for c in chunks)
