"""The settings a profile can name: their defaults (the paper's protocol), the CPU profiles' run ids
kept as they were, and docs/settings.md generated from the schema."""
from __future__ import annotations

import hashlib

import yaml

from mtlstudy.plan import make_plan
from mtlstudy.profile import load_profile
from tests.conftest import REPO

# The CPU profiles' planned run ids (count, sha256 of the sorted ids, first 16 hex digits), as before
# TrainSettings' defaults became the paper's: these profiles name their own choices, so their
# studies keep their runs (and the demo its results.csv).
CPU_PROFILE_IDS = {
    "params/demo.yaml": (39, "e32ce51cb2c7c97d"),
    "params/glue_cpu.yaml": (69, "475c1fe530ef379c"),
    "examples/own_task/study.yaml": (26, "0456c2836181d011"),
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
    assert mine.train == paper.train and mine.seeds == paper.seeds
    assert planned_ids(path) == planned_ids(REPO / "params" / "paper.yaml")


def test_the_cpu_profiles_plan_the_run_ids_they_planned_before():
    for name, (count, digest) in CPU_PROFILE_IDS.items():
        ids = planned_ids(REPO / name)
        assert (len(ids), hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]) == (count, digest), name
