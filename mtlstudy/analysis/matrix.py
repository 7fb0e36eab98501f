"""The paper's pairwise matrix: per (target, support) cell, MTL against STILTs over seeds with a
two-sided t-test; the size heuristic and its accuracy over the significant cells."""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import BadValue
from .load import load_results, pairwise_rows, task_order, task_sizes

ALPHA = 0.1  # the paper's significance level (two-sided)
PAPER_HEURISTIC = "49 of 53 significant cells (92.5%)"


def heuristic(target_size: float, support_size: float, abstain_below: float | None = None):
    """The size heuristic: 'mtl' when |S| > |T|, otherwise 'stilts'.

    With `abstain_below`, returns None when the larger size is less than `abstain_below` times
    the smaller one (sizes too close to call).
    """
    if abstain_below is not None:
        ratio = max(target_size, support_size) / min(target_size, support_size)
        if ratio < abstain_below:
            return None
    return "mtl" if support_size > target_size else "stilts"


def ttest(mtl_scores, stilts_scores, equal_var: bool = True) -> tuple[float, float]:
    """Two-sided two-sample t-test of MTL against STILTs scores (t > 0: MTL higher).

    equal_var=True is Student's pooled test (the released code); False is Welch's.
    NaN when either side has fewer than two scores.
    """
    a, b = np.asarray(mtl_scores, float), np.asarray(stilts_scores, float)
    if len(a) < 2 or len(b) < 2:
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        # every seed with the same score (common on tiny tasks) makes scipy warn about precision;
        # its result stands: t = +-inf, p = 0 when the means differ, NaN when they are equal
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        res = stats.ttest_ind(a, b, equal_var=equal_var)
    return float(res.statistic), float(res.pvalue)


def cell_table(df: pd.DataFrame, sizes: dict[str, int] | None = None, alpha: float = ALPHA,
               equal_var: bool = True, sampler: str | None = None) -> pd.DataFrame:
    """One row per (target, support) cell of the pairwise matrix.

    Columns: target, support, n_mtl, n_stilts, mean_mtl, mean_stilts, diff (mean MTL - mean
    STILTs, points), t, p, significant (p < alpha), winner ('mtl'/'stilts'/'' when not
    significant), target_size, support_size, heuristic ('mtl'/'stilts'), heuristic_correct
    (True/False on significant cells, NaN elsewhere).
    """
    rows = pairwise_rows(df)
    mtl = rows[rows["method"] == "mtl"]
    samplers = sorted(set(mtl["sampler"]))
    if sampler is not None:
        mtl = mtl[mtl["sampler"] == sampler]
    elif len(samplers) > 1:
        raise BadValue(f"pairwise MTL rows use several samplers ({', '.join(samplers)}): pass sampler=")
    rows = pd.concat([mtl, rows[rows["method"] == "stilts"]])
    sizes = task_sizes(df) if sizes is None else sizes
    rank = {t: i for i, t in enumerate(task_order(sizes, set(rows["target"]) | set(rows["support"])))}
    out = []
    for (target, support), g in rows.groupby(["target", "support"], sort=False):
        a = g.loc[g["method"] == "mtl", "score"].to_numpy(float)
        b = g.loc[g["method"] == "stilts", "score"].to_numpy(float)
        t, p = ttest(a, b, equal_var)
        diff = (a.mean() - b.mean()) if len(a) and len(b) else float("nan")
        significant = bool(p < alpha)
        winner = ("mtl" if t > 0 else "stilts") if significant else ""
        pick = heuristic(sizes[target], sizes[support])
        out.append(dict(target=target, support=support, n_mtl=len(a), n_stilts=len(b),
                        mean_mtl=a.mean() if len(a) else np.nan,
                        mean_stilts=b.mean() if len(b) else np.nan, diff=diff, t=t, p=p,
                        significant=significant, winner=winner, target_size=sizes[target],
                        support_size=sizes[support], heuristic=pick,
                        heuristic_correct=(pick == winner) if significant else np.nan))
    cols = ["target", "support", "n_mtl", "n_stilts", "mean_mtl", "mean_stilts", "diff", "t", "p",
            "significant", "winner", "target_size", "support_size", "heuristic", "heuristic_correct"]
    cells = pd.DataFrame(out, columns=cols).astype({"significant": bool})
    cells = cells.sort_values(["target", "support"], key=lambda s: s.map(rank))
    return cells.reset_index(drop=True)


def study_cells(study_dir: Path, alpha: float = ALPHA, equal_var: bool = True,
                sampler: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    """cell_table of a study folder and its task order (largest first)."""
    df = load_results(study_dir)
    sizes = task_sizes(df, study_dir)
    cells = cell_table(df, sizes, alpha=alpha, equal_var=equal_var, sampler=sampler)
    return cells, task_order(sizes, set(cells["target"]) | set(cells["support"]))


def matrix(cells: pd.DataFrame, order: list[str], value: str = "diff") -> pd.DataFrame:
    """Targets x supports matrix of one cell column, both in `order`; diagonal and gaps NaN."""
    m = cells.pivot(index="target", columns="support", values=value)
    m = m.reindex(index=order, columns=order)
    m.index.name, m.columns.name = "target", "support"
    return m


def heuristic_accuracy(cells: pd.DataFrame, abstain_below: float | None = None) -> dict:
    """Accuracy of the size heuristic over the significant cells.

    Returns k (right), n (significant cells where it makes a call), pct, abstained (significant
    cells skipped by the ratio threshold), wrong (list of (target, support)), text.
    """
    sig = cells[cells["significant"]]
    picks = [heuristic(r.target_size, r.support_size, abstain_below) for r in sig.itertuples()]
    called = [(r, p) for r, p in zip(sig.itertuples(), picks) if p is not None]
    wrong = [(r.target, r.support) for r, p in called if p != r.winner]
    n, k = len(called), len(called) - len(wrong)
    pct = 100.0 * k / n if n else float("nan")
    text = f"{k} of {n} significant cells ({pct:.1f}%)" if n else "0 of 0 significant cells"
    abstained = len(sig) - n
    if abstain_below is not None:
        text += f", abstaining on {abstained} with size ratio < {abstain_below:g}"
    return dict(k=k, n=n, pct=pct, abstained=abstained, wrong=wrong, text=text)


def heuristic_wrong_cells(cells: pd.DataFrame, abstain_below: float | None = None) -> pd.DataFrame:
    """The significant cells where the size heuristic picks the wrong winner."""
    wrong = set(heuristic_accuracy(cells, abstain_below)["wrong"])
    mask = [(t, s) in wrong for t, s in zip(cells["target"], cells["support"])]
    return cells[mask].reset_index(drop=True)


def significance_summary(cells: pd.DataFrame, alpha: float = ALPHA) -> str:
    """One sentence: how many matrix cells are significant, which method wins them, and the size
    heuristic's accuracy over them beside the paper's (the report's and `mtlstudy run`'s line)."""
    sig = cells[cells["significant"]]
    wins = ", ".join(f"{m.upper() if m == 'mtl' else 'STILTs'} better in {k}"
                     for m, k in sig["winner"].value_counts().sort_index().items())
    return (f"{len(sig)} of {len(cells)} matrix cells are significant (p < {alpha:g}){f': {wins}' if wins else ''}. "
            f"The size heuristic (MTL when the support is larger than the target, else STILTs) is right on "
            f"{heuristic_accuracy(cells)['text']} (paper: {PAPER_HEURISTIC}).")


def why_not_significant(cells: pd.DataFrame, alpha: float = ALPHA, equal_var: bool = True) -> str:
    """Why no cell reaches p < alpha: seeds per method, the seeds' spread, and the difference of
    means the t-test would need at that spread, against the largest one seen. '' when a cell is
    significant or there are no cells."""
    if not len(cells) or cells["significant"].any():
        return ""
    n = int(min(cells["n_mtl"].min(), cells["n_stilts"].min()))
    if n < 2:
        return (f"No cell can be significant: a t-test needs at least 2 seeds per method, and some cells "
                f"have {n}.")
    # pooled per-cell spread over the cells' own t statistics: |diff| / |t| = s.e. of the difference
    se = (cells["diff"].abs() / cells["t"].abs()).replace([np.inf, -np.inf], np.nan).dropna()
    dof = 2 * n - 2
    crit = stats.t.ppf(1 - alpha / 2, dof)
    text = (f"No cell is significant at alpha {alpha:g}: with {n} seeds per method the t-test has {dof} "
            f"degrees of freedom (critical |t| {crit:.2f})")
    if len(se):
        sd = float(np.median(se)) / math.sqrt(2 / n)
        text += (f"; the seeds' standard deviation is about {sd:.1f} points (median over cells), so a "
                 f"difference of means needs about {crit * float(np.median(se)):.1f} points, and the largest "
                 f"here is {cells['diff'].abs().max():.1f}. More seeds or larger tasks (less spread) would tell")
    return text + "."


def read_cells(path: Path) -> pd.DataFrame:
    """A cell table as the analysis notebook wrote it (tables/cells.csv), with cell_table's types:
    task names and the heuristic as text, winner '' where no cell is significant."""
    cells = pd.read_csv(path, dtype={"target": str, "support": str, "winner": str, "heuristic": str})
    cells["winner"] = cells["winner"].fillna("")
    return cells.astype({"significant": bool})
