"""The study's own rules, in the unit tier (issue 39): which support checkpoint a STILTs run starts
from and which reference scores a dynamic sampler gets, with several seeds; that the run id holds
exactly the fields declared result-bearing; the size-ablation grid; the data subsample's seed.

The choosing code is the real one (plan.make_plan, runner.resolve_inputs, train_and_record); only
the single-task runs' records are written by hand, with known scores, and training is stubbed.
"""
from __future__ import annotations

import statistics
import warnings
from pathlib import Path

import numpy as np
import pytest

from mtlstudy import runner
from mtlstudy import train as train_mod
from mtlstudy.data import DataSource
from mtlstudy.folder import StudyFolder
from mtlstudy.plan import make_plan
from mtlstudy.profile import profile_from_dict
from mtlstudy.spec import MULTITASK_ONLY, OUTSIDE_RUN_ID, RunSpec, TrainSettings
from mtlstudy.study import open_study
from mtlstudy.tasks import Task

REPO = Path(__file__).resolve().parents[1]
SEEDS = [11, 12, 13, 14, 15]
# Each task's single-task dev selection scores, seed by seed. gen_para: best is seed 12 (1.0); the
# mean 0.282 is closest to seed 14 (0.16), while the median is seed 11 (0.15). gen_sent: seeds 12
# and 14 tie for best (the first, 12, wins); the mean 0.56 is closest to seed 11 (0.5). The
# reported scores ("score") differ from the selection scores: the choice reads the selection ones.
SELECTION = {"gen_para": [0.15, 1.0, 0.0, 0.16, 0.1], "gen_sent": [0.5, 0.9, 0.2, 0.9, 0.3]}
BEST = {"gen_para": 12, "gen_sent": 12}
CLOSEST_TO_MEAN = {"gen_para": 14, "gen_sent": 11}


def tiny_plan_profile(tmp_path, **changes):
    raw = {"name": "rules", "model": "tiny-model-not-loaded", "tasks": ["gen_para", "gen_sent"], "seeds": SEEDS,
           "methods": ["single", "stilts", "mtl", "mtl_all"], "mtl_all_samplers": ["size", "gap"],
           "data": {"generated_sizes": {"gen_para": 48, "gen_sent": 24}},
           "train": {"batch_size": 8, "sampler": "gap"}, "output_dir": str(tmp_path), **changes}
    return profile_from_dict(raw, "rules.yaml", tmp_path)


def study_with_singles_done(tmp_path, **changes):
    """A planned study whose single-task runs are done with SELECTION's scores (and kept weights)."""
    profile, user = tiny_plan_profile(tmp_path, **changes)
    runs = make_plan(profile, user)
    folder = StudyFolder(profile.study_dir)
    folder.write_study(profile, runs, {"gen_para": 48, "gen_sent": 24})
    for r in runs:
        if r.kind == "single":
            task, i = r.spec.tasks[0], SEEDS.index(r.spec.seed)
            sel = SELECTION[task][i]
            folder.record_result(r.run_id, {"status": "done", "train_sizes": {task: 40 + i},
                                            "best": {task: {"step": 3, "selection_score": sel, "score": 1 - sel}}})
            best = folder.support_checkpoint(r.run_id, task)
            best.mkdir(parents=True)
            (best / "model.safetensors").write_text("weights of " + r.run_id)
    return runs, folder


def single_of(runs, task, seed):
    [rid] = [r.run_id for r in runs if r.kind == "single" and r.spec.tasks == [task] and r.spec.seed == seed]
    return rid


@pytest.mark.parametrize("choice,expected", [("best", BEST), ("closest_to_mean", CLOSEST_TO_MEAN)])
def test_stilts_runs_start_from_the_chosen_support_seed(tmp_path, monkeypatch, choice, expected):
    runs, folder = study_with_singles_done(tmp_path, support_choice=choice)
    stilts = [r for r in runs if r.kind == "stilts"]
    assert len(stilts) == 2 * len(SEEDS)
    calls = []
    monkeypatch.setattr(train_mod, "train", lambda spec, run_folder, **kw: (calls.append(kw) or
                                                                          {"status": "done", "best": {}}))
    for r in stilts:
        support, target = r.spec.tasks
        # every seed of a STILTs run depends on every seed of its support's single-task runs
        assert sorted(r.deps) == sorted(single_of(runs, support, s) for s in SEEDS)
        chosen = single_of(runs, support, expected[support])
        spec, inputs = runner.resolve_inputs(folder, r.run_id)
        assert inputs["support_run"] == chosen, (choice, support, r.spec.seed)
        assert inputs["init_checkpoint"] == folder.support_checkpoint(chosen, support)
        record = runner.train_and_record(folder, r.run_id)  # what the training is given, and records
        assert calls[-1]["init_checkpoint"] == folder.support_checkpoint(chosen, support)
        assert record["support_run"] == chosen
        assert record["support_train_size"] == 40 + SEEDS.index(expected[support])


def test_dynamic_samplers_get_the_mean_single_task_score_over_every_seed(tmp_path, monkeypatch):
    runs, folder = study_with_singles_done(tmp_path)
    means = {t: statistics.fmean(v) for t, v in SELECTION.items()}
    assert means["gen_para"] != statistics.median(SELECTION["gen_para"])  # a median would be caught
    calls = []
    monkeypatch.setattr(train_mod, "train", lambda spec, run_folder, **kw: (calls.append(kw) or
                                                                          {"status": "done", "best": {}}))
    dynamic = [r for r in runs if r.kind in ("mtl", "mtl_all") and r.spec.train.sampler == "gap"]
    assert len(dynamic) == 2 * len(SEEDS)  # the pair, and MTL-All with 'gap'
    for r in dynamic:
        assert r.spec.reference_runs == {t: [single_of(runs, t, s) for s in SEEDS] for t in r.spec.tasks}
        assert sorted(r.deps) == sorted(single_of(runs, t, s) for t in r.spec.tasks for s in SEEDS)
        _, inputs = runner.resolve_inputs(folder, r.run_id)
        assert inputs["reference_scores"] == pytest.approx(means, abs=1e-12)
        runner.train_and_record(folder, r.run_id)
        assert calls[-1]["reference_scores"] == pytest.approx(means, abs=1e-12)
    # a sampler that uses no reference (size) gets none and waits for no single-task run
    for r in runs:
        if r.kind == "mtl_all" and r.spec.train.sampler == "size":
            assert r.spec.reference_runs == {} and r.deps == []
            assert "reference_scores" not in runner.resolve_inputs(folder, r.run_id)[1]


# ---- the run id: exactly the fields declared result-bearing ------------------------------------

# A value other than the base's for every TrainSettings field (the base: TrainSettings() with the
# 'gap' sampler). A field added to TrainSettings must be added here, and to spec.OUTSIDE_RUN_ID
# when it does not change a run's result.
OTHER_TRAIN = {
    "lr": 3e-5, "batch_size": 64, "micro_batch_size": 16, "epochs": 3, "max_length": 64, "weight_decay": 0.01,
    "warmup_ratio": 0.1, "max_grad_norm": 0.5, "regression_targets": "standardized", "evals_per_epoch": 4,
    "eval_batch_size": 64, "heads": "by_label_count", "pooling": "mean", "head_init": "hf", "lower_case": True,
    "freeze_word_embeddings": True, "multitask_forward": "per_task", "padding": "sorted_passes",
    "padding_passes": 4, "selection": "split_dev", "sampler": "size",
    "temperature": 3.0, "schedule": "partition", "epoch_length": "longest", "drop_last": True,
    "group_by_length": True, "precision": "bf16", "eval_precision": "bf16", "device": "cuda:1", "threads": 4,
    "compile": True, "resume_every_seconds": 60.0, "keep_checkpoint": "best",
}


def mtl_spec(**changes) -> RunSpec:
    base = dict(method="mtl", tasks=["gen_para", "gen_sent"], seed=1, model="m",
                train=TrainSettings(sampler="gap"), reference_runs={"gen_para": ["s1"], "gen_sent": ["s2"]})
    return RunSpec(**{**base, **changes})


def test_the_settings_outside_the_run_id_are_those_that_leave_the_result_alone():
    """The declaration itself: the walk below checks the id against OUTSIDE_RUN_ID, so a setting
    wrongly declared outside would pass it. Each entry is here with why it changes no result;
    adding one is a decision made in this list too."""
    why = {"device": "where it runs", "threads": "how fast", "eval_batch_size": "how dev batches are cut",
           "keep_checkpoint": "what is kept on disk", "compile": "how fast (checked equal: test_train)",
           "multitask_forward": "how a batch's passes are cut (same loss and gradient)",
           "padding": "how a batch's padding is computed (same loss and gradient: test_train)",
           "padding_passes": "how many passes sorted_passes may cut (same loss and gradient)",
           "resume_every_seconds": "how often the resume state is written"}
    assert OUTSIDE_RUN_ID == set(why)


def test_the_train_settings_walk_covers_the_schema():
    assert set(OTHER_TRAIN) == set(TrainSettings.model_fields), \
        "a TrainSettings field was added or removed: give it a value here (and declare it in OUTSIDE_RUN_ID " \
        "if it does not change a run's result)"
    assert OUTSIDE_RUN_ID < set(TrainSettings.model_fields)
    for name, value in OTHER_TRAIN.items():  # each value is valid and differs from the default
        assert TrainSettings(**{name: value}).model_dump()[name] != TrainSettings().model_dump()[name], name


@pytest.mark.parametrize("field", sorted(OTHER_TRAIN))
def test_run_id_changes_exactly_for_result_bearing_train_settings(field):
    for base in (mtl_spec(), mtl_spec(method="mtl_all")):  # the runs that train several tasks
        changed = base.model_copy(update={"train": base.train.model_copy(update={field: OTHER_TRAIN[field]})})
        TrainSettings.model_validate(changed.train.model_dump())  # the change is a valid setting
        assert (changed.run_id() != base.run_id()) == (field not in OUTSIDE_RUN_ID), (base.method, field)
    # a run that trains one task (single, STILTs) ignores the sampler's settings
    for method, tasks in (("single", ["gen_para"]), ("stilts", ["gen_sent", "gen_para"])):
        one = RunSpec(method=method, tasks=tasks, seed=1, model="m")
        other = one.model_copy(update={"train": one.train.model_copy(update={field: OTHER_TRAIN[field]})})
        assert (other.run_id() != one.run_id()) == (field not in OUTSIDE_RUN_ID | MULTITASK_ONLY), (method, field)


def _other_task(name: str = "gen_para") -> Task:
    """A user task named like one of mtl_spec()'s tasks: it replaces the built-in one in the run."""
    return Task(name=name, labels=["a", "b"], metric="accuracy", train_size=10, generated=False)


# A value other than mtl_spec()'s for every RunSpec field; `train` and `data` are walked field by field.
OTHER_SPEC = {
    "method": ("mtl_all", None), "tasks": (["gen_para", "gen_nli"], None), "seed": (2, None), "model": ("m2", None),
    "train_counts": ({"gen_para": 30}, None), "train_fractions": ({"gen_sent": 0.5}, None), "data_seed": (1, None),
    "support_runs": (["x"], "stilts"), "support_choice": ("closest_to_mean", "stilts"),
    "reference_runs": ({"gen_para": ["s9"], "gen_sent": ["s2"]}, None), "user_tasks": ({"gen_para": _other_task()}, None),
    "tags": ({"k": 2.0}, None),
}
OUTSIDE_SPEC = {"tags"}


def test_the_run_spec_walk_covers_the_schema():
    assert set(OTHER_SPEC) | {"train", "data"} == set(RunSpec.model_fields)


@pytest.mark.parametrize("field", sorted(OTHER_SPEC))
def test_run_id_changes_exactly_for_result_bearing_spec_fields(field):
    value, method = OTHER_SPEC[field]
    base = mtl_spec() if method is None else RunSpec(method="stilts", tasks=["gen_sent", "gen_para"], seed=1,
                                                     model="m", support_runs=["a", "b"])
    changed = RunSpec.model_validate({**base.model_dump(), field: value})
    assert (changed.run_id() != base.run_id()) == (field not in OUTSIDE_SPEC), field
    if field == "user_tasks":  # a user task the run does not train leaves its id alone
        unused = RunSpec.model_validate({**base.model_dump(), field: {"mine": _other_task("mine")}})
        assert unused.run_id() == base.run_id()


def test_reference_runs_enter_the_id_only_where_a_dynamic_sampler_reads_them():
    refs = {"gen_para": ["s9"], "gen_sent": ["s2"]}
    size = mtl_spec(train=TrainSettings(sampler="size"), reference_runs={})
    assert size.model_copy(update={"reference_runs": refs}).run_id() == size.run_id()


@pytest.mark.parametrize("field,value", [("generated_sizes", {"gen_para": 50}), ("generated_dev_size", 100),
                                         ("generated_seed", 1)])
def test_run_id_changes_with_the_generated_data(field, value):
    base = mtl_spec()
    changed = base.model_copy(update={"data": DataSource(**{field: value})})
    assert changed.run_id() != base.run_id()


def _glue_copy(root: Path, marker: str) -> Path:
    """A GLUE folder with RTE and MRPC in GLUE's layout; `marker` in the first training sentence."""
    for folder, header in (("RTE", "index\tsentence1\tsentence2\tlabel"),
                           ("MRPC", "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String")):
        (root / folder).mkdir(parents=True)
        rows = ["0\ta b\tc d\tentailment", "1\te f\tg h\tnot_entailment"] if folder == "RTE" else \
            ["1\t1\t2\ta b\tc d", "0\t3\t4\te f\tg h"]
        for split in ("train", "dev"):
            text = "\n".join([header, *rows]) + "\n"
            (root / folder / f"{split}.tsv").write_text(text.replace("a b", f"a b {marker}") if split == "train" else text)
    return root


def test_run_id_changes_when_the_data_source_changes_what_is_read(tmp_path):
    """Hub against files, and two GLUE folders whose files differ, are different runs. (How the
    data source is hashed, by path or by content, is not asserted: only that different data
    read gives a different id.)"""
    glue = RunSpec(method="mtl", tasks=["rte", "mrpc"], seed=1, model="m", train=TrainSettings(sampler="size"),
                   data=DataSource(source="glue_dir", glue_dir=_glue_copy(tmp_path / "one", "first")))
    other = glue.model_copy(update={"data": DataSource(source="glue_dir", glue_dir=_glue_copy(tmp_path / "two", "second"))})
    hub = glue.model_copy(update={"data": DataSource(source="hub")})
    assert len({glue.run_id(), other.run_id(), hub.run_id()}) == 3


# ---- the size-ablation grid (Figure 2) ----------------------------------------------------------

def test_size_ablation_plan_is_the_k_by_fraction_grid():
    st = open_study(REPO / "params" / "size_ablation.yaml")
    ab, seeds = st.profile.ablation, st.profile.seeds
    assert len(st.runs) == 155 == len({r.run_id for r in st.runs})
    n_target = {f: round(f * 104743) for f in ab.target_fractions}  # QNLI's training set
    by_id = {r.run_id: r for r in st.runs}
    target_singles = {f: sorted(r.run_id for r in st.runs if r.kind == "single" and r.spec.tasks == ["qnli"]
                                and r.spec.train_fractions.get("qnli", 1.0) == f) for f in ab.target_fractions}
    assert all(len(v) == len(seeds) for v in target_singles.values())
    support_singles = {}  # support size -> its single-task runs (one per seed)
    for r in st.runs:
        if r.kind == "single" and r.spec.tasks == ["mnli"]:
            support_singles.setdefault(r.spec.train_counts["mnli"], []).append(r.run_id)
    cells = []
    for f in ab.target_fractions:
        for k in ab.ks:
            n_support = round(k * n_target[f])
            singles = sorted(support_singles[n_support])
            assert len(singles) == len(seeds), (f, k)
            # the cell's MTL and STILTs runs, found by their tags (a support single shared by two
            # cells, the same support size, is planned once and carries the first cell's tags)
            cell = [r for r in st.runs if r.spec.tags == {"k": float(k), "target_fraction": float(f)}
                    and r.kind != "single"]
            for kind in ("mtl", "stilts"):
                assert sorted(r.spec.seed for r in cell if r.kind == kind) == sorted(seeds), (f, k, kind)
            for r in cell:
                assert r.spec.train_counts == {"mnli": n_support}, (f, k, r.run_id)
                assert r.spec.train_fractions == ({"qnli": f} if f < 1 else {})
                if r.kind == "stilts":
                    assert r.spec.tasks == ["mnli", "qnli"] and sorted(r.spec.support_runs) == singles == sorted(r.deps)
                else:  # the dynamic sampler's references: the target's singles at f, the support's at K
                    assert r.spec.tasks == ["qnli", "mnli"]
                    assert {t: sorted(v) for t, v in r.spec.reference_runs.items()} == {"qnli": target_singles[f],
                                                                                         "mnli": singles}
                    assert sorted(r.deps) == sorted(target_singles[f] + singles)
            cells.append(n_support)
    for rid in sum(support_singles.values(), []):
        r = by_id[rid]
        assert r.spec.train_fractions == {} and r.spec.train.keep_checkpoint == "best" and r.deps == []
    assert len(cells) == len(ab.ks) * len(ab.target_fractions) == 10
    # K = 1/2 at 100% and K = 1 at 50% need the same support size (52,372): its singles are shared
    assert len(set(cells)) == len(support_singles) == 9
    # per seed: 2 target singles, 9 support singles, and per cell an MTL and a STILTs run
    assert len(st.runs) == len(seeds) * (len(ab.target_fractions) + len(support_singles) + 2 * len(cells)) == 155


# ---- the data subsample's seed --------------------------------------------------------------

def test_every_run_seed_trains_on_the_same_subsample_and_data_seed_changes_it(tiny_roberta):
    from mtlstudy.batches import prepare_data
    from mtlstudy.model import load_tokenizer

    tok = load_tokenizer(str(tiny_roberta))

    def trained_on(seed, data_seed):
        spec = RunSpec(method="mtl", tasks=["gen_para", "gen_sent"], seed=seed, model=str(tiny_roberta),
                       train=TrainSettings(sampler="size", max_length=32), data_seed=data_seed,
                       data=DataSource(generated_sizes={"gen_para": 200, "gen_sent": 100}),
                       train_counts={"gen_para": 60}, train_fractions={"gen_sent": 0.5})
        data = prepare_data(spec, tok)
        return {t: (len(d.train), np.asarray(d.train.input_ids).tobytes(), np.asarray(d.train.labels).tobytes())
                for t, d in data.items()}

    first = trained_on(1, 0)
    assert {t: v[0] for t, v in first.items()} == {"gen_para": 60, "gen_sent": 50}
    assert trained_on(2, 0) == first and trained_on(3, 0) == first
    other = trained_on(1, 1)
    assert all(other[t][0] == first[t][0] and other[t][1:] != first[t][1:] for t in first)
    # and the plan gives every seed of a study the profile's data_seed
    profile, user = profile_from_dict({"name": "d", "model": "m", "tasks": ["gen_para", "gen_sent"], "seeds": [1, 2, 3],
                                       "train": {"batch_size": 8}, "data_seed": 7}, "d.yaml", Path("."))
    assert {r.spec.data_seed for r in make_plan(profile, user)} == {7}


# ---- end to end: a real tiny multi-seed study, its t-tests against scipy ------------------------

def test_significance_of_a_real_three_seed_study_matches_scipy(tmp_path, tiny_roberta):
    """Train a tiny study (2 generated tasks, 3 seeds, single + STILTs + pairwise MTL: 15 runs, in
    this process), collect results.csv, and check every matrix cell's t-test against scipy's
    Student test on the collected scores, the winners, the size heuristic, the one-line summary,
    and that each STILTs run started from its support's best seed."""
    import pandas as pd
    from scipy import stats

    from mtlstudy import analysis
    from mtlstudy import study as study_mod

    raw = {"name": "sig", "model": str(tiny_roberta), "tasks": ["gen_para", "gen_sent"], "seeds": [1, 2, 3],
           "methods": ["single", "stilts", "mtl"],
           "data": {"generated_sizes": {"gen_para": 64, "gen_sent": 32}, "generated_dev_size": 48},
           "train": {"lr": 1e-3, "batch_size": 8, "epochs": 1, "max_length": 24, "sampler": "gap", "threads": 1,
                     "device": "cpu"},
           "output_dir": str(tmp_path), "notebooks": False}
    profile, user = profile_from_dict(raw, "sig.yaml", tmp_path)
    st = study_mod.Study(profile, user, make_plan(profile, user))
    assert len(st.runs) == 15
    folder = st.write()
    for r in st.runs:  # the plan lists dependencies first
        assert runner.run_one(folder, r.run_id, notebooks=False) == "done", folder.failures()
    folder.reload()
    table = pd.read_csv(folder.collect())
    cells, _ = analysis.study_cells(st.dir)
    assert len(cells) == 2
    sizes = {"gen_para": 64, "gen_sent": 32}
    tested = 0
    for c in cells.itertuples():
        g = table[(table.target == c.target) & (table.support == c.support)]
        a, b = g[g.method == "mtl"].score.to_numpy(), g[g.method == "stilts"].score.to_numpy()
        assert len(a) == len(b) == 3
        with warnings.catch_warnings():  # tiny tasks: seeds often share a score (scipy warns, its result stands)
            warnings.simplefilter("ignore", RuntimeWarning)
            ref = stats.ttest_ind(a, b, equal_var=True)
        if np.isnan(ref.pvalue):  # every score equal: no test
            assert np.isnan(c.p) and not c.significant
            continue
        tested += 1
        assert (c.t, c.p) == pytest.approx((ref.statistic, ref.pvalue), rel=1e-12)
        assert c.diff == pytest.approx(a.mean() - b.mean())
        assert c.significant == (ref.pvalue < 0.1)
        assert c.winner == (("mtl" if ref.statistic > 0 else "stilts") if ref.pvalue < 0.1 else "")
        assert c.heuristic == ("mtl" if sizes[c.support] > sizes[c.target] else "stilts")
    assert tested, table  # at least one cell had a test
    n_sig = int(cells.significant.sum())
    assert study_mod.significance(st).startswith(f"{n_sig} of 2 matrix cells are significant (p < 0.1)")
    for r in st.runs:  # each STILTs run started from its support's best seed (support_choice: best)
        if r.kind == "stilts":
            support = r.spec.tasks[0]
            scores = [folder.read_record(s)["best"][support]["selection_score"] for s in r.spec.support_runs]
            assert folder.read_record(r.run_id)["support_run"] == r.spec.support_runs[int(np.argmax(scores))]


# ---- Tables 1 and 2 on hand-computed numbers -----------------------------------------------------

def test_tables_rows_against_numbers_worked_by_hand():
    """Three tasks, two seeds; STILTs and MTL differ by support, so a mean over supports, a max and
    the heuristic's pick all differ. The size ablation's rows (k set), a single-task run of the
    ablation among them, stay out of Tables 1 and 2."""
    import pandas as pd

    from mtlstudy import analysis

    sizes = {"a": 1000, "b": 100, "c": 10}
    rows = []

    def add(method, target, support, scores, sampler="", k=float("nan")):
        for seed, score in zip((1, 2), scores):
            rows.append(dict(run_id=f"{method}-{target}-{support}-{sampler}-{k}-{seed}", method=method, target=target,
                             support=support, seed=seed, score=score, sampler=sampler, k=k, target_fraction=1.0))

    for t, s in (("a", 70), ("b", 60), ("c", 50)):
        add("single", t, "", (s - 1, s + 1))
        add("mtl_all", t, "", (s - 5, s - 3), sampler="size")
    # (target, support): (STILTs seeds, MTL seeds)
    pairs = {("a", "b"): ((71, 73), (60, 62)), ("a", "c"): ((65, 67), (68, 70)),
             ("b", "a"): ((61, 63), (64, 66)), ("b", "c"): ((55, 57), (50, 52)),
             ("c", "a"): ((40, 42), (55, 57)), ("c", "b"): ((45, 47), (48, 50))}
    for (t, s), (stilts, mtl) in pairs.items():
        add("stilts", t, s, stilts)
        add("mtl", t, s, mtl, sampler="gap")
    add("single", "a", "", (10, 12), k=2.0)  # the ablation's: not Table 1's single-task row
    add("mtl", "b", "a", (99, 99), sampler="gap", k=2.0)
    add("stilts", "b", "a", (1, 1), k=2.0)
    df = pd.DataFrame(rows)
    cells = analysis.cell_table(df, sizes)
    table = analysis.summary_table(df, cells, ["a", "b", "c"])
    # each seed pair's mean is the value between them (71, 73 -> 72)
    expect = {
        "Single task": [70, 60, 50],
        "MTL-All (size)": [66, 56, 46],
        "Avg STILTs": [(72 + 66) / 2, (62 + 56) / 2, (41 + 46) / 2],
        "Avg MTL": [(61 + 69) / 2, (65 + 51) / 2, (56 + 49) / 2],
        # the heuristic: MTL where the support is larger (b on a, c on a, c on b), else STILTs
        "Avg S.H.": [(72 + 66) / 2, (65 + 56) / 2, (56 + 49) / 2],
        "Pairwise Oracle": [max(72, 61, 66, 69), max(62, 65, 56, 51), max(41, 56, 46, 49)],
    }
    for row, values in expect.items():
        assert table.loc[row, ["a", "b", "c"]].tolist() == pytest.approx(values), row
        assert table.loc[row, "Mean"] == pytest.approx(sum(values) / 3), row
    assert analysis.mtl_all_table(df, ["a", "b", "c"]).loc["Single task", ["a", "b", "c"]].tolist() == [70, 60, 50]
