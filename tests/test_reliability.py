"""Reliability (issue 6): killed runs resume exactly, killed studies complete only what is missing,
Slurm preemption, failure isolation, two launches at once, safe loading, disk use.

Every test here trains the tiny random RoBERTa of conftest on generated data, on CPU.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from mtlstudy import claims, local, runner, study
from mtlstudy.folder import RunFolder, StudyFolder
from mtlstudy import train as train_mod
from mtlstudy.cli import main as mtlstudy_main
from mtlstudy.spec import RunSpec
from tests.profiles import OLD_DEFAULTS, same_training, single_spec
from tests.reliability_helpers import (REPO, checkpoint_state, checkpoint_step, cli, cli_env, dead_pid, kill_group,
                                       kill_group_when, mtimes, read_records, rel_profile, resume_point, start_cli,
                                       starts_in_log, wait_for)


def kill_at_each_place(args, run_dir: Path, logs: Path, steps_per_epoch: int) -> list[tuple[Path | None, int]]:
    """Run `mtlstudy ARGS` three times (tests/kill_child.py), each time SIGKILLed at another place:
    in a training step, in an evaluation, and in a resume checkpoint write (weights written and
    state not yet, or between the two renames that replace the checkpoint). The order, which one
    of the two checkpoint-write places and the count at which each kill comes are drawn from a
    seed, printed (replay: MTLSTUDY_KILL_SEED=<seed>). Each launch after the first resumes from
    what the kill left. Returns the resume point after each kill (folder or None, step)."""
    seed = int(os.environ.get("MTLSTUDY_KILL_SEED") or random.randrange(2**32))
    rng = random.Random(seed)
    places = ["step", "evaluation", rng.choice(["weights", "swap"])]
    rng.shuffle(places)
    # counted in each launch: a step of its second epoch, its 2nd or 3rd evaluation or checkpoint
    # write; so each launch leaves a checkpoint beyond the last, and three end before a 4-epoch run does
    plan = [(p, steps_per_epoch + rng.randint(1, steps_per_epoch // 2) if p == "step" else rng.randint(2, 3))
            for p in places]
    print(f"kill plan {plan} from seed {seed} (replay: MTLSTUDY_KILL_SEED={seed})")
    points, before = [], None
    for i, (place, n) in enumerate(plan):
        marker, log = logs / f"kill{i}.json", logs / f"kill{i}.log"
        with open(log, "wb") as f:
            proc = subprocess.run([sys.executable, "-m", "tests.kill_child", place, str(n), str(marker), "--",
                                   *map(str, args)], cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=cli_env(),
                                  timeout=300)
        text = log.read_text()
        assert proc.returncode == -signal.SIGKILL and marker.exists(), \
            f"kill {i} ({place}, {n}; seed {seed}) did not land: rc {proc.returncode}\n{text[-3000:]}"
        assert json.loads(marker.read_text())["place"] == place
        if before is None:
            assert "training from scratch" in text, text[-3000:]
        else:
            assert f"resuming from {before[0]} at step {before[1]}" in text, (seed, text[-3000:])
        point = resume_point(run_dir)
        before = None if point is None else (point[0], int(point[1]["step"]))
        points.append(before)
    return points


# ---- 1. resume a run --------------------------------------------------------------------------

def test_killed_single_task_run_resumes_to_the_same_result(tmp_path, tiny_roberta):
    spec = single_spec(tiny_roberta, **OLD_DEFAULTS)
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    reference = train_mod.train(RunSpec.model_validate(spec), RunFolder(tmp_path / "reference"), progress=False, log=lambda m: None)
    total = reference["total_steps"]
    assert reference["history"] and total >= 100  # dropout is on: the RNG state matters

    out = tmp_path / "killed"
    points = kill_at_each_place(["train", "--spec", tmp_path / "spec.json", "--out", out], out, tmp_path,
                                reference["batches_per_epoch"])
    assert not (out / "result.json").exists()
    folder, step = points[-1]

    messages = []  # run again (in this process: the resume code is the same, the start-up is not)
    record = train_mod.train(RunSpec.model_validate(spec), RunFolder(out), progress=False, log=messages.append)
    assert messages[0] == f"resuming from {folder} at step {step}", messages
    same_training(record, reference)


def test_killed_mtl_run_with_dynamic_sampler_resumes_to_the_same_result(tmp_path, tiny_roberta, capsys):
    """Pairwise MTL, 'gap' sampler (its probabilities change every epoch, from the single-task
    reference scores): killed three times through `mtlstudy run-one` (the last resume point after
    epoch 1), run again."""
    st = study.open_study(rel_profile(tmp_path, tiny_roberta, methods=["single", "mtl"],
                                      **{"train.epochs": 4, "data.generated_sizes": {"gen_para": 320, "gen_sent": 192}}))
    d = st.write().root
    [mtl] = [r for r in st.runs if r.kind == "mtl"]
    for r in st.runs:
        if r.kind == "single":
            assert runner.run_one(StudyFolder(d), r.run_id, notebooks=False) == "done"
    ref_dir = tmp_path / "copy" / d.name
    shutil.copytree(d, ref_dir)
    reference = runner.train_and_record(ref_dir, mtl.run_id)
    capsys.readouterr()
    probs = [tuple(h["sampler_probs"].values()) for h in reference["history"]]
    assert len(set(probs)) >= 3  # the sampler really moved, epoch after epoch
    per_epoch = reference["batches_per_epoch"]

    run_dir = StudyFolder(d).run(mtl.run_id).path
    points = kill_at_each_place(["run-one", d, mtl.run_id, "--no-notebook"], run_dir, tmp_path, per_epoch)
    assert (run_dir / "claim.json").exists()  # left behind by the killed process: stale
    folder, step = points[-1]
    assert step > per_epoch, points

    assert runner.run_one(StudyFolder(d), mtl.run_id, notebooks=False) == "done"  # run again, in this process
    assert f"resuming from {folder} at step {step}" in capsys.readouterr().out
    record = StudyFolder(d).read_record(mtl.run_id)
    assert record["status"] == "done"
    same_training(record, reference)
    assert record["reference_scores"] == reference["reference_scores"]
    assert not (run_dir / "resume").exists() and not (run_dir / "claim.json").exists()


# The in-process resume tests (a crash at a checkpoint, corrupt checkpoints, the loss scale, the
# RNG) take seconds: they are in tests/test_resume.py, in the unit tier.


# ---- 2. resume a study --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished_study(tmp_path_factory, tiny_roberta):
    """The reliability study run to completion by two `mtlstudy run` launched at the same moment."""
    root = tmp_path_factory.mktemp("twice")
    prof = rel_profile(root, tiny_roberta, name="twice", workers=1)
    procs = [start_cli("run", prof, log=root / f"launch{i}.log") for i in range(2)]
    # which launcher's worker holds each claim, sampled while they run: a worker is in its
    # launcher's process group (start_cli starts each launcher in a session of its own)
    launchers, together = {p.pid: i for i, p in enumerate(procs)}, set()
    deadline = time.monotonic() + 600
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        holders = set()
        for claim in (root / "outputs" / "twice" / "runs").glob("*/claim.json"):
            try:
                holders.add(launchers.get(os.getpgid(json.loads(claim.read_text())["pid"])))
            except (OSError, ValueError, KeyError):  # released, being written, or its worker just ended
                continue
        together |= {frozenset(holders - {None})}
        time.sleep(0.02)
    for p in procs:
        p.wait(timeout=max(1, deadline - time.monotonic()))
    logs = [(root / f"launch{i}.log").read_text() for i in range(2)]
    st = study.open_study(prof)
    return st, [p.returncode for p in procs], logs, together


def test_two_launches_at_once_train_every_run_once(finished_study):
    st, codes, logs, together = finished_study
    # they overlapped: at one moment each launcher's worker held a run (one worker each)
    assert frozenset({0, 1}) in together, together
    # the launcher that runs out of work while the other still trains waits for it, then takes what
    # depends on it: both end with the study done
    assert codes == [0, 0], logs
    assert all(re.search(r"4/4 \[.*failed=0, blocked=0, (held_elsewhere=\d+, )?left=\d+min\]", log) for log in logs), logs
    records = read_records(st.dir)
    assert set(records) == {r.run_id for r in st.runs}
    assert all(r["status"] == "done" for r in records.values())
    for r in st.runs:
        run_dir = StudyFolder(st.dir).run(r.run_id).path
        assert starts_in_log(run_dir) == (1, 0), (run_dir / "log.txt").read_text()[-3000:]
        assert not (run_dir / "claim.json").exists()
    table = pd.read_csv(st.dir / "results.csv")
    assert len(table) == 2 + 2  # singles, STILTs both ways


def test_run_process_killed_by_sigkill_is_recorded_failed_then_retried_from_its_checkpoint(tmp_path, tiny_roberta):
    """The out-of-memory killer takes a worker, not its launcher: the run is recorded failed with
    that reason (not restarted over and over), `mtlstudy run` exits 1, and --retry-failed resumes
    it from its last checkpoint."""
    prof = rel_profile(tmp_path, tiny_roberta, name="oom", tasks=["gen_sent"], methods=["single"],
                       **{"train.epochs": 6, "data.generated_sizes": {"gen_sent": 640}})
    st = study.open_study(prof)
    [run] = st.runs
    run_dir = StudyFolder(st.dir).run(run.run_id).path
    launcher = start_cli("run", prof, log=tmp_path / "first.log")
    try:
        wait_for(lambda: (checkpoint_step(run_dir) or 0) >= 40, 240, "a checkpoint at step >= 40", poll=0.005,
                 proc=launcher)
        os.kill(json.loads((run_dir / "claim.json").read_text())["pid"], signal.SIGKILL)
        launcher.wait(timeout=120)
    finally:
        kill_group(launcher)
    first = (tmp_path / "first.log").read_text()
    assert launcher.returncode == 1, first[-3000:]
    assert f"failed {run.run_id}: killed by SIGKILL without a record (out of memory?)" in first
    assert starts_in_log(run_dir) == (1, 0)  # not restarted by the launcher
    again = cli("run", prof, "--retry-failed")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert starts_in_log(run_dir) == (1, 1)  # resumed from its checkpoint, not from scratch
    assert StudyFolder(st.dir).read_record(run.run_id)["status"] == "done"


def test_killed_study_completes_only_what_is_missing(tmp_path, tiny_roberta, finished_study):
    reference, *_ = finished_study
    prof = rel_profile(tmp_path, tiny_roberta, name="killed")
    st = study.open_study(prof)
    d = st.dir
    plan = {r.run_id: r for r in st.runs}

    def waiting_on_done_supports(done) -> list[tuple[str, str]]:
        """(STILTs run not done, its support run that is done): the support's checkpoint is needed."""
        return [(rid, sup) for rid, r in plan.items() if r.kind == "stilts" and rid not in done
                for sup in r.spec.support_runs if sup in done]

    def mid_training():  # a run done, another with a checkpoint before its last epoch's end
        folder = StudyFolder(d)
        done = [rid for rid in plan if folder.run(rid).record.exists()]
        mid = [rid for rid in plan if (folder.run(rid).resume / "state.pt").exists()
               and (checkpoint_state(folder.run(rid).path) or {"epoch": 99})["epoch"] < st.profile.train.epochs]
        return done and mid and waiting_on_done_supports(done) and (done, mid)

    proc = start_cli("run", prof, log=tmp_path / "first.log")
    kill_group_when(mid_training, proc, 300, "one run done and another with a checkpoint, unfinished")
    # the workers die with the launcher (one process group): every claim left is a dead process's
    wait_for(lambda: all(claims._claim_is_stale(c) for c in (d / "runs").glob("*/claim.json")), 30,
             "the workers' claims to be stale")
    before = mtimes(d)
    interrupted = [rid for rid in plan if resume_point(StudyFolder(d).run(rid).path) is not None
                   and rid not in before]
    assert before and interrupted and len(before) < len(plan)
    # support checkpoints are still there for STILTs runs that have not run yet (the kill came
    # when at least one such run waited on a finished support)
    waiting = waiting_on_done_supports(before)
    assert waiting
    for rid, sup in waiting:
        assert (StudyFolder(d).run(sup).path / "best" / plan[rid].spec.tasks[0] / "model.safetensors").exists()

    again = cli("run", prof)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    after = mtimes(d)
    assert set(after) == set(plan)
    assert {k: after[k] for k in before} == before  # finished work was not redone
    for rid in plan:
        run_dir = StudyFolder(d).run(rid).path
        assert [p.name for p in run_dir.glob("result*.json")] == ["result.json"]
        assert StudyFolder(d).read_record(rid)["status"] == "done"
        scratch, resumed = starts_in_log(run_dir)
        if rid in before:
            assert (scratch, resumed) == (1, 0)
        elif rid in interrupted:
            assert (scratch, resumed) == (1, 1)  # started once, then resumed from its checkpoint
        else:  # not started, or killed before its first checkpoint
            assert scratch in (1, 2) and resumed == 0
    a = pd.read_csv(d / "results.csv").drop(columns=["study"])
    b = pd.read_csv(reference.dir / "results.csv").drop(columns=["study"])
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))


# ---- 3. Slurm preemption -----------------------------------------------------------------------

@pytest.mark.slurm
def test_slurm_cancelled_and_requeued_run_resumes_and_completes(tmp_path, tiny_roberta, slurm_cluster):
    """A run's Slurm job is cancelled mid-run: `mtlstudy run` again resumes it from its checkpoint
    in a new job; that job is then requeued (preempted) mid-run: it restarts under the same job id,
    takes its own claim back and resumes again. The result equals an uninterrupted run.

    Slurm's grace period (SIGTERM, which submitit ignores, then SIGKILL after KillWait) is cut
    short by killing the run's process right after scancel / scontrol requeue."""
    import threading

    from tests.slurm_fixture import start_requeued_now

    name = f"slurmrel{os.getpid()}"
    prof = rel_profile(tmp_path, tiny_roberta, name=name, tasks=["gen_sent"], methods=["single"],
                       executor="slurm", slurm=slurm_cluster.model_dump(),
                       **{"data.generated_sizes": {"gen_sent": 640}, "train.epochs": 5})
    st = study.open_study(prof)
    [run] = st.runs
    reference = train_mod.train(run.spec, RunFolder(tmp_path / "reference"), progress=False, log=lambda m: None)
    run_dir = StudyFolder(st.dir).run(run.run_id).path

    seen, stop = [], threading.Event()

    def watch():  # every checkpoint step written: a restart from scratch would show a step going back
        while not stop.is_set():
            step = checkpoint_step(run_dir)
            if step is not None and (not seen or seen[-1] != step):
                seen.append(step)
            time.sleep(0.03)

    def running_job():
        out = subprocess.run(["squeue", "-h", "-n", f"mtl-{name}", "-o", "%A %T"], capture_output=True,
                             text=True).stdout.split()
        return out[0] if len(out) == 2 and out[1] == "RUNNING" else None

    def kill_run_process():  # the job's python process, named by its claim on the run
        pid = json.loads((run_dir / "claim.json").read_text())["pid"]
        os.kill(pid, signal.SIGKILL)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        # cancelled
        first = start_cli("run", prof, log=tmp_path / "first.log")
        wait_for(lambda: checkpoint_step(run_dir), 240, "the first checkpoint", proc=first)
        jid = wait_for(running_job, 30, "the running job")
        subprocess.run(["scancel", jid], check=True)
        kill_run_process()
        first.wait(timeout=120)
        assert StudyFolder(st.dir).read_status(run.run_id) == "pending"
        assert first.returncode == 3 and "ended without a record" in (tmp_path / "first.log").read_text()
        cancelled_at = checkpoint_step(run_dir)
        assert 0 < cancelled_at < reference["total_steps"]

        # run again; preempted (requeued) once it has written a checkpoint of its own
        second = start_cli("run", prof, log=tmp_path / "second.log")
        wait_for(lambda: (checkpoint_step(run_dir) or 0) > cancelled_at, 240, "a checkpoint after the resume",
                 proc=second)
        jid = wait_for(running_job, 30, "the running job")
        subprocess.run(["scontrol", "requeue", jid], check=True)
        requeue_time = time.time()
        kill_run_process()
        requeued_at = checkpoint_step(run_dir)
        start_requeued_now(jid, requeue_time)
        second.wait(timeout=300)
    finally:
        stop.set()
        watcher.join()
    assert second.returncode == 0, (tmp_path / "second.log").read_text()[-3000:]
    assert re.search(r"1/1 \[.*failed=0, blocked=0, left=0min\]", (tmp_path / "second.log").read_text())
    record = StudyFolder(st.dir).read_record(run.run_id)
    assert record["status"] == "done"
    same_training(record, reference)
    assert seen == sorted(seen) and cancelled_at in seen and requeued_at in seen, seen
    logs = "".join(p.read_text() for p in (st.dir / "slurm").glob("*_log.out"))
    assert f"at step {requeued_at}" in logs, logs[-3000:]  # the requeued job took its claim back, resumed
    assert not (run_dir / "resume").exists() and not (run_dir / "claim.json").exists()


# ---- 4. failure isolation -----------------------------------------------------------------------

def _in_process_workers(monkeypatch):
    """run_local's workers as in-process calls (one at a time), so that faults can be injected."""
    def run(folder, run_id, notebooks, slot):
        return 0 if runner.run_one(folder, run_id, notebooks=False) == "done" else 1
    monkeypatch.setattr(local, "_run_in_slot", run)


def test_failures_are_recorded_dependents_blocked_and_retried(tmp_path, tiny_roberta, monkeypatch):
    """A non-finite loss in single-gen_para (at step 3), out of memory in STILTs gen_sent->gen_para:
    both recorded failed with their reason; the runs that need single-gen_para are blocked; the
    independent single-gen_sent completes; --retry-failed reruns only the failed and blocked runs."""
    st = study.open_study(rel_profile(tmp_path, tiny_roberta, workers=1, methods=["single", "stilts", "mtl"]))
    by_kind = {(r.kind, tuple(r.spec.tasks)): r.run_id for r in st.runs}
    nan_run, oom_run = by_kind[("single", ("gen_para",))], by_kind[("stilts", ("gen_sent", "gen_para"))]
    current, steps, faults = {}, {}, {"on": True}
    real_train, real_step = train_mod.train, train_mod.train_step

    def traced_train(spec, *a, **kw):
        current["run"] = spec.run_id()
        return real_train(spec, *a, **kw)

    def faulty_step(*a, **kw):
        rid = current["run"]
        steps[rid] = steps.get(rid, 0) + 1
        loss = real_step(*a, **kw)
        if faults["on"] and rid == nan_run and steps[rid] == 3:
            return float("nan")
        if faults["on"] and rid == oom_run and steps[rid] == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return loss

    _in_process_workers(monkeypatch)
    monkeypatch.setattr(train_mod, "train", traced_train)
    monkeypatch.setattr(train_mod, "train_step", faulty_step)
    counts = study.run(st, progress=False).counts
    assert counts == {"done": 1, "failed": 2, "blocked": 2, "pending": 0}
    errors = dict(study.failures(st.dir))
    assert errors[nan_run].startswith("TrainingError: non-finite loss (nan) at step 3,")
    assert errors[oom_run].startswith("out of memory: CUDA out of memory")
    done_before = mtimes(st.dir)
    [independent] = [r for r, rec in read_records(st.dir).items() if rec["status"] == "done"]
    assert independent == by_kind[("single", ("gen_sent",))]

    faults["on"] = False
    steps.clear()
    counts = study.run(st, progress=False).counts  # without --retry-failed: failed stays failed, nothing runs
    assert counts["failed"] == 2 and not steps
    counts = study.run(st, retry_failed=True, progress=False).counts
    assert counts == {"done": 5, "failed": 0, "blocked": 0, "pending": 0}
    assert mtimes(st.dir)[independent] == done_before[independent]
    assert set(steps) == {r.run_id for r in st.runs} - {independent}


def test_failure_reasons_are_one_line_and_name_the_cause():
    assert runner.failure_reason(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB\nmore")) \
        == "out of memory: CUDA out of memory. Tried to allocate 2 GiB"
    assert runner.failure_reason(MemoryError()).startswith("out of memory")
    assert runner.failure_reason(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to "
                                                "allocate 123 bytes")).startswith("out of memory")
    assert runner.failure_reason(ValueError("a\nb")) == "ValueError: a"


def test_a_killed_notebook_kernel_is_named_as_such(tmp_path):
    """What papermill raises when the run notebook's kernel is SIGKILLed (the OOM killer's usual
    victim: it holds the model) becomes a one-line reason that says so."""
    import nbformat
    import papermill

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")]
    nbformat.write(nb, tmp_path / "die.ipynb")
    with pytest.raises(Exception) as caught:
        papermill.execute_notebook(str(tmp_path / "die.ipynb"), str(tmp_path / "out.ipynb"), kernel_name="python3",
                                   progress_bar=False)
    assert runner.failure_reason(caught.value) == "the run notebook's kernel died (Kernel died): killed, out of memory?"


# ---- 5. two launches at once: claims ------------------------------------------------------------

@pytest.fixture
def one_run_study(tmp_path, tiny_roberta):
    st = study.open_study(rel_profile(tmp_path, tiny_roberta, tasks=["gen_sent"], methods=["single"],
                                      **{"train.epochs": 1}))
    st.write()
    return st.dir, st.runs[0].run_id


def _write_claim(study_dir, run_id, **fields):
    path = StudyFolder(study_dir).run(run_id).claim
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fields) if fields else "")
    return path


def test_stale_claim_of_a_dead_process_is_taken_over(one_run_study):
    import socket

    d, rid = one_run_study
    _write_claim(d, rid, host=socket.gethostname(), pid=dead_pid(), time=time.time(), slurm_job=None)
    assert not StudyFolder(d).is_claimed(rid)
    assert runner.run_one(StudyFolder(d), rid, notebooks=False) == "done"
    assert not StudyFolder(d).run(rid).claim.exists()


def test_claim_of_a_live_process_is_respected_and_waited_for(one_run_study, capsys):
    import socket
    import threading

    d, rid = one_run_study
    sleeper = subprocess.Popen(["sleep", "60"])
    launch = {}
    try:
        _write_claim(d, rid, host=socket.gethostname(), pid=sleeper.pid, time=time.time(), slurm_job=None)
        assert StudyFolder(d).is_claimed(rid)
        assert runner.run_one(StudyFolder(d), rid, notebooks=False) == "claimed"
        assert StudyFolder(d).read_status(rid) == "pending"
        # a second `mtlstudy run` leaves it alone while its holder lives, and takes it over once it dies
        profile = str(d.parent.parent / "rel.yaml")
        second = threading.Thread(target=lambda: launch.update(rc=mtlstudy_main(["run", profile])), daemon=True)
        second.start()
        time.sleep(3 * local.HELD_POLL_S)
        assert second.is_alive() and StudyFolder(d).read_status(rid) == "pending"
        capsys.readouterr()
        assert mtlstudy_main(["status", profile]) == 0
        assert f"training {rid}: pid {sleeper.pid} on {socket.gethostname()}, for 0 min" in capsys.readouterr().out
    finally:
        sleeper.kill()
        sleeper.wait()
    second.join(timeout=240)
    assert launch == {"rc": 0}
    assert StudyFolder(d).read_status(rid) == "done"
    assert starts_in_log(StudyFolder(d).run(rid).path) == (1, 0)


def test_claim_from_another_host_outside_slurm_leaves_the_run_pending(one_run_study, capsys):
    """Its process cannot be checked from here: the launcher does not wait on it forever nor train
    the run twice; it says why the study is not finished and exits 3."""
    d, rid = one_run_study
    _write_claim(d, rid, host="another-host", pid=1, time=time.time(), slurm_job=None)
    assert StudyFolder(d).held_elsewhere(rid) == "unchecked"
    assert mtlstudy_main(["run", str(d.parent.parent / "rel.yaml")]) == 3
    out = capsys.readouterr().out
    assert "1 runs not finished: 1 held by another launcher on another host outside Slurm" in out, out
    assert StudyFolder(d).read_status(rid) == "pending"
    assert StudyFolder(d).runs_in_flight() == [(rid, "pid 1 on another-host, for 0 min (another host outside Slurm: "
                                               "unchecked)")]


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT])
def test_run_process_killed_without_a_record_is_not_restarted_in_a_loop(one_run_study, monkeypatch, signum):
    """SIGKILL (the out-of-memory killer): recorded failed with that reason, for --retry-failed.
    Another signal (Ctrl-C, a cancel): left pending for the next `mtlstudy run` to resume."""
    d, rid = one_run_study
    starts = []

    def killed_worker(study_dir, run_id, notebooks, slot):
        starts.append(run_id)
        return -signum

    monkeypatch.setattr(local, "_run_in_slot", killed_worker)
    counts = local.run_local(StudyFolder(d), workers=1, notebooks=False, progress=False)
    assert starts == [rid]
    if signum == signal.SIGKILL:
        assert counts["failed"] == 1
        assert dict(study.failures(d))[rid] == "killed by SIGKILL without a record (out of memory?)"
    else:
        assert counts["pending"] == 1 and StudyFolder(d).read_status(rid) == "pending"


def test_claim_of_a_zombie_or_of_a_reused_pid_is_stale(one_run_study):
    """A killed worker nobody reaped (a container whose PID 1 does not reap) is not alive; nor is a
    live process that got the pid of a dead claimant (its start time differs)."""
    import socket

    d, rid = one_run_study
    zombie = subprocess.Popen(["true"])  # exits; not waited for, so it stays a zombie
    wait_for(lambda: (claims._proc_stat(zombie.pid) or ["Z"])[0] == "Z", 10, "the zombie")
    path = _write_claim(d, rid, host=socket.gethostname(), pid=zombie.pid, time=time.time(), slurm_job=None)
    assert claims._claim_is_stale(path)
    zombie.wait()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        start = claims._pid_start(sleeper.pid)
        path = _write_claim(d, rid, host=socket.gethostname(), pid=sleeper.pid, start=start, time=time.time())
        assert not claims._claim_is_stale(path)
        path = _write_claim(d, rid, host=socket.gethostname(), pid=sleeper.pid, start=str(int(start) - 1),
                            time=time.time())
        assert claims._claim_is_stale(path)
        assert runner.run_one(StudyFolder(d), rid, notebooks=False) == "done"
    finally:
        sleeper.kill()
        sleeper.wait()


def test_empty_claim_left_by_a_kill_between_create_and_write_is_recovered(one_run_study):
    d, rid = one_run_study
    path = _write_claim(d, rid)  # O_EXCL create happened, the JSON never got written
    old = time.time() - 600
    os.utime(path, (old, old))
    assert not StudyFolder(d).is_claimed(rid)
    assert runner.run_one(StudyFolder(d), rid, notebooks=False) == "done"


def test_run_finished_by_another_launcher_just_before_the_claim_is_not_trained_again(one_run_study, monkeypatch):
    """The window between run_one's status check and its claim: another process finishes the run
    (and releases its claim) in between. The claimant must see the record and not train."""
    d, rid = one_run_study
    finished = runner.train_and_record(d, rid)
    path = StudyFolder(d).run(rid).record
    saved = path.read_text()
    path.unlink()
    real_claim = StudyFolder.claim

    def claim_after_other_finished(folder, run_id):
        path.write_text(saved)
        return real_claim(folder, run_id)

    monkeypatch.setattr(StudyFolder, "claim", claim_after_other_finished)
    monkeypatch.setattr(runner, "train_and_record", lambda *a, **k: pytest.fail("trained a finished run"))
    assert runner.run_one(StudyFolder(d), rid, notebooks=False) == "done"
    assert StudyFolder(d).read_record(rid)["history"] == finished["history"]
    assert not StudyFolder(d).run(rid).claim.exists()


@pytest.mark.slurm
def test_claim_from_another_node_is_stale_once_its_slurm_job_has_ended(one_run_study, slurm_cluster):
    d, rid = one_run_study
    job = subprocess.run(["sbatch", "--parsable", "-p", slurm_cluster.partition or "debug", "-o", "/dev/null",
                          "--wrap", "sleep 60"], capture_output=True, text=True, check=True).stdout.strip()
    try:
        wait_for(lambda: subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True,
                                        text=True).stdout.strip() == "RUNNING", 60, "the job to run")
        _write_claim(d, rid, host="another-node", pid=1, time=time.time(), slurm_job=job)
        assert StudyFolder(d).is_claimed(rid)
        assert runner.run_one(StudyFolder(d), rid, notebooks=False) == "claimed"
    finally:
        subprocess.run(["scancel", job])
    wait_for(lambda: not subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip(),
             60, "the job to end")
    assert not StudyFolder(d).is_claimed(rid)
    assert runner.run_one(StudyFolder(d), rid, notebooks=False) == "done"


# ---- 7. safe by construction ------------------------------------------------------------------

def test_yaml_code_tags_are_rejected(tmp_path):
    marker = tmp_path / "pwned"
    prof = tmp_path / "evil.yaml"
    prof.write_text(yaml.safe_dump({"name": "evil", "model": "m", "tasks": ["gen_sent"], "seeds": [1],
                                    "output_dir": str(tmp_path / "out")})
                    + f'description: !!python/object/apply:os.system ["touch {marker}"]\n')
    r = cli("plan", prof)
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and str(prof) in r.stderr
    r = cli("plan", "demo", "--set", f'description=!!python/object/apply:os.system ["touch {marker}"]')
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and "description" in r.stderr
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_set_values_are_data_never_code(tmp_path):
    marker = tmp_path / "pwned"
    value = f"__import__('os').system('touch {marker}')"
    st = study.open_study(REPO / "params" / "demo.yaml", [f"description={value}", f"name=x{os.getpid()}"])
    assert st.profile.description == value
    r = cli("plan", "demo", "--quiet", "--set", f"description={value}")
    assert r.returncode == 0, r.stderr
    r = cli("train", "--set", f"model={value}", "--tasks", "gen_sent", "--out", tmp_path / "run")
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and "run parameter 'model'" in r.stderr, r.stderr
    assert not marker.exists()


def test_resume_checkpoint_with_pickled_code_is_refused(tmp_path, tiny_roberta):
    """state.pt is read with weights_only=True: a pickle that would run code is a corrupt checkpoint."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    spec = RunSpec.model_validate(single_spec(tiny_roberta, size=48, epochs=1, **OLD_DEFAULTS))
    reference = train_mod.train(spec, RunFolder(tmp_path / "ref"), progress=False, log=lambda m: None)
    out = tmp_path / "run"
    (out / "resume").mkdir(parents=True)
    shutil.copy(tmp_path / "ref" / "resume" / "model.safetensors", out / "resume" / "model.safetensors")
    torch.save({"step": 1, "evil": Evil()}, out / "resume" / "state.pt")
    messages = []
    record = train_mod.train(spec, RunFolder(out), progress=False, log=messages.append)
    assert not marker.exists()
    assert any("corrupt" in m and "scratch" in m for m in messages), messages
    same_training(record, reference)


def test_no_code_evaluation_or_unsafe_loading_in_the_package():
    """A static guard: no eval/exec, YAML only through safe_load/safe_dump, pickle never, torch.load
    only with weights_only=True."""
    bad = []
    files = list((REPO / "mtlstudy").glob("*.py")) + list((REPO / "notebooks").glob("*.ipynb"))
    for path in files:
        text = path.read_text()
        for pattern in (r"(?<![.\w])eval\(", r"(?<![.\w])exec\(", r"yaml\.load\(", r"yaml\.unsafe_load", r"yaml\.Loader",
                        r"yaml\.FullLoader", r"\bpickle\.loads?\(", r"torch\.load\((?![^)]*weights_only=True)"):
            for m in re.finditer(pattern, text):
                bad.append(f"{path.name}: {text[max(0, m.start() - 30):m.end() + 30]!r}")
    assert not bad, bad


def test_run_notebook_gets_its_parameters_as_literals(tmp_path, monkeypatch):
    """The run notebook, executed by the real papermill, receives study_dir and run_id exactly,
    whatever characters they hold: a stand-in notebook writes what it received to a file, and no
    shell or code in the folder name runs."""
    import nbformat

    stand_in = tmp_path / "echo.ipynb"
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('study_dir = ""\nrun_id = ""')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(
        "import json, pathlib\n"
        "pathlib.Path(study_dir, 'runs', run_id, 'seen.json').write_text(json.dumps([study_dir, run_id]))")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, stand_in)
    monkeypatch.setattr(runner, "NOTEBOOK", stand_in)
    nasty = tmp_path / "a\"b'c\\d $(touch x); __import__('os')"
    (nasty / "runs" / "r").mkdir(parents=True)
    runner._execute_notebook(StudyFolder(nasty), "r")
    assert json.loads((nasty / "runs" / "r" / "seen.json").read_text()) == [str(nasty.resolve()), "r"]
    assert not (tmp_path / "x").exists() and not Path("x").exists()
    assert (nasty / "runs" / "r" / "run.ipynb").exists()


# ---- 8. disk ------------------------------------------------------------------------------------

def test_finished_study_keeps_no_checkpoints_and_status_reports_disk_use(finished_study):
    st, *_ = finished_study
    assert not list(st.dir.rglob("resume")) and not list(st.dir.rglob("best"))
    assert not list(st.dir.rglob("*.safetensors")) and not list(st.dir.rglob("state.pt"))
    r = cli("status", st.dir.parent.parent / "twice.yaml")
    assert r.returncode == 0, r.stderr
    m = re.search(r"disk use: ([0-9.]+) MB", r.stdout)
    assert m, r.stdout
    actual = sum(p.stat().st_size for p in st.dir.rglob("*") if p.is_file()) / 1e6
    assert abs(float(m.group(1)) - actual) < 0.2
    assert "done 4" in r.stdout
    table = pd.read_csv(st.dir / "results.csv")
    assert table["majority_score"].notna().all() and (table["constant_score"] >= table["majority_score"]).all()


def test_status_lists_collapsed_runs_with_their_reason(finished_study, tmp_path):
    """A run whose best dev score is within 1 point of its task's best one-class level is listed;
    one 1.5 points above it is not. The scores are set in a copy of the finished study's records."""
    st, *_ = finished_study
    prof = yaml.safe_load((st.dir.parent.parent / "twice.yaml").read_text())
    prof["output_dir"] = str(tmp_path / "outputs")
    (tmp_path / "twice.yaml").write_text(yaml.safe_dump(prof))
    copy = shutil.copytree(st.dir, tmp_path / "outputs" / "twice")
    records = read_records(copy)
    (low, low_task), (high, high_task) = [(rid, rec["scored_tasks"][0]) for rid, rec in sorted(records.items())[:2]]
    for rid, task, above in ((low, low_task, 0.5), (high, high_task, 1.5)):
        rec = records[rid]
        rec["best"][task]["score"] = rec["constant_scores"][task] + above
        (copy / "runs" / rid / "result.json").write_text(json.dumps(rec))
    r = cli("status", tmp_path / "twice.yaml")
    assert r.returncode == 0, r.stderr
    listed = set(re.findall(r"collapsed (\S+) \((\S+)\): best dev score [0-9.]+ is at", r.stdout))
    assert (low, low_task) in listed and (high, high_task) not in listed, r.stdout


def test_leftover_resume_checkpoint_of_a_finished_run_is_removed(one_run_study):
    """Killed between writing its record and removing its resume checkpoint: the next cleanup removes it."""
    d, rid = one_run_study
    assert runner.run_one(StudyFolder(d), rid, notebooks=False) == "done"
    for name in ("resume", "resume.old", "resume.tmp"):
        (StudyFolder(d).run(rid).path / name).mkdir()
        (StudyFolder(d).run(rid).path / name / "state.pt").write_bytes(b"x" * 1000)
    StudyFolder(d).clean_checkpoints()
    assert sorted(p.name for p in StudyFolder(d).run(rid).path.iterdir()) == ["result.json"]
