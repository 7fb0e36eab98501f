"""Tables and figures for a paper (issue 38, item 4): beside Tables 1 and 2, their rows per seed
(mean, standard deviation, n, the paper's mean) and a LaTeX booktabs version; figures as PDF too.
The expected numbers are computed here from the seeds' scores with `statistics`, not by the
package."""
from __future__ import annotations

import re
import statistics
import sys
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).parent))
from fake_study import SEEDS, SIZES, make_study  # noqa: E402

from mtlstudy import analysis, plots, report  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The fake study's Tables 1 and 2 as the report writes them (tables/table1.csv, table2.csv),
    then the paper versions beside them."""
    study = make_study(tmp_path_factory.mktemp("studies"))
    df = analysis.load_results(study)
    cells, order = analysis.study_cells(study)
    tables = study / "report" / "tables"
    tables.mkdir(parents=True)
    cells.to_csv(tables / "cells.csv", index=False)
    analysis.summary_table(df, cells, order).to_csv(tables / "table1.csv")
    analysis.mtl_all_table(df, order).to_csv(tables / "table2.csv")
    written = report.write_paper_tables(df, tables)
    return df, tables, written


def tex_row(tex: str, method: str) -> list[str]:
    """The cells of one row of the LaTeX table."""
    line = next(line for line in tex.splitlines() if line.startswith(method + " &"))
    return [c.strip() for c in line.removesuffix("\\\\").split("&")][1:]


def pm(values) -> str:
    return f"{statistics.mean(values):.1f} $\\pm$ {statistics.stdev(values):.1f}"


def scores(df, method, target, support=None, sampler=None):
    """Score per seed of one method's runs on `target` (with `support`, `sampler` where given)."""
    rows = df[(df.method == method) & (df.target == target) & df.k.isna()]
    if support is not None:
        rows = rows[rows.support == support]
    if sampler is not None:
        rows = rows[rows.sampler == sampler]
    return dict(zip(rows.seed, rows.score))


def test_table1_tex_holds_mean_and_sd_over_seeds(exported):
    df, tables, written = exported
    assert {p.name for p in written} == {"table1_seeds.csv", "table1.tex", "table2_seeds.csv", "table2.tex"}
    tex = (tables / "table1.tex").read_text()
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex  # booktabs
    header = next(line for line in tex.splitlines() if line.startswith(" &"))
    assert [c.strip() for c in header.removesuffix("\\\\").split("&")][1:] == ["big", "mid", "small", "Mean", "Paper"]

    single = {t: scores(df, "single", t) for t in SIZES}
    assert tex_row(tex, "Single task")[2] == pm(single["small"].values())
    mean_over_targets = [statistics.mean(single[t][s] for t in SIZES) for s in SEEDS]
    assert tex_row(tex, "Single task")[3] == pm(mean_over_targets)
    assert tex_row(tex, "Single task")[4] == "--"  # the paper has no single-task mean in this form

    # Avg MTL of target small: per seed the mean over its supports (big, mid), then over seeds
    per_seed = [statistics.mean([scores(df, "mtl", "small", s)[seed] for s in ("big", "mid")]) for seed in SEEDS]
    assert tex_row(tex, "Avg MTL")[2] == "\\textbf{" + pm(per_seed).replace(" $", "} $", 1)  # best non-oracle
    assert tex_row(tex, "Avg MTL")[4] == "77.3"

    # the oracle of target small: MTL with support big has the best mean (fake_study.EFFECTS: +4)
    assert tex_row(tex, "Pairwise Oracle")[2] == pm(scores(df, "mtl", "small", "big").values())
    # MTL-All with the size sampler, target mid
    assert tex_row(tex, "MTL-All (size)")[1] == pm(scores(df, "mtl_all", "mid", sampler="size").values())
    assert "over 3 seeds" in tex.splitlines()[0]


def test_the_seed_table_means_are_the_reported_table_and_give_sd_and_n(exported):
    df, tables, _ = exported
    for name in ("table1", "table2"):
        table = analysis.read_table(tables / f"{name}.csv")
        spread = pd.read_csv(tables / f"{name}_seeds.csv")
        assert list(spread.columns) == ["method", "column", "mean", "sd", "n", "paper"]
        assert list(dict.fromkeys(spread["method"])) == list(table.index)
        means = spread.pivot(index="method", columns="column", values="mean").reindex_like(table)
        pd.testing.assert_frame_equal(means, table, check_names=False, atol=1e-9)
        assert set(spread["n"]) == {len(SEEDS)}
    spread = pd.read_csv(tables / "table2_seeds.csv").set_index(["method", "column"])
    uniform = scores(df, "mtl_all", "big", sampler="uniform").values()
    assert spread.loc[("MTL-All (uniform)", "big"), "sd"] == pytest.approx(statistics.stdev(uniform))
    assert spread.loc[("MTL-All (uniform)", "Mean"), "paper"] == 63.2
    assert pd.isna(spread.loc[("MTL-All (uniform)", "big"), "paper"])


def test_one_seed_gives_the_mean_alone(exported):
    df, _, _ = exported
    one = df[df.seed == SEEDS[0]]
    cells = analysis.cell_table(one, SIZES)
    table = analysis.summary_table(one, cells, list(SIZES))
    spread = analysis.seed_spread(analysis.seed_scores(one, cells, list(SIZES)), list(table.index), list(SIZES))
    tex = analysis.latex_table(spread, table)
    assert "pm" not in tex and set(spread["n"]) == {1}
    assert tex_row(tex, "Single task")[0] == f"\\textbf{{{scores(one, 'single', 'big')[SEEDS[0]]:.1f}}}"


def test_a_study_without_stilts_runs_gets_its_tables(exported):
    """A study trained with methods [single, mtl] (the demo shrunk so, in test_readme) has cells and
    no STILTs column: its Avg STILTs row is empty, Avg MTL is there."""
    df, _, _ = exported
    no_stilts = df[df.method != "stilts"]
    cells = analysis.cell_table(no_stilts, SIZES)
    spread = analysis.seed_spread(analysis.seed_scores(no_stilts, cells, list(SIZES)),
                                  list(analysis.summary_table(no_stilts, cells, list(SIZES)).index), list(SIZES))
    assert "Avg MTL" in set(spread["method"]) and "Avg STILTs" not in set(spread["method"])


def test_figures_are_saved_as_png_svg_and_pdf(tmp_path):
    fig = Figure()
    fig.add_subplot().plot([0, 1], [1, 0])
    paths = plots.save_figure(fig, tmp_path / "figure1_matrix")
    assert [p.name for p in paths] == ["figure1_matrix.png", "figure1_matrix.svg", "figure1_matrix.pdf"]
    assert (tmp_path / "figure1_matrix.pdf").read_bytes().startswith(b"%PDF")


def test_task_names_are_escaped_for_latex():
    table = pd.DataFrame({"gen_nli": [80.0], "Mean": [80.0]}, index=pd.Index(["Single task"], name="method"))
    spread = pd.DataFrame({"method": ["Single task"] * 2, "column": ["gen_nli", "Mean"], "mean": [80.0, 80.0],
                           "sd": [1.0, 1.0], "n": [2, 2], "paper": [None, None]})
    tex = analysis.latex_table(spread, table)
    assert re.search(r"gen\\_nli", tex) and "gen_nli" not in tex
