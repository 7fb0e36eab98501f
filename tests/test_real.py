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

pytestmark = pytest.mark.slow


def _spec(glue_dir, method, tasks, counts, **train_kw):
    settings = dict(lr=5e-5, batch_size=16, epochs=1, max_length=64, evals_per_epoch=1, device="cpu",
                    sampler="uniform", eval_batch_size=128)
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


def test_mtl_pair_and_stilts_on_real_data(glue_dir, minilm_path, tmp_path):
    """WNLI + RTE (64 training examples each, max length 48): one MTL pair run scores both tasks;
    STILTs WNLI -> RTE runs stage one (keeping its best checkpoint) and stage two from that
    checkpoint. The smallest dev sets of GLUE (71 and 277 examples) keep the evaluations short;
    this checks that the methods run end to end on real files and a real encoder, not accuracy."""
    counts = {"wnli": 64, "rte": 64}
    short = dict(max_length=48)
    mtl = _run(_spec(glue_dir, "mtl", ["wnli", "rte"], counts, **short), tmp_path / "mtl")
    assert set(mtl["best"]) == {"wnli", "rte"} and mtl["train_sizes"] == counts
    assert mtl["total_steps"] == 8  # uniform: 8 slots each in a batch of 16; 64 // 8 batches
    for t in ("wnli", "rte"):
        assert 0.0 <= mtl["best"][t]["score"] <= 100.0 and mtl["best"][t]["step"] == mtl["total_steps"]

    stage1 = _run(_spec(glue_dir, "single", ["wnli"], counts, keep_checkpoint="best", **short), tmp_path / "stage1")
    ckpt = tmp_path / "stage1" / "best" / "wnli"
    assert (ckpt / "model.safetensors").exists() and "wnli" in stage1["best"]
    stage2 = _run(_spec(glue_dir, "stilts", ["wnli", "rte"], counts, **short), tmp_path / "stage2", init_checkpoint=ckpt)
    assert stage2["scored_tasks"] == ["rte"] and stage2["init_checkpoint"] == str(ckpt)
    assert 0.0 <= stage2["best"]["rte"]["score"] <= 100.0
