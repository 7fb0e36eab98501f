"""The HTML report of a finished study: the analysis notebooks executed by papermill, rendered by
nbconvert, their tables (CSV) and figures (PNG, SVG), a page of the runs behind each matrix cell,
and an index page linking everything. Entry point: build_report(study_dir).

The notebooks compute every table and figure once; the index page reads the tables they wrote
(tables/cells.csv, table1.csv, table2.csv) and shows their figures, Figure 1 first. Beside Tables
1 and 2, the report writes their rows per seed (mean, sd, n) and a LaTeX version for a paper.
"""
from __future__ import annotations

import html
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from mtlstudy import analysis, explorer, plots
from mtlstudy.errors import UserError
from mtlstudy.folder import StudyFolder
from mtlstudy.kernel import kernel_config
from mtlstudy.sampling import DYNAMIC

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
PYTHON_NAMES = {"python", f"python{sys.version_info[0]}", "python%d.%d" % sys.version_info[:2], sys.executable}


def slug(target: str, support: str) -> str:
    """File-name- and anchor-safe name of a matrix cell."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{target}--{support}")


def check_kernel(kernel_name: str) -> None:
    """Fail clearly when the kernel would not run this interpreter (so not see this mtlstudy)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    try:
        spec = KernelSpecManager().get_kernel_spec(kernel_name)
    except NoSuchKernel:
        raise UserError(f"no Jupyter kernel '{kernel_name}': run `python -m ipykernel install "
                           f"--sys-prefix` in this environment or pass kernel_name=") from None
    if spec.argv and spec.argv[0] not in PYTHON_NAMES:
        raise UserError(f"kernel '{kernel_name}' runs {spec.argv[0]}, not {sys.executable}: "
                           f"pass the kernel_name of a kernelspec in {sys.prefix}")


@contextmanager
def package_on_path():
    """Put this mtlstudy's parent folder on the kernel's PYTHONPATH (also when not installed)."""
    old = os.environ.get("PYTHONPATH")
    root = str(Path(__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = os.pathsep.join([root] + ([old] if old else []))
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def run_notebook(name: str, out_dir: Path, parameters: dict, kernel_name: str = "python3",
                 exclude_input: bool = False, cell_timeout: int = 600) -> tuple[Path, Path]:
    """Execute notebooks/<name>.ipynb with papermill into out_dir and render it to HTML.
    A cell running longer than `cell_timeout` seconds fails the notebook."""
    import nbformat
    import papermill
    from nbconvert import HTMLExporter

    source = NOTEBOOK_DIR / f"{name}.ipynb"
    if not source.is_file():
        raise FileNotFoundError(f"notebook {source} is missing")
    executed, page = out_dir / f"{name}.ipynb", out_dir / f"{name}.html"
    with package_on_path():
        try:
            papermill.execute_notebook(str(source), str(executed), parameters=parameters,
                                       kernel_name=kernel_name, progress_bar=False, config=kernel_config(),
                                       cwd=str(out_dir), execution_timeout=cell_timeout)
        except papermill.PapermillExecutionError as e:
            raise RuntimeError(f"{name}.ipynb failed: {e.ename}: {e.evalue} (see {executed})") from None
    exporter = HTMLExporter()
    exporter.exclude_input = exclude_input
    body, _ = exporter.from_notebook_node(parameters_once(nbformat.read(executed, as_version=4)))
    page.write_text(body, encoding="utf-8")
    return executed, page


def parameters_once(nb):
    """Show the parameters once: where papermill injected values, the notebook's default
    parameters cell is left out and its assignments that were not injected are added to the
    injected cell, so that one cell lists every value the run used."""
    def tags(c):
        return c.metadata.get("tags", [])

    injected = next((c for c in nb.cells if "injected-parameters" in tags(c)), None)
    if injected is None:
        return nb
    given = set(re.findall(r"^(\w+)\s*=", injected.source, re.M))
    for cell in nb.cells:
        if "parameters" in tags(cell):
            rest = [line for line in cell.source.splitlines()
                    if (m := re.match(r"(\w+)\s*=", line)) and m.group(1) not in given]
            if rest:
                injected.source = injected.source.rstrip("\n") + "\n# not given: the notebook's defaults\n" + "\n".join(rest)
    nb.cells = [c for c in nb.cells if "parameters" not in tags(c)]
    return nb


def write_cells_page(study_dir: Path, out_dir: Path, df: pd.DataFrame, cells: pd.DataFrame,
                     alpha: float = analysis.ALPHA, equal_var: bool = True) -> Path:
    """cells.html: per matrix cell (of the cell table `cells`), its t-test and the learning curves of
    the MTL and STILTs runs that make it (figures in cells/); `df` the study's results."""
    (out_dir / "cells").mkdir(parents=True, exist_ok=True)
    parts = [f"<h1>Matrix cells of {html.escape(study_dir.name)}</h1>",
             '<p><a href="index.html">back to the report</a></p>']
    for r in cells.itertuples():
        name = slug(r.target, r.support)
        fig = plots.plot_cell(study_dir, df, r.target, r.support)
        fig.savefig(out_dir / "cells" / f"{name}.png", dpi=100, bbox_inches="tight")
        detail = explorer.cell_detail(df, r.target, r.support, alpha, equal_var)
        runs = pd.concat([explorer.runs_for(df, r.target, r.support, m) for m in analysis.PAIR_METHODS])
        runs = runs[["method", "seed", "run_id", "score", "best_epoch"]]
        parts += [f'<h2 id="{name}">target {html.escape(r.target)}, support {html.escape(r.support)}</h2>',
                  f"<p>{html.escape(detail['text'])}</p>",
                  runs.to_html(index=False, float_format="%.2f"),
                  f'<p><img src="cells/{name}.png" style="max-width:100%"></p>']
    page = out_dir / "cells.html"
    page.write_text(_html_page(f"Cells: {study_dir.name}", "\n".join(parts)), encoding="utf-8")
    return page


def matrix_html(cells, order: list[str]) -> str:
    """The pairwise matrix as an HTML table whose cells link to their section in cells.html."""
    by_cell = {(r.target, r.support): r for r in cells.itertuples()}
    head = "".join(f"<th>{html.escape(s)}</th>" for s in order)
    rows = [f"<tr><th>target \\ support</th>{head}</tr>"]
    for t in order:
        tds = []
        for s in order:
            r = by_cell.get((t, s))
            if r is None:
                tds.append("<td></td>")
                continue
            wrong = r.significant and r.heuristic != r.winner
            style = f"background:{plots.CELL_COLOURS[r.winner]};" + (f"color:{plots.WRONG_COLOUR};font-weight:bold;" if wrong else "")
            tds.append(f'<td style="{style}"><a href="cells.html#{slug(t, s)}" style="color:inherit">'
                       f"{r.diff:+.1f}</a></td>")
        rows.append(f"<tr><th>{html.escape(t)}</th>{''.join(tds)}</tr>")
    return '<table class="matrix">' + "".join(rows) + "</table>"


def _html_page(title: str, body: str) -> str:
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
             "table.matrix td{text-align:center;min-width:3.5em}img{border:1px solid #eee}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{body}</body></html>")


def _rows_html(rows: list[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                               f"<td style='text-align:left'>{v}</td></tr>" for k, v in rows) + "</table>"


def header_html(study_dir: Path, df: pd.DataFrame, alpha: float, equal_var: bool) -> str:
    """What the study is: the profile's description, model, tasks (train size, majority level),
    seeds, methods, training settings, and the test that decides the cells."""
    info = analysis.load_study_info(study_dir)
    prof = info.get("profile") if isinstance(info.get("profile"), dict) else {}
    sizes = analysis.task_sizes(df, study_dir)
    majority = df.groupby("target")["majority_score"].first() if "majority_score" in df else pd.Series(dtype=float)
    level = df.assign(level=analysis.collapse_level(df)).groupby("target")["level"].first()
    tasks = [t for t in (prof.get("tasks") or analysis.task_order(sizes, set(df["target"])))]
    task_text = ", ".join(
        f"{html.escape(t)} ({sizes.get(t, '?')} train" +
        (f"; majority level {majority[t]:.1f}" if t in majority and pd.notna(majority[t]) else "") +
        (f", best one-class level {level[t]:.1f}" if t in level and pd.notna(level[t]) else "") + ")"
        for t in tasks)
    seeds = prof.get("seeds") or sorted(set(df["seed"]))
    rows = [("description", html.escape(prof.get("description") or "(none)")),
            ("model", html.escape(prof.get("model") or analysis.study_model(df))),
            ("tasks (train size; score of always predicting the most frequent training label, and of the best single label)", task_text),
            ("seeds", f"{len(seeds)}: {html.escape(', '.join(map(str, seeds)))}"),
            ("methods", html.escape(", ".join(prof.get("methods") or sorted(set(df["method"])))))]
    train = prof.get("train") or {}
    if train:
        keys = ("lr", "batch_size", "epochs", "max_length", "warmup_ratio", "max_grad_norm", "evals_per_epoch",
                "sampler", "schedule", "epoch_length", "group_by_length", "heads", "regression_targets", "pooling",
                "head_init", "lower_case", "freeze_word_embeddings", "multitask_forward", "precision",
                "eval_precision")
        rows.append(("training", html.escape(", ".join(f"{k} {train[k]}" for k in keys if train.get(k) is not None))))
    test = "Student's two-sample t-test (pooled variance)" if equal_var else "Welch's two-sample t-test"
    rows.append(("test", f"{test} of the MTL seeds against the STILTs seeds of each cell, two-sided, "
                         f"alpha {alpha:g}"))
    return _rows_html(rows)


def paper_cell(row: str, dynamic_sampler: str = "") -> str:
    """The paper's published mean of a row ('' where it has none); for a row whose published value
    came from another sampler than the paper's text names, that sampler and this row's."""
    paper = analysis.PAPER_VALUES.get(row)
    source = analysis.tables.PAPER_SAMPLERS.get(row)
    if paper is None or source is None:
        return "" if paper is None else f"{paper:.1f}"
    ours = "as this row" if dynamic_sampler == source else f"this row: {dynamic_sampler or 'another'}"
    return f"{paper:.1f} <small>(the released code's {source} sampler; {html.escape(ours)})</small>"


def table_html(table: pd.DataFrame, caption: str, dynamic_sampler: str = "") -> str:
    """Table 1 or 2 as HTML: one decimal, the best non-oracle value per column in bold, the
    paper's published mean beside ours where the paper has the row (paper_cell; `dynamic_sampler`
    is the study's MTL-All dynamic sampler), and each row's definition."""
    mask = analysis.best_mask(table)
    cols = list(table.columns)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    rows = [f"<caption style='text-align:left'>{caption}</caption>"
            f"<tr><th>method</th>{head}<th>paper (mean)</th><th style='text-align:left'>definition</th></tr>"]
    for name in table.index:
        tds = "".join("<td></td>" if pd.isna(v) else
                      f"<td>{'<b>' if mask.at[name, c] else ''}{v:.1f}{'</b>' if mask.at[name, c] else ''}</td>"
                      for c, v in zip(cols, table.loc[name]))
        rows.append(f"<tr><th>{html.escape(name)}</th>{tds}<td>{paper_cell(name, dynamic_sampler)}</td>"
                    f"<td style='text-align:left'>{html.escape(analysis.row_definition(name))}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def collapsed_html(df: pd.DataFrame) -> str:
    """The runs that learned nothing, with the reason; or a line saying there are none."""
    bad = analysis.collapsed_runs(df)
    if not ({"majority_score", "constant_score"} & set(df.columns)):
        return "<p>No majority levels recorded (results from before they were): collapsed runs not checked.</p>"
    if bad.empty:
        return (f"<p>None: every run's best dev score is more than {analysis.COLLAPSE_MARGIN:g} point above its "
                "task's one-class level (the best score of always predicting one label).</p>")
    rows = "".join(f"<tr><td style='text-align:left'>{html.escape(r.run_id)}</td><td>{html.escape(r.method)}</td>"
                   f"<td>{html.escape(r.target)}</td><td>{html.escape(r.support)}</td><td>{r.seed}</td>"
                   f"<td>{r.score:.2f}</td><td>{r.level:.2f}</td></tr>" for r in bad.itertuples())
    return (f"<p>{len(bad)} (run, task) scores are at most {analysis.COLLAPSE_MARGIN:g} point above the task's "
            "one-class level (the best score of always predicting one label; of a constant, for regression): "
            "those runs predict one class and learned nothing.</p><table><tr><th>run</th><th>method</th>"
            f"<th>target</th><th>support</th><th>seed</th><th>best dev score</th><th>one-class level</th></tr>{rows}</table>")


def write_paper_tables(df: pd.DataFrame, recorded: Path) -> list[Path]:
    """Beside each table1.csv / table2.csv the notebooks wrote: its rows per seed (mean, sd, n, the
    paper's mean: <table>_seeds.csv) and its LaTeX version (<table>.tex), from the study's results
    `df` and the notebooks' cell table."""
    out = []
    for name in ("table1", "table2"):
        if (recorded / f"{name}.csv").is_file():
            cells = analysis.read_cells(recorded / "cells.csv") if name == "table1" else pd.DataFrame()
            out += analysis.write_paper_table(df, cells, analysis.read_table(recorded / f"{name}.csv"),
                                              recorded / name)
    return out


def write_index(study_dir: Path, out_dir: Path, pages: list[Path], summary: str, matrix: str,
                header: str = "", tables: str = "") -> Path:
    """index.html: the figures (Figure 1 first), the heuristic, what the study is, its tables and
    collapsed runs, then the matrix linking the cell pages, the notebook pages and the CSV tables."""
    rel = lambda p: Path(p).relative_to(out_dir).as_posix()  # noqa: E731
    parts = [f"<h1>Report: {html.escape(study_dir.name)}</h1>", "<h2>Figures</h2>"]
    for png in sorted((out_dir / "figures").glob("*.png")):  # figure1_matrix, figure2_ablation, ...
        formats = " | ".join(f'<a href="{rel(png.with_suffix("." + ext))}">{ext.upper()}</a>'
                             for ext in plots.FIGURE_FORMATS if png.with_suffix("." + ext).exists())
        parts.append(f'<h3>{png.stem}</h3><p><a href="{rel(png.with_suffix(".svg"))}">'
                     f'<img src="{rel(png)}" style="max-width:100%"></a><br>{formats}</p>')
    parts += [summary, "<h2>The study</h2>" if header else "", header, tables]
    if matrix:
        parts += ["<h2>Matrix cells</h2><p>Mean MTL - mean STILTs; click a cell for the learning "
                  "curves of its runs (<a href=\"cells.html\">all cells</a>).</p>", matrix]
    parts.append("<h2>Analyses</h2><ul>")
    parts += [f'<li><a href="{rel(p)}">{p.stem}</a> (<a href="{rel(p.with_suffix(".ipynb"))}">notebook</a>)</li>'
              for p in pages]
    parts.append("</ul>")
    parts.append("<h2>Tables (CSV; LaTeX for a paper)</h2><ul>")
    parts += [f'<li><a href="{rel(p)}">{p.name}</a></li>' for p in sorted((out_dir / "tables").glob("*.csv"))]
    parts += [f'<li><a href="{rel(p)}">{p.name}</a> (booktabs tabular: mean &plusmn; sd over seeds, the '
              f"paper's mean)</li>" for p in sorted((out_dir / "tables").glob("*.tex"))]
    parts.append("</ul>")
    index = out_dir / "index.html"
    index.write_text(_html_page(f"Report: {study_dir.name}", "\n".join(parts)), encoding="utf-8")
    return index


def build_report(study_dir: Path, compare_to: Path | None = None, kernel_name: str = "python3",
                 exclude_input: bool = False, alpha: float = analysis.ALPHA,
                 equal_var: bool = True) -> Path:
    """Execute and render the analyses that apply to a study into <study_dir>/report/ and
    return the index page: analysis_pairs (pairwise rows), analysis_ablation (size ablation
    rows), analysis_mtl_all (MTL-All rows), analysis_bert (when compare_to is given). The index
    page shows the tables those notebooks wrote."""
    study_dir = Path(study_dir).resolve()
    df = analysis.load_results(study_dir)
    out_dir = StudyFolder(study_dir).report_dir
    for sub in ("tables", "figures"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    check_kernel(kernel_name)
    base = {"study_dir": str(study_dir), "report_dir": str(out_dir)}
    jobs = []
    if len(analysis.pairwise_rows(df)):
        jobs.append(("analysis_pairs", dict(base, alpha=alpha, equal_var=equal_var)))
    if len(analysis.ablation_rows(df)):
        jobs.append(("analysis_ablation", base))
    if (df["method"] == "mtl_all").any():
        jobs.append(("analysis_mtl_all", base))
    if compare_to is not None:
        analysis.load_results(compare_to)  # fail early on a missing study
        jobs.append(("analysis_bert", dict(base, compare_to=str(Path(compare_to).resolve()),
                                           alpha=alpha, equal_var=equal_var)))
    if not jobs:
        raise UserError(f"nothing to analyse in {study_dir}: no mtl, stilts or mtl_all rows in results.csv")
    pages = [run_notebook(name, out_dir, params, kernel_name, exclude_input)[1] for name, params in jobs]
    write_paper_tables(df, out_dir / "tables")
    summary, matrix, tables = "", "", ""
    recorded = out_dir / "tables"
    sizes = analysis.task_sizes(df, study_dir)
    if len(analysis.pairwise_rows(df)):
        cells = analysis.read_cells(recorded / "cells.csv")
        order = analysis.task_order(sizes, set(cells["target"]) | set(cells["support"]))
        write_cells_page(study_dir, out_dir, df, cells, alpha, equal_var)
        matrix = matrix_html(cells, order)
        summary = f"<h2>Size heuristic</h2><p>{html.escape(analysis.significance_summary(cells, alpha))}</p>"
        why = analysis.why_not_significant(cells, alpha, equal_var)
        if why:
            summary += f"<p>{html.escape(why)}</p>"
        tables += "<h2>Table 1</h2>" + table_html(
            analysis.read_table(recorded / "table1.csv"),
            "Dev score per target (columns) and their mean; bold: the best non-oracle value per column.")
        from .ranking import report_section  # which support: the ranker against the heuristic (3+ tasks)

        tables += report_section(study_dir, csv=recorded / "ranking.csv", cells=cells)
    if (df["method"] == "mtl_all").any():
        dynamic = sorted(set(df.loc[df["method"] == "mtl_all", "sampler"]) & set(DYNAMIC))
        tables += "<h2>Table 2</h2>" + table_html(
            analysis.read_table(recorded / "table2.csv"), "Single task against MTL over all tasks, per sampler.",
            ", ".join(dynamic))
    tables += "<h2>Collapsed runs</h2>" + collapsed_html(df)
    return write_index(study_dir, out_dir, pages, summary, matrix, header_html(study_dir, df, alpha, equal_var),
                       tables)
