"""Orchestration (issue 4): plan, resumable local execution, the run notebook, Slurm, failures."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mtlstudy import runner, study
from mtlstudy.folder import StudyFolder
from mtlstudy.profile import ProfileError

from tests.profiles import tiny_profile

REPO = Path(__file__).resolve().parents[1]


def mtimes(study_dir: Path) -> dict[str, float]:
    return {p.parent.name: p.stat().st_mtime_ns for p in (study_dir / "runs").glob("*/result.json")}


# ---- plan ---------------------------------------------------------------------------------------

def test_paper_plan_counts_and_dependencies():
    st = study.open_study(REPO / "params" / "paper.yaml")
    kinds = pd.Series([r.kind for r in st.runs]).value_counts().to_dict()
    assert kinds == {"single": 9 * 5, "mtl": 36 * 5, "stilts": 72 * 5, "mtl_all": 3 * 5}
    by_id = {r.run_id: r for r in st.runs}
    assert len(by_id) == len(st.runs)  # ids are unique
    singles = {(r.spec.tasks[0], r.spec.seed): r.run_id for r in st.runs if r.kind == "single"}
    for r in st.runs:
        if r.kind == "stilts":
            support, target = r.spec.tasks
            assert support != target
            assert sorted(r.deps) == sorted(singles[(support, s)] for s in st.profile.seeds)
        elif r.kind == "mtl":  # dynamic sampling: references are both tasks' single runs
            assert sorted(r.deps) == sorted(singles[(t, s)] for t in r.spec.tasks for s in st.profile.seeds)
        elif r.kind == "single":
            assert r.deps == [] and r.spec.train.keep_checkpoint == "best"
    pairs = {frozenset(r.spec.tasks) for r in st.runs if r.kind == "mtl"}
    assert len(pairs) == 36


def test_run_id_changes_with_results_not_with_devices():
    st = study.open_study(REPO / "params" / "paper.yaml")
    base = st.runs[0].spec
    assert base.model_copy(update={"train": base.train.model_copy(update={"device": "cuda:1"})}).run_id() == base.run_id()
    assert base.model_copy(update={"train": base.train.model_copy(update={"lr": 3e-5})}).run_id() != base.run_id()
    assert base.model_copy(update={"seed": 1}).run_id() != base.run_id()


def test_plan_command_reports_saving_against_naive_protocol():
    out = subprocess.run([sys.executable, "-m", "mtlstudy.cli", "plan", "paper", "--quiet"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert "runs: 600" in out
    ratio = float(out.strip().split("needs ")[1].split(" of")[0])
    assert ratio < 0.6


def test_overrides_and_validation(tmp_path):
    st = study.open_study(REPO / "params" / "demo.yaml", ["train.epochs=3", "seeds=[5, 6, 7]"])
    assert st.profile.train.epochs == 3 and st.profile.seeds == [5, 6, 7]
    with pytest.raises(ProfileError, match="train.epoch"):
        study.open_study(REPO / "params" / "demo.yaml", ["train.epoch=3"])
    with pytest.raises(ProfileError, match="seeds"):
        study.open_study(REPO / "params" / "demo.yaml", ["seeds=[1, 1]"])


# ---- execution ----------------------------------------------------------------------------------

def test_tiny_study_runs_once_and_reruns_only_what_is_missing(tmp_path, tiny_roberta):
    st = study.open_study(tiny_profile(tmp_path, tiny_roberta))
    counts = study.run(st, progress=False).counts
    assert counts == {"done": 6, "failed": 0, "blocked": 0, "pending": 0}
    first = mtimes(st.dir)
    table = pd.read_csv(st.dir / "results.csv")
    # every method represented; the MTL pair gives both directions from one run
    assert set(table.method) == {"single", "stilts", "mtl", "mtl_all"}
    mtl = table[table.method == "mtl"]
    assert len(mtl) == 2 and mtl.run_id.nunique() == 1

    study.run(st, progress=False)  # nothing to do
    assert mtimes(st.dir) == first
    line = study.significance(st)  # `mtlstudy run` prints it once the study is finished
    # 2 cells (gen_para|gen_sent, gen_sent|gen_para); one seed per method: no t-test, none significant
    assert line.startswith("0 of 2 matrix cells are significant (p < 0.1). The size heuristic"), line
    assert "right on 0 of 0 significant cells (paper: 49 of 53" in line

    victim = sorted(first)[0]
    StudyFolder(st.dir).run(victim).record.unlink()
    study.run(st, progress=False)
    again = mtimes(st.dir)
    assert again.keys() == first.keys()
    assert again[victim] != first[victim]
    assert {k: v for k, v in again.items() if k != victim} == {k: v for k, v in first.items() if k != victim}
    # support checkpoints are removed once no STILTs run needs them
    assert not list((st.dir / "runs").glob("*/best"))


def test_a_task_added_to_a_finished_study_retrains_the_supports_its_stilts_runs_need(tmp_path, tiny_roberta):
    """A finished study removes its support checkpoints; a task added later plans STILTs runs from
    the done single-task runs, which train again (seeded: the same scores) instead of those STILTs
    runs failing with 'support checkpoint missing'. Nothing else is trained again."""
    sizes = {"data.generated_sizes": {"gen_para": 48, "gen_sent": 24, "gen_nli": 24}}
    first = study.open_study(tiny_profile(tmp_path, tiny_roberta, methods=["single", "stilts"], **sizes))
    assert study.run(first, progress=False).counts["done"] == 4
    stilts = [r.run_id for r in first.runs if r.kind == "stilts"]
    assert all(Path(StudyFolder(first.dir).read_record(rid)["init_checkpoint"]).parents[2] == first.dir / "runs"
               for rid in stilts)  # they started from the supports' checkpoints, which are now gone:
    assert not list((first.dir / "runs").glob("*/best"))
    singles = {r.run_id: StudyFolder(first.dir).read_record(r.run_id)["best"] for r in first.runs if r.kind == "single"}
    before = mtimes(first.dir)
    later = study.open_study(tiny_profile(tmp_path, tiny_roberta, methods=["single", "stilts"],
                                          tasks=["gen_para", "gen_sent", "gen_nli"], **sizes))
    assert set(before) <= {r.run_id for r in later.runs}  # the same runs, and 5 new ones
    assert study.run(later, progress=False).counts == {"done": 9, "failed": 0, "blocked": 0, "pending": 0}
    assert {rid: StudyFolder(later.dir).read_record(rid)["best"] for rid in singles} == singles
    after = mtimes(later.dir)
    assert all(after[rid] == before[rid] for rid in stilts)  # the done STILTs runs were not trained again
    assert all(after[rid] != before[rid] for rid in singles)  # the supports were


def test_run_notebook_writes_the_same_record_as_the_python_call(tmp_path, tiny_roberta):
    st = study.open_study(tiny_profile(tmp_path, tiny_roberta, methods=["single"], tasks=["gen_sent"]))
    st.write()
    rid = st.runs[0].run_id
    direct = runner.train_and_record(st.dir, rid)
    StudyFolder(st.dir).run(rid).record.unlink()
    assert runner.run_one(StudyFolder(st.dir), rid, notebooks=True) == "done"
    via_notebook = StudyFolder(st.dir).read_record(rid)
    assert (StudyFolder(st.dir).run(rid).path / "run.ipynb").exists()
    assert via_notebook["history"] == direct["history"]
    assert via_notebook["best"] == direct["best"]


def test_failed_run_is_recorded_and_independent_runs_complete(tmp_path, tiny_roberta):
    # GLUE's own files get only their header checked before a study starts (a user task's files
    # are read whole then: test_own_task), so a bad row in RTE's fails the runs that read it
    glue = tmp_path / "glue" / "RTE"
    glue.mkdir(parents=True)
    (glue / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\tok\tfine\tentailment\n1\tbad\trow\t7\n")
    (glue / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\tok\tfine\tentailment\n")
    st = study.open_study(tiny_profile(tmp_path, tiny_roberta, tasks=["gen_sent", "rte"], methods=["single", "stilts"],
                                       **{"data.source": "glue_dir", "data.glue_dir": str(tmp_path / "glue")}))
    counts = study.run(st, progress=False).counts
    # single-rte fails on its data; stilts gen_sent->rte runs and fails the same way;
    # stilts rte->gen_sent is blocked; the independent single-gen_sent completes
    assert counts == {"done": 1, "failed": 2, "blocked": 1, "pending": 0}
    errors = dict(study.failures(st.dir))
    [single] = [r for r in errors if r.startswith("single-rte")]
    assert "train.tsv:3" in errors[single] and "label '7'" in errors[single]


@pytest.mark.slurm
def test_tiny_study_on_slurm_equals_local(tmp_path, tiny_roberta, slurm_cluster):
    local = study.open_study(tiny_profile(tmp_path / "a", tiny_roberta))
    study.run(local, progress=False)
    on_slurm = study.open_study(tiny_profile(tmp_path / "b", tiny_roberta, executor="slurm",
                                             slurm=slurm_cluster.model_dump()))
    counts = study.run(on_slurm, progress=False).counts
    assert counts["done"] == 6, study.failures(on_slurm.dir)
    a = pd.read_csv(local.dir / "results.csv").drop(columns=["study"])
    b = pd.read_csv(on_slurm.dir / "results.csv").drop(columns=["study"])
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))
    assert list((on_slurm.dir / "slurm").glob("*_log.out"))


def test_cli_errors_are_one_line_and_nonzero(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "mtlstudy.cli", *args], cwd=REPO, capture_output=True, text=True)

    r = run("plan", "no_such_profile")
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and "no_such_profile" in r.stderr
    r = run("plan", "demo", "--set", "tasks=[gen_nli, nope]")
    assert r.returncode != 0 and "unknown task 'nope'" in r.stderr and r.stderr.count("\n") == 1
    r = run("run", "demo", "--set", "executor=cloud")
    assert r.returncode != 0 and "executor" in r.stderr


def test_a_closed_pipe_is_not_an_error():
    """`mtlstudy plan paper | head -1`: the reader goes away after one line; no error, exit 0."""
    proc = subprocess.Popen([sys.executable, "-m", "mtlstudy.cli", "plan", "paper"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    first = proc.stdout.readline()
    proc.stdout.close()  # as head does after its line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and first.startswith(b"run id") and err == "", err


def test_ready_runs_start_with_what_others_wait_for_then_the_longest(tmp_path):
    """The local executor's start order on the demo plan: the 9 single-task runs (STILTs runs wait
    for them), then MTL-All (3 tasks), pairwise MTL (2), STILTs (1 trained task); plan order within."""
    from mtlstudy.local import start_order

    st = study.open_study(REPO / "params" / "demo.yaml", [f"output_dir={tmp_path}"])
    d = st.write().root
    runs = StudyFolder(d).read_run_list()
    order = sorted(runs, key=start_order(runs))
    kinds = [runs[r]["spec"]["method"] for r in order]
    assert kinds == ["single"] * 9 + ["mtl_all"] * 3 + ["mtl"] * 9 + ["stilts"] * 18
    plan_order = list(runs)
    for kind in ("single", "mtl", "stilts"):
        mine = [r for r in order if runs[r]["spec"]["method"] == kind]
        assert mine == [r for r in plan_order if runs[r]["spec"]["method"] == kind]


def test_two_launchers_with_different_profiles_keep_each_others_runs_and_checkpoints(tmp_path):
    """A task added while the first launcher still runs: the second profile's runs stay in the run
    list when the first launcher writes it again, and the first launcher, finishing with the run
    list it read at its start, keeps the support checkpoint the second's STILTs runs wait for."""
    first = study.open_study(tiny_profile(tmp_path, "unused-model", methods=["single", "stilts"]))
    second = study.open_study(tiny_profile(tmp_path, "unused-model", methods=["single", "stilts"],
                                           tasks=["gen_para", "gen_sent", "gen_sim"]))
    assert first.dir == second.dir
    first.write()
    first.folder.runs  # noqa: B018 - the first launcher reads its run list at its start
    second.write()
    first.write()  # the first launcher started again (say, --retry-failed), after the second
    on_disk = StudyFolder(first.dir).read_run_list()
    assert {r.run_id for r in first.runs + second.runs} == set(on_disk)

    for r in first.runs:  # the first profile finished: every run done, its supports' weights kept
        first.folder.record_result(r.run_id, {"run_id": r.run_id, "status": "done"})
        if r.kind == "single":
            weights = first.folder.support_checkpoint(r.run_id, r.spec.tasks[0]) / "model.safetensors"
            weights.parent.mkdir(parents=True)
            weights.write_bytes(b"w")
    waiting = [r for r in second.runs if r.kind == "stilts" and r.spec.tasks == ["gen_para", "gen_sim"]]
    assert waiting and all(set(r.deps) <= {x.run_id for x in first.runs} for r in waiting)
    first.folder.clean_checkpoints()
    kept = {rid for r in waiting for rid in r.deps if first.folder.has_support_checkpoint(rid, "gen_para")}
    assert kept == {rid for r in waiting for rid in r.deps}
    gen_sent_supports = [r.run_id for r in first.runs if r.kind == "single" and r.spec.tasks == ["gen_sent"]]
    waiting_on_gen_sent = [r for r in second.runs if r.kind == "stilts" and r.spec.tasks[0] == "gen_sent"]
    assert waiting_on_gen_sent  # gen_sent -> gen_sim waits too; gen_para -> gen_sent is done
    assert all(first.folder.has_support_checkpoint(rid, "gen_sent") for rid in gen_sent_supports)
