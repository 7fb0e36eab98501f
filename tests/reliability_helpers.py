"""Helpers for the reliability tests: tiny profiles, the CLI in a subprocess, waiting and killing."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.profiles import tiny_profile

REPO = Path(__file__).resolve().parents[1]


def rel_profile(folder: Path, model, name: str = "rel", **changes) -> Path:
    """Two generated tasks, one seed, single + STILTs (4 runs in 2 waves; with methods=[..., "mtl"]
    a pairwise MTL run with the dynamic 'gap' sampler too), each a second of training on the tiny model."""
    return tiny_profile(folder, model, name, **{
        "methods": ["single", "stilts"], "data.generated_sizes": {"gen_para": 160, "gen_sent": 96},
        "train.epochs": 2, "train.device": "cpu",  # exact comparisons: CPU kernels are deterministic
        **changes})


def cli_env(**extra) -> dict:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def cli(*args, cwd=REPO, env=None, timeout=300) -> subprocess.CompletedProcess:
    """`python -m mtlstudy.cli ARGS`, to completion."""
    return subprocess.run([sys.executable, "-m", "mtlstudy.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, env=env or cli_env(), timeout=timeout)


def start_cli(*args, log: Path, cwd=REPO, env=None) -> subprocess.Popen:
    """Start `python -m mtlstudy.cli ARGS` in its own process group (so it and its workers can be
    killed together), output to `log`."""
    f = open(log, "ab")
    return subprocess.Popen([sys.executable, "-m", "mtlstudy.cli", *map(str, args)], cwd=cwd, stdout=f,
                            stderr=subprocess.STDOUT, env=env or cli_env(), start_new_session=True)


def wait_for(predicate, timeout: float, what: str, poll: float = 0.05, proc: subprocess.Popen | None = None):
    """Poll until predicate() is truthy; fail after `timeout` s or when `proc` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited (rc {proc.returncode}) before {what}")
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def resume_point(run_dir: Path) -> tuple[Path, dict] | None:
    """The checkpoint a restart resumes from, as Resume.load picks it: resume/, or resume.old/ when
    a kill came between the two renames that replace one by the next; with its state (step, epoch,
    ...). None when there is none yet (or it is being replaced right now)."""
    import torch

    for folder in (Path(run_dir) / "resume", Path(run_dir) / "resume.old"):
        try:
            return folder, torch.load(folder / "state.pt", weights_only=True)
        except Exception:  # noqa: BLE001 - absent or mid-rename
            continue
    return None


def checkpoint_state(run_dir: Path) -> dict | None:
    point = resume_point(run_dir)
    return None if point is None else point[1]


def checkpoint_step(run_dir: Path) -> int | None:
    state = checkpoint_state(run_dir)
    return None if state is None else int(state["step"])


def kill_group(proc: subprocess.Popen):
    """SIGKILL the process group of `proc` (it and every worker it started)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def kill_group_when(predicate, proc: subprocess.Popen, timeout: float, what: str, poll: float = 0.02):
    """SIGKILL the process group of `proc` at a moment when predicate() holds. Seeing it hold and
    killing are not one step (a fast run can finish in between), so the group is frozen (SIGSTOP)
    first and predicate() asked again: it holds -> kill; not any more -> thaw and wait again.
    Returns the value predicate() gave while the group was frozen."""
    deadline = time.monotonic() + timeout
    while True:
        wait_for(predicate, deadline - time.monotonic(), what, poll=poll, proc=proc)
        os.killpg(proc.pid, signal.SIGSTOP)
        try:
            value = predicate()
        except BaseException:  # never leave a stopped group behind (it is in its own session)
            kill_group(proc)
            raise
        if value:
            kill_group(proc)
            return value
        os.killpg(proc.pid, signal.SIGCONT)


def dead_pid() -> int:
    """The pid of a process that has exited."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def read_records(study_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (Path(study_dir) / "runs").glob("*/result.json")}


def mtimes(study_dir: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in (Path(study_dir) / "runs").glob("*/result.json")}


def starts_in_log(run_dir: Path) -> tuple[int, int]:
    """(trainings started from scratch, resumptions) recorded in a run's log.txt."""
    text = (Path(run_dir) / "log.txt").read_text() if (Path(run_dir) / "log.txt").exists() else ""
    return text.count("training from scratch"), text.count("resuming from")
