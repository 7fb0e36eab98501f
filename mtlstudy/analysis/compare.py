"""Two studies compared cell by cell (Figure 3: a replication with another encoder beside the
main study)."""
from __future__ import annotations

import numpy as np
import pandas as pd


def agreement(cells_a: pd.DataFrame, cells_b: pd.DataFrame) -> dict:
    """Compare two studies' matrices on the cells significant in both.

    Returns n_a, n_b (significant cells in each), n_both, n_same (same winner), fraction
    (n_same / n_both), disagree (list of (target, support)), text.
    """
    a = cells_a[cells_a["significant"]].set_index(["target", "support"])["winner"]
    b = cells_b[cells_b["significant"]].set_index(["target", "support"])["winner"]
    both = a.index.intersection(b.index)
    same = [c for c in both if a[c] == b[c]]
    frac = len(same) / len(both) if len(both) else float("nan")
    text = (f"{len(same)} of {len(both)} cells significant in both have the same winner"
            + (f" ({100 * frac:.1f}%)" if len(both) else ""))
    return dict(n_a=len(a), n_b=len(b), n_both=len(both), n_same=len(same), fraction=frac,
                disagree=[c for c in both if a[c] != b[c]], text=text)


def sign_agreement(cells_a: pd.DataFrame, cells_b: pd.DataFrame) -> dict:
    """Cell by cell over every cell studied in both (significant or not): does mean MTL - mean
    STILTs have the same sign? Returns n, n_same, fraction, text. With the heuristic accuracy of
    each study, this is how a replication (BERT) is compared with the main study: the paper
    publishes no BERT table to compare means with."""
    m = cells_a[["target", "support", "diff"]].merge(cells_b[["target", "support", "diff"]],
                                                       on=["target", "support"], suffixes=("_a", "_b"))
    same = int((np.sign(m["diff_a"]) == np.sign(m["diff_b"])).sum())
    frac = same / len(m) if len(m) else float("nan")
    text = f"{same} of {len(m)} cells have the same sign of MTL - STILTs" + (f" ({100 * frac:.1f}%)" if len(m) else "")
    return dict(n=len(m), n_same=same, fraction=frac, text=text)


def agreement_table(cells_a: pd.DataFrame, cells_b: pd.DataFrame, labels=("a", "b")) -> pd.DataFrame:
    """Cells studied in both, side by side: diff, p and winner of each, and whether the
    significant winners agree (NaN unless significant in both)."""
    cols = ["target", "support", "diff", "p", "winner", "significant"]
    m = cells_a[cols].merge(cells_b[cols], on=["target", "support"], suffixes=[f"_{x}" for x in labels])
    a, b = labels
    both = m[f"significant_{a}"] & m[f"significant_{b}"]
    m["same_winner"] = (m[f"winner_{a}"] == m[f"winner_{b}"]).where(both)
    return m.drop(columns=[f"significant_{a}", f"significant_{b}"])
