"""submit_waves / wait_all against the real single-node Slurm cluster of .ci/slurm-up.sh."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pydantic
import pytest
import submitit

from mtlstudy.profile import SlurmSettings
from mtlstudy.slurm import (
    executor_parameters,
    job_outcome,
    slurm_unavailable_reason,
    submit_waves,
    wait_all,
)
from tests import slurm_jobs
from tests.slurm_fixture import requeue_now, slurm_cluster, squeue_state  # noqa: F401 (fixture)


def _records(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}


def test_unavailable_without_sbatch(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    reason = slurm_unavailable_reason()
    assert isinstance(reason, str) and "sbatch" in reason


def test_settings_and_parameters():
    with pytest.raises(pydantic.ValidationError):
        SlurmSettings(partitions="debug")
    params = executor_parameters(
        SlurmSettings(partition="gpu", gpus_per_run=2, cpus_per_run=8, mem_gb=32, time_min=90,
                      additional={"account": "nlp", "exclusive": ""}),
        job_name="x",
    )
    assert params["slurm_partition"] == "gpu" and params["slurm_gres"] == "gpu:2"
    assert params["cpus_per_task"] == 8 and params["mem_gb"] == 32 and params["timeout_min"] == 90
    assert params["slurm_additional_parameters"] == {"requeue": True, "open_mode": "append", "account": "nlp",
                                                    "exclusive": True}
    assert "slurm_gres" not in executor_parameters(SlurmSettings())


def test_account_qos_and_constraint_reach_the_sbatch_script(tmp_path):
    """slurm.account, .qos and .constraint: submitit's own parameters, written as #SBATCH lines
    by submitit's sbatch writer (no cluster needed)."""
    from submitit.slurm.slurm import _make_sbatch_string

    params = executor_parameters(SlurmSettings(account="lab", qos="high", constraint="a100"))
    assert (params["slurm_account"], params["slurm_qos"], params["slurm_constraint"]) == ("lab", "high", "a100")
    own = {k[len("slurm_"):]: v for k, v in params.items() if k.startswith("slurm_")}
    script = _make_sbatch_string(command="true", folder=tmp_path, **own)
    for line in ("#SBATCH --account=lab", "#SBATCH --qos=high", "#SBATCH --constraint=a100"):
        assert line in script
    with pytest.raises(pydantic.ValidationError, match="account given twice"):
        SlurmSettings(account="lab", additional={"account": "other"})


def test_a_job_at_its_time_limit_records_its_run_failed(tmp_path, monkeypatch):
    """submitit signals a job 90 s before its time limit (`--signal=USR2@90`); run_one is not
    checkpointable, so submitit raises UncompletedJobError inside it: the run is recorded failed
    (its resume checkpoint kept for `--retry-failed`), not requeued (docs/executors.md)."""
    from submitit.core.utils import UncompletedJobError

    from mtlstudy import runner
    from mtlstudy.study import open_study
    from tests.profiles import tiny_profile

    study = open_study(tiny_profile(tmp_path, "some-model"))
    folder = study.write()
    run_id = study.runs[0].run_id

    def timed_out(folder, run_id):
        raise UncompletedJobError("Job not requeued because: timed-out and not checkpointable.")

    monkeypatch.setattr(runner, "train_and_record", timed_out)
    assert not hasattr(runner.run_one, "checkpoint")  # what submitit would call to requeue instead
    assert runner.run_one(folder, run_id, notebooks=False) == "failed"
    assert "timed-out" in dict(folder.failures())[run_id]


@pytest.mark.slurm
def test_two_waves_run_in_order(slurm_cluster, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    waves = [
        [(str(out), "a", 1.0), (str(out), "b", 1.0)],
        [(str(out), "c", 0.1, ("a", "b")), (str(out), "d", 0.1, ("a", "b"))],
    ]
    seen = []
    t0 = time.monotonic()
    jobs = submit_waves(slurm_jobs.stamp, waves, tmp_path / "logs", slurm_cluster, job_name="t-waves")
    wait_all(jobs, poll_s=0.5, timeout_s=90, progress=lambda done, total: seen.append((done, total)))
    elapsed = time.monotonic() - t0
    assert [len(w) for w in jobs] == [2, 2]
    assert [[j.result() for j in w] for w in jobs] == [["a", "b"], ["c", "d"]]
    rec = _records(out)
    assert sorted(rec) == ["a", "b", "c", "d"]
    wave1_end = max(rec["a"]["end"], rec["b"]["end"])
    assert min(rec["c"]["start"], rec["d"]["start"]) >= wave1_end
    assert seen[-1] == (4, 4) and all(total == 4 for _, total in seen)
    # the submission carries the requeue flag and the dependency on wave 1's array
    script = (tmp_path / "logs" / f"{jobs[1][0].job_id.split('_')[0]}_submission.sh").read_text()
    assert "#SBATCH --requeue" in script and "#SBATCH --open-mode=append" in script
    assert f"#SBATCH --dependency=afterany:{jobs[0][0].job_id.split('_')[0]}" in script
    print(f"two waves of 2 tiny runs: {elapsed:.1f} s from submit to all done")


@pytest.mark.slurm
def test_failed_run_does_not_block_next_wave(slurm_cluster, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    waves = [
        [(str(out), "ok", 0.1, (), False), (str(out), "bad", 0.1, (), True)],
        [(str(out), "next", 0.1, ("ok",), False)],  # a single run: a plain job, not an array
    ]
    jobs = submit_waves(slurm_jobs.stamp, waves, tmp_path / "logs", slurm_cluster)
    wait_all(jobs, poll_s=0.5, timeout_s=90)
    assert jobs[0][0].result() == "ok"
    with pytest.raises(submitit.core.utils.FailedJobError, match="failing on purpose"):
        jobs[0][1].result()
    assert jobs[1][0].result() == "next"
    assert sorted(_records(out)) == ["next", "ok"]
    assert job_outcome(jobs[0][0]) == ("ok", "ok")
    status, message = job_outcome(jobs[0][1])
    assert status == "failed" and "failing on purpose" in message


@pytest.mark.slurm
def test_cancelled_run_is_missing(slurm_cluster, tmp_path):
    settings = slurm_cluster.model_copy(update={"additional": {"begin": "now+600"}})  # stays pending
    [[job]] = submit_waves(slurm_jobs.stamp, [[(str(tmp_path), "never", 0.0)]], tmp_path / "logs", settings)
    assert squeue_state(job.job_id) == "PENDING"
    subprocess.run(["scancel", job.job_id], check=True)
    wait_all([[job]], poll_s=0.2, timeout_s=30)
    status, reason = job_outcome(job)
    assert status == "missing" and "no result file" in reason


@pytest.mark.slurm
def test_requeued_run_runs_again(slurm_cluster, tmp_path):
    path = tmp_path / "runs.txt"
    [[job]] = submit_waves(slurm_jobs.append_and_sleep, [[(str(path), 60.0, 0.5)]], tmp_path / "logs", slurm_cluster)
    deadline = time.monotonic() + 60
    while not (path.exists() and "start" in path.read_text()):
        assert time.monotonic() < deadline, "job did not start"
        time.sleep(0.2)
    assert squeue_state(job.job_id) == "RUNNING"
    # the first run ignores SIGTERM (submitit bypasses it) and is killed after KillWait
    requeue_now(job.job_id)
    wait_all([job], poll_s=0.5, timeout_s=90)
    assert path.read_text().splitlines() == ["start 0", "start 1", "end"]
    assert job.result() == 2
