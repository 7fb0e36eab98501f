"""Claims: which process trains a run. A claim is a file created atomically (O_EXCL) in the run's
folder (its place: folder.RunFolder.claim), naming the host, pid (and its start time) and Slurm
job; a claim whose holder is gone is stale and taken over, so a killed launcher or job never
leaves a run locked.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first), or None (no /proc, no process)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _pid_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot: with the pid it names one process, even
    after the pid is reused."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def _pid_alive(pid: int, start: str | None = None) -> bool:
    if pid <= 0:  # os.kill(0, 0) would signal our own process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _proc_stat(pid)
    if fields and fields[0] in ("Z", "X"):  # killed, not yet reaped (a container's PID 1 may never reap it)
        return False
    if start is not None and fields and _pid_start(pid) != start:  # the pid now belongs to another process
        return False
    return True


def _slurm_job_running(job_id: str) -> bool:
    """Whether a Slurm job still runs (or may run on: suspended). Unsure (no squeue, squeue
    failing) counts as running: a run is better left waiting than trained twice at once."""
    try:
        proc = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], capture_output=True, text=True,
                              timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return True
    if proc.returncode != 0:
        return "invalid job id" not in proc.stderr.lower()
    states = set(proc.stdout.split())
    return bool(states & {"RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "STOPPED", "SIGNALING",
                          "STAGE_OUT", "RESIZING"})


# a claim file is created empty, then written at once: empty for longer than this means its writer died
EMPTY_CLAIM_GRACE_S = 60


def _read_claim(path: Path) -> dict | None:
    """A claim file's fields; {} for one that is empty or unreadable, None when there is none."""
    try:
        text = path.read_text()
        other = json.loads(text) if text.strip() else {}
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError):
        return {}
    return other if isinstance(other, dict) else {}


def _claim_holder(path: Path) -> str:
    """Who holds a claim: "none" (nobody any more: a dead process on this host; a Slurm job that no
    longer runs, on any host; this very Slurm job, requeued, which takes its run back; a file left
    empty by a process killed between creating and writing it), "live" (a process or Slurm job
    seen running), or "unchecked" (a process on another host outside Slurm: it cannot be checked
    from here, so it counts as holding the run)."""
    other = _read_claim(path)
    if other is None:
        return "none"
    if not other:
        try:
            return "none" if time.time() - path.stat().st_mtime > EMPTY_CLAIM_GRACE_S else "live"
        except OSError:
            return "none"
    job = os.environ.get("SLURM_JOB_ID")
    if job and other.get("slurm_job") == job:  # a requeued job
        return "none"
    if other.get("host") == socket.gethostname():
        return "live" if _pid_alive(int(other.get("pid") or 0), other.get("start")) else "none"
    if other.get("slurm_job"):
        return "live" if _slurm_job_running(other["slurm_job"]) else "none"
    return "unchecked"


def _claim_is_stale(path: Path) -> bool:
    return _claim_holder(path) == "none"


def claim(path: Path) -> bool:
    """Take the run by creating its claim file `path` with O_EXCL. A stale claim (see
    _claim_is_stale) is taken over."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "start": _pid_start(os.getpid()), "time": time.time(),
          "slurm_job": os.environ.get("SLURM_JOB_ID")}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if not _claim_is_stale(path):
                return False
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return True
    return False


def holder(path: Path) -> str:
    """Who holds the claim file `path`: "none", "live" or "unchecked" (see _claim_holder)."""
    return _claim_holder(Path(path))  # a missing file: "none"


def describe(path: Path) -> str:
    """Who trains the run of a held claim: "pid 123 on host, for 4 min", with the Slurm job where
    there is one, "(unchecked)" for another host outside Slurm; "" when nobody holds it."""
    who_holds = holder(path)
    if who_holds == "none":
        return ""
    claim_of = _read_claim(Path(path)) or {}
    who = f"pid {claim_of.get('pid', '?')} on {claim_of.get('host', '?')}"
    if claim_of.get("slurm_job"):
        who += f", Slurm job {claim_of['slurm_job']}"
    if claim_of.get("time"):
        who += f", for {(time.time() - claim_of['time']) / 60:.0f} min"
    return who + (" (another host outside Slurm: unchecked)" if who_holds == "unchecked" else "")
