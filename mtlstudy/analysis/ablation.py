"""The size ablation (Figure 2): the support subsampled to K x the target's train size (at the
released code's sizes, `ablation.sizes: released`, K is its label: its K = 3 is 3.03 x); means and
confidence intervals over seeds, the matrix's t-test at each K, where the curves cross."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from .load import ablation_rows
from .matrix import ALPHA, ttest


def ablation_summary(df: pd.DataFrame, confidence: float = 0.9) -> pd.DataFrame:
    """Mean score over seeds per target, target fraction, method and K, with two confidence
    intervals of the mean: the t-distribution's (lo, hi) and a percentile bootstrap's (boot_lo,
    boot_hi; what the released plot draws, seaborn-style, 1,000 resamples, seeded). Columns:
    target, target_fraction, method, k, n, mean, sd, lo, hi, boot_lo, boot_hi."""
    rows = ablation_rows(df)
    out = []
    for key, g in rows.groupby(["target", "target_fraction", "method", "k"]):
        x = g["score"].to_numpy(float)
        n, mean = len(x), x.mean()
        sd = x.std(ddof=1) if n > 1 else float("nan")
        half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n) if n > 1 else float("nan")
        boot = (np.nan, np.nan)
        if n > 1 and sd > 0:
            ci = stats.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=1000,
                                 method="percentile", random_state=np.random.default_rng(0)).confidence_interval
            boot = (ci.low, ci.high)
        elif n > 1:
            boot = (mean, mean)
        out.append(dict(zip(["target", "target_fraction", "method", "k"], key),
                        n=n, mean=mean, sd=sd, lo=mean - half, hi=mean + half, boot_lo=boot[0], boot_hi=boot[1]))
    return pd.DataFrame(out, columns=["target", "target_fraction", "method", "k", "n", "mean",
                                      "sd", "lo", "hi", "boot_lo", "boot_hi"])


def ablation_tests(df: pd.DataFrame, alpha: float = ALPHA, equal_var: bool = True) -> pd.DataFrame:
    """The matrix's t-test at each K of the ablation: MTL seeds against STILTs seeds per target,
    target fraction and K (Figure 2's curves are 'statistically similar' only where p >= alpha).
    Columns: target, target_fraction, k, diff, p, significant, winner."""
    rows = ablation_rows(df)
    out = []
    for (target, frac, k), g in rows.groupby(["target", "target_fraction", "k"]):
        mtl, stilts = (g.loc[g["method"] == m, "score"].to_numpy(float) for m in ("mtl", "stilts"))
        if not len(mtl) or not len(stilts):
            continue
        _, p = ttest(mtl, stilts, equal_var)
        diff = mtl.mean() - stilts.mean()
        sig = bool(p < alpha)
        out.append(dict(target=target, target_fraction=frac, k=k, diff=diff, p=p, significant=sig,
                        winner=("mtl" if diff > 0 else "stilts") if sig else "none"))
    return pd.DataFrame(out, columns=["target", "target_fraction", "k", "diff", "p", "significant", "winner"])


def crossings(ks, diffs) -> list[float]:
    """K values where `diffs` (mean MTL - mean STILTs at sorted `ks`) changes sign, by linear
    interpolation between neighbouring K values; a zero difference counts at its own K."""
    points = sorted(zip(ks, diffs))
    out = [float(k) for k, d in points if d == 0]
    for (k0, d0), (k1, d1) in zip(points, points[1:]):
        if d0 * d1 < 0:
            out.append(float(k0 + (k1 - k0) * d0 / (d0 - d1)))
    return sorted(out)


def ablation_crossings(summary: pd.DataFrame) -> pd.DataFrame:
    """Per target and fraction: where the MTL and STILTs curves cross ('none' if they don't)."""
    out = []
    for (target, frac), g in summary.groupby(["target", "target_fraction"]):
        m = g.pivot(index="k", columns="method", values="mean").dropna()
        if not {"mtl", "stilts"} <= set(m.columns):
            continue
        ks = crossings(m.index, m["mtl"] - m["stilts"])
        out.append(dict(target=target, target_fraction=frac, crossings=ks,
                        text=", ".join(f"K={k:.2f}" for k in ks) or "none"))
    return pd.DataFrame(out, columns=["target", "target_fraction", "crossings", "text"])
