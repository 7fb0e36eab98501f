"""The `glue_cpu` profile cannot rot: its full plan builds (every method, proportional sizes, the
offline encoder), and a shrunk copy (16 examples per task, one epoch, one seed, single-task runs
only: 4 runs, 2 workers, each reads every split of one task of the profile, trains one step and
scores the whole dev set) runs end to end on the real GLUE folder. Skips when ../shared/data/glue
is absent."""
from __future__ import annotations

import pandas as pd
import pytest

from mtlstudy import study
from mtlstudy.analysis import load_results, load_run
from mtlstudy.spec import OFFLINE_MINILM
from tests.conftest import REPO
from tests.reliability_helpers import cli

PROFILE = REPO / "params" / "glue_cpu.yaml"
REAL_SIZES = {"sst2": 67349, "cola": 8551, "stsb": 5749, "mrpc": 3668}


def test_glue_cpu_profile_plans_every_method_at_proportional_sizes():
    st = study.open_study(PROFILE)
    p = st.profile
    assert p.model == OFFLINE_MINILM and len(p.seeds) >= 3  # runs offline, with seeds to test
    assert set(p.methods) == {"single", "stilts", "mtl", "mtl_all"}
    assert set(p.tasks) == set(REAL_SIZES) and set(p.train_counts) == set(p.tasks)
    counts = p.train_counts
    assert len(set(counts.values())) == len(counts)  # not all one count: the heuristic has sizes to judge
    # GLUE's order of sizes, so the heuristic names the method it would on full GLUE for every pair
    assert sorted(counts, key=counts.get) == sorted(REAL_SIZES, key=REAL_SIZES.get)
    for t in ("cola", "stsb"):  # 1/5 of the real train size, to the example; MRPC 3/10, SST-2 capped at 1,800
        assert abs(counts[t] - REAL_SIZES[t] / 5) <= 1, (t, counts[t])
    assert abs(counts["mrpc"] - REAL_SIZES["mrpc"] * 3 / 10) <= 1 and counts["sst2"] == 1800
    kinds = pd.Series([r.kind for r in st.runs]).value_counts().to_dict()
    n, s = len(p.tasks), len(p.seeds)
    assert kinds == {"single": n * s, "mtl": n * (n - 1) // 2 * s, "stilts": n * (n - 1) * s, "mtl_all": s}


def test_glue_cpu_shrunk_runs_on_real_glue(glue_dir, minilm_path, tmp_path):
    counts = "{sst2: 16, cola: 16, stsb: 16, mrpc: 16}"
    r = cli("run", PROFILE, "--set", "data.source=glue_dir", "--set", f"data.glue_dir={glue_dir}",
            "--set", f"train_counts={counts}", "--set", "seeds=[1]", "--set", "methods=[single]",
            "--set", "train.epochs=1", "--set", "train.evals_per_epoch=1", "--set", "train.max_length=32",
            "--set", "train.eval_batch_size=64", "--set", "executor=local", "--set", "notebooks=false",
            "--set", "workers=2", "--set", f"output_dir={tmp_path}", timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    folder = tmp_path / "glue_cpu"
    df = load_results(folder)
    assert sorted(df["target"]) == sorted(REAL_SIZES) and set(df["method"]) == {"single"}
    assert df["target_train_size"].eq(16).all()
    for r in df.itertuples():  # the table holds each run's best dev score, as its record has it
        assert r.score == load_run(folder, r.run_id)["best"][r.target]["score"]
    # the whole SST-2 dev set was scored: its one-class level is the larger label share of dev.tsv
    labels = pd.read_csv(glue_dir / "SST-2" / "dev.tsv", sep="\t", quoting=3)["label"]
    sst2 = df.set_index("target").loc["sst2"]
    assert sst2["constant_score"] == pytest.approx(100 * labels.value_counts(normalize=True).max())
