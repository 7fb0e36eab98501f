"""The settings a profile can name: their defaults (the paper's protocol), the CPU profiles' run ids
kept as they were, and docs/settings.md generated from the schema."""
from __future__ import annotations

import copy
import hashlib
import typing
from pathlib import Path

import yaml

from mtlstudy import settings_doc
from mtlstudy.data import DataSource
from mtlstudy.plan import make_plan
from mtlstudy.profile import Profile, SlurmSettings, load_profile, profile_from_dict, read_profile_file
from mtlstudy.spec import TrainSettings
from tests.conftest import REPO

# The CPU profiles' planned run ids (count, sha256 of the sorted ids, first 16 hex digits), as before
# TrainSettings' defaults became the paper's: these profiles name their own choices, so their
# studies keep their runs (and the demo its results.csv).
CPU_PROFILE_IDS = {
    "params/demo.yaml": (39, "e32ce51cb2c7c97d"),
    "params/glue_cpu.yaml": (69, "475c1fe530ef379c"),
    # own_task's ids hash its files' content since issue 36 (they held their paths before, so they
    # differed from one checkout to another); a study run before finds its runs (plan.earlier_ids)
    "examples/own_task/study.yaml": (26, "06677fa10229b7c5"),
}


def planned_ids(path) -> list[str]:
    profile, user = load_profile(path)
    return sorted(r.run_id for r in make_plan(profile, user))


def test_a_profile_naming_only_model_and_tasks_plans_the_paper_study(tmp_path):
    paper, _ = load_profile("paper")
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"model": paper.model, "tasks": paper.tasks}))
    mine, _ = load_profile(path)
    assert mine.name == "mine"  # the file's name
    # the same protocol; how it is computed (padding: sorted_passes in paper) is the profile's choice
    assert mine.train.result_fields() == paper.train.result_fields() and mine.seeds == paper.seeds
    assert planned_ids(path) == planned_ids(REPO / "params" / "paper.yaml")


def test_the_cpu_profiles_plan_the_run_ids_they_planned_before():
    for name, (count, digest) in CPU_PROFILE_IDS.items():
        ids = planned_ids(REPO / name)
        assert (len(ids), hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]) == (count, digest), name


# ---- docs/settings.md -----------------------------------------------------------------------

def test_every_setting_has_a_description():
    assert settings_doc.missing_descriptions() == []


def test_the_settings_page_is_what_the_schema_generates():
    """docs/settings.md is stale when this fails: `python -m mtlstudy.settings_doc` rewrites it."""
    assert settings_doc.PAGE.read_text() == settings_doc.render()
    assert settings_doc.main(["--check"]) == 0


def test_a_field_without_a_description_fails_the_check(monkeypatch, capsys):
    monkeypatch.setattr(TrainSettings.model_fields["lr"], "description", None)
    assert settings_doc.missing_descriptions() == ["TrainSettings.lr"]
    assert settings_doc.main(["--check"]) == 1 and "TrainSettings.lr" in capsys.readouterr().err


def runs_by_kind(raw: dict) -> dict:
    """The planned runs of profile `raw`: (method, tasks, seed, MTL-All's sampler, tags) -> run id."""
    profile, user = profile_from_dict(copy.deepcopy(raw), "test profile", REPO / "params")
    return {(r.spec.method, tuple(r.spec.tasks), r.spec.seed, r.spec.train.sampler if r.spec.method == "mtl_all" else "",
             tuple(sorted(r.spec.tags.items()))): r.run_id for r in make_plan(profile, user)}


def what_changes(base: dict, changed: dict) -> str:
    """What a change of profile does to the run ids, in the words of the settings page's last column."""
    before, after = runs_by_kind(base), runs_by_kind(changed)
    if before.keys() != after.keys():
        return "which runs"
    moved = [kind for kind in before if before[kind] != after[kind]]
    if not moved:
        return "no"
    return "multi-task runs" if all(kind[0] in ("mtl", "mtl_all") for kind in moved) else "yes"


def other_value(annotation, value):
    """A valid value of a field's type other than `value`."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return next(a for a in args if a != value)
    if type(None) in args:  # Optional[X]
        return other_value(next(a for a in args if a is not type(None)), value) if value is None else None
    if annotation is bool:
        return not value
    if annotation in (int, float):
        return (value or 1) * 2 if annotation is int else (value or 0.5) / 2
    return {str: "cpu", Path: "/elsewhere"}[annotation]


DEMO = read_profile_file(REPO / "params" / "demo.yaml")

# Profile keys changed by hand: (changes to the demo profile, then the key's new value)
PROFILE_CHANGES = {
    "name": ({}, "other"), "description": ({}, "other"), "model": ({}, "other-model"),
    "tasks": ({}, ["gen_nli", "gen_para"]), "seeds": ({}, [1, 2]), "methods": ({}, ["single"]),
    "train": ({}, {**DEMO["train"], "lr": 1e-3}), "mtl_all_samplers": ({}, ["uniform"]),
    "support_choice": ({}, "closest_to_mean"), "data": ({}, {**DEMO["data"], "generated_seed": 1}),
    "data_seed": ({}, 1), "train_counts": ({}, {"gen_nli": 100}),
    "ablation": ({"methods": ["single", "ablation"], "ablation": {"target": "gen_para", "support": "gen_nli", "ks": [0.5]}},
                 {"target": "gen_para", "support": "gen_nli", "ks": [1]}),

    "output_dir": ({}, "/elsewhere"), "executor": ({}, "slurm"), "workers": ({}, 1), "runs_per_gpu": ({}, 2),
    "notebooks": ({}, True), "slurm": ({}, {"mem_gb": 8}), "paper": ({}, True),
}


MAPS = {"generated_sizes": {"gen_nli": 200}, "additional": {"exclusive": ""}}  # new values of the map fields


def user_task_change(folder: Path) -> tuple[dict, list[str]]:
    """The demo with examples/own_task's task among its tasks, then the same task on other data
    (its dev file as its training file, in a task file of `folder`)."""
    example = REPO / "examples" / "own_task"
    task = yaml.safe_load((example / "own_task.yaml").read_text())
    task["tsv"]["train"]["file"] = str(example / "dev.tsv")
    task["tsv"]["dev"]["file"] = str(example / "dev.tsv")
    (folder / "own_task.yaml").write_text(yaml.safe_dump(task))
    base = {"tasks": [*DEMO["tasks"], "own_task"], "user_tasks": [str(example / "own_task.yaml")]}
    return base, [str(folder / "own_task.yaml")]


def test_the_run_id_column_says_what_a_change_does_to_the_planned_runs(tmp_path):
    """Each key of the settings page, changed in the demo profile: the run ids change as its run-id
    column says (yes, no, multi-task runs, which runs)."""
    with_own_task, other_file = user_task_change(tmp_path)
    changes = {**PROFILE_CHANGES, "user_tasks": (with_own_task, other_file),
               "replace_tasks": (with_own_task, ["own_task"])}  # the list itself leaves the ids alone
    assert set(changes) == set(Profile.model_fields)
    # "by content": other data, other ids (user_tasks' change above); the demo reads no GLUE file, so
    # another glue_dir leaves its ids alone (a moved study: tests/test_own_task.py)
    by_content = {("Profile", "user_tasks"): "yes", ("DataSource", "glue_dir"): "no"}
    for key, (base_changes, value) in changes.items():
        base = {**DEMO, **base_changes}
        note = settings_doc.run_id_note(Profile, key)
        assert what_changes(base, {**base, key: value}) == by_content.get(("Profile", key), note), key
    for section, model in (("train", TrainSettings), ("data", DataSource), ("slurm", SlurmSettings)):
        for key, field in model.model_fields.items():
            current = DEMO.get(section, {}).get(key, field.get_default())
            value = MAPS.get(key) or other_value(field.annotation, current)
            changed = {**DEMO, section: {**DEMO.get(section, {}), key: value}}
            note = settings_doc.run_id_note(model, key)
            assert what_changes(DEMO, changed) == by_content.get((model.__name__, key), note), f"{section}.{key}"
    assert {settings_doc.run_id_note(m, k) for m, k in ((Profile, "user_tasks"), (DataSource, "glue_dir"))} == \
        {"by content"}
