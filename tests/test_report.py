"""The analysis notebooks run under papermill on a tiny finished study and make the report."""
import re
import sys
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_study import MTL_ALL, SEEDS, make_study  # noqa: E402

from mtlstudy import report  # noqa: E402

FIGURES = ["figure1_matrix", "figure2_ablation", "figure3_replication", "mtl_all_sampler_weights"]
TABLES = ["cells", "matrix_diff", "matrix_p", "heuristic", "heuristic_wrong", "table1",
          "paper_comparison", "table2", "ablation_summary", "ablation_crossings", "agreement"]
NOTEBOOKS = ["analysis_pairs", "analysis_ablation", "analysis_mtl_all", "analysis_bert"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("studies")
    main = make_study(root, paper=True)
    bert = make_study(root, name="bert", flip=[("small", "mid")], model="bert-base-uncased")
    return main, report.build_report(main, compare_to=bert)


def test_notebooks_have_parameters_cell():
    for name in NOTEBOOKS + ["explore"]:
        nb = nbformat.read(report.NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and "study_dir" in tagged[0].source, name


def test_report_makes_every_figure_and_table(built):
    study, index = built
    out = study / "report"
    assert index == out / "index.html"
    for name in FIGURES:
        for ext in ("png", "svg", "pdf"):
            assert (out / "figures" / f"{name}.{ext}").stat().st_size > 0, name
    for name in TABLES:
        assert (out / "tables" / f"{name}.csv").stat().st_size > 0, name
    for name in ("table1", "table2"):  # for a paper: per seed (mean, sd, n) and LaTeX
        assert (out / "tables" / f"{name}_seeds.csv").stat().st_size > 0, name
        assert "\\bottomrule" in (out / "tables" / f"{name}.tex").read_text(), name
    for name in NOTEBOOKS:
        nb = nbformat.read(out / f"{name}.ipynb", as_version=4)
        assert not [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
        assert (out / f"{name}.html").stat().st_size > 0


def test_index_links_everything(built):
    study, index = built
    out = study / "report"
    page = index.read_text()
    links = set(re.findall(r'href="([^"#]+)', page))
    for name in NOTEBOOKS:
        assert f"{name}.html" in links
    for name in FIGURES:
        assert {f"figures/{name}.{ext}" for ext in ("png", "svg", "pdf")} <= links
    for name in TABLES:
        assert f"tables/{name}.csv" in links
    assert {"tables/table1.tex", "tables/table1_seeds.csv", "tables/table2.tex"} <= links
    assert all((out / link).exists() for link in links)
    assert "4 of 5 significant cells (80.0%)" in page


def test_matrix_cells_link_to_their_learning_curves(built):
    study, index = built
    out = study / "report"
    assert 'href="cells.html#mid--big"' in index.read_text()
    cells = (out / "cells.html").read_text()
    assert 'id="mid--big"' in cells and 'src="cells/mid--big.png"' in cells
    assert "mtl-big-mid-s1" in cells and "stilts-big-mid-s1" in cells  # the runs behind the cell
    assert (out / "cells" / "mid--big.png").stat().st_size > 0


def test_explore_notebook_executes(tmp_path):
    # interactive=False: nbclient can block on widget cells (jupyter/nbclient#312)
    import papermill

    study = make_study(tmp_path, ablation=False)
    with report.package_on_path():
        papermill.execute_notebook(str(report.NOTEBOOK_DIR / "explore.ipynb"), str(tmp_path / "explore.ipynb"),
                                   parameters={"study_dir": str(study), "interactive": False},
                                   kernel_name="python3", progress_bar=False, execution_timeout=300)
    nb = nbformat.read(tmp_path / "explore.ipynb", as_version=4)
    shown = nb.cells[-1].outputs  # the static copy of the first choice: the most significant cell, small|big
    assert shown[0].data["text/markdown"].startswith("**t-test:** target small, support big: MTL 64.00 (n=3)")
    assert ["image/png" in o.get("data", {}) for o in shown] == [False, False, False, True, True]  # curves, weights


def test_explorer_widgets_switch_choices(tmp_path, monkeypatch):
    import IPython.display
    import pandas as pd

    from mtlstudy import explorer

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *objs: shown.extend(objs))
    texts = lambda: " ".join(getattr(o, "data", "") for o in shown if isinstance(o, IPython.display.Markdown))  # noqa: E731
    study = make_study(tmp_path, ablation=False)
    box = explorer.explorer(study)
    target, support, method = box.children[0].children
    assert (target.value, support.value, method.value) == ("small", "big", "mtl")
    assert "MTL significantly better" in texts()
    assert any(isinstance(o, IPython.display.Image) for o in shown)  # learning curves
    expected = {"stilts": [f"stilts-big-small-s{s}" for s in SEEDS], "single": [f"single-small-s{s}" for s in SEEDS],
                "mtl_all": [f"mtl_all-{m}-s{s}" for m in MTL_ALL for s in SEEDS]}
    for choice, run_ids in expected.items():  # each choice shows its own runs and their curves
        shown.clear()
        method.value = choice
        [table] = [o for o in shown if isinstance(o, pd.DataFrame) and "run_id" in o]
        assert sorted(table.run_id) == sorted(run_ids), choice
        assert any(isinstance(o, IPython.display.Image) for o in shown), choice
        assert ("**t-test:**" in texts()) == (choice == "stilts"), choice
    target.value = support.value = "mid"
    method.value = "mtl"
    assert "support other than the target" in texts()


def test_index_explains_the_study(built):
    """Header, Tables 1 and 2 as HTML with the paper's values and row definitions, the heuristic."""
    import pandas as pd

    from mtlstudy import analysis

    study, index = built
    page = index.read_text()
    for field in ("description", "model", "tasks", "seeds", "test"):
        assert f">{field}" in page, field
    assert "distilroberta-base" in page and "3: 1, 2, 3" in page and "alpha 0.1" in page
    from bs4 import BeautifulSoup

    def frame(table):
        rows = [[c.get_text() for c in tr.find_all(["th", "td"])] for tr in table.find_all("tr")]
        df = pd.DataFrame(rows[1:], columns=rows[0]).set_index("method")
        return df.apply(lambda col: pd.to_numeric(col, errors="coerce") if col.name != "definition" else col)

    tables = [t for t in BeautifulSoup(page, "html.parser").find_all("table") if "paper (mean)" in t.get_text()]
    assert len(tables) == 2  # Table 1 and Table 2
    t1 = frame(tables[0])
    ours = pd.read_csv(study / "report" / "tables" / "table1.csv", index_col=0)
    assert list(t1.index) == list(ours.index)
    assert t1.at["Avg S.H.", "paper (mean)"] == 78.3 and t1.at["Pairwise Oracle", "paper (mean)"] == 80.7
    assert t1.at["Avg MTL", "Mean"] == round(ours.at["Avg MTL", "Mean"], 1)
    assert "size heuristic picks" in t1.at["Avg S.H.", "definition"]
    assert "maximum over supports" in t1.at["Pairwise Oracle", "definition"]
    cells = analysis.read_cells(study / "report" / "tables" / "cells.csv")  # what analysis_pairs recorded
    assert f"{int(cells['significant'].sum())} of {len(cells)} matrix cells are significant" in page
    assert "Collapsed runs" in page
    dynamic = tables[1].find("th", string="MTL-All (dynamic)").find_parent("tr").find_all("td")[-2].get_text()
    assert dynamic == "67.2 (the released code's softmax_gap sampler; this row: gap)"  # the fake study runs gap


def test_table_2_says_which_sampler_the_papers_dynamic_value_came_from():
    """The paper's 67.2 came from the released softmax sampler: said beside it unless the row used it."""
    import pandas as pd

    table = pd.DataFrame({"a": [60.0, 70.0], "Mean": [60.0, 70.0]}, index=["MTL-All (dynamic)", "MTL-All (size)"])
    assert "67.2 <small>(the released code's softmax_gap sampler; this row: gap)</small>" in report.table_html(
        table, "", "gap")
    assert "67.2 <small>(the released code's softmax_gap sampler; as this row)</small>" in report.table_html(
        table, "", "softmax_gap")
    assert report.paper_cell("MTL-All (size)", "gap") == "73.3" and report.paper_cell("Avg MTL") == "77.3"
    assert report.paper_cell("Single task") == ""


def test_index_shows_figure_1_first_then_the_tables(built):
    _, index = built
    page = index.read_text()
    first_image = page.index("<img ")
    assert page[first_image:].startswith('<img src="figures/figure1_matrix.png"')
    assert first_image < page.index("<h2>Size heuristic") < page.index("<h2>Table 1") < page.index("<h2>Table 2")


def test_the_index_page_shows_the_tables_the_notebooks_recorded(tmp_path, monkeypatch):
    """The report computes no cell table, Table 1 or Table 2 itself: it shows what the analysis
    notebooks wrote (here a stand-in for them writes the real tables with two values changed)."""
    from bs4 import BeautifulSoup

    from mtlstudy import analysis

    study = make_study(tmp_path, ablation=False)
    df = analysis.load_results(study)
    cells, order = analysis.study_cells(study)

    def recorded(name, out_dir, parameters, *args):
        tables = out_dir / "tables"
        if name == "analysis_pairs":
            cells.assign(diff=cells["diff"].where(cells["target"].ne("mid") | cells["support"].ne("big"), 9.7)
                         ).to_csv(tables / "cells.csv", index=False)
            table = analysis.summary_table(df, cells, order)
            table.loc["Avg MTL", "Mean"] = 12.3
            table.to_csv(tables / "table1.csv")
        if name == "analysis_mtl_all":
            table = analysis.mtl_all_table(df, order)
            table.loc["Single task", "Mean"] = 23.4
            table.to_csv(tables / "table2.csv")
        page = out_dir / f"{name}.html"
        page.write_text("")
        return out_dir / f"{name}.ipynb", page

    monkeypatch.setattr(report, "run_notebook", recorded)
    page = report.build_report(study).read_text()
    assert 'cells.html#mid--big" style="color:inherit">+9.7</a>' in page
    tables = [t for t in BeautifulSoup(page, "html.parser").find_all("table") if "paper (mean)" in t.get_text()]
    mean = [{tr.th.get_text(): tr.find_all("td")[-3].get_text() for tr in t.find_all("tr")[1:]} for t in tables]
    assert (mean[0]["Avg MTL"], mean[1]["Single task"]) == ("12.3", "23.4")  # Mean: the third cell from the end


def test_collapsed_runs_table():
    import pandas as pd
    from bs4 import BeautifulSoup

    df = pd.DataFrame({"run_id": ["a", "b"], "method": ["stilts", "mtl"], "target": ["nli", "nli"],
                       "support": ["para", "para"], "seed": [1, 1], "score": [36.46, 80.0],
                       "majority_score": [36.46, 36.46], "constant_score": [36.46, 36.46]})
    rows = BeautifulSoup(report.collapsed_html(df), "html.parser").find_all("tr")
    assert [[c.get_text() for c in r.find_all("td")] for r in rows[1:]] == [["a", "stilts", "nli", "para", "1", "36.46", "36.46"]]
    assert "None" in report.collapsed_html(df.iloc[1:]) and "not checked" in report.collapsed_html(df[["run_id", "score"]])


def test_header_lists_the_training_settings_that_are_set(tmp_path):
    import json

    import pandas as pd

    study = make_study(tmp_path, ablation=False, mtl_all=False)
    info = json.loads((study / "study.json").read_text())
    info["profile"] = {"tasks": ["big", "mid", "small"], "train": {
        "lr": 1e-4, "batch_size": 8, "warmup_ratio": 0.1, "max_grad_norm": 1.0, "regression_targets": "standardized",
        "pooling": "auto", "freeze_word_embeddings": True, "multitask_forward": "per_task", "group_by_length": False,
        "head_init": "torch", "lower_case": True,
        "precision": "bf16_one_task", "device": "cpu"}}
    (study / "study.json").write_text(json.dumps(info))
    header = report.header_html(study, pd.read_csv(study / "results.csv"), 0.1, True)
    assert ("lr 0.0001, batch_size 8, warmup_ratio 0.1, max_grad_norm 1.0, group_by_length False, "
            "regression_targets standardized, pooling auto, head_init torch, lower_case True, "
            "freeze_word_embeddings True, multitask_forward per_task, precision bf16_one_task</td>") in header
    assert "device" not in header


@pytest.mark.parametrize("curve", [True, False], ids=["curve keys", "ipc where pyzmq has no CurveZMQ"])
def test_the_notebooks_kernel_prints_no_warning_about_unencrypted_tcp(tmp_path, monkeypatch, capfd, curve):
    """run_notebook, as the report runs each notebook: before, every kernel printed
    '[IPKernelApp] WARNING | Kernel is running over TCP without encryption' on the terminal. What a
    cell prints to stderr still reaches the notebook, and a failing cell still fails it."""
    import zmq

    from mtlstudy.kernel import kernel_config

    if not curve:
        has = zmq.has
        monkeypatch.setattr(zmq, "has", lambda feature: feature != "curve" and has(feature))
    assert kernel_config().KernelManager.get("transport", "tcp") == ("tcp" if curve else "ipc")
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = 0", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import sys\nprint(x + 1)\nprint('said on stderr', file=sys.stderr)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    (tmp_path / "src").mkdir()
    nbformat.write(nb, tmp_path / "src" / "tiny.ipynb")
    monkeypatch.setattr(report, "NOTEBOOK_DIR", tmp_path / "src")
    executed, _ = report.run_notebook("tiny", tmp_path, {"x": 41})
    outputs = nbformat.read(executed, as_version=4).cells[-1].outputs
    assert [(o.name, o.text) for o in outputs] == [("stdout", "42\n"), ("stderr", "said on stderr\n")]
    err = capfd.readouterr().err
    assert "without encryption" not in err and "IPKernelApp" not in err, err
    nb.cells.append(nbformat.v4.new_code_cell("raise ValueError('a real error')"))
    nbformat.write(nb, tmp_path / "src" / "tiny.ipynb")
    with pytest.raises(RuntimeError, match="ValueError: a real error"):
        report.run_notebook("tiny", tmp_path, {})
