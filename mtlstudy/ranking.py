"""How good is a support ranking (recommend.py)? Measured on a finished pairwise study, and on an
outside transfer table (transfer.py: transfer measured by others).

On a study: for every target (leave-one-target-out: the expected gains for a target use only the
other targets' cells), the measured score of the ranker's top (support, heuristic method) pick
against Avg S.H., the Pairwise Oracle and a random pick, and the Spearman correlation of predicted
and measured gains over all cells. On a table: for every target, Regret@1, Regret@3, NDCG and
Spearman of any ranking (compare_on_table: recommend's with and without the table, each signal, a
ridge fitted on the other targets) beside a random order's exact expectation and the oracle.
Regret@k as Poth et al. (EMNLP 2021) define it:
  Regret@k = (oracle score - best measured score among the top k picks) / oracle score x 100.
`report_section` is the report's part on it; `evidence` the sentence `recommend` ends with.
"""
from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from . import analysis
from .data import DataSource
from .errors import BadValue
from .folder import StudyFolder
from .recommend import (TEXT_AND_SIZE, expected_gain, labels_match, measured_gains, rank, single_means,
                        size_ratio)
from .similarity import DEFAULT_MODEL, DEFAULT_SAMPLE, cosine, overlap, task_embedding, texts_here, vocabulary
from .tasks import Task, get_task
from .transfer import support_scores

MIN_TASKS = 3          # the evaluation needs at least this many tasks in a study


def pair_signals(tasks: dict[str, Task], pairs, source: DataSource, model: str = DEFAULT_MODEL,
                 sample: int = DEFAULT_SAMPLE, seed: int = 0, cache_dir: Path | None = None) -> pd.DataFrame:
    """similarity, overlap (of vocabularies) and labels_match of (target, support) pairs of `tasks`."""
    names = sorted({n for p in pairs for n in p})
    emb = {n: task_embedding(tasks[n], source, model=model, sample=sample, seed=seed, cache_dir=cache_dir)
           for n in names}
    words = {n: vocabulary(tasks[n], source, sample=sample, seed=seed) for n in names}
    return pd.DataFrame([dict(target=t, support=s, similarity=cosine(emb[t], emb[s]), overlap=overlap(words[t], words[s]),
                              labels_match=labels_match(tasks[t], tasks[s])) for t, s in pairs],
                        columns=["target", "support", "similarity", "overlap", "labels_match"])


def study_signals(study_dir: Path, **kw) -> pd.DataFrame:
    """pair_signals of every (target, support) cell of a finished study, its tasks read from the
    run list (user tasks included) and its data source from study.json."""
    study_dir = Path(study_dir)
    info = analysis.load_study_info(study_dir)
    profile = info.get("profile") if isinstance(info.get("profile"), dict) else {}
    source = DataSource.model_validate(profile.get("data") or {})
    user = {}
    folder = StudyFolder(study_dir)
    if folder.is_started():
        for run in folder.read_run_list().values():
            for name, t in (run["spec"].get("user_tasks") or {}).items():
                user[name] = Task.model_validate(t)
    cells, order = analysis.study_cells(study_dir)
    return pair_signals({n: get_task(n, user) for n in order}, list(zip(cells["target"], cells["support"])),
                        source, **kw)


def regret(oracle: float, picks: list[float], k: int) -> float:
    """Poth et al.'s Regret@k in %: (oracle - best of the first k picks) / oracle x 100."""
    return (oracle - max(picks[:k])) / oracle * 100.0


def random_regret(values, k: int) -> float:
    """The expected Regret@k (%) of a uniformly random order of `values`, exactly: the best of k
    drawn without replacement is the j-th smallest of n with probability C(j-1, k-1) / C(n, k)."""
    v = np.sort(np.asarray(values, dtype=float))
    n, k = len(v), min(k, len(v))
    p = np.array([math.comb(j - 1, k - 1) for j in range(1, n + 1)]) / math.comb(n, k)
    return (v[-1] - float(p @ v)) / v[-1] * 100.0


def discounts(n: int) -> np.ndarray:
    """DCG's position discounts 1 / log2(position + 1), positions 1..n."""
    return 1.0 / np.log2(np.arange(2, n + 2))


def ndcg(picks) -> float:
    """NDCG of an order whose items have relevance `picks` (in the order's sequence)."""
    rel = np.asarray(picks, dtype=float)
    return float(discounts(len(rel)) @ rel / (discounts(len(rel)) @ np.sort(rel)[::-1]))


def random_ndcg(values) -> float:
    """The expected NDCG of a uniformly random order, exactly: every item is at every position
    with probability 1/n, so E[DCG] = mean relevance x the sum of the discounts."""
    rel = np.asarray(values, dtype=float)
    d = discounts(len(rel))
    return float(rel.mean() * d.sum() / (d @ np.sort(rel)[::-1]))


def judge_order(measured: pd.Series, order: list[str]) -> dict:
    """How good one target's ranking is: `measured` is the target's performance after each support
    (indexed by support, any positive scale: Poth et al.'s regret is a ratio), `order` the supports
    best first. Regret@1 and Regret@3 (%), NDCG (the performance as relevance) and the Spearman
    correlation of the order with the measured performance (nan when it is constant)."""
    picks = [float(measured[s]) for s in order]
    rho = stats.spearmanr(np.arange(len(picks), 0, -1), picks)[0] if len(set(picks)) > 1 else float("nan")
    return dict(top1=order[0], regret1=regret(max(picks), picks, 1), regret3=regret(max(picks), picks, 3),
                ndcg=ndcg(picks), spearman=float(rho))


def judge_random(measured: pd.Series) -> dict:
    """judge_order's numbers expected of a uniformly random order, exact (Spearman's is 0)."""
    return dict(top1="", regret1=random_regret(measured, 1), regret3=random_regret(measured, 3),
                ndcg=random_ndcg(measured), spearman=0.0)


def evaluate(study_dir: Path, signals: pd.DataFrame | None = None, cells: pd.DataFrame | None = None,
             transfer_rows: pd.DataFrame | None = None, **kw) -> tuple[pd.DataFrame, dict]:
    """Leave-one-target-out evaluation of the ranker on a finished pairwise study.

    `signals` (columns target, support, similarity) defaults to study_signals(study_dir, **kw);
    `cells`, the study's cell table, to analysis.study_cells (the report passes the one its
    notebook wrote); with `transfer_rows` (an outside table's setting) the ranking puts the
    supports' measured transfer first (recommend.rank). Returns one row per target (single, top1 support and method, top1 score, avg_sh,
    random, oracle, regret1, regret3, regret1_sh (of Avg S.H.), regret1_random) and a summary
    dict: n_targets, the means of those columns, spearman and spearman_p (predicted vs measured
    gains over all cells), n_cells.
    """
    study_dir = Path(study_dir)
    df = analysis.load_results(study_dir)
    cells, order = _cells_and_order(study_dir, df, cells)
    if len(order) < MIN_TASKS:
        raise BadValue(f"{study_dir}: the ranking evaluation needs at least {MIN_TASKS} tasks, "
                         f"the study has {len(order)}")
    if signals is None:
        signals = study_signals(study_dir, **kw)
    single = single_means(df)
    c = measured_gains(cells, single).merge(signals, on=["target", "support"], how="left")
    if c["similarity"].isna().any():
        raise ValueError("signals missing for some cells")
    c["size_ratio"] = np.exp(c["log_ratio"])
    c["best"] = c[["mean_mtl", "mean_stilts"]].max(axis=1)
    c["random"] = c[["mean_mtl", "mean_stilts"]].mean(axis=1)
    rows, predicted = [], []
    for target in [t for t in order if t in set(c["target"])]:
        mine = c[c["target"] == target]
        if transfer_rows is not None:
            mine = mine.assign(measured=support_scores(transfer_rows, target, mine["support"]))
        ranked = rank(mine).set_index("support")
        picks = [mine.set_index("support").at[s, "sh_score"] for s in ranked.index]
        others = c[c["target"] != target]  # leave one target out: its own cells are not evidence
        for r in mine.itertuples():
            predicted.append((target, r.support, expected_gain(r.size_ratio, others)[0], r.gain))
        oracle = mine["best"].max()
        top = ranked.index[0]
        rows.append(dict(target=target, single=single.get(target, np.nan),
                         top1=top, top1_method=ranked.at[top, "heuristic"], top1_score=picks[0],
                         avg_sh=mine["sh_score"].mean(), random=mine["random"].mean(), oracle=oracle,
                         regret1=regret(oracle, picks, 1), regret3=regret(oracle, picks, 3),
                         regret1_sh=(oracle - mine["sh_score"].mean()) / oracle * 100,
                         regret1_random=(oracle - mine["random"].mean()) / oracle * 100,
                         candidates=len(picks)))
    table = pd.DataFrame(rows)
    pred = pd.DataFrame(predicted, columns=["target", "support", "predicted_gain", "measured_gain"]).dropna()
    if len(pred) >= 3 and pred["predicted_gain"].nunique() > 1 and pred["measured_gain"].nunique() > 1:
        rho, p = stats.spearmanr(pred["predicted_gain"], pred["measured_gain"])
    else:
        rho, p = float("nan"), float("nan")
    cols = ["single", "top1_score", "avg_sh", "random", "oracle", "regret1", "regret3", "regret1_sh", "regret1_random"]
    summary = {"n_targets": len(table), "n_cells": len(pred), "spearman": float(rho), "spearman_p": float(p),
               **{f"mean_{k}": float(table[k].mean()) for k in cols},
               "top1_beats_avg_sh": int((table["top1_score"] > table["avg_sh"]).sum()),
               "predictions": pred}
    return table, summary


# ----------------------------------------------------------------------------- on an outside table

def table_signals(rows: pd.DataFrame, glue_dir: Path, **kw) -> pd.DataFrame:
    """pair_signals of an outside table's (target, source) pairs, texts from `glue_dir`
    (similarity.texts_here), and size_ratio from the tasks' registered (official) train sizes."""
    names = sorted(set(rows["target"]) | set(rows["source"]))
    source = DataSource(source="glue_dir", glue_dir=Path(glue_dir))
    tasks = {n: texts_here(get_task(n), source)[0] for n in names}
    sig = pair_signals(tasks, list(zip(rows["target"], rows["source"])), source, **kw)
    sig["size_ratio"] = [size_ratio(tasks[s].train_size, tasks[t].train_size) for t, s in zip(sig["target"], sig["support"])]
    return sig


def judge_scores(rows: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """judge_order for every target of an outside table's setting: `rows` (target, source, pc), the
    measured transfer; `scores` (target, support, score), a ranking's scores, higher first, ties by
    support name. The target's performance after a support is 1 + pc of training it alone, so the
    regrets are Poth et al.'s ratios of scores. One row per target."""
    out = []
    for target, mine in rows.groupby("target", sort=True):
        measured = (1.0 + mine.set_index("source")["pc"])
        s = scores[scores["target"] == target].set_index("support")["score"].reindex(measured.index)
        if s.isna().any():
            raise ValueError(f"no score for target {target}, support(s) {', '.join(s.index[s.isna()])}")
        order = sorted(measured.index, key=lambda c: (-s[c], c))
        out.append(dict(target=target, **judge_order(measured, order)))
    return pd.DataFrame(out)


def judge_random_on(rows: pd.DataFrame) -> pd.DataFrame:
    """judge_random for every target of an outside table's setting."""
    return pd.DataFrame([dict(target=t, **judge_random(1.0 + m.set_index("source")["pc"]))
                         for t, m in rows.groupby("target", sort=True)])


def measured_elsewhere_scores(rows: pd.DataFrame) -> pd.DataFrame:
    """(target, support, score) of every pair of an outside table's setting: the support's
    measured transfer to the table's other targets, leave one target out."""
    return pd.DataFrame([dict(target=t, support=s, score=support_scores(rows, t, [s])[0])
                         for t, s in zip(rows["target"], rows["source"])])


def _order_scores(signals: pd.DataFrame, columns) -> pd.DataFrame:
    """(target, support, score) of recommend.rank's order by the mean rank of `columns` (ties by
    similarity), within each target: score = minus the position."""
    out = []
    for target, mine in signals.groupby("target", sort=False):
        ranked = mine.assign(mean_rank=pd.concat([mine[c].astype(float).rank(ascending=False) for c in columns],
                                                 axis=1).mean(axis=1))
        ranked = ranked.sort_values(["mean_rank", "similarity"], ascending=[True, False], kind="mergesort")
        out.append(pd.DataFrame(dict(target=target, support=ranked["support"], score=-np.arange(len(ranked)))))
    return pd.concat(out, ignore_index=True)


def _recommend_scores(signals: pd.DataFrame) -> pd.DataFrame:
    """(target, support, score) of recommend.rank's order without a table (score = minus the rank)."""
    return pd.concat([rank(mine).assign(target=target, score=lambda r: -r["rank"])[["target", "support", "score"]]
                      for target, mine in signals.groupby("target", sort=False)], ignore_index=True)


FITTED_SIGNALS = ("similarity", "overlap", "log_size_ratio", "labels_match")


def _fitting_frame(rows: pd.DataFrame, signals: pd.DataFrame) -> pd.DataFrame:
    """signals with FITTED_SIGNALS standardized within each target, and y: the pair's transfer
    (pc) centred within its target."""
    d = signals.assign(log_size_ratio=np.log(signals["size_ratio"]), labels_match=signals["labels_match"].astype(float))
    cols = list(FITTED_SIGNALS)
    d[cols] = d.groupby("target")[cols].transform(lambda x: (x - x.mean()) / x.std(ddof=0) if x.std(ddof=0) > 0 else 0.0)
    d = d.merge(rows.rename(columns={"source": "support"}), on=["target", "support"])
    return d.assign(y=d["pc"] - d.groupby("target")["pc"].transform("mean"))


def _ridge(frame: pd.DataFrame, alpha: float):
    from sklearn.linear_model import Ridge

    return Ridge(alpha=alpha).fit(frame[list(FITTED_SIGNALS)], frame["y"])


def fitted_scores(rows: pd.DataFrame, signals: pd.DataFrame, alpha: float = 1.0) -> pd.DataFrame:
    """(target, support, score): a ridge regression (scikit-learn) of the pairs' transfer on their
    signals (_fitting_frame), fitted on the other targets' pairs and scoring the target's own:
    leave one target out."""
    d = _fitting_frame(rows, signals)
    return pd.concat([judged.assign(score=_ridge(d[d["target"] != t], alpha).predict(judged[list(FITTED_SIGNALS)]))
                      [["target", "support", "score"]] for t, judged in d.groupby("target", sort=True)],
                     ignore_index=True)


def fitted_weights(rows: pd.DataFrame, signals: pd.DataFrame, alpha: float = 1.0) -> dict[str, float]:
    """The ridge regression's weights fitted on every target (what it learned), by signal."""
    return dict(zip(FITTED_SIGNALS, map(float, _ridge(_fitting_frame(rows, signals), alpha).coef_)))


def compare_on_table(rows: pd.DataFrame, signals: pd.DataFrame) -> pd.DataFrame:
    """Every ranking judged on one setting of an outside table (judge_scores), one row per
    (ranking, target): the recommend ranking with the table (measured transfer to the other
    targets first) and without it (mean rank of text similarity and size ratio), that mean rank
    with the label-space match as a third vote (the ranking before), a ridge regression on the
    signals fitted on the other targets (fitted_scores), each signal alone, a random order's
    expectation and the oracle. `signals` is table_signals' frame."""
    sig = signals.reset_index(drop=True)
    scores = {
        "measured elsewhere (recommend with the table)": measured_elsewhere_scores(rows),
        "text and size (recommend without a table)":
            _recommend_scores(sig),
        "text, size and label match (the ranking before)": _order_scores(sig, [*TEXT_AND_SIZE, "labels_match"]),
        "fitted on the other targets (similarity, vocabulary, size, label match)": fitted_scores(rows, sig),
        "most similar (text embeddings)": sig.assign(score=sig["similarity"]),
        "most shared vocabulary (domain)": sig.assign(score=sig["overlap"]),
        "largest support": sig.assign(score=sig["size_ratio"]),
        "oracle": rows.rename(columns={"source": "support"}).assign(score=rows["pc"]),
    }
    judged = [judge_scores(rows, sc).assign(ranking=name) for name, sc in scores.items()]
    judged.insert(-1, judge_random_on(rows).assign(ranking="random (expected)"))
    return pd.concat(judged, ignore_index=True)[["ranking", "target", "top1", "regret1", "regret3", "ndcg", "spearman"]]


def table_means(judged: pd.DataFrame) -> pd.DataFrame:
    """compare_on_table's rows averaged over the targets, one row per ranking, in its order."""
    cols = ["regret1", "regret3", "ndcg", "spearman"]
    return judged.groupby("ranking", sort=False)[cols].mean().reset_index()


# recommend's ranking without a table (text similarity and size ratio), judged on TaskWeb's
# finetune/roberta pairs among MRPC, QNLI, QQP, RTE and STS-B (texts from ../shared/data/glue) by
# benchmarks/ranking_eval.py; tests/test_ranking.py checks them against the shared table.
WITHOUT_TABLE = dict(regret1=6.41, random_regret1=7.57, spearman=0.04)


def evidence(rows: pd.DataFrame | None = None, table_name: str = "", setting: str = "", known: int = 0,
             candidates: int = 0) -> str:
    """How good the `recommend --candidates` ranking has been, in words: with a table's setting
    (`rows`), the measured-transfer ranking judged on it leave one target out, computed here;
    without one, WITHOUT_TABLE. `known` of the `candidates` are supports the table measured."""
    w = WITHOUT_TABLE
    coin = (f"by text similarity and size alone, on TaskWeb's RoBERTa transfer among five GLUE tasks (leave "
            f"one target out), the top pick's Regret@1 was {w['regret1']:.2f}% against a random pick's "
            f"{w['random_regret1']:.2f}% and the order's Spearman correlation with the measured transfer "
            f"{w['spearman']:+.2f}: no better than a coin")
    if rows is None:
        return (f"How good this ranking has been: {coin}. Rank by transfer measured by others with "
                f"--transfer-table FILE (e.g. ../shared/data/transfer/taskweb_glue.csv).")
    mine = judge_scores(rows, measured_elsewhere_scores(rows)).mean(numeric_only=True)
    rand = judge_random_on(rows).mean(numeric_only=True)
    return (f"How good this ranking has been: on {table_name} ({setting}), leave one target out, ranking by "
            f"measured transfer put first a support with Regret@1 {mine['regret1']:.2f}% against a random pick's "
            f"{rand['regret1']:.2f}%, Spearman {mine['spearman']:+.2f} with the measured transfer "
            f"({rows['target'].nunique()} targets). The table measured {known} of these {candidates} candidates "
            f"as supports; the others count as its average support. Ranked {coin}.")


# ----------------------------------------------------------------------------- report

def markdown(table: pd.DataFrame, summary: dict) -> str:
    """The evaluation as a Markdown table and summary lines."""
    head = "| target | ranker's top pick | its score | Avg S.H. | random | Oracle | Regret@1 | Regret@3 |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.target} | {r.top1} ({'MTL' if r.top1_method == 'mtl' else 'STILTs'}) | "
                     f"{r.top1_score:.1f} | {r.avg_sh:.1f} | {r.random:.1f} | {r.oracle:.1f} | "
                     f"{r.regret1:.2f}% | {r.regret3:.2f}% |")
    s = summary
    lines.append(f"| **mean** | | {s['mean_top1_score']:.1f} | {s['mean_avg_sh']:.1f} | {s['mean_random']:.1f} | "
                 f"{s['mean_oracle']:.1f} | {s['mean_regret1']:.2f}% | {s['mean_regret3']:.2f}% |")
    lines += ["", _verdict(summary)]
    return "\n".join(lines)


def _verdict(s: dict) -> str:
    cmp = ("beats" if s["mean_top1_score"] > s["mean_avg_sh"] else
           "ties" if s["mean_top1_score"] == s["mean_avg_sh"] else "does not beat")
    rho = "n/a (too few cells or constant gains)" if math.isnan(s["spearman"]) else \
        f"{s['spearman']:+.2f} (p={s['spearman_p']:.2g}, {s['n_cells']} cells)"
    return (f"Over {s['n_targets']} targets the ranker's top pick scores {s['mean_top1_score']:.2f} on average: it "
            f"{cmp} Avg S.H. ({s['mean_avg_sh']:.2f}; top pick higher on {s['top1_beats_avg_sh']} of "
            f"{s['n_targets']} targets), against a random pick {s['mean_random']:.2f} and the Pairwise Oracle "
            f"{s['mean_oracle']:.2f}. Regret@1 {s['mean_regret1']:.2f}%, Regret@3 {s['mean_regret3']:.2f}% "
            f"(Avg S.H. {s['mean_regret1_sh']:.2f}%, random {s['mean_regret1_random']:.2f}%). Spearman of "
            f"predicted (leave-one-target-out, by size ratio) and measured gains over single-task: {rho}.")


def _cells_and_order(study_dir: Path, df: pd.DataFrame, cells: pd.DataFrame | None) -> tuple[pd.DataFrame, list[str]]:
    if cells is None:
        return analysis.study_cells(study_dir)
    return cells, analysis.task_order(analysis.task_sizes(df, study_dir), set(cells["target"]) | set(cells["support"]))


def report_section(study_dir: Path, signals: pd.DataFrame | None = None, csv: Path | None = None,
                   cells: pd.DataFrame | None = None, **kw) -> str:
    """HTML fragment for the report: the ranking evaluation, or '' for a study with fewer than
    three tasks; a one-paragraph note when the signals cannot be computed here. With `csv`, the
    per-target table is also written there."""
    study_dir = Path(study_dir)
    try:
        cells, order = _cells_and_order(study_dir, analysis.load_results(study_dir), cells)
    except (FileNotFoundError, ValueError):
        return ""
    if len(order) < MIN_TASKS or cells.empty:
        return ""
    title = "<h2>Which support? The ranker, leave one target out</h2>\n"
    try:
        table, summary = evaluate(study_dir, signals, cells, **kw)
    except Exception as e:  # noqa: BLE001 - a report section must not take the report down
        return title + f"<p>Not computed: {html.escape(type(e).__name__)}: {html.escape(str(e).splitlines()[0] if str(e) else '')}</p>\n"
    if csv is not None:
        table.to_csv(csv, index=False)
    show = table.rename(columns={"top1": "top pick", "top1_method": "method", "top1_score": "top pick score",
                                 "avg_sh": "Avg S.H.", "oracle": "Pairwise Oracle", "regret1": "Regret@1 %",
                                 "regret3": "Regret@3 %"})
    show = show[["target", "single", "top pick", "method", "top pick score", "Avg S.H.", "random",
                 "Pairwise Oracle", "Regret@1 %", "Regret@3 %"]]
    intro = ("<p>For each target the ranker orders the other tasks by the mean of their ranks on text "
             "similarity (mean-pooled MiniLM embeddings of 256 training texts) and size ratio, "
             "and takes the size heuristic's method; its top pick's measured score is compared with "
             "Avg S.H., a random (support, method) pick and the Pairwise Oracle. Regret@k as Poth et al. "
             "(2021): (oracle - best of the top k) / oracle.</p>\n")
    return (title + intro + show.to_html(index=False, float_format=lambda v: f"{v:.2f}", border=0)
            + f"\n<p>{html.escape(_verdict(summary))}</p>\n")
