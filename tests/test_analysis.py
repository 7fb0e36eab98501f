"""The analysis package, the explorer's helpers and `recommend` on hand-built results with known
answers (see tests/fake_study.py)."""
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).parent))
from fake_study import BASE, EFFECTS, MTL_NOISE, SEEDS, SIZES, STILTS_NOISE, make_study  # noqa: E402

from mtlstudy import analysis, explorer, recommend  # noqa: E402
from mtlstudy.folder import CorruptResultError  # noqa: E402


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return make_study(tmp_path_factory.mktemp("studies"))


@pytest.fixture(scope="module")
def df(study):
    return analysis.load_results(study)


@pytest.fixture(scope="module")
def cells(df):
    return analysis.cell_table(df, SIZES).set_index(["target", "support"])


def scores(target, support):
    stilts = [BASE[target] + n for n in STILTS_NOISE]
    mtl = [BASE[target] + EFFECTS[target, support] + n for n in MTL_NOISE]
    return mtl, stilts


def test_cell_differences_are_mean_mtl_minus_mean_stilts(cells):
    assert len(cells) == 6
    for cell, effect in EFFECTS.items():
        assert cells.at[cell, "diff"] == pytest.approx(effect)
        assert cells.at[cell, "n_mtl"] == cells.at[cell, "n_stilts"] == 3


def test_student_t_by_hand():
    # var(mtl) = 1, var(stilts) = 0.25, pooled = 0.625, se = sqrt(0.625 * 2/3); diff -3
    t, p = analysis.ttest([66, 68, 67], [70.5, 69.5, 70], equal_var=True)
    assert t == pytest.approx(-3 / math.sqrt(0.625 * 2 / 3))
    assert p == pytest.approx(2 * stats.t.sf(abs(t), df=4))


def test_constant_seeds_give_scipys_degenerate_result_without_a_warning(recwarn):
    """Every seed scoring the same (tiny tasks): scipy's answer, and no precision warning in reports."""
    t, p = analysis.ttest([75.0, 75.0], [80.0, 80.0])
    assert t == -math.inf and p == 0.0
    t, p = analysis.ttest([75.0, 75.0], [75.0, 75.0])
    assert math.isnan(t) and math.isnan(p)
    assert not [w for w in recwarn if "Precision loss" in str(w.message)]


@pytest.mark.parametrize("equal_var", [True, False])
def test_t_and_p_equal_scipy(df, equal_var):
    cells = analysis.cell_table(df, SIZES, equal_var=equal_var).set_index(["target", "support"])
    for cell in EFFECTS:
        ref = stats.ttest_ind(*scores(*cell), equal_var=equal_var)
        assert cells.at[cell, "t"] == pytest.approx(ref.statistic, rel=1e-12, abs=1e-12)
        assert cells.at[cell, "p"] == pytest.approx(ref.pvalue, rel=1e-12)


def test_student_welch_switch_changes_p_as_scipy(df):
    student = analysis.cell_table(df, SIZES, equal_var=True).set_index(["target", "support"])
    welch = analysis.cell_table(df, SIZES, equal_var=False).set_index(["target", "support"])
    cell = ("mid", "small")
    assert student.at[cell, "p"] != pytest.approx(welch.at[cell, "p"])
    for table, eq in ((student, True), (welch, False)):
        assert table.at[cell, "p"] == pytest.approx(stats.ttest_ind(*scores(*cell), equal_var=eq).pvalue)


def test_significance_colours(df, cells):
    expected = {("big", "mid"): "stilts", ("big", "small"): "", ("mid", "big"): "stilts",
                ("mid", "small"): "stilts", ("small", "big"): "mtl", ("small", "mid"): "mtl"}
    assert cells["winner"].to_dict() == expected
    assert not cells.at[("big", "small"), "significant"]
    # at alpha 0.01 only the two strongest cells stay significant
    strict = analysis.cell_table(df, SIZES, alpha=0.01).set_index(["target", "support"])
    assert set(strict.index[strict["significant"]]) == {("small", "big"), ("big", "mid"), ("mid", "big"), ("small", "mid")}


def test_matrix_is_ordered_by_size_with_empty_diagonal(df, cells, study):
    sizes = analysis.task_sizes(df, study)
    assert analysis.task_order(sizes) == ["big", "mid", "small"]
    assert analysis.task_sizes(df) == SIZES  # from results.csv when study.json is absent
    m = analysis.matrix(cells.reset_index(), ["big", "mid", "small"])
    assert list(m.index) == list(m.columns) == ["big", "mid", "small"]
    assert np.isnan(np.diag(m.to_numpy())).all()
    assert m.at["small", "big"] == pytest.approx(4.0)


def test_heuristic_accuracy(cells):
    acc = analysis.heuristic_accuracy(cells.reset_index())
    assert (acc["k"], acc["n"], acc["wrong"]) == (4, 5, [("mid", "big")])
    assert acc["text"] == "4 of 5 significant cells (80.0%)"
    # abstain where sizes are within a factor of 20: only small|big (ratio 100) is called
    acc = analysis.heuristic_accuracy(cells.reset_index(), abstain_below=20)
    assert (acc["k"], acc["n"], acc["abstained"]) == (1, 1, 4)
    assert analysis.heuristic(100, 1000) == "mtl" and analysis.heuristic(1000, 1000) == "stilts"
    assert analysis.heuristic(1000, 1500, abstain_below=2) is None


def test_tables_avg_sh_and_oracle(df, cells):
    table = analysis.summary_table(df, cells.reset_index(), ["big", "mid", "small"])
    # Avg S.H.: big picks STILTs twice (80); mid MTL on big (67) and STILTs on small (70);
    # small picks MTL on both (64, 63). Oracle: best of either method over supports.
    assert table.loc["Avg S.H.", ["big", "mid", "small"]].tolist() == pytest.approx([80, 68.5, 63.5])
    assert table.loc["Pairwise Oracle", ["big", "mid", "small"]].tolist() == pytest.approx([80, 70, 64])
    assert table.loc["Avg MTL", ["big", "mid", "small"]].tolist() == pytest.approx([78.5, 67.5, 63.5])
    assert table.loc["Avg STILTs", "Mean"] == pytest.approx(70)
    assert table.loc["MTL-All (size)", "Mean"] == pytest.approx(65)
    best = analysis.best_mask(table)
    assert best.at["Avg S.H.", "Mean"] and not best.at["Pairwise Oracle", "Mean"]
    assert analysis.format_table(table).at["Avg S.H.", "Mean"] == "70.7*"
    comp = analysis.paper_comparison(table).set_index("method")
    assert comp.at["Avg S.H.", "paper"] == 78.3
    # MTL-All with the dynamic sampler ('gap' in the profiles) is the paper's "MTL-All (dynamic)", 67.2
    assert table.loc["MTL-All (dynamic)", "Mean"] == pytest.approx(64)
    assert comp.at["MTL-All (dynamic)", "paper"] == 67.2
    assert comp.at["Avg S.H.", "difference"] == pytest.approx(70 + 2 / 3 - 78.3)


def test_ablation_ci_and_crossing(df):
    summary = analysis.ablation_summary(df)
    row = summary[(summary.target_fraction == 1.0) & (summary.method == "mtl") & (summary.k == 2.0)].iloc[0]
    x = [70 + 0.5 + n for n in MTL_NOISE]
    lo, hi = stats.t.interval(0.9, 2, loc=np.mean(x), scale=stats.sem(x))
    assert (row["mean"], row["lo"], row["hi"]) == pytest.approx((70.5, lo, hi))
    cross = analysis.ablation_crossings(summary).set_index("target_fraction")
    assert cross.at[1.0, "crossings"] == pytest.approx([1.5])
    assert cross.at[0.5, "text"] == "none"
    assert analysis.crossings([1, 2, 3], [-1, 0, 2]) == [2.0]
    assert analysis.crossings([3, 1, 2], [-2, 1, 3]) == pytest.approx([2.6])


def test_ablation_t_test_per_k_and_bootstrap_interval(df):
    """Figure 2's claim of 'statistically similar' curves is tested per K with the matrix's t-test
    (scipy's Student test as the reference); the bootstrap interval lies within the seeds' range."""
    tests = analysis.ablation_tests(df).set_index(["target_fraction", "k"])
    rows = analysis.ablation_rows(df)
    for (frac, k), r in tests.iterrows():
        g = rows[(rows.target_fraction == frac) & (rows.k == k)]
        ref = stats.ttest_ind(g[g.method == "mtl"].score, g[g.method == "stilts"].score, equal_var=True)
        assert r["p"] == pytest.approx(ref.pvalue) and r["significant"] == (ref.pvalue < 0.1)
    assert tests.at[(1.0, 3.0), "winner"] == "mtl" and tests.at[(1.0, 1.0), "winner"] == "none"  # near the crossing
    # at 50%, MTL is 1 point better at every K, too little for three seeds (scipy: p = 0.196): no winner
    assert not tests.at[(0.5, 1.0), "significant"] and tests.at[(0.5, 1.0), "winner"] == "none"
    assert tests.at[(1.0, 3.0), "significant"] and tests.at[(1.0, 3.0), "p"] < 0.1
    summary = analysis.ablation_summary(df)
    for _, r in summary.iterrows():
        x = rows[(rows.target_fraction == r.target_fraction) & (rows.k == r.k) & (rows.method == r.method)].score
        assert x.min() - 1e-9 <= r.boot_lo <= r["mean"] <= r.boot_hi <= x.max() + 1e-9


def test_sign_agreement_counts_every_cell(tmp_path, study):
    other = make_study(tmp_path, name="bert", flip=[("small", "mid"), ("big", "small")])
    a, _ = analysis.study_cells(study)
    b, _ = analysis.study_cells(other)
    sign = analysis.sign_agreement(a, b)
    flipped = {("small", "mid"), ("big", "small")}
    nonzero = [(t, s) for t, s, d in zip(a.target, a.support, a["diff"]) if d != 0]
    assert sign["n"] == 6 and sign["n_same"] == 6 - len(flipped & set(nonzero))


def test_agreement_of_two_studies(tmp_path, study):
    other = make_study(tmp_path, name="bert", flip=[("small", "mid")])
    a, _ = analysis.study_cells(study)
    b, _ = analysis.study_cells(other)
    agree = analysis.agreement(a, b)
    assert (agree["n_both"], agree["n_same"], agree["disagree"]) == (5, 4, [("small", "mid")])
    assert agree["fraction"] == pytest.approx(0.8)


def test_cell_detail_and_runs(df, study):
    detail = explorer.cell_detail(df, "small", "big")
    assert detail["diff"] == pytest.approx(4.0) and detail["p"] < 0.1
    assert list(detail["scores"].columns) == ["mtl", "stilts"]
    assert detail["text"].endswith(f"Student t={detail['t']:.3f}, p={detail['p']:.4g}: MTL significantly better "
                                   "at alpha 0.1")
    rows = explorer.runs_for(df, "small", "big", "mtl")
    assert rows["run_id"].tolist() == [f"mtl-big-small-s{s}" for s in SEEDS]
    run = analysis.load_run(study, rows.run_id[0])
    assert analysis.history_frame(run)["score:small"].max() == pytest.approx(BASE["small"] + 4.0 + MTL_NOISE[0])


def identical(df, cell=("small", "big"), score=60.0):
    """df with every MTL and STILTs score of one cell set to `score`."""
    rows = df["target"].eq(cell[0]) & df["support"].eq(cell[1]) & df["k"].isna()
    return df.assign(score=df["score"].where(~rows, score))


def test_a_cell_of_identical_scores_says_no_test_instead_of_nan(df):
    detail = explorer.cell_detail(identical(df), "small", "big")
    assert math.isnan(detail["p"]) and "nan" not in detail["text"]
    assert detail["text"] == ("target small, support big: MTL 60.00 (n=3) vs STILTs 60.00 (n=3), diff +0.00; "
                              "identical scores: no test")
    one_seed = df[~(df["method"].eq("mtl") & df["seed"].ne(1))]
    assert explorer.cell_detail(one_seed, "small", "big")["text"].endswith("fewer than two seeds per method: no test")


def test_explorer_opens_on_the_most_significant_cell(df):
    order = ["big", "mid", "small"]
    assert explorer.first_choice(df, order) == ("small", "big", "mtl")  # p smallest: the largest effect, 4 points
    # small|big with identical scores has no test; next: big|mid and mid|big (3 points, equal p), big|mid first
    assert explorer.most_informative_cell(identical(df), order) == ("big", "mid")
    assert explorer.first_choice(identical(df), order) == ("big", "mid", "mtl")
    singles = df[df["method"].eq("single")]
    assert explorer.first_choice(singles, order) == ("small", "big", "single")  # no cell: smallest, largest


def test_load_run_names_a_corrupt_record(study, tmp_path):
    assert analysis.load_run(study, "no-such-run") is None
    broken = make_study(tmp_path)
    (broken / "runs" / "mtl-big-mid-s1" / "result.json").write_text('{"run_id": ')
    with pytest.raises(CorruptResultError, match=r"mtl-big-mid-s1/result.json: corrupt JSON at line 1") as e:
        analysis.load_run(broken, "mtl-big-mid-s1")
    assert "\n" not in str(e.value)


def test_recommend_smaller_target_gets_mtl(study):
    rec = recommend.recommend("rte", "mnli")
    assert rec["method"] == "mtl" and "heuristic" in rec["reason"]
    assert recommend.recommend(500, 2000)["method"] == "mtl"
    rec = recommend.recommend("small", "big", [study])
    assert rec["method"] == "mtl" and "MTL significantly better" in rec["evidence"][0]
    text = recommend.format_recommendation(rec).splitlines()
    assert text[:3] == ["Recommendation: MTL", f"Why: {rec['reason']}", "Evidence from finished studies:"]
    assert text[3] == f"  - {rec['evidence'][0]}"


def test_recommend_larger_target_gets_stilts(study):
    assert recommend.recommend("MNLI", "RTE")["method"] == "stilts"
    rec = recommend.recommend("20000", "2100", [study])  # ratio ~0.1 like big|mid, mid|small
    assert rec["method"] == "stilts"
    assert any("STILTs significantly better" in e for e in rec["evidence"])


@pytest.mark.parametrize("target, support, message", [
    (0, 100, "target size must be positive"),
    ("rte", -5, "support size must be positive"),
    ("no_such_task", "rte", "unknown target task 'no_such_task'"),
])
def test_recommend_errors_clearly(target, support, message):
    with pytest.raises(ValueError, match=message) as err:
        recommend.recommend(target, support)
    assert "\n" not in str(err.value)


def test_several_samplers_need_a_choice(df):
    twice = pd.concat([df, df[df.method == "mtl"].assign(sampler="uniform")])
    with pytest.raises(ValueError, match="several samplers"):
        analysis.cell_table(twice, SIZES)
    assert len(analysis.cell_table(twice, SIZES, sampler="uniform")) == 6


def test_collapsed_runs_are_those_at_the_majority_level():
    df = pd.DataFrame({
        "run_id": ["a", "a", "b", "c", "d", "e"], "method": ["mtl", "mtl", "stilts", "single", "single", "single"],
        "target": ["nli", "para", "nli", "sim", "para", "para"], "support": ["para", "nli", "para", "", "", ""],
        "seed": [1, 1, 1, 1, 1, 1], "score": [36.46, 80.0, 36.0, 0.5, 66.0, 70.0],
        "majority_score": [36.46, 65.07, 36.46, 0.0, 65.07, float("nan")]})
    out = analysis.collapsed_runs(df)
    # at the level, below it, a regression run at correlation ~0, within the 1-point margin; not: 80 vs 65, no level
    assert list(zip(out["run_id"], out["target"])) == [("a", "nli"), ("b", "nli"), ("c", "sim"), ("d", "para")]
    assert "one-class level 36.46" in out["reason"][0] and "score 36.46" in out["reason"][0]
    assert analysis.collapsed_runs(df, margin=0.0)["run_id"].tolist() == ["a", "b"]
    assert analysis.collapsed_runs(df.drop(columns="majority_score")).empty  # old results: nothing flagged
    # acc_f1: the most frequent training label (0) scores 21.4, predicting 1 scores 65.1: a run at
    # 65.1 predicts one class and is flagged by the constant_score level
    f1 = df.assign(majority_score=21.4, constant_score=[36.46, 65.07, 36.46, 0.0, 65.07, 70.0])
    out = analysis.collapsed_runs(f1)
    assert list(zip(out["run_id"], out["target"])) == [("a", "nli"), ("b", "nli"), ("c", "sim"), ("d", "para"),
                                                       ("e", "para")]


def test_constant_score_is_the_best_one_class_predictor():
    from mtlstudy import metrics

    train, dev = [0, 0, 0, 1, 1], [1, 1, 1, 0]  # majority label 0; predicting 1: acc 75, F1 85.7
    assert metrics.majority_score("acc_f1", train, dev) == pytest.approx(12.5)
    assert metrics.constant_score("acc_f1", train, dev) == pytest.approx((75 + 600 / 7) / 2)
    assert metrics.constant_score("accuracy", [0, 1, 2, 2], [1, 1, 0]) == pytest.approx(200 / 3)
    assert metrics.constant_score("mcc", [0, 1], [0, 1, 1]) == 0.0
    assert metrics.constant_score("spearman", [0.5, 1.0], [1.0, 2.0]) == 0.0


def test_why_not_significant_names_seeds_spread_and_needed_difference():
    def frame(shift):
        rows = [dict(run_id=f"{m}{s}", method=m, target="t", support="s", seed=s, score=v, sampler="size" if m == "mtl" else "",
                     k=float("nan"), target_fraction=1.0, support_train_size=10)
                for m, vals in (("mtl", [70.0 + shift, 72.0 + shift]), ("stilts", [70.5, 71.0])) for s, v in zip((1, 2), vals)]
        rows += [dict(r, target="s", support="t", run_id=r["run_id"] + "b") for r in rows]
        return pd.DataFrame(rows)

    sizes = {"t": 100, "s": 10}
    cells = analysis.cell_table(frame(0.0), sizes)
    assert not cells["significant"].any()
    text = analysis.why_not_significant(cells)
    crit = stats.t.ppf(0.95, 2)
    assert "with 2 seeds per method" in text and "2 degrees of freedom" in text and f"{crit:.2f}" in text
    need = float(text.split("needs about ")[1].split(" points")[0])
    # moving the MTL seeds by the needed difference (from a difference of +0.25) brings p to about alpha
    p = analysis.cell_table(frame(need - 0.25), sizes)["p"].iloc[0]
    assert 0.08 < p < 0.12
    sig = analysis.cell_table(frame(20.0), sizes)
    assert sig["significant"].all() and analysis.why_not_significant(sig) == ""


def test_significance_summary_counts_cells_winners_and_the_heuristic():
    """Three cells, two significant, both won by MTL; the heuristic (MTL when the support is larger) is
    right on a|x (support 300 > target 100) and wrong on b|y (support 200 < target 400: STILTs)."""
    cells = pd.DataFrame(dict(target=["a", "b", "c"], support=["x", "y", "z"], significant=[True, True, False],
                              winner=["mtl", "mtl", ""], target_size=[100, 400, 50], support_size=[300, 200, 60]))
    text = analysis.significance_summary(cells, alpha=0.05)
    assert text.startswith("2 of 3 matrix cells are significant (p < 0.05): MTL better in 2.")
    assert "right on 1 of 2 significant cells (50.0%)" in text
    none = analysis.significance_summary(cells.assign(significant=False, winner=""))
    assert none.startswith("0 of 3 matrix cells are significant (p < 0.1). ") and "0 of 0 significant cells" in none


def test_results_written_before_best_epoch_get_it_from_the_run_records(tmp_path):
    """A results.csv without the best_epoch column (older studies): load_results reads each row's
    epoch from its run's record, NaN where the record has none."""
    study_dir = make_study(tmp_path)
    csv = study_dir / "results.csv"
    rows = pd.read_csv(csv)
    first = rows.iloc[0]
    record = json.loads((study_dir / "runs" / first.run_id / "result.json").read_text())
    record["best"][first.target]["epoch"] = 2.5
    (study_dir / "runs" / first.run_id / "result.json").write_text(json.dumps(record))
    rows.drop(columns=["best_epoch"]).to_csv(csv, index=False)
    df = analysis.load_results(study_dir)
    assert df.loc[0, "best_epoch"] == 2.5 and df["best_epoch"].iloc[1:].isna().all()
