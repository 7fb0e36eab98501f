"""One run's record (runs/<run_id>/result.json): its evaluations over training, parameters and cost,
best scores against the one-class level, task mix; and the runs that learned nothing."""
from __future__ import annotations

import numpy as np
import pandas as pd

COLLAPSE_MARGIN = 1.0  # points above the majority level that still count as "learned nothing"


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
