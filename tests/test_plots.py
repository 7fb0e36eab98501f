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
