"""Which support task? Rank candidate supports for a target before training anything, and measure
how well that ranking does on a finished pairwise study.

Signals, each computed in minutes on a CPU without training:
  size ratio     |S| / |T| (train sizes; the size heuristic reads the same two numbers)
  similarity     cosine similarity of the two tasks' mean text embeddings: a seeded sample of
                 each task's training texts (256 by default) through the encoder (the offline
                 MiniLM by default), mean-pooled over the attention mask, averaged per task
                 (Vu et al. 2020's TextEmb; Poth et al. 2021's SEmb); cached per task on disk
  labels match   same number of labels, or both regression

Ranking: each signal gives every candidate a rank (higher similarity, larger support, matching
labels first; ties share their mean rank) and candidates are ordered by the mean of the three
ranks, ties broken by similarity. No weight is fitted: the three signals vote equally. The method
for each candidate is the size heuristic's (analysis.heuristic). The expected gain (points over
the target's single-task score) comes from finished studies: the mean measured gain of the
heuristic's method in cells whose size ratio is within a factor of 2 of the candidate's (else the
3 nearest); without a study it is a stated prior of 0.

Evaluation (evaluate): on a finished pairwise study, for every target (leave-one-target-out: the
expected gains for a target use only the other targets' cells), the measured score of the
ranker's top (support, heuristic method) pick against Avg S.H., the Pairwise Oracle and a random
pick, Regret@1 and Regret@3 as Poth et al. (EMNLP 2021) define them,
  Regret@k = (oracle score - best measured score among the top k picks) / oracle score x 100,
and the Spearman correlation of predicted and measured gains over all cells.
"""
from __future__ import annotations

import functools
import hashlib
import html
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from . import analysis
from .data import DataSource, default_cache_dir, load_examples, subsample_indices
from .errors import BadValue
from .folder import StudyFolder
from .spec import OFFLINE_MINILM
from .tasks import Task, get_task

DEFAULT_SAMPLE = 256
DEFAULT_MODEL = OFFLINE_MINILM  # the offline encoder (spec.py)
NEAR_RATIO = 2.0       # evidence cells: size ratio within this factor of the candidate's
NEAR_FALLBACK = 3      # else the nearest cells by log size ratio
MIN_TASKS = 3          # the evaluation needs at least this many tasks in a study


# ----------------------------------------------------------------------------- signals

def size_ratio(support_size: float, target_size: float) -> float:
    """|S| / |T|."""
    if not support_size > 0 or not target_size > 0:
        raise BadValue(f"train sizes must be positive, got support {support_size}, target {target_size}")
    return float(support_size) / float(target_size)


def labels_match(a: Task, b: Task) -> bool:
    """Same label space shape: both regression, or the same number of labels."""
    return a.is_regression == b.is_regression and a.num_outputs == b.num_outputs


def cosine(a, b) -> float:
    """Cosine similarity of two vectors."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def mean_pool(last_hidden, attention_mask):
    """Attention-mask-weighted mean of the last hidden state: (batch, seq, dim) -> (batch, dim)."""
    mask = attention_mask.unsqueeze(-1).to(last_hidden.dtype)
    return (last_hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def sample_texts(task: Task, source: DataSource, sample: int = DEFAULT_SAMPLE, seed: int = 0):
    """A seeded sample of a task's training texts: (text_a, text_b or None)."""
    ex = load_examples(task, "train", source)
    idx = subsample_indices(len(ex), seed, count=min(sample, len(ex)))
    return [ex.text_a[i] for i in idx], (None if ex.text_b is None else [ex.text_b[i] for i in idx])


def embedding_cache_dir() -> Path:
    """Beside the token cache: $MTLSTUDY_CACHE/task_embeddings (default ~/.cache/mtlstudy/...)."""
    return default_cache_dir().parent / "task_embeddings"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[-60:]


@functools.lru_cache(maxsize=2)
def _encoder(model: str):
    """(tokenizer, encoder in eval mode), loaded once per process."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    from .model import ModelLoadError, _load_message, load_tokenizer, resolve_model

    tok = load_tokenizer(model)
    hf_logging.disable_progress_bar()  # "Loading weights" bars on stderr
    try:
        return tok, AutoModel.from_pretrained(resolve_model(model)).eval()
    except Exception as e:
        raise ModelLoadError(_load_message(model, e)) from None
    finally:
        hf_logging.enable_progress_bar()


def task_embedding(task: Task, source: DataSource | None = None, model: str = DEFAULT_MODEL,
                   sample: int = DEFAULT_SAMPLE, seed: int = 0, max_length: int = 128,
                   cache_dir: Path | None = None, batch_size: int = 32) -> np.ndarray:
    """Mean of the mean-pooled embeddings of a seeded sample of the task's training texts.

    Cached as <cache_dir>/<task>-<model>-<sample>-<hash of the texts>.npy: a second call loads
    the texts (to check they are the same) and the vector, and runs no encoder.
    """
    source = source or DataSource()
    a, b = sample_texts(task, source, sample, seed)
    h = hashlib.sha256(json.dumps([model, max_length, a, b]).encode()).hexdigest()[:10]
    cache_dir = Path(cache_dir or embedding_cache_dir())
    path = cache_dir / f"{_safe(task.name)}-{_safe(model)}-{len(a)}-{h}.npy"
    if path.is_file():
        return np.load(path)
    import torch

    tok, enc_model = _encoder(model)
    pooled = []
    with torch.inference_mode():
        for i in range(0, len(a), batch_size):
            enc = tok(a[i:i + batch_size], None if b is None else b[i:i + batch_size], truncation=True,
                      max_length=max_length, padding=True, return_tensors="pt")
            out = enc_model(**enc).last_hidden_state
            pooled.append(mean_pool(out, enc["attention_mask"]).float().numpy())
    vec = np.concatenate(pooled).mean(0)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")  # then renamed: readers never see half a file
    np.save(tmp, vec)
    tmp.replace(path)
    return vec


def similarities(target: Task, candidates: list[Task], source: DataSource | None = None,
                 **kw) -> dict[str, float]:
    """Cosine similarity of the target's mean embedding to each candidate's."""
    t = task_embedding(target, source, **kw)
    return {c.name: cosine(t, task_embedding(c, source, **kw)) for c in candidates}


# ----------------------------------------------------------------------------- ranking

def rank(signals: pd.DataFrame) -> pd.DataFrame:
    """Order candidates by the mean of their ranks on similarity, size ratio and label match.

    `signals` has one row per candidate with columns support, similarity, size_ratio,
    labels_match. Returns it with columns mean_rank and rank (1 = best), best first.
    """
    s = signals.copy()
    ranks = pd.concat([s["similarity"].rank(ascending=False), s["size_ratio"].rank(ascending=False),
                       s["labels_match"].astype(float).rank(ascending=False)], axis=1)
    s["mean_rank"] = ranks.mean(axis=1)
    s = s.sort_values(["mean_rank", "similarity"], ascending=[True, False], kind="mergesort")
    s["rank"] = np.arange(1, len(s) + 1)
    return s.reset_index(drop=True)


def single_means(df: pd.DataFrame) -> pd.Series:
    """Mean single-task score over seeds, per target."""
    rows = df[(df["method"] == "single") & df["k"].isna()]
    return rows.groupby("target")["score"].mean()


def measured_gains(cells: pd.DataFrame, single: pd.Series) -> pd.DataFrame:
    """cells with sh_score (mean score of the heuristic's method), gain (sh_score - the target's
    single-task mean) and log_ratio (log |S|/|T|)."""
    c = cells.copy()
    c["sh_score"] = np.where(c["heuristic"] == "mtl", c["mean_mtl"], c["mean_stilts"])
    c["gain"] = c["sh_score"] - c["target"].map(single)
    c["log_ratio"] = np.log(c["support_size"] / c["target_size"])
    return c


def expected_gain(ratio: float, evidence: pd.DataFrame, label: str = "study") -> tuple[float, str]:
    """Mean measured gain of evidence cells (columns log_ratio, gain) whose size ratio is within a
    factor of NEAR_RATIO of `ratio`, else of the NEAR_FALLBACK nearest; with its basis in words."""
    ev = evidence.dropna(subset=["gain"])
    if ev.empty:
        return 0.0, "prior 0: no finished study cell to learn from (pass --study DIR)"
    dist = (ev["log_ratio"] - math.log(ratio)).abs()
    near = ev[dist <= math.log(NEAR_RATIO) + 1e-12]
    if near.empty:
        near = ev.loc[dist.sort_values(kind="mergesort").index[:NEAR_FALLBACK]]
        how = f"the {len(near)} nearest cell(s) by size ratio (none within {NEAR_RATIO:g}x)"
    else:
        how = f"{len(near)} cell(s) with size ratio within {NEAR_RATIO:g}x"
    return float(near["gain"].mean()), f"mean gain of the size heuristic's method in {how} of {label}"


def _sizes_and_tasks(names: list[str], user: dict[str, Task]) -> tuple[dict[str, Task], dict[str, int]]:
    tasks = {n: get_task(n, user) for n in names}
    missing = [n for n, t in tasks.items() if not t.train_size]
    if missing:
        raise BadValue(f"task(s) {', '.join(missing)}: train_size unknown; set it in the task file")
    return tasks, {n: int(t.train_size) for n, t in tasks.items()}


def recommend_candidates(target: str, candidates: list[str], user: dict[str, Task] | None = None,
                         source: DataSource | None = None, study_dirs=(), model: str = DEFAULT_MODEL,
                         sample: int = DEFAULT_SAMPLE, seed: int = 0, cache_dir: Path | None = None,
                         sizes: dict[str, int] | None = None) -> pd.DataFrame:
    """Rank candidate supports for `target` (task names: GLUE, the generated suite or `user`).

    Returns one row per candidate, best first: rank, support, size_ratio, similarity,
    labels_match, mean_rank, method (the size heuristic's), expected_gain, basis.
    `sizes` overrides the tasks' registered train sizes.
    """
    user = user or {}
    if not candidates:
        raise BadValue("no candidates: give at least one support task (--candidates S1 S2 ...)")
    dup = sorted({c for c in candidates if candidates.count(c) > 1})
    if dup:
        raise BadValue(f"candidate(s) repeated: {', '.join(dup)}")
    if target in candidates:
        raise BadValue(f"candidate '{target}' is the target itself; a support must be another task")
    tasks, reg_sizes = _sizes_and_tasks([target, *candidates], user)
    sizes = {**reg_sizes, **(sizes or {})}
    sims = similarities(tasks[target], [tasks[c] for c in candidates], source, model=model, sample=sample,
                        seed=seed, cache_dir=cache_dir)
    signals = pd.DataFrame([dict(support=c, size_ratio=size_ratio(sizes[c], sizes[target]),
                                 similarity=sims[c], labels_match=labels_match(tasks[target], tasks[c]))
                            for c in candidates])
    out = rank(signals)
    evidence, labels = [], []
    for d in study_dirs:
        cells, _ = analysis.study_cells(Path(d))
        evidence.append(measured_gains(cells, single_means(analysis.load_results(Path(d)))))
        labels.append(analysis.load_study_info(Path(d)).get("name", Path(d).name))
    evidence = pd.concat(evidence) if evidence else pd.DataFrame(columns=["log_ratio", "gain"])
    label = "study " + ", ".join(labels) if labels else "no study"
    out["method"] = [analysis.heuristic(sizes[target], sizes[c]) for c in out["support"]]
    gains = [expected_gain(r, evidence, label) for r in out["size_ratio"]]
    out["expected_gain"] = [g for g, _ in gains]
    out["basis"] = [b for _, b in gains]
    return out[["rank", "support", "size_ratio", "similarity", "labels_match", "mean_rank", "method",
                "expected_gain", "basis"]]


def format_candidates(target: str, table: pd.DataFrame) -> str:
    """The `recommend --candidates` answer as text."""
    lines = [f"Support candidates for target {target}, best first (mean rank of: text similarity, "
             f"size ratio |S|/|T|, label-space match):",
             f"{'rank':>4}  {'support':14} {'sim':>6} {'|S|/|T|':>9} {'labels':>6} {'mean rank':>9}  "
             f"{'method':7} {'expected gain':>13}"]
    for r in table.itertuples():
        lines.append(f"{r.rank:>4}  {r.support:14} {r.similarity:6.3f} {r.size_ratio:9.3g} "
                     f"{'match' if r.labels_match else 'differ':>6} {r.mean_rank:9.2f}  "
                     f"{'MTL' if r.method == 'mtl' else 'STILTs':7} {r.expected_gain:+13.2f}")
    lines.append("method: the size heuristic (MTL when |S| > |T|, otherwise STILTs)")
    lines += sorted({f"expected gain (points over single-task): {b}" for b in table["basis"]})
    return "\n".join(lines)


# ----------------------------------------------------------------------------- evaluation

def study_signals(study_dir: Path, model: str = DEFAULT_MODEL, sample: int = DEFAULT_SAMPLE,
                  seed: int = 0, cache_dir: Path | None = None) -> pd.DataFrame:
    """Similarity and label match of every (target, support) cell of a finished study, its tasks
    read from the run list (user tasks included) and its data source from study.json."""
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
    tasks = {n: get_task(n, user) for n in order}
    emb = {n: task_embedding(t, source, model=model, sample=sample, seed=seed, cache_dir=cache_dir)
           for n, t in tasks.items()}
    return pd.DataFrame([dict(target=r.target, support=r.support, similarity=cosine(emb[r.target], emb[r.support]),
                              labels_match=labels_match(tasks[r.target], tasks[r.support]))
                         for r in cells.itertuples()])


def regret(oracle: float, picks: list[float], k: int) -> float:
    """Poth et al.'s Regret@k in %: (oracle - best of the first k picks) / oracle x 100."""
    return (oracle - max(picks[:k])) / oracle * 100.0


def evaluate(study_dir: Path, signals: pd.DataFrame | None = None, **kw) -> tuple[pd.DataFrame, dict]:
    """Leave-one-target-out evaluation of the ranker on a finished pairwise study.

    `signals` (columns target, support, similarity, labels_match) defaults to study_signals(study_dir,
    **kw). Returns one row per target (single, top1 support and method, top1 score, avg_sh,
    random, oracle, regret1, regret3, regret1_sh (of Avg S.H.), regret1_random) and a summary
    dict: n_targets, the means of those columns, spearman and spearman_p (predicted vs measured
    gains over all cells), n_cells.
    """
    study_dir = Path(study_dir)
    df = analysis.load_results(study_dir)
    cells, order = analysis.study_cells(study_dir)
    if len(order) < MIN_TASKS:
        raise BadValue(f"{study_dir}: the ranking evaluation needs at least {MIN_TASKS} tasks, "
                         f"the study has {len(order)}")
    if signals is None:
        signals = study_signals(study_dir, **kw)
    single = single_means(df)
    c = measured_gains(cells, single).merge(signals, on=["target", "support"], how="left")
    if c[["similarity", "labels_match"]].isna().any().any():
        raise ValueError("signals missing for some cells")
    c["size_ratio"] = np.exp(c["log_ratio"])
    c["best"] = c[["mean_mtl", "mean_stilts"]].max(axis=1)
    c["random"] = c[["mean_mtl", "mean_stilts"]].mean(axis=1)
    rows, predicted = [], []
    for target in [t for t in order if t in set(c["target"])]:
        mine = c[c["target"] == target]
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


def report_section(study_dir: Path, signals: pd.DataFrame | None = None, csv: Path | None = None, **kw) -> str:
    """HTML fragment for the report: the ranking evaluation, or '' for a study with fewer than
    three tasks; a one-paragraph note when the signals cannot be computed here. With `csv`, the
    per-target table is also written there."""
    study_dir = Path(study_dir)
    try:
        cells, order = analysis.study_cells(study_dir)
    except (FileNotFoundError, ValueError):
        return ""
    if len(order) < MIN_TASKS or cells.empty:
        return ""
    title = "<h2>Which support? The ranker, leave one target out</h2>\n"
    try:
        table, summary = evaluate(study_dir, signals, **kw)
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
             "similarity (mean-pooled MiniLM embeddings of 256 training texts), size ratio and label-space "
             "match, and takes the size heuristic's method; its top pick's measured score is compared with "
             "Avg S.H., a random (support, method) pick and the Pairwise Oracle. Regret@k as Poth et al. "
             "(2021): (oracle - best of the top k) / oracle.</p>\n")
    return (title + intro + show.to_html(index=False, float_format=lambda v: f"{v:.2f}", border=0)
            + f"\n<p>{html.escape(_verdict(summary))}</p>\n")
