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
    "from mtlstudy import analysis, plots, runner\n"
    "record = runner.train_and_record(study_dir, run_id)",
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
        new_markdown_cell(
            f"# {title}\n"
            f"Runs the profile `{profile}` unless told otherwise: `papermill -f params/NAME.yaml` injects a "
            "profile's keys (every profile key is a parameter), `-p base_profile NAME` runs another profile, "
            "and `-p overrides '[\"train.epochs=1\", \"seeds=[1,2]\"]'` changes keys as `mtlstudy run --set` "
            "does. In JupyterLab: edit the parameters cell, then Run All. A relative `output_dir` is "
            "relative to the repository, wherever the kernel runs."),
        params(f'base_profile = None  # a profile name in params/ or a YAML path; None: "{profile}", '
               "or the injected keys alone when they make a whole profile\n"
               f"methods = {methods}\n"
               "overrides = []  # profile changes, written as mtlstudy run --set takes them\n"
               "workers = None  # None: the profile's\n"
               "executor = None  # None: the profile's (local or slurm)\n"
               "report = True  # False: no HTML report at the end"),
        "from mtlstudy import analysis, study\n"
        f"st = study.study_from_values(dict(globals()), base=base_profile, overrides=overrides, stage_profile={profile!r})\n"
        "print(f'{st.profile.name}: {len(st.runs)} runs in {st.dir}')",
        "outcome = study.run(st, executor=executor, workers=workers)\noutcome.counts",
        "study.failures(st.dir)",
        "results = analysis.load_results(st.dir)\n"
        "print(f'results.csv: {len(results)} rows')\n"
        "results.groupby(['method', 'target'])['score'].agg(['count', 'mean']).round(2)",
        "study.report(st) if report else None",
    ])


if __name__ == "__main__":
    nbformat.write(notebook(RUN), HERE / "run.ipynb")
    for name, args in STAGES.items():
        nbformat.write(stage(*args), HERE / f"{name}.ipynb")
