"""Real data and a real pre-trained encoder (all-MiniLM-L6-v2 from the offline PyPI package), on
CPU. Slow: run with `-m slow`, or deselect with `-m "not slow"`. Skips when the GLUE folder or the
model package is absent."""
from __future__ import annotations

import math

import pytest

from mtlstudy import train
from mtlstudy.data import DataSource
from mtlstudy.model import OFFLINE_MINILM
from mtlstudy.spec import RunSpec, TrainSettings
from tests.profiles import OLD_DEFAULTS

pytestmark = pytest.mark.slow


def _spec(glue_dir, method, tasks, counts, **train_kw):
    settings = dict(lr=5e-5, batch_size=16, epochs=1, max_length=64, evals_per_epoch=1, device="cpu",
                    sampler="uniform", eval_batch_size=128, **OLD_DEFAULTS)
    settings.update(train_kw)
    return RunSpec(method=method, tasks=tasks, seed=42, model=OFFLINE_MINILM,
                   data=DataSource(source="glue_dir", glue_dir=glue_dir), train_counts=counts,
                   train=TrainSettings(**settings))


def _run(spec, out, **kw):
    return train.train(spec, out, progress=False, log=lambda *a: None, **kw)


def test_minilm_learns_sst2(glue_dir, minilm_path, tmp_path):
    """1,000 real SST-2 training examples, one epoch of 63 steps, batch 16, max length 64: dev
    accuracy far above the majority class.

    Learning rate 1e-4, not 5e-5: the loop decays the rate linearly to 0 (the paper's schedule), so
    1e-4 averages 5e-5 over the run, what a hand-written loop at a constant 5e-5 used. Measured
    here (CPU, seed 42): 79.0% in 80 s (seed 544460: 78.3%); a hand-written loop at a constant 5e-5
    gave 78.8% with our model and 78.4% with BertForSequenceClassification, and train() with a
    5e-5 rate decaying to 0 gave 59-62%, exactly what the same hand-written loop with that decay
    gave. The threshold, 70%, is 19 points above the dev majority baseline (444/872 = 50.9%;
    one standard error is about 1.7 points), so a loop that does not learn (wrong labels, a head
    that ignores the encoder, no optimizer step) cannot pass, and it leaves 8 points for other
    seeds, torch versions and machines.
    """
    spec = _spec(glue_dir, "single", ["sst2"], {"sst2": 1000}, lr=1e-4)
    record = _run(spec, tmp_path)
    assert record["train_sizes"] == {"sst2": 1000} and record["total_steps"] == math.ceil(1000 / 16)
    assert len(record["history"]) == 1 and record["examples_seen"] == 1000
    assert record["best"]["sst2"]["score"] >= 70.0, record["best"]


def test_mtl_pair_and_stilts_learn_on_real_data(glue_dir, minilm_path, tmp_path):
    """An MTL pair and a STILTs run on real GLUE files score clearly above the majority level of
    their target (majority_score: always predicting the most frequent training label).

    MTL SST-2 + RTE (640 + 128 training examples, size sampler: 13 + 3 slots a batch, 42 steps);
    STILTs RTE -> SST-2 (stage one: single RTE on 128 examples, best checkpoint kept; stage two:
    640 SST-2 examples, 40 steps). Max length 64, lr 3e-4 decaying to 0, one epoch, batches not
    grouped by length. SST-2 is the target because a few hundred examples teach MiniLM sentiment
    (test_minilm_learns_sst2), while RTE stays near chance at this size. Measured (CPU, seed 42):
    MTL SST-2 77.6 against a majority level of 50.9 (lr 2e-4 with length grouping: 65.8). The bar,
    majority + 10 points, is about 6 standard errors of an 872-example dev accuracy, so a run that
    predicts one class or learns nothing cannot pass."""
    counts = {"sst2": 640, "rte": 128}
    kw = dict(max_length=64, lr=3e-4, sampler="size", group_by_length=False)
    mtl = _run(_spec(glue_dir, "mtl", ["sst2", "rte"], counts, **kw), tmp_path / "mtl")
    assert mtl["train_sizes"] == counts and mtl["total_steps"] == 42
    assert set(mtl["majority_scores"]) == {"sst2", "rte"}
    assert 45 < mtl["majority_scores"]["sst2"] < 55  # 428 or 444 of 872 dev examples
    assert mtl["best"]["sst2"]["score"] >= mtl["majority_scores"]["sst2"] + 10, (mtl["best"], mtl["majority_scores"])

    stage1 = _run(_spec(glue_dir, "single", ["rte"], counts, keep_checkpoint="best", **kw), tmp_path / "stage1")
    ckpt = tmp_path / "stage1" / "best" / "rte"
    assert (ckpt / "model.safetensors").exists() and "rte" in stage1["best"]
    stilts = _run(_spec(glue_dir, "stilts", ["rte", "sst2"], counts, **kw), tmp_path / "stage2", init_checkpoint=ckpt)
    assert stilts["scored_tasks"] == ["sst2"] and stilts["init_checkpoint"] == str(ckpt)
    assert stilts["total_steps"] == 40
    assert stilts["best"]["sst2"]["score"] >= stilts["majority_scores"]["sst2"] + 10, stilts["best"]
