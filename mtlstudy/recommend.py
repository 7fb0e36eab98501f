"""Which method and which support? For a target and a support, MTL or STILTs by the size heuristic
(`recommend`), with evidence from finished studies; for a target and candidate supports, their
ranking before training anything (`recommend_candidates`).

Signals of a candidate support S for a target T:
  measured       with an outside transfer table (transfer.py): S's mean measured transfer to the
                 table's targets other than T (the table's average when it lacks S)
  similarity     cosine similarity of the two tasks' mean text embeddings (similarity.py)
  size ratio     |S| / |T| (train sizes: a --study's own where it trained the task; the size
                 heuristic reads the same two numbers)
  labels match   same number of labels, or both regression (shown, not ranked by: it put STS-B,
                 the best support on TaskWeb's table, last; docs/ranking.md)

Ranking: by `measured` first when there is a table, then by the mean of the candidates' ranks on
similarity and size ratio (ties share their mean rank), ties broken by similarity. No weight is
fitted. The method for each candidate is the size heuristic's (analysis.heuristic). The expected
gain (points over the target's single-task score) comes from finished studies: the mean measured
gain of the heuristic's method in cells whose size ratio is within a factor of 2 of the
candidate's (else the 3 nearest); without a study it is a stated prior of 0. How well the ranking
does: ranking.py.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from . import analysis
from .data import DataSource
from .errors import BadValue
from .similarity import DEFAULT_MODEL, DEFAULT_SAMPLE, similarities, texts_here
from .tasks import GENERATED_TASKS, GLUE_TASKS, Task, get_task
from .transfer import support_scores

NEAR_RATIO = 2.0       # evidence cells: size ratio within this factor of the candidate's
NEAR_FALLBACK = 3      # else the nearest cells by log size ratio
TEXT_AND_SIZE = ("similarity", "size_ratio")  # the signals that vote by mean rank

# Train sizes of the registered tasks (GLUE's official sizes and the generated suite's defaults).
REGISTERED_SIZES = {n: t.train_size for reg in (GLUE_TASKS, GENERATED_TASKS) for n, t in reg.items() if t.train_size}


# ----------------------------------------------------------------------------- which method

def _norm(name: str) -> str:
    return str(name).lower().replace("-", "").replace("_", "")


def known_task_sizes(study_dirs=()) -> dict[str, int]:
    """Train sizes by task name: the task registry (GLUE, the generated suite), then the studies."""
    sizes = dict(REGISTERED_SIZES)
    for d in study_dirs:  # tasks only the studies know (a known task keeps its official size)
        for task, size in analysis.task_sizes(analysis.load_results(d), d).items():
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
    method = analysis.heuristic(t_size, s_size)
    ratio = s_size / t_size
    relation = "larger" if s_size > t_size else ("the same size as" if s_size == t_size else "smaller")
    rel = relation if relation.startswith("the") else f"{relation} than"
    reason = (f"the support {_describe(s_name, s_size)} is {rel} the target {_describe(t_name, t_size)}, "
              f"so the size heuristic (MTL when |S| > |T|, otherwise STILTs) picks "
              f"{'MTL' if method == 'mtl' else 'STILTs'}; in the paper it was right in {analysis.PAPER_HEURISTIC}")
    evidence = []
    for d in study_dirs:
        cells, _ = analysis.study_cells(d)
        name = analysis.load_study_info(d).get("name", d.name)
        same = cells[(cells["target"] == t_name) & (cells["support"] == s_name)]
        if not same.empty:
            evidence.append(_cell_evidence(name, next(same.itertuples())))
            continue
        dist = (np.log(cells["support_size"] / cells["target_size"]) - math.log(ratio)).abs()
        near = cells.assign(dist=dist + 0.01 * (np.log(cells["target_size"]) - math.log(t_size)).abs())
        near = near[dist <= math.log(NEAR_RATIO)].sort_values("dist")
        if near.empty:
            continue
        sig = near[near["significant"]]
        agree = int((sig["winner"] == method).sum())
        evidence.append(f"{name}: {len(near)} studied cell(s) with a size ratio within a factor of {NEAR_RATIO:g} "
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


# ----------------------------------------------------------------------------- which support

def size_ratio(support_size: float, target_size: float) -> float:
    """|S| / |T|."""
    if not support_size > 0 or not target_size > 0:
        raise BadValue(f"train sizes must be positive, got support {support_size}, target {target_size}")
    return float(support_size) / float(target_size)


def labels_match(a: Task, b: Task) -> bool:
    """Same label space shape: both regression, or the same number of labels (shown, not ranked by)."""
    return a.is_regression == b.is_regression and a.num_outputs == b.num_outputs


def rank(signals: pd.DataFrame) -> pd.DataFrame:
    """Order candidates: by `measured` first when the column is there (a support's measured transfer
    to an outside table's other targets, transfer.measured_elsewhere; the caller fills in the
    table's average for a candidate it lacks), then by the mean of their ranks on similarity and
    size ratio (higher first; ties share their mean rank), then by similarity.

    `signals` has one row per candidate with columns support, similarity, size_ratio (and
    measured). Returns it with columns mean_rank and rank (1 = best), best first.
    """
    s = signals.copy()
    s["mean_rank"] = pd.concat([s[c].rank(ascending=False) for c in TEXT_AND_SIZE], axis=1).mean(axis=1)
    keys = (["measured"] if "measured" in s else []) + ["mean_rank", "similarity"]
    s = s.sort_values(keys, ascending=[k == "mean_rank" for k in keys], kind="mergesort")
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


def study_task_sizes(study_dirs) -> dict[str, int]:
    """Train sizes by task as the finished studies trained them (study.json's task_sizes, e.g. a
    profile's data.generated_sizes or train_counts); the first study listed wins."""
    sizes: dict[str, int] = {}
    for d in study_dirs:
        for task, size in analysis.task_sizes(analysis.load_results(Path(d)), Path(d)).items():
            sizes.setdefault(task, size)
    return sizes


def recommend_candidates(target: str, candidates: list[str], user: dict[str, Task] | None = None,
                         source: DataSource | None = None, study_dirs=(), model: str = DEFAULT_MODEL,
                         sample: int = DEFAULT_SAMPLE, seed: int = 0, cache_dir: Path | None = None,
                         transfer_rows: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rank candidate supports for `target` (task names: GLUE, the generated suite or `user`).

    Returns one row per candidate, best first: rank, support, size_ratio, similarity,
    labels_match, measured (with `transfer_rows`, an outside table's setting: the support's
    measured transfer to the table's other targets, or their average where the table lacks it),
    mean_rank, method (the size heuristic's), expected_gain, basis. Train sizes are the studies'
    own where `study_dirs` trained the task (study_task_sizes), else the registered ones.
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
    sizes = {**reg_sizes, **{t: n for t, n in study_task_sizes(study_dirs).items() if t in tasks}}
    source = source or DataSource()
    here = {n: texts_here(t, source) for n, t in tasks.items()}
    sims = similarities(here[target][0], [here[c][0] for c in candidates], source, model=model, sample=sample,
                        seed=seed, cache_dir=cache_dir)
    signals = pd.DataFrame([dict(support=c, size_ratio=size_ratio(sizes[c], sizes[target]),
                                 similarity=sims[c], labels_match=labels_match(tasks[target], tasks[c]))
                            for c in candidates])
    if transfer_rows is not None:
        signals["measured"] = support_scores(transfer_rows, target, candidates)
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
    out.attrs["notes"] = [note for _, note in here.values() if note]
    return out[["rank", "support", "size_ratio", "similarity", "labels_match",
                *(["measured"] if transfer_rows is not None else []), "mean_rank", "method", "expected_gain", "basis"]]


def format_candidates(target: str, table: pd.DataFrame, evidence: str = "", source_name: str = "") -> str:
    """The `recommend --candidates` answer as text; `evidence`, how good the ranking has been
    (ranking.evidence), ends it; `source_name` names the transfer table when the ranking used one."""
    measured = "measured" in table
    by = (f"the support's measured transfer to the other targets of {source_name}, then the mean rank of "
          if measured else "the mean rank of ")
    lines = [f"Support candidates for target {target}, best first (by {by}text similarity and size ratio |S|/|T|):",
             f"{'rank':>4}  {'support':14} {'sim':>6} {'|S|/|T|':>9} {'labels':>6} "
             + (f"{'measured':>8} " if measured else "") + f"{'mean rank':>9}  {'method':7} {'expected gain':>13}"]
    for r in table.itertuples():
        lines.append(f"{r.rank:>4}  {r.support:14} {r.similarity:6.3f} {r.size_ratio:9.3g} "
                     f"{'match' if r.labels_match else 'differ':>6} "
                     + (f"{r.measured:+8.3f} " if measured else "")
                     + f"{r.mean_rank:9.2f}  {'MTL' if r.method == 'mtl' else 'STILTs':7} {r.expected_gain:+13.2f}")
    if measured:
        lines.append("measured: mean relative change of a target's score after this support, over the table's "
                     "targets other than this one (the table's average for a support it lacks)")
    lines.append("labels: whether the label spaces match (shown; not ranked by)")
    lines.append("method: the size heuristic (MTL when |S| > |T|, otherwise STILTs)")
    lines += sorted({f"expected gain (points over single-task): {b}" for b in table["basis"]})
    lines += [f"similarity: {n}" for n in table.attrs.get("notes", [])]
    if evidence:
        lines.append(evidence)
    return "\n".join(lines)
