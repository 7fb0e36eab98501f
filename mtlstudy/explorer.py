"""The explorer of a finished study (notebooks/explore.ipynb): choose a target, a support and a
method; see the cell's t-test, the runs' scores, their learning curves and the sampler's task
weights. It opens on the most informative cell: the most significant one."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import analysis, plots


def runs_for(df: pd.DataFrame, target: str, support: str, method: str) -> pd.DataFrame:
    """Result rows of one method for a target; `support` is used by mtl and stilts only."""
    rows = df[(df["method"] == method) & (df["target"] == target) & df["k"].isna()]
    if method in analysis.PAIR_METHODS:
        rows = rows[rows["support"] == support]
    return rows.sort_values(["sampler", "seed"]).reset_index(drop=True)


def _no_test(a: np.ndarray, b: np.ndarray) -> str:
    """Why a cell has no t-test ('' when it has one): too few seeds, or every score the same."""
    if len(a) < 2 or len(b) < 2:
        return "fewer than two seeds per method: no test"
    if np.ptp(np.concatenate([a, b])) == 0:
        return "identical scores: no test"
    return ""


def cell_detail(df: pd.DataFrame, target: str, support: str, alpha: float = analysis.ALPHA,
                equal_var: bool = True) -> dict:
    """Per-seed MTL and STILTs scores of one cell and their t-test, with a one-line text."""
    rows = analysis.pairwise_rows(df)
    rows = rows[(rows["target"] == target) & (rows["support"] == support)]
    scores = rows.pivot_table(index="seed", columns="method", values="score")
    a, b = (rows.loc[rows["method"] == m, "score"].to_numpy(float) for m in analysis.PAIR_METHODS)
    t, p = analysis.ttest(a, b, equal_var)
    diff = a.mean() - b.mean() if len(a) and len(b) else float("nan")
    test = "Student" if equal_var else "Welch"
    no_test = _no_test(a, b)
    verdict = ("not significant" if not p < alpha else
               ("MTL significantly better" if t > 0 else "STILTs significantly better"))
    outcome = no_test or f"{test} t={t:.3f}, p={p:.4g}: {verdict} at alpha {alpha:g}"
    text = (f"target {target}, support {support}: MTL {a.mean():.2f} (n={len(a)}) vs STILTs "
            f"{b.mean():.2f} (n={len(b)}), diff {diff:+.2f}; {outcome}")
    return dict(scores=scores, t=t, p=p, diff=diff, text=text)


def most_informative_cell(df: pd.DataFrame, order: list[str], equal_var: bool = True) -> tuple[str, str] | None:
    """The (target, support) cell with the smallest p of its t-test (ties: the larger |difference|,
    then the earlier cell in `order`); None when the study has no cell with a test."""
    rows = analysis.pairwise_rows(df)
    rank = {t: i for i, t in enumerate(order)}
    found = []
    for (target, support), g in rows.groupby(["target", "support"]):
        a, b = (g.loc[g["method"] == m, "score"].to_numpy(float) for m in analysis.PAIR_METHODS)
        _, p = analysis.ttest(a, b, equal_var)
        if p == p:  # a test was made
            found.append((p, -abs(a.mean() - b.mean()), rank.get(target, len(rank)), rank.get(support, len(rank)),
                          target, support))
    return min(found)[-2:] if found else None


def first_choice(df: pd.DataFrame, tasks: list[str], equal_var: bool = True) -> tuple[str, str, str]:
    """(target, support, method) the explorer opens on: the most informative cell's MTL runs; in a
    study without a tested cell, the smallest task with the largest as support."""
    cell = most_informative_cell(df, tasks, equal_var)
    if cell is not None:
        return cell[0], cell[1], "mtl"
    return tasks[-1], tasks[0], study_methods(df)[0]


def study_methods(df: pd.DataFrame) -> list[str]:
    """The methods a study's results hold, in the explorer's order."""
    return [m for m in ("mtl", "stilts", "single", "mtl_all") if m in set(df["method"])]


def show_choice(study_dir: Path, df, target: str, support: str, method: str,
                alpha: float = analysis.ALPHA, equal_var: bool = True) -> None:
    """Display one explorer choice: the cell's t-test and per-seed scores (mtl, stilts), the
    runs' scores, their learning curves and the sampler's task weights over time."""
    from IPython.display import Markdown, display
    if method in analysis.PAIR_METHODS:
        if target == support:
            display(Markdown("Choose a support other than the target."))
            return
        detail = cell_detail(df, target, support, alpha, equal_var)
        display(Markdown(f"**t-test:** {detail['text']}"))
        display(detail["scores"])
    rows = runs_for(df, target, support, method)
    if rows.empty:
        display(Markdown(f"No {method} runs for target {target}" +
                         (f" and support {support}." if method in analysis.PAIR_METHODS else ".")))
        return
    display(rows[["run_id", "seed", "sampler", "score", "best_epoch"]])  # epochs, as the curves below
    runs = [(" ".join(str(x) for x in (method, r.sampler, "seed", r.seed) if x != ""),
             analysis.load_run(study_dir, r.run_id)) for r in rows.itertuples()]
    runs = [(label, run) for label, run in runs if run]
    plots.show(plots.plot_learning_curves(runs, target))
    if runs and method in ("mtl", "mtl_all"):
        if plots.sampler_varies(runs[0][1]):
            plots.show(plots.plot_sampler_weights(runs[0][1]))
        else:
            display(Markdown(f"The {runs[0][1]['params']['train']['sampler']} sampler's task weights are constant."))


def explorer(study_dir: Path, alpha: float = analysis.ALPHA, equal_var: bool = True):
    """Dropdowns for target, support and method above an Output that shows `show_choice`; they
    start on `first_choice`."""
    import ipywidgets as widgets
    study_dir = Path(study_dir)
    df = analysis.load_results(study_dir)
    tasks = analysis.task_order(analysis.task_sizes(df, study_dir), set(df["target"]))
    methods = study_methods(df)
    first = first_choice(df, tasks, equal_var)
    target = widgets.Dropdown(options=tasks, value=first[0], description="target")
    support = widgets.Dropdown(options=tasks, value=first[1], description="support")
    method = widgets.Dropdown(options=methods, value=first[2], description="method")
    out = widgets.Output()

    def update(change=None):
        with out:
            out.clear_output(wait=True)
            show_choice(study_dir, df, target.value, support.value, method.value, alpha, equal_var)

    for w in (target, support, method):
        w.observe(update, names="value")
    update()
    return widgets.VBox([widgets.HBox([target, support, method]), out])
