"""Analysis of a finished study, pure pandas/scipy; its public names, gathered from:

load.py      the study folder read: results.csv, study.json, run records, task sizes and order
runs.py      one run's record: history, parameters and cost, best scores, collapsed runs
matrix.py    the paper's pairwise matrix: cells and t-tests, the size heuristic and its accuracy
tables.py    Tables 1 and 2, the paper's published means, per seed (mean, sd), in LaTeX
ablation.py  the size ablation (Figure 2)
compare.py   two studies compared cell by cell (Figure 3)

Input is a study folder as written by the rest of the package. Scores are dev scores x100
("points"). Which method and which support for a new pair: recommend.py; the explorer: explorer.py.
"""
from .ablation import ablation_crossings, ablation_summary, ablation_tests, crossings
from .compare import agreement, agreement_table, sign_agreement
from .load import (PAIR_METHODS, ablation_rows, is_paper_study, load_results, load_run, load_study_info,
                   pairwise_rows, study_model, task_order, task_sizes)
from .matrix import (ALPHA, PAPER_HEURISTIC, cell_table, heuristic, heuristic_accuracy, heuristic_wrong_cells,
                     matrix, read_cells, significance_summary, study_cells, ttest, why_not_significant)
from .runs import (COLLAPSE_MARGIN, RUN_SETTINGS, collapse_level, collapsed_runs, history_frame, run_scores,
                   run_summary, task_mix)
from .tables import (ORACLE, PAPER_VALUES, ROW_DEFINITIONS, best_mask, format_table, latex_table, method_means,
                     mtl_all_labels, mtl_all_table, paper_comparison, read_table, row_definition, seed_scores,
                     seed_spread, summary_table, write_paper_table)

__all__ = [
    "ablation_crossings", "ablation_summary", "ablation_tests", "crossings",
    "agreement", "agreement_table", "sign_agreement",
    "PAIR_METHODS", "ablation_rows", "is_paper_study", "load_results", "load_run", "load_study_info",
    "pairwise_rows", "study_model", "task_order", "task_sizes",
    "ALPHA", "PAPER_HEURISTIC", "cell_table", "heuristic", "heuristic_accuracy", "heuristic_wrong_cells",
    "matrix", "read_cells", "significance_summary", "study_cells", "ttest", "why_not_significant",
    "COLLAPSE_MARGIN", "RUN_SETTINGS", "collapse_level", "collapsed_runs", "history_frame", "run_scores",
    "run_summary", "task_mix",
    "ORACLE", "PAPER_VALUES", "ROW_DEFINITIONS", "best_mask", "format_table", "latex_table", "method_means",
    "mtl_all_labels", "mtl_all_table", "paper_comparison", "read_table", "row_definition", "seed_scores",
    "seed_spread", "summary_table", "write_paper_table",
]
