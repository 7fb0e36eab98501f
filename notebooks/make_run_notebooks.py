"""Write the run notebook and the stage notebooks with nbformat (run: python notebooks/make_run_notebooks.py).

run.ipynb       one training run of a planned study (papermill: study_dir, run_id)
pairs.ipynb, size_ablation.ipynb, mtl_all.ipynb, bert.ipynb
                one stage each: `papermill -f params/<profile>.yaml notebooks/pairs.ipynb out.ipynb`
                injects the profile's keys; the notebook plans, runs, collects and reports.
"""
from pathlib import Path

from make_notebooks import HERE, new_markdown_cell, notebook, params
import nbformat

RUN = [
    new_markdown_cell("# One training run\nExecuted by papermill for every run of a study; kept next to the "
                      "run's `result.json` as its audit trail."),
    params('study_dir = "outputs/demo"\nrun_id = ""'),
    "from mtlstudy import analysis, execute, plots\n"
    "record = execute.train_and_record(study_dir, run_id)",
    new_markdown_cell("## Parameters, wall time and device"),
    "analysis.run_summary(record).style.hide(axis='index')",
    new_markdown_cell("## Best dev score per task, against always predicting the most frequent label"),
    "analysis.run_scores(record)",
    new_markdown_cell("## Training loss, dev scores and the task mix per epoch"),
    "plots.show(plots.plot_run(record))",
]

STAGES = {
    "pairs": ("Training pairs: single-task, STILTs and pairwise MTL", "paper",
              "['single', 'stilts', 'mtl']"),
    "size_ablation": ("Size ablation (Figure 2): QNLI target, MNLI support at K x |target|", "size_ablation",
                      "['ablation']"),
    "mtl_all": ("MTL over all tasks, per sampler", "mtl_all", "['single', 'mtl_all']"),
    "bert": ("BERT replication (Appendix D)", "bert", "['single', 'stilts', 'mtl']"),
}


def stage(title, profile, methods):
    return notebook([
        new_markdown_cell(f"# {title}\nRun with `papermill -f params/{profile}.yaml` (every profile key is a "
                          "parameter) or with `-p base_profile NAME`."),
        params(f'base_profile = "{profile}"\nmethods = {methods}\nworkers = None\nexecutor = None'),
        "from mtlstudy import study, analysis\n"
        "st = study.study_from_values(dict(globals()), base=base_profile)\n"
        "print(st.profile.name, len(st.plan), 'runs')",
        "counts = study.run(st, executor=executor, workers=workers)\ncounts",
        "study.failures(st.dir)",
        "from mtlstudy.report import build_report\nbuild_report(st.dir)",
    ])


if __name__ == "__main__":
    nbformat.write(notebook(RUN), HERE / "run.ipynb")
    for name, args in STAGES.items():
        nbformat.write(stage(*args), HERE / f"{name}.ipynb")
