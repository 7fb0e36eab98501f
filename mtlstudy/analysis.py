"""Analysis of a finished study: pairwise cells and t-tests, the size heuristic, Tables 1/2,
the size ablation, agreement of two studies and `recommend`.

Pure pandas/scipy. Input is a study folder (results.csv, runs/<run_id>/result.json, optional
study.json) as written by the rest of the package. Scores are dev scores x100 ("points").
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from .errors import BadValue, StudyNotFound
from .folder import StudyFolder
from .sampling import DYNAMIC
from .tasks import GENERATED_TASKS, GLUE_TASKS


ALPHA = 0.1  # the paper's significance level (two-sided)
COLLAPSE_MARGIN = 1.0  # points above the majority level that still count as "learned nothing"
PAIR_METHODS = ("mtl", "stilts")

# Train sizes of the registered tasks (GLUE's official sizes and the generated suite's defaults).
REGISTERED_SIZES = {n: t.train_size for reg in (GLUE_TASKS, GENERATED_TASKS) for n, t in reg.items() if t.train_size}

# The paper's published means over the 9 targets (Tables 1 and 2), by our row labels.
PAPER_VALUES = {"MTL-All (size)": 73.3, "MTL-All (uniform)": 63.2, "MTL-All (dynamic)": 67.2,
                "Avg STILTs": 75.8, "Avg MTL": 77.3, "Avg S.H.": 78.3, "Pairwise Oracle": 80.7}
PAPER_HEURISTIC = "49 of 53 significant cells (92.5%)"
ORACLE = "Pairwise Oracle"


# ----------------------------------------------------------------------------- loading

def load_results(study_dir: Path) -> pd.DataFrame:
    """Read <study_dir>/results.csv with empty strings (not NaN) in the text columns."""
    path = Path(study_dir) / "results.csv"
    if not path.is_file():
        raise StudyNotFound(f"no results.csv in {study_dir}")
    df = pd.read_csv(path, dtype={"run_id": str, "target": str, "support": str, "sampler": str,
                                  "method": str, "model": str, "study": str})
    for col in ("support", "sampler", "model", "study"):
        if col not in df:
            df[col] = ""
        df[col] = df[col].fillna("").astype(str)
    for col, default in (("k", np.nan), ("target_fraction", 1.0), ("support_train_size", np.nan)):
        if col not in df:
            df[col] = default
    if "best_epoch" not in df:  # written before the column existed: each run's record has it
        df["best_epoch"] = [((load_run(study_dir, r.run_id) or {}).get("best", {}).get(r.target) or {}).get("epoch", np.nan)
                            for r in df.itertuples()]
    return df


def load_study_info(study_dir: Path) -> dict:
    """study.json as a dict, or {} when the study has none."""
    path = Path(study_dir) / "study.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def is_paper_study(study_dir: Path) -> bool:
    """True when study.json says the study follows the paper's setting (so paper values apply)."""
    info = load_study_info(study_dir)
    return bool(info.get("paper", False))


def load_run(study_dir: Path, run_id: str) -> dict | None:
    """The run's record as a dict, or None when it is missing (a corrupt one raises CorruptResultError)."""
    return StudyFolder(study_dir).read_record(run_id)


def history_frame(run: dict) -> pd.DataFrame:
    """One row per evaluation of a run: step, epoch, train_loss, score:<task>, prob:<task>."""
    rows = []
    for h in run.get("history", []):
        row = {"step": h.get("step"), "epoch": h.get("epoch"), "train_loss": h.get("train_loss")}
        row.update({f"score:{t}": s for t, s in (h.get("scores") or {}).items()})
        row.update({f"prob:{t}": p for t, p in (h.get("sampler_probs") or {}).items()})
        rows.append(row)
    return pd.DataFrame(rows)


RUN_SETTINGS = ("lr", "batch_size", "epochs", "max_length", "sampler", "schedule", "epoch_length", "heads",
                "selection", "warmup_ratio", "weight_decay", "max_grad_norm", "group_by_length")


def run_summary(run: dict) -> pd.DataFrame:
    """A run's parameters and cost as a two-column table (what, value): method, tasks, seed,
    model, train sizes, the training settings, steps, examples seen, wall time and device."""
    params = run.get("params") or {}
    train = params.get("train") or {}
    rows = [("method", run.get("method")), ("tasks", ", ".join(run.get("tasks") or [])),
            ("seed", run.get("seed")), ("model", run.get("model")),
            ("train sizes", ", ".join(f"{t} {n}" for t, n in (run.get("train_sizes") or {}).items()))]
    if run.get("init_checkpoint"):
        rows.append(("starts from", run["init_checkpoint"]))
    rows += [(k, train[k]) for k in RUN_SETTINGS if k in train]
    rows += [("batches per epoch", run.get("batches_per_epoch")), ("steps", run.get("total_steps")),
             ("examples seen", run.get("examples_seen")), ("wall time (s)", run.get("wall_seconds")),
             ("device", f"{run.get('device', '?')} ({run.get('precision', '?')})")]
    return pd.DataFrame(rows, columns=["what", "value"]).astype({"value": str})


def run_scores(run: dict, margin: float = COLLAPSE_MARGIN) -> pd.DataFrame:
    """Per scored task: best dev score, the epoch it was reached, the majority level and whether
    the run collapsed there (see collapsed_runs)."""
    majority, constant = run.get("majority_scores") or {}, run.get("constant_scores") or {}
    rows = []
    for t, b in (run.get("best") or {}).items():
        m = majority.get(t, float("nan"))
        level = constant.get(t, m)
        rows.append(dict(task=t, best_score=b["score"], best_epoch=b.get("epoch"), majority_score=m,
                         one_class_score=level,
                         collapsed=bool(b["score"] <= level + margin) if not pd.isna(level) else None))
    return pd.DataFrame(rows, columns=["task", "best_score", "best_epoch", "majority_score", "one_class_score",
                                       "collapsed"])


def task_mix(run: dict) -> pd.DataFrame:
    """Share of each task in the examples trained on, per epoch (index: epoch; columns: tasks).
    From the record's `epochs` list (examples per task); older records have only the sampler's
    probabilities at each evaluation, which are used instead (index: the evaluation's epoch)."""
    epochs = run.get("epochs") or []
    if epochs:
        counts = pd.DataFrame([e.get("examples", {}) for e in epochs],
                              index=pd.Index([e["epoch"] for e in epochs], name="epoch")).fillna(0)
        return counts.div(counts.sum(axis=1), axis=0)
    h = history_frame(run)
    probs = [c for c in h.columns if c.startswith("prob:")]
    if h.empty or not probs:
        return pd.DataFrame()
    out = h.set_index("epoch")[probs]
    out.columns = [c.split(":", 1)[1] for c in probs]
    return out


def pairwise_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of the pairwise comparison: MTL and STILTs, not the size ablation."""
    return df[df["method"].isin(PAIR_METHODS) & df["k"].isna()]


def ablation_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of the size ablation (support subsampled to k x target size)."""
    return df[df["method"].isin(PAIR_METHODS) & df["k"].notna()]


def task_sizes(df: pd.DataFrame, study_dir: Path | None = None) -> dict[str, int]:
    """Train size per task: study.json task_sizes if present, else the largest size in results."""
    if study_dir is not None:
        sizes = load_study_info(study_dir).get("task_sizes")
        if sizes:
            return {t: int(s) for t, s in sizes.items()}
    full = df[df["k"].isna()]
    sizes = full.groupby("target")["target_train_size"].max().to_dict()
    supports = full[full["support"] != ""].dropna(subset=["support_train_size"])
    for task, size in supports.groupby("support")["support_train_size"].max().items():
        sizes.setdefault(task, size)
    return {t: int(s) for t, s in sizes.items()}


def task_order(sizes: dict[str, int], tasks=None) -> list[str]:
    """Tasks ordered by train size, largest first (ties by name); only `tasks` if given."""
    names = sizes if tasks is None else [t for t in tasks if t in sizes]
    missing = [] if tasks is None else [t for t in tasks if t not in sizes]
    if missing:
        raise BadValue(f"no train size for task(s) {', '.join(map(str, missing))}")
    return sorted(names, key=lambda t: (-sizes[t], t))


# ----------------------------------------------------------------------------- heuristic

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


def collapse_level(df: pd.DataFrame) -> pd.Series:
    """Per row, the level at which a run has learned nothing: the best one-class predictor's
    score (constant_score) where recorded, else the majority level (majority_score)."""
    level = df["majority_score"] if "majority_score" in df else pd.Series(np.nan, index=df.index)
    if "constant_score" in df:
        level = df["constant_score"].fillna(level)
    return level


def collapsed_runs(df: pd.DataFrame, margin: float = COLLAPSE_MARGIN) -> pd.DataFrame:
    """The (run, task) rows whose best dev score is at (within `margin` points of) or below the
    score of predicting one class: the best one-class predictor (constant_score; under acc_f1
    predicting the minority class can beat the majority class), else the majority level; for
    regression a constant, whose correlation is 0. Columns run_id, method, target, support, seed,
    score, level, reason. Rows with no level recorded (older results) are never flagged."""
    cols = ["run_id", "method", "target", "support", "seed", "score", "level", "reason"]
    if not len(df) or not ({"majority_score", "constant_score"} & set(df.columns)):
        return pd.DataFrame(columns=cols)
    df = df.assign(level=collapse_level(df))
    hit = df[df["level"].notna() & (df["score"] <= df["level"] + margin)].copy()
    hit["reason"] = [f"best dev score {r.score:.2f} is at {r.target}'s one-class level {r.level:.2f} "
                     f"(the best score of always predicting one label; of a constant, for regression)"
                     for r in hit.itertuples()]
    return hit[cols].reset_index(drop=True)


# ----------------------------------------------------------------------------- cells

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


# ----------------------------------------------------------------------------- Tables 1 and 2

def _paper_label(sampler: str) -> str:
    """Row label of MTL-All with one sampler, in the paper's words: size-proportional samplers are
    'size', the dynamic samplers (the paper's text: gap; its released code: softmax_gap) 'dynamic'."""
    s = sampler.lower()
    name = "size" if ("size" in s or "prop" in s) else "dynamic" if s in DYNAMIC else s
    return f"MTL-All ({name})"


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
    labels = [_paper_label(s) for s in samplers.columns]
    for sampler, label in zip(samplers.columns, labels):  # two dynamic samplers in one study keep their names
        table[label if labels.count(label) == 1 else f"MTL-All ({sampler})"] = samplers[sampler]
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


# ----------------------------------------------------------------------------- size ablation

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


# ----------------------------------------------------------------------------- two studies

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


def study_model(df: pd.DataFrame) -> str:
    """The model name(s) of a study's results, for titles."""
    return ", ".join(sorted(set(df["model"]) - {""})) or "model"


# ----------------------------------------------------------------------------- explorer

def runs_for(df: pd.DataFrame, target: str, support: str, method: str) -> pd.DataFrame:
    """Result rows of one method for a target; `support` is used by mtl and stilts only."""
    rows = df[(df["method"] == method) & (df["target"] == target) & df["k"].isna()]
    if method in PAIR_METHODS:
        rows = rows[rows["support"] == support]
    return rows.sort_values(["sampler", "seed"]).reset_index(drop=True)


def cell_detail(df: pd.DataFrame, target: str, support: str, alpha: float = ALPHA,
                equal_var: bool = True) -> dict:
    """Per-seed MTL and STILTs scores of one cell and their t-test, with a one-line text."""
    rows = pairwise_rows(df)
    rows = rows[(rows["target"] == target) & (rows["support"] == support)]
    scores = rows.pivot_table(index="seed", columns="method", values="score")
    a, b = (rows.loc[rows["method"] == m, "score"] for m in PAIR_METHODS)
    t, p = ttest(a, b, equal_var)
    diff = a.mean() - b.mean()
    test = "Student" if equal_var else "Welch"
    verdict = ("not significant" if not p < alpha else
               ("MTL significantly better" if t > 0 else "STILTs significantly better"))
    text = (f"target {target}, support {support}: MTL {a.mean():.2f} (n={len(a)}) vs STILTs "
            f"{b.mean():.2f} (n={len(b)}), diff {diff:+.2f}; {test} t={t:.3f}, p={p:.4g}: "
            f"{verdict} at alpha {alpha:g}")
    return dict(scores=scores, t=t, p=p, diff=diff, text=text)


# ----------------------------------------------------------------------------- recommend

def _norm(name: str) -> str:
    return str(name).lower().replace("-", "").replace("_", "")


def known_task_sizes(study_dirs=()) -> dict[str, int]:
    """Train sizes by task name: the task registry (GLUE, the generated suite), then the studies."""
    sizes = dict(REGISTERED_SIZES)
    for d in study_dirs:  # tasks only the studies know (a known task keeps its official size)
        for task, size in task_sizes(load_results(d), d).items():
            sizes.setdefault(task, size)
    return sizes


def _resolve(what: str, value, sizes: dict[str, int]) -> tuple[str | None, float]:
    """(task name or None, train size) of a task name or a train size; ValueError on a bad one."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            found = {_norm(n): n for n in sizes}.get(_norm(value))
            if found is None:
                raise BadValue(f"unknown {what} task '{value}'; known: {', '.join(sorted(sizes))}") from None
            return found, float(sizes[found])
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadValue(f"{what} must be a task name or a train size, got {value!r}")
    if value <= 0:
        raise BadValue(f"{what} size must be positive, got {value:g}")
    return None, float(value)


def _describe(name: str | None, size: float) -> str:
    return f"{name} ({size:,.0f} examples)" if name else f"of {size:,.0f} examples"


def _cell_evidence(study: str, r) -> str:
    verdict = {"mtl": "MTL significantly better", "stilts": "STILTs significantly better",
               "": "no significant difference"}[r.winner]
    return (f"{study}: target {r.target} ({r.target_size:,}) with support {r.support} "
            f"({r.support_size:,}): MTL {r.mean_mtl:.1f} vs STILTs {r.mean_stilts:.1f} "
            f"(diff {r.diff:+.1f}, p={r.p:.3g}): {verdict}")


def recommend(target: str | int, support: str | int, study_dirs: list[Path] = (),
              max_evidence: int = 5) -> dict:
    """MTL or STILTs for a target and a support (task names or train sizes).

    The answer is the size heuristic (MTL when the support is larger). Evidence is drawn from
    the finished studies in `study_dirs`: the same cell if studied, else up to `max_evidence`
    cells whose support/target size ratio is within a factor of 2 of this one.
    Returns {"method": "mtl"|"stilts", "reason": str, "evidence": [str, ...]}.
    """
    study_dirs = [Path(d) for d in study_dirs]
    sizes = known_task_sizes(study_dirs)
    t_name, t_size = _resolve("target", target, sizes)
    s_name, s_size = _resolve("support", support, sizes)
    method = heuristic(t_size, s_size)
    ratio = s_size / t_size
    relation = "larger" if s_size > t_size else ("the same size as" if s_size == t_size else "smaller")
    rel = relation if relation.startswith("the") else f"{relation} than"
    reason = (f"the support {_describe(s_name, s_size)} is {rel} the target {_describe(t_name, t_size)}, "
              f"so the size heuristic (MTL when |S| > |T|, otherwise STILTs) picks "
              f"{'MTL' if method == 'mtl' else 'STILTs'}; in the paper it was right in {PAPER_HEURISTIC}")
    evidence = []
    for d in study_dirs:
        cells, _ = study_cells(d)
        name = load_study_info(d).get("name", d.name)
        same = cells[(cells["target"] == t_name) & (cells["support"] == s_name)]
        if not same.empty:
            evidence.append(_cell_evidence(name, next(same.itertuples())))
            continue
        dist = (np.log(cells["support_size"] / cells["target_size"]) - math.log(ratio)).abs()
        near = cells.assign(dist=dist + 0.01 * (np.log(cells["target_size"]) - math.log(t_size)).abs())
        near = near[dist <= math.log(2)].sort_values("dist")
        if near.empty:
            continue
        sig = near[near["significant"]]
        agree = int((sig["winner"] == method).sum())
        evidence.append(f"{name}: {len(near)} studied cell(s) with a size ratio within a factor of 2 "
                        f"of {ratio:.3g}; {len(sig)} significant, {agree} of them favour "
                        f"{'MTL' if method == 'mtl' else 'STILTs'}")
        evidence += [_cell_evidence(name, r) for r in near.head(max_evidence).itertuples()]
    return dict(method=method, reason=reason, evidence=evidence)


def format_recommendation(rec: dict) -> str:
    """Human-readable text of a `recommend` answer."""
    lines = [f"Recommendation: {'MTL' if rec['method'] == 'mtl' else 'STILTs'}", f"Why: {rec['reason']}"]
    evidence = rec.get("evidence") or []
    if isinstance(evidence, str):
        evidence = [evidence]
    lines.append("Evidence from finished studies:" if evidence else
                 "Evidence from finished studies: none covers similar sizes")
    lines += [f"  - {e}" for e in evidence]
    return "\n".join(lines)
