"""Runs shared between studies (issue 38, item 8): a run finished in another study under the same
outputs folder is taken from there (its record, and a STILTs support's kept weights), not trained
again; `mtlstudy plan` says how many."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mtlstudy import study
from mtlstudy.folder import StudyFolder, write_json_atomic

from tests.profiles import tiny_profile

REPO = Path(__file__).resolve().parents[1]


def fake_finished(st: study.Study, run_ids=None, weights: dict[str, str] | None = None) -> None:
    """Write a study folder as if its runs (all, or `run_ids`) had finished: the run list and a
    minimal record per run; `weights` (run id -> task) adds kept best weights."""
    folder = st.folder
    write_json_atomic(folder.run_list, {r.run_id: {"spec": r.spec.model_dump(mode="json"), "deps": r.deps,
                                                   "kind": r.kind} for r in st.runs})
    for rid in run_ids if run_ids is not None else [r.run_id for r in st.runs]:
        write_json_atomic(folder.run(rid).record, {"run_id": rid, "status": "done"})
    for rid, task in (weights or {}).items():
        best = folder.run(rid).best(task)
        best.mkdir(parents=True)
        (best / "model.safetensors").write_bytes(b"weights of " + rid.encode())


def test_plan_mtl_all_after_a_finished_paper_reuses_its_60_runs(tmp_path):
    paper = study.open_study(REPO / "params" / "paper.yaml", [f"output_dir={tmp_path}"])
    mtl_all = study.open_study(REPO / "params" / "mtl_all.yaml", [f"output_dir={tmp_path}"])
    assert study.plan(mtl_all)[1]["reused"] == 0  # nothing finished yet
    fake_finished(paper)
    rows, summary = study.plan(mtl_all)
    assert summary["reused"] == 60 == summary["runs"]
    assert {r["status"] for r in rows} == {"reused"}
    out = subprocess.run([sys.executable, "-m", "mtlstudy.cli", "plan", "mtl_all", "-q", "--set",
                          f"output_dir={tmp_path}"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert f"reused: 60 runs finished in another study under {tmp_path}" in out.stdout


def test_a_support_is_reused_with_its_kept_weights_and_trained_here_without_them(tmp_path):
    first = study.open_study(tiny_profile(tmp_path, "unused-model", name="first", methods=["single"]))
    second = study.open_study(tiny_profile(tmp_path, "unused-model", name="second", methods=["single", "stilts"]))
    singles = {r.run_id: r.spec.tasks[0] for r in first.runs}
    assert set(singles) <= {r.run_id for r in second.runs}  # the same runs: keep_checkpoint is not in the id
    with_weights, without = sorted(singles)
    fake_finished(first, weights={with_weights: singles[with_weights]})
    reusable = study.reusable_runs(second)
    assert set(reusable) == {with_weights}  # the other support has no kept weights: it trains here
    assert reusable[with_weights][1] == [singles[with_weights]]
    assert study.plan(second)[1]["reused"] == 1

    source, tasks = reusable[with_weights]
    second.folder.adopt(with_weights, source, tasks)
    taken = second.folder.run(with_weights)
    assert json.loads(taken.record.read_text()) == {"run_id": with_weights, "status": "done", "reused_from": "first",
                                                    "tags": {"study": "second"}}
    kept = taken.best(singles[with_weights]) / "model.safetensors"
    assert kept.read_bytes() == b"weights of " + with_weights.encode()
    assert kept.stat().st_ino == (source.best(singles[with_weights]) / "model.safetensors").stat().st_ino  # a link
    assert study.reusable_runs(second).keys() == set()  # done here now


def test_a_support_needs_no_weights_once_its_stilts_runs_are_reused(tmp_path):
    first = study.open_study(tiny_profile(tmp_path, "unused-model", name="first", methods=["single", "stilts"]))
    second = study.open_study(tiny_profile(tmp_path, "unused-model", name="second",
                                           methods=["single", "stilts", "mtl"]))
    fake_finished(first)  # a finished study keeps no support weights
    reusable = study.reusable_runs(second)
    assert set(reusable) == {r.run_id for r in first.runs}
    assert all(tasks == [] for _, tasks in reusable.values())


def test_a_reused_run_carries_this_studys_tags(tmp_path):
    """Tags are not in a run id: a plain pair elsewhere may be a size-ablation cell here (K, the
    target's fraction). The record taken carries this study's tags, so results.csv files it as
    this study's cell."""
    first = study.open_study(tiny_profile(tmp_path, "unused-model", name="first", methods=["single"]))
    second = study.open_study(tiny_profile(tmp_path, "unused-model", name="second", methods=["single"]))
    fake_finished(first)
    rid = first.runs[0].run_id
    write_json_atomic(first.folder.run(rid).record, {"run_id": rid, "status": "done", "tags": {"study": "first"}})
    source, tasks = study.reusable_runs(second)[rid]
    second.folder.adopt(rid, source, tasks, {"k": 2.0, "target_fraction": 0.5})
    assert json.loads(second.folder.run(rid).record.read_text())["tags"] == \
        {"k": 2.0, "target_fraction": 0.5, "study": "second"}


def test_unfinished_or_failed_runs_elsewhere_are_not_reused(tmp_path):
    first = study.open_study(tiny_profile(tmp_path, "unused-model", name="first", methods=["single"]))
    second = study.open_study(tiny_profile(tmp_path, "unused-model", name="second", methods=["single"]))
    done, failed = sorted(r.run_id for r in first.runs)
    fake_finished(first, run_ids=[done])
    write_json_atomic(first.folder.run(failed).record, {"run_id": failed, "status": "failed", "error": "x"})
    assert set(study.reusable_runs(second)) == {done}
    assert study.reusable_runs(first) == {}  # its own runs are not "elsewhere"


@pytest.mark.slow
def test_a_second_study_trains_only_what_the_first_did_not(tmp_path, tiny_roberta):
    first = study.open_study(tiny_profile(tmp_path, tiny_roberta, name="first", methods=["single", "stilts"]))
    assert study.run(first, progress=False).counts["done"] == 4
    trained = {p.parent.name: p.stat().st_mtime_ns for p in (first.dir / "runs").glob("*/result.json")}
    second = study.open_study(tiny_profile(tmp_path, tiny_roberta, name="second", methods=["single", "stilts", "mtl"]))
    assert study.plan(second)[1]["reused"] == 4
    assert study.run(second, progress=False).counts == {"done": 5, "failed": 0, "blocked": 0, "pending": 0}
    records = {p.parent.name: json.loads(p.read_text()) for p in (second.dir / "runs").glob("*/result.json")}
    assert {rid for rid, r in records.items() if r.get("reused_from") == "first"} == set(trained)
    assert [r["method"] for r in records.values() if "reused_from" not in r] == ["mtl"]  # the one run trained
    assert not any((second.dir / "runs" / rid / "log.txt").exists() for rid in trained)
    assert {p.parent.name: p.stat().st_mtime_ns for p in (first.dir / "runs").glob("*/result.json")} == trained
    theirs = pd.read_csv(first.dir / "results.csv", dtype=str).drop(columns="study")
    ours = pd.read_csv(second.dir / "results.csv", dtype=str)
    pd.testing.assert_frame_equal(ours[ours.method != "mtl"].drop(columns="study").reset_index(drop=True),
                                  theirs.reset_index(drop=True))
    assert StudyFolder(second.dir).counts()["done"] == 5
