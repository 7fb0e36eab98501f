"""Write the analysis and explorer notebooks with nbformat (run: python notebooks/make_notebooks.py).

The notebooks are thin: they call mtlstudy.analysis and mtlstudy.plots and display the results.
The analysis notebooks compute each table and figure once and write it under the report folder
(tables/*.csv, figures/*.png|svg); the report's index page and the tests read those files.
Each has a cell tagged `parameters` for papermill. Edit this file, not the .ipynb JSON.
"""
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = '''\
from pathlib import Path
import pandas as pd
from IPython.display import Markdown, display
from mtlstudy import analysis, plots
from mtlstudy.study import find_study, resolve_path

study = find_study(study_dir)  # a relative study_dir is relative to the repository, wherever the kernel runs
out = resolve_path(report_dir) if report_dir else study / "report"
tables, figures = out / "tables", out / "figures"
tables.mkdir(parents=True, exist_ok=True)
figures.mkdir(parents=True, exist_ok=True)
df = analysis.load_results(study)
sizes = analysis.task_sizes(df, study)'''


def params(text: str):
    cell = new_code_cell(text)
    cell.metadata["tags"] = ["parameters"]
    return cell


def notebook(cells) -> nbformat.NotebookNode:
    nb = new_notebook(cells=[c if not isinstance(c, str) else new_code_cell(c) for c in cells])
    for i, cell in enumerate(nb.cells):  # fixed ids: regenerating an unchanged notebook changes nothing
        cell.id = f"cell-{i}"
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


PAIRS = notebook([
    new_markdown_cell("# Pairwise MTL vs STILTs (Figure 1, Table 1)\n\n"
                      "Per (target, support) cell: mean MTL minus mean STILTs over seeds, and a "
                      "two-sided two-sample t-test at `alpha`."),
    params('study_dir = "outputs/demo"  # the study folder (results.csv, runs/); relative: to the repository\n'
           'report_dir = ""  # where tables/ and figures/ go; default <study_dir>/report\n'
           "alpha = 0.1  # significance level of the two-sided t-test\n"
           "equal_var = True  # Student's pooled test (released code); False: Welch's\n"
           "abstain_below = None  # size ratio below which the heuristic abstains (None: never)\n"
           "sampler = None  # MTL sampler to analyse when the study has several"),
    SETUP,
    '''\
cells = analysis.cell_table(df, sizes, alpha=alpha, equal_var=equal_var, sampler=sampler)
order = analysis.task_order(sizes, set(cells["target"]) | set(cells["support"]))
test = "Student's pooled" if equal_var else "Welch's"
display(Markdown(f"**Study** `{study.name}` ({analysis.study_model(df)}): {len(cells)} cells, "
                 f"{test} two-sided t-test, alpha = {alpha:g}."))
cells.to_csv(tables / "cells.csv", index=False)
analysis.matrix(cells, order, "diff").to_csv(tables / "matrix_diff.csv")
analysis.matrix(cells, order, "p").to_csv(tables / "matrix_p.csv")''',
    new_markdown_cell("## Figure 1: the pairwise matrix\n\nRows are targets, columns supports, "
                      "both largest first. Red text: the size heuristic picks the wrong winner."),
    '''\
fig = plots.plot_matrix(cells, order, title=f"{study.name}: mean MTL - mean STILTs (points)")
plots.save_figure(fig, figures / "figure1_matrix")
plots.show(fig)''',
    new_markdown_cell("## The size heuristic\n\nMTL when |S| > |T|, otherwise STILTs; counted "
                      "over the significant cells."),
    '''\
acc = analysis.heuristic_accuracy(cells, abstain_below)
pd.DataFrame([{k: v for k, v in acc.items() if k != "wrong"}]).to_csv(tables / "heuristic.csv", index=False)
wrong = analysis.heuristic_wrong_cells(cells, abstain_below)
wrong.to_csv(tables / "heuristic_wrong.csv", index=False)
display(Markdown(f"**Size heuristic:** {acc['text']} (paper: {analysis.PAPER_HEURISTIC}). "
                 f"Wrong on: {', '.join(f'{t}|{s}' for t, s in acc['wrong']) or 'none'}."))
wrong if len(wrong) else None  # no empty header-only table''',
    new_markdown_cell("## Table 1\n\nBold: the best non-oracle value per column."),
    '''\
table = analysis.summary_table(df, cells, order)
table.to_csv(tables / "table1.csv")
plots.style_table(table)''',
    '''\
if analysis.is_paper_study(study):
    comparison = analysis.paper_comparison(table)
    comparison.to_csv(tables / "paper_comparison.csv", index=False)
    display(Markdown("**The paper's published means beside ours**"))
    display(comparison.round(1))
else:
    display(Markdown("Not the paper's profile: no comparison with the published values."))''',
    new_markdown_cell("## All cells"),
    "cells.round(3)",
])

ABLATION = notebook([
    new_markdown_cell("# Size ablation (Figure 2)\n\nThe support is subsampled to K x the "
                      "target's train size; MTL and STILTs scores against K with confidence "
                      "intervals over seeds, and the matrix's t-test at each K."),
    params('study_dir = "outputs/size_ablation"\nreport_dir = ""\n'
           "confidence = 0.9  # confidence level of the intervals\n"
           'interval = "t"  # "t": t-distribution; "bootstrap": percentile bootstrap, as the released plot\n'
           "alpha = 0.1  # significance level of the per-K t-test\nequal_var = True"),
    SETUP,
    '''\
summary = analysis.ablation_summary(df, confidence)
cross = analysis.ablation_crossings(summary)
summary.to_csv(tables / "ablation_summary.csv", index=False)
cross.to_csv(tables / "ablation_crossings.csv", index=False)
for r in cross.itertuples():
    display(Markdown(f"**{r.target} at {r.target_fraction:.0%}:** where MTL and STILTs cross: {r.text}"))''',
    '''\
fig = plots.plot_ablation(summary, cross, confidence, interval)
plots.save_figure(fig, figures / "figure2_ablation")
plots.show(fig)''',
    new_markdown_cell("## MTL against STILTs at each K\n\nThe paper calls the curves statistically "
                      "similar at K = 1: the same two-sided t-test as the matrix's cells, per K."),
    '''\
per_k = analysis.ablation_tests(df, alpha, equal_var)
per_k.to_csv(tables / "ablation_tests.csv", index=False)
for (t, frac), g in per_k.groupby(["target", "target_fraction"]):
    sig = ", ".join(f"K={k:.2f} ({w})" for k, w in zip(g["k"], g["winner"]) if w != "none") or "none"
    display(Markdown(f"**{t} at {frac:.0%}:** significant at alpha {alpha:g}: {sig}"))
per_k.round(4)''',
    "summary.round(2)",
])

MTL_ALL = notebook([
    new_markdown_cell("# MTL-All (Table 2)\n\nAll tasks trained at once, per sampler; bold: the "
                      "best value per column."),
    params('study_dir = "outputs/mtl_all"\nreport_dir = ""'),
    SETUP,
    '''\
order = analysis.task_order(sizes, set(df.loc[df["method"] == "mtl_all", "target"]))
table = analysis.mtl_all_table(df, order)
table.to_csv(tables / "table2.csv")
plots.style_table(table)''',
    '''\
if analysis.is_paper_study(study):
    comparison = analysis.paper_comparison(table)
    comparison.to_csv(tables / "paper_comparison_mtl_all.csv", index=False)
    display(comparison.round(1))''',
    new_markdown_cell("## The sampler's task weights over time (first seed of each sampler)"),
    '''\
from matplotlib.figure import Figure
firsts = df[df["method"] == "mtl_all"].sort_values("seed").drop_duplicates("sampler")
runs = [(r, analysis.load_run(study, r.run_id) or {}) for r in firsts.itertuples()]
runs = [(r, run) for r, run in runs if plots.sampler_varies(run)]  # constant weights say nothing
if runs:
    fig = Figure(figsize=(5.5 * len(runs), 4))
    for ax, (r, run) in zip(fig.subplots(1, len(runs), squeeze=False)[0], runs):
        plots.plot_sampler_weights(run, ax=ax, title=f"{r.sampler} (seed {r.seed})")
    fig.tight_layout()
    plots.save_figure(fig, figures / "mtl_all_sampler_weights")
    plots.show(fig)
else:
    print("Every sampler here has constant task weights (size, uniform or temperature): no figure.")''',
])

BERT = notebook([
    new_markdown_cell("# Replication with another encoder (Figure 3)\n\nThe same pairwise "
                      "analysis on two studies, side by side, and the agreement of their "
                      "significant cells."),
    params('study_dir = "outputs/paper"  # the main study\n'
           'compare_to = "outputs/bert"  # the replication\n'
           'report_dir = ""\nalpha = 0.1\nequal_var = True'),
    SETUP,
    '''\
other = find_study(compare_to)
df_b = analysis.load_results(other)
cells_a = analysis.cell_table(df, sizes, alpha=alpha, equal_var=equal_var)
sizes_b = analysis.task_sizes(df_b, other)
cells_b = analysis.cell_table(df_b, sizes_b, alpha=alpha, equal_var=equal_var)
order_a = analysis.task_order(sizes, set(cells_a["target"]) | set(cells_a["support"]))
order_b = analysis.task_order(sizes_b, set(cells_b["target"]) | set(cells_b["support"]))
names = (analysis.study_model(df), analysis.study_model(df_b))
for name, c in zip(names, (cells_a, cells_b)):
    display(Markdown(f"**{name}:** size heuristic {analysis.heuristic_accuracy(c)['text']}"))''',
    '''\
fig = plots.plot_matrix_pair(cells_a, order_a, cells_b, order_b, titles=names)
plots.save_figure(fig, figures / "figure3_replication")
plots.show(fig)''',
    '''\
agree = analysis.agreement(cells_a, cells_b)
both = analysis.agreement_table(cells_a, cells_b, labels=("main", "replication"))
both.to_csv(tables / "agreement.csv", index=False)
sign = analysis.sign_agreement(cells_a, cells_b)
display(Markdown(f"**Sign agreement, every cell:** {sign['text']}. (The paper publishes no BERT table: "
                 "the replication is compared with the main study, not with published means.)"))
display(Markdown(f"**Agreement:** {agree['text']}; significant cells: {agree['n_a']} in "
                 f"{names[0]}, {agree['n_b']} in {names[1]}. Disagree on: "
                 f"{', '.join(f'{t}|{s}' for t, s in agree['disagree']) or 'none'}."))
both.round(3)''',
])

EXPLORE = notebook([
    new_markdown_cell("# Explore a study\n\nChoose a target, a support and a method: per-seed "
                      "scores, the MTL vs STILTs t-test of the cell, learning curves and the "
                      "sampler's task weights over time. It opens on the most significant cell. "
                      "Run all cells in JupyterLab."),
    params('study_dir = "outputs/demo"  # the study folder; relative: to the repository\nalpha = 0.1\nequal_var = True\n'
           "interactive = True  # False skips the widgets (headless runs: nbclient can block on them)"),
    '''\
from pathlib import Path
from IPython.display import display
from mtlstudy import analysis, explorer
from mtlstudy.study import find_study

study = find_study(study_dir)  # a relative study_dir is relative to the repository, wherever the kernel runs
df = analysis.load_results(study)
tasks = analysis.task_order(analysis.task_sizes(df, study), set(df["target"]))
target, support, method = explorer.first_choice(df, tasks, equal_var)  # the most significant cell''',
    '''\
if interactive:
    display(explorer.explorer(study, alpha, equal_var))''',
    new_markdown_cell("A static copy of one choice (what an exported notebook shows); edit and "
                      "run to see another without the widgets:"),
    'explorer.show_choice(study, df, target=target, support=support, method=method, alpha=alpha, equal_var=equal_var)',
])

NOTEBOOKS = {"analysis_pairs": PAIRS, "analysis_ablation": ABLATION, "analysis_mtl_all": MTL_ALL,
             "analysis_bert": BERT, "explore": EXPLORE}

if __name__ == "__main__":
    for name, nb in NOTEBOOKS.items():
        nbformat.validate(nb)
        nbformat.write(nb, HERE / f"{name}.ipynb")
        print("wrote", HERE / f"{name}.ipynb")
