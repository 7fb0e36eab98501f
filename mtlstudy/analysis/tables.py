"""Tables 1 and 2 of the paper: per target, single task, MTL-All per sampler, Avg STILTs, Avg MTL,
Avg S.H. and the Pairwise Oracle; the paper's published means beside ours; the same rows per seed,
their mean and standard deviation over seeds, and the LaTeX (booktabs) table for a paper."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..sampling import DYNAMIC
from .load import pairwise_rows

# The paper's published means over the 9 targets (Tables 1 and 2), by our row labels.
PAPER_VALUES = {"MTL-All (size)": 73.3, "MTL-All (uniform)": 63.2, "MTL-All (dynamic)": 67.2,
                "Avg STILTs": 75.8, "Avg MTL": 77.3, "Avg S.H.": 78.3, "Pairwise Oracle": 80.7}
ORACLE = "Pairwise Oracle"
# The sampler a published value came from where the paper's text names another: its "dynamic" MTL-All
# mean is the released scripts' softmax sampler (docs/protocol.md, fidelity table, point 9).
PAPER_SAMPLERS = {"MTL-All (dynamic)": "softmax_gap"}


def _paper_label(sampler: str) -> str:
    """Row label of MTL-All with one sampler, in the paper's words: size-proportional samplers are
    'size', the dynamic samplers (the paper's text: gap; its released code: softmax_gap) 'dynamic'."""
    s = sampler.lower()
    name = "size" if ("size" in s or "prop" in s) else "dynamic" if s in DYNAMIC else s
    return f"MTL-All ({name})"


def mtl_all_labels(samplers) -> dict[str, str]:
    """Row label of MTL-All per sampler; two dynamic samplers in one study keep their names."""
    labels = [_paper_label(s) for s in samplers]
    return {s: (label if labels.count(label) == 1 else f"MTL-All ({s})") for s, label in zip(samplers, labels)}


def method_means(df: pd.DataFrame, method: str) -> pd.DataFrame:
    """Mean score over seeds per target (index) and sampler (columns) of one method."""
    rows = df[(df["method"] == method) & df["k"].isna()]
    return rows.groupby(["target", "sampler"])["score"].mean().unstack("sampler")


def summary_table(df: pd.DataFrame, cells: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """Tables 1 and 2: rows = methods, columns = targets (in `order`) and their Mean.

    Rows: Single task, MTL-All (<sampler>) per sampler, Avg STILTs and Avg MTL (mean over the
    supports), Avg S.H. (per support the method the size heuristic picks), Pairwise Oracle (max
    over supports of the better method). Rows without data are left out.
    """
    table = {}
    single = method_means(df, "single")
    if not single.empty:
        table["Single task"] = single.mean(axis=1)
    samplers = method_means(df, "mtl_all")
    for sampler, label in mtl_all_labels(samplers.columns).items():
        table[label] = samplers[sampler]
    if len(cells):
        c = cells.assign(sh=np.where(cells["heuristic"] == "mtl", cells["mean_mtl"], cells["mean_stilts"]),
                         best=cells[["mean_mtl", "mean_stilts"]].max(axis=1))
        by = c.groupby("target")
        table["Avg STILTs"] = by["mean_stilts"].mean()
        table["Avg MTL"] = by["mean_mtl"].mean()
        table["Avg S.H."] = by["sh"].mean()
        table[ORACLE] = by["best"].max()
    out = pd.DataFrame(table).T
    out = out.reindex(columns=[t for t in order if t in out.columns])
    out["Mean"] = out.mean(axis=1)
    out.index.name = "method"
    return out


ROW_DEFINITIONS = {
    "Single task": "each target trained alone, mean over seeds.",
    "MTL-All": "one model trained on all tasks at once with the named task sampler, scored on each target.",
    "Avg STILTs": "per target, the mean over supports of STILTs (train on the support, then fine-tune on the target).",
    "Avg MTL": "per target, the mean over supports of pairwise MTL (target and support trained together).",
    "Avg S.H.": "per target, for each support the method the size heuristic picks (MTL when the support is "
                "larger than the target, else STILTs), averaged over supports.",
    ORACLE: "per target, the maximum over supports of the better of MTL and STILTs (an upper bound no rule "
            "can beat without seeing dev scores).",
}


def row_definition(row: str) -> str:
    """The one-sentence definition of a Table 1/2 row ('MTL-All (size)' -> the MTL-All sentence)."""
    return ROW_DEFINITIONS.get(row) or ROW_DEFINITIONS.get(row.split(" (")[0], "")



def mtl_all_table(df: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """Table 2: single task and MTL-All per sampler, per target and their mean."""
    return summary_table(df, pd.DataFrame(), order)


def best_mask(table: pd.DataFrame) -> pd.DataFrame:
    """True at the best non-oracle value of each column (ties all marked)."""
    rest = table.drop(index=[ORACLE], errors="ignore")
    mask = rest.eq(rest.max(axis=0), axis=1)
    return mask.reindex(index=table.index, fill_value=False)


def format_table(table: pd.DataFrame, mark: str = "*") -> pd.DataFrame:
    """Table as strings with one decimal, the best non-oracle value per column followed by `mark`."""
    mask = best_mask(table)
    return table.apply(lambda col: [("" if pd.isna(v) else f"{v:.1f}" + (mark if m else ""))
                                    for v, m in zip(col, mask[col.name])])


def paper_comparison(table: pd.DataFrame) -> pd.DataFrame:
    """Our Mean column beside the paper's published values, for rows the paper reports."""
    rows = [dict(method=m, ours=table.at[m, "Mean"], paper=PAPER_VALUES[m],
                 difference=table.at[m, "Mean"] - PAPER_VALUES[m])
            for m in table.index if m in PAPER_VALUES]
    return pd.DataFrame(rows, columns=["method", "ours", "paper", "difference"])


def read_table(path: Path) -> pd.DataFrame:
    """Table 1 or 2 as the analysis notebook wrote it (tables/table1.csv, table2.csv)."""
    return pd.read_csv(path, index_col="method")


# ---- per seed: mean and standard deviation over seeds, the LaTeX table ----------------------------

def seed_scores(df: pd.DataFrame, cells: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """Each Table 1/2 row per seed: columns method (the row), column (a target of `order`, or
    'Mean'), seed, score. A seed's Avg STILTs, Avg MTL and Avg S.H. average that seed's runs over
    the supports of the cell table `cells`; the Pairwise Oracle takes, per target, the support and
    method whose mean is the best (as in summary_table) and that pair's score at each seed; a seed's
    Mean averages its targets. Their mean over seeds is summary_table's value wherever every seed
    has every run."""
    plain = df[df["k"].isna() & df["target"].isin(order)]
    parts = [plain[plain["method"] == "single"].assign(method="Single task")]
    mtl_all = plain[plain["method"] == "mtl_all"]
    for sampler, label in mtl_all_labels(sorted(set(mtl_all["sampler"]))).items():
        parts.append(mtl_all[mtl_all["sampler"] == sampler].assign(method=label))
    if len(cells):
        pairs = pairwise_rows(df).merge(cells[["target", "support", "heuristic"]], on=["target", "support"])
        wide = pairs.pivot_table(index=["target", "support", "seed", "heuristic"], columns="method",
                                 values="score").reset_index()
        wide = wide.reindex(columns=[*wide.columns, *{"mtl", "stilts"} - set(wide.columns)])  # one method's runs absent
        wide["sh"] = np.where(wide["heuristic"] == "mtl", wide["mtl"], wide["stilts"])
        for method, col in (("Avg STILTs", "stilts"), ("Avg MTL", "mtl"), ("Avg S.H.", "sh")):
            parts.append(wide.groupby(["target", "seed"], as_index=False)[col].mean()
                         .rename(columns={col: "score"}).assign(method=method))
        best = cells.assign(method=np.where(cells["mean_mtl"] >= cells["mean_stilts"], "mtl", "stilts"),
                            best=cells[["mean_mtl", "mean_stilts"]].max(axis=1))
        best = best.loc[best.groupby("target")["best"].idxmax(), ["target", "support", "method"]]
        oracle = [wide.loc[(wide["target"] == r.target) & (wide["support"] == r.support), ["target", "seed", r.method]]
                  .rename(columns={r.method: "score"}) for r in best.itertuples()]
        parts.append(pd.concat(oracle).assign(method=ORACLE))
    cols = ["method", "target", "seed", "score"]
    rows = pd.concat([p[cols] for p in parts]).dropna(subset=["score"])
    rows = rows.groupby(["method", "target", "seed"], as_index=False)["score"].mean()
    means = rows.groupby(["method", "seed"], as_index=False)["score"].mean().assign(target="Mean")
    return pd.concat([rows, means])[cols].rename(columns={"target": "column"}).reset_index(drop=True)


def seed_spread(scores: pd.DataFrame, row_order: list[str], order: list[str]) -> pd.DataFrame:
    """Mean, standard deviation (n - 1) and n over seeds per row and column of `seed_scores`, in
    the tables' row and column order; the paper's published mean beside the Mean column."""
    out = scores.groupby(["method", "column"])["score"].agg(mean="mean", sd="std", n="count").reset_index()
    out["paper"] = [PAPER_VALUES.get(m) if c == "Mean" else None for m, c in zip(out["method"], out["column"])]
    rank = {m: i for i, m in enumerate(row_order)}
    col_rank = {c: i for i, c in enumerate([*order, "Mean"])}
    out = out[out["method"].isin(rank) & out["column"].isin(col_rank)]
    return out.sort_values(["method", "column"], key=lambda s: s.map(rank if s.name == "method" else col_rank)) \
        .reset_index(drop=True)


def latex_table(spread: pd.DataFrame, table: pd.DataFrame) -> str:
    """The table as a LaTeX tabular with booktabs rules, to \\input in a paper: per row and column
    'mean $\\pm$ sd' over seeds (the mean alone with one seed), the best non-oracle mean per column in
    bold (best_mask of `table`), the paper's published mean in the last column."""
    mask = best_mask(table)
    cols = [c for c in table.columns]
    cells = pd.DataFrame("", index=table.index, columns=[*cols, "Paper"])
    for r in spread.itertuples():
        if r.method not in cells.index or r.column not in cols:
            continue
        mean = f"{r.mean:.1f}"
        if mask.at[r.method, r.column]:
            mean = f"\\textbf{{{mean}}}"
        cells.at[r.method, r.column] = mean + ("" if pd.isna(r.sd) else f" $\\pm$ {r.sd:.1f}")
    for m in cells.index:
        cells.at[m, "Paper"] = f"{PAPER_VALUES[m]:.1f}" if m in PAPER_VALUES else "--"
    cells.index.name, cells.columns.name = None, None
    styler = cells.style.format_index(escape="latex", axis=0).format_index(escape="latex", axis=1)
    return styler.to_latex(hrules=True, column_format="l" + "r" * len(cells.columns))


def write_paper_table(df: pd.DataFrame, cells: pd.DataFrame, table: pd.DataFrame, stem: Path) -> list[Path]:
    """Beside <stem>.csv (Table 1 or 2 as summary_table makes it, `table`): <stem>_seeds.csv (per row
    and column: mean, sd and n over seeds, the paper's mean) and <stem>.tex (latex_table)."""
    order = [c for c in table.columns if c != "Mean"]
    spread = seed_spread(seed_scores(df, cells, order), list(table.index), order)
    stem = Path(stem)
    csv, tex = stem.with_name(stem.name + "_seeds.csv"), stem.with_suffix(".tex")
    spread.to_csv(csv, index=False)
    n = sorted(set(spread["n"]))
    over = f"{n[0]} seeds" if len(n) == 1 else f"{n[0]} to {n[-1]} seeds (n per cell: {csv.name})"
    note = (f"% {stem.name}: dev score (points), mean $\\pm$ standard deviation over {over}; bold: the best "
            "non-oracle mean per column; Paper: the paper's published mean. Needs \\usepackage{booktabs}.\n")
    tex.write_text(note + latex_table(spread, table), encoding="utf-8")
    return [csv, tex]
