"""GLUE metrics, computed by scikit-learn and scipy. Scores are x100; `score` is the task's one number."""
from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef


# The metrics a task can name (tasks.Metric), and what each scores.
METRICS = {
    "accuracy": "accuracy (SST-2, QNLI, RTE, WNLI, MNLI matched)",
    "mcc": "Matthews correlation (CoLA)",
    "acc_f1": "the mean of accuracy and F1 of the second label (MRPC, QQP); both reported",
    "spearman": "Spearman correlation, for regression (STS-B); Pearson reported too",
}


def compute(metric: str, predictions, labels) -> dict[str, float]:
    """All components of a task's metric and its single `score`, each x100.

    mcc: Matthews correlation (CoLA). accuracy: SST-2, QNLI, RTE, WNLI, MNLI (matched).
    acc_f1: MRPC, QQP, score = (accuracy + F1) / 2. spearman: STS-B (Pearson reported too).
    """
    p, y = np.asarray(predictions), np.asarray(labels)
    if len(p) != len(y) or len(y) == 0:
        raise ValueError(f"metric {metric}: {len(p)} predictions for {len(y)} labels")
    if metric == "mcc":
        out = {"mcc": matthews_corrcoef(y, p)}
        out["score"] = out["mcc"]
    elif metric == "accuracy":
        out = {"accuracy": accuracy_score(y, p)}
        out["score"] = out["accuracy"]
    elif metric == "acc_f1":
        out = {"accuracy": accuracy_score(y, p), "f1": f1_score(y, p, zero_division=0.0)}
        out["score"] = (out["accuracy"] + out["f1"]) / 2
    elif metric == "spearman":
        if np.std(p) == 0 or np.std(y) == 0:  # constant predictions: correlation undefined, call it 0
            out = {"spearman": 0.0, "pearson": 0.0}
        else:
            out = {"spearman": spearmanr(p, y)[0], "pearson": pearsonr(p, y)[0]}
        out["score"] = out["spearman"]
    else:
        raise ValueError(f"unknown metric '{metric}'")
    return {k: float(v) * 100 for k, v in out.items()}


def majority_score(metric: str, train_labels, dev_labels) -> float:
    """The score of a constant predictor on dev: the most frequent training label (the smallest
    on ties) for classification, the training mean for regression. A constant has no
    correlation, so under `spearman` this is 0 by definition (see compute). The level below
    which a run has learned nothing: a run whose best score is here predicts one class."""
    train_labels, dev_labels = np.asarray(train_labels), np.asarray(dev_labels)
    if len(train_labels) == 0:
        raise ValueError(f"metric {metric}: no training labels")
    if metric == "spearman":
        constant = float(np.mean(train_labels))
    else:
        values, counts = np.unique(train_labels, return_counts=True)
        constant = values[np.argmax(counts)]
    return compute(metric, np.full(len(dev_labels), constant, dtype=train_labels.dtype), dev_labels)["score"]


def constant_score(metric: str, train_labels, dev_labels) -> float:
    """The best score on dev of any one-class predictor (over the classes seen in training); 0
    for regression. Under acc_f1 it can exceed majority_score: predicting the minority class 1
    gives an F1 that predicting 0 does not. A run at this level may still predict one class."""
    train_labels, dev_labels = np.asarray(train_labels), np.asarray(dev_labels)
    if metric == "spearman":
        return majority_score(metric, train_labels, dev_labels)
    return max(compute(metric, np.full(len(dev_labels), c, dtype=train_labels.dtype), dev_labels)["score"]
               for c in np.unique(train_labels))
