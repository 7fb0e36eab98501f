"""The local single-node Slurm cluster as a pytest fixture, and a requeue helper for preemption tests.

Use it from conftest.py with ``from tests.slurm_fixture import slurm_cluster``.
The fixture runs .ci/slurm-up.sh once per session (as root: installs slurm-wlm and munge
if needed and starts the daemons) and skips the test with the script's one-line reason
when Slurm cannot be installed or started. With MTLSTUDY_REQUIRE_SLURM=1 in the
environment it fails instead of skipping (for CI, where a skip would hide a broken setup).
"""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from mtlstudy.profile import SlurmSettings
from mtlstudy.slurm import slurm_unavailable_reason

REPO = Path(__file__).resolve().parents[1]
SLURM_UP = REPO / ".ci" / "slurm-up.sh"


def _bring_up() -> str | None:
    """None once the cluster is usable, else a one-line reason."""
    if os.geteuid() != 0:  # cannot install or start daemons: use a cluster that is already up
        reason = slurm_unavailable_reason()
        return None if reason is None else f"not root, so .ci/slurm-up.sh cannot run, and {reason}"
    try:
        proc = subprocess.run(
            ["bash", str(SLURM_UP)],
            capture_output=True,
            text=True,
            timeout=900,
            env={**os.environ, "SLURM_UP_QUIET": "1"},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f".ci/slurm-up.sh did not finish: {exc}".splitlines()[0]
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"]
        return lines[-1]
    return slurm_unavailable_reason()


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmSettings:
    """Bring the local Slurm cluster up; returns settings for tiny runs on it (partition debug)."""
    reason = _bring_up()
    if reason is not None:
        if os.environ.get("MTLSTUDY_REQUIRE_SLURM") == "1":
            pytest.fail(f"Slurm required but unavailable: {reason}")
        pytest.skip(reason)
    return SlurmSettings(partition="debug", cpus_per_run=1, mem_gb=1, time_min=10)


def squeue_state(job_id: str) -> str | None:
    """The job's state as squeue shows it (PENDING, RUNNING, COMPLETING, ...), or None once gone."""
    proc = subprocess.run(["squeue", "-h", "-o", "%T", "-j", str(job_id)], capture_output=True, text=True)
    out = proc.stdout.split()
    return out[0] if proc.returncode == 0 and out else None


def requeue_now(job_id: str, timeout_s: float = 60.0) -> None:
    """``scontrol requeue`` a running job, as a preemption would, and let it start again at once."""
    subprocess.run(["scontrol", "requeue", str(job_id)], check=True, capture_output=True, text=True)
    start_requeued_now(job_id, time.time(), timeout_s)


def start_requeued_now(job_id: str, requeued_at: float, timeout_s: float = 60.0) -> None:
    """Once a requeued job is back to PENDING, reset its begin time (Slurm sets it about 120 s
    ahead) so the rerun starts within seconds.

    Not before 2 s after the requeue: slurmd revokes the old run's job credential with a
    one-second timestamp, and a relaunch within that second is killed at once ("Killing
    non-startable batch JobId=...: Job credential revoked") and leaves the queue.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = squeue_state(job_id)
        if state == "PENDING":
            time.sleep(max(0.0, requeued_at + 2.0 - time.time()))
            subprocess.run(["scontrol", "update", f"jobid={job_id}", "starttime=now"], check=True,
                           capture_output=True, text=True)
            return
        if state is None:
            raise RuntimeError(f"job {job_id} left the queue instead of being requeued")
        time.sleep(0.3)
    raise TimeoutError(f"job {job_id} not back to PENDING {timeout_s} s after scontrol requeue")
