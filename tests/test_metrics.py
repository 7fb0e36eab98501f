"""GLUE metrics equal scikit-learn / scipy (x100) for every task's metric."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from mtlstudy import metrics, tasks


def _random(task, n, rng):
    if task.is_regression:
        y = rng.uniform(0, 5, n)
        return y + rng.normal(0, 1.5, n), y
    y = rng.integers(task.num_outputs, size=n)
    p = np.where(rng.random(n) < 0.6, y, rng.integers(task.num_outputs, size=n))
    return p, y


@pytest.mark.parametrize("name", sorted(tasks.GLUE_TASKS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metric_matches_reference(name, seed):
    task = tasks.get_task(name)
    p, y = _random(task, 300, np.random.default_rng(seed))
    out = metrics.compute(task.metric, p, y)
    expected = {
        "mcc": lambda: {"mcc": matthews_corrcoef(y, p)},
        "accuracy": lambda: {"accuracy": accuracy_score(y, p)},
        "acc_f1": lambda: {"accuracy": accuracy_score(y, p), "f1": f1_score(y, p)},
        "spearman": lambda: {"spearman": spearmanr(p, y).statistic, "pearson": pearsonr(p, y).statistic},
    }[task.metric]()
    for k, v in expected.items():
        assert out[k] == pytest.approx(100 * v, abs=1e-9)
    main = {"mcc": "mcc", "accuracy": "accuracy", "spearman": "spearman"}.get(task.metric)
    score = (expected["accuracy"] + expected["f1"]) / 2 if task.metric == "acc_f1" else expected[main]
    assert out["score"] == pytest.approx(100 * score, abs=1e-9)
    assert all(isinstance(v, float) for v in out.values())


def test_expected_metric_per_task():
    assert {n: t.metric for n, t in tasks.GLUE_TASKS.items()} == {
        "cola": "mcc", "sst2": "accuracy", "mrpc": "acc_f1", "stsb": "spearman", "qqp": "acc_f1",
        "mnli": "accuracy", "qnli": "accuracy", "rte": "accuracy", "wnli": "accuracy"}


def test_known_values():
    assert metrics.compute("accuracy", [1, 0, 1, 1], [1, 1, 1, 1])["score"] == 75.0
    # acc 0.75, F1 = 2*3/(2*3+0+1) = 6/7
    assert metrics.compute("acc_f1", [1, 0, 1, 1], [1, 1, 1, 1])["score"] == pytest.approx(100 * (0.75 + 6 / 7) / 2)
    assert metrics.compute("mcc", [0, 1, 0, 1], [0, 1, 0, 1])["score"] == pytest.approx(100.0)
    assert metrics.compute("spearman", [1.0, 2.0, 3.0], [10.0, 20.0, 35.0])["score"] == pytest.approx(100.0)
    assert metrics.compute("spearman", [1.0, 1.0, 1.0], [1.0, 2.0, 3.0])["score"] == 0.0  # constant: defined as 0


@pytest.mark.parametrize("metric", ["mcc", "accuracy", "acc_f1", "spearman"])
def test_length_mismatch_and_empty(metric):
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        metrics.compute(metric, [0, 1, 1], [0, 1])
    with pytest.raises(ValueError):
        metrics.compute(metric, [], [])


def test_unknown_metric():
    with pytest.raises(ValueError, match="unknown metric 'f2'"):
        metrics.compute("f2", [0], [0])
