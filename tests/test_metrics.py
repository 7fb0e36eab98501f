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
    with pytest.raises(ValueError, match=f"metric {metric}: 0 predictions for 0 labels"):
        metrics.compute(metric, [], [])


def test_unknown_metric():
    with pytest.raises(ValueError, match="unknown metric 'f2'"):
        metrics.compute("f2", [0], [0])


@pytest.mark.parametrize("metric", ["accuracy", "acc_f1", "mcc"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_majority_score_is_sklearns_most_frequent_dummy(metric, seed):
    from sklearn.dummy import DummyClassifier
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    rng = np.random.default_rng(seed)
    k = 3 if metric == "accuracy" else 2
    train = rng.choice(k, size=50, p=rng.dirichlet(np.ones(k)))
    dev = rng.integers(0, k, 40)
    pred = DummyClassifier(strategy="most_frequent").fit(np.zeros((len(train), 1)), train).predict(np.zeros((len(dev), 1)))
    if metric == "acc_f1":
        ref = (accuracy_score(dev, pred) + f1_score(dev, pred, zero_division=0.0)) / 2
    else:
        ref = accuracy_score(dev, pred) if metric == "accuracy" else matthews_corrcoef(dev, pred)
    assert metrics.majority_score(metric, train, dev) == pytest.approx(100 * ref)


def test_majority_score_examples():
    # 3 of 4 training labels are 1; dev has 2 ones of 5: accuracy 40, F1 = 2*0.4/(1.4) = 57.14
    assert metrics.majority_score("accuracy", [1, 1, 1, 0], [1, 1, 0, 0, 0]) == pytest.approx(40.0)
    assert metrics.majority_score("acc_f1", [1, 1, 1, 0], [1, 1, 0, 0, 0]) == pytest.approx((40 + 400 / 7) / 2)
    assert metrics.majority_score("mcc", [0, 0, 1], [1, 0, 1]) == 0.0
    assert metrics.majority_score("accuracy", [2, 0, 2, 0], [0, 0, 2]) == pytest.approx(200 / 3)  # tie: smallest
    # regression: a constant has no rank correlation; defined as 0
    assert metrics.majority_score("spearman", np.array([0.5, 4.0], np.float32), np.array([1.0, 2.0, 3.0], np.float32)) == 0.0
    with pytest.raises(ValueError, match="no training labels"):
        metrics.majority_score("accuracy", [], [1])
