"""`mtlstudy plan`'s training tokens (compute.token_estimate): the lengths of a task's own data
as the run's tokenizer gives them, the paper's estimate under each train.padding, and the line
that says when the lengths are not at hand."""
from __future__ import annotations

import subprocess
import sys

import numpy as np

from mtlstudy import compute, study
from mtlstudy import data as data_mod
from mtlstudy.model import load_tokenizer
from mtlstudy.tasks import get_task

from .conftest import REPO


def test_a_tasks_lengths_are_those_the_runs_tokenizer_gives():
    st = study.open_study(REPO / "params" / "demo.yaml")
    lengths, source = compute.task_lengths(st.profile, st.user, "gen_nli")
    task = get_task("gen_nli")
    ex = data_mod.load_examples(task, "train", st.profile.data)
    reference = data_mod.tokenize(load_tokenizer(st.profile.model), ex, st.profile.train.max_length).lengths()
    assert source == "its training data" and np.array_equal(np.sort(lengths), np.sort(reference))


def test_plan_paper_prints_the_tokens_computed_and_real_under_each_padding():
    out = subprocess.run([sys.executable, "-m", "mtlstudy.cli", "plan", "paper", "--quiet"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("training tokens:"))
    assert "train.padding sorted_passes" in line and "GLUE's length distribution" in line
    st = study.open_study(REPO / "params" / "paper.yaml")
    est = compute.token_estimate(st.runs, st.profile, st.user)
    padded = study.open_study(REPO / "params" / "paper.yaml", ["train.padding=batch"])
    est_padded = compute.token_estimate(padded.runs, padded.profile, padded.user)
    assert est["real"] == est_padded["real"]  # the same batches, the same real tokens
    assert est["computed"] / est["real"] < 1.25 < 2 < est_padded["computed"] / est_padded["real"]
    assert f"{est['computed']:,.0f} computed" in line


def test_tokens_not_estimated_where_the_lengths_are_not_at_hand():
    st = study.open_study(REPO / "params" / "demo.yaml")
    profile = st.profile.model_copy(update={"model": "nobody-here/no-such-model"})
    assert compute.token_line(st.runs, profile, st.user) == \
        "training tokens: not estimated (task gen_nli: its tokenizer is not at hand)"
