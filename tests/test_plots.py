"""The cell figures: seeds told apart, x in epochs, the sampler panel only when its weights move."""
import copy
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from fake_study import SEEDS, make_study  # noqa: E402

from mtlstudy import analysis, plots  # noqa: E402


def _mtl_stilts_lines(ax):
    return [ln for ln in ax.lines if ln.get_label().split()[0] in ("mtl", "stilts")]


def test_cell_figure_tells_seeds_apart_and_uses_epochs(tmp_path):
    study = make_study(tmp_path, ablation=False, mtl_all=False)
    df = analysis.load_results(study)
    fig = plots.plot_cell(study, df, "mid", "big")
    curves = fig.axes[0]
    assert curves.get_xlabel() == "epoch"
    lines = _mtl_stilts_lines(curves)
    assert sorted(ln.get_label() for ln in lines) == sorted(f"{m} seed {s}" for m in ("mtl", "stilts") for s in SEEDS)
    for method in ("mtl", "stilts"):
        mine = [ln for ln in lines if ln.get_label().startswith(method + " ")]
        assert len({ln.get_color() for ln in mine}) == 1  # one colour per method ...
        assert len({(ln.get_linestyle(), ln.get_marker()) for ln in mine}) == len(SEEDS)  # ... a style per seed
        for ln in mine:  # x is the history's epochs, not steps
            assert list(ln.get_xdata()) == [0.5, 1.0, 1.5, 2.0]
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "sampling probability"  # the fake MTL weights move


def test_constant_sampler_weights_get_no_panel(tmp_path):
    study = make_study(tmp_path, ablation=False, mtl_all=False)
    for path in (study / "runs").glob("mtl-*/result.json"):
        run = json.loads(path.read_text())
        for h in run["history"]:
            h["sampler_probs"] = {t: 0.5 for t in h["sampler_probs"]}
        path.write_text(json.dumps(run))
    fig = plots.plot_cell(study, analysis.load_results(study), "mid", "big")
    assert len(fig.axes) == 1
    run = analysis.load_run(study, "mtl-big-mid-s1")
    assert not plots.sampler_varies(run)
    moved = copy.deepcopy(run)
    moved["history"][-1]["sampler_probs"] = {"big": 0.6, "mid": 0.4}
    assert plots.sampler_varies(moved)


def _record(epochs=True):
    history = [{"step": 5 * (i + 1), "epoch": 0.5 * (i + 1), "train_loss": [1.0, 0.8, 0.6, 0.4][i],
                "scores": {"a": 50 + i, "b": 60 + i}, "sampler_probs": {"a": 0.75, "b": 0.25}} for i in range(4)]
    rec = {"run_id": "mtl-a-b-s1", "method": "mtl", "tasks": ["a", "b"], "scored_tasks": ["a", "b"], "seed": 1,
           "model": "m", "params": {"train": {"lr": 3e-4, "batch_size": 16, "epochs": 2, "sampler": "size"}},
           "train_sizes": {"a": 300, "b": 100}, "batches_per_epoch": 10, "total_steps": 20, "examples_seen": 320,
           "wall_seconds": 12.5, "device": "cpu", "precision": "fp32", "history": history,
           "best": {"a": {"score": 53, "epoch": 2.0}, "b": {"score": 60.5, "epoch": 0.5}},
           "majority_scores": {"a": 40.0, "b": 20.0}, "constant_scores": {"a": 40.0, "b": 60.0}}
    if epochs:
        rec["epochs"] = [{"epoch": 1, "batches": 10, "examples": {"a": 120, "b": 40}, "probs": {"a": 0.75, "b": 0.25}},
                         {"epoch": 2, "batches": 10, "examples": {"a": 100, "b": 60}, "probs": {"a": 0.6, "b": 0.4}}]
    return rec


def test_run_notebook_pieces():
    rec = _record()
    summary = dict(analysis.run_summary(rec).values)
    assert summary["lr"] == "0.0003" and summary["batch_size"] == "16" and summary["wall time (s)"] == "12.5"
    assert summary["device"] == "cpu (fp32)" and summary["train sizes"] == "a 300, b 100"
    mix = analysis.task_mix(rec)  # shares of the examples actually trained on, per epoch
    assert mix.loc[1, "a"] == 0.75 and mix.loc[2, "b"] == 60 / 160
    old = analysis.task_mix(_record(epochs=False))  # older records: the sampler's probabilities
    assert list(old.index) == [0.5, 1.0, 1.5, 2.0] and (old["a"] == 0.75).all()
    scores = analysis.run_scores(rec).set_index("task")
    assert scores.loc["b", "collapsed"] and not scores.loc["a", "collapsed"] and scores.loc["a", "best_epoch"] == 2.0
    fig = plots.plot_run(rec)
    assert len([ax for ax in fig.axes if ax.get_ylabel() == "share of examples"]) == 1
    assert fig.axes[0].get_xlabel() == "epoch" and list(fig.axes[0].lines[0].get_ydata()) == [1.0, 0.8, 0.6, 0.4]
    single = dict(_record(), tasks=["a"], scored_tasks=["a"])
    assert not [ax for ax in plots.plot_run(single).axes if ax.get_ylabel() == "share of examples"]


def test_every_notebook_calls_names_that_exist():
    """Each mtlstudy module a notebook imports has every attribute the notebook uses (the run,
    stage, analysis and explorer notebooks keep working when the package is rearranged)."""
    import ast
    import importlib

    import nbformat

    checked = set()
    for path in sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb")):
        code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        tree = ast.parse(code)
        modules = {a.asname or a.name: importlib.import_module(f"mtlstudy.{a.name}") for n in ast.walk(tree)
                   if isinstance(n, ast.ImportFrom) and n.module == "mtlstudy" for a in n.names}
        for n in ast.walk(tree):
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in modules:
                assert hasattr(modules[n.value.id], n.attr), f"{path.name}: {n.value.id}.{n.attr}"
                checked.add(f"{n.value.id}.{n.attr}")
    assert {"analysis.run_summary", "plots.plot_run", "explorer.first_choice", "analysis.cell_table"} <= checked
