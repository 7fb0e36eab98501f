"""The Slurm executor: a study's runs through submitit, wave after wave.

Each wave is one job array (``executor.map_array``); wave k carries an ``afterany``
dependency on every job of wave k-1, so wave k starts only once wave k-1 has left the
queue, whether its runs succeeded or not (the function run in wave k checks its inputs).
Jobs are submitted with ``--requeue``, so a preempted job goes back to the queue.

Job outcomes are read from submitit's result files (``job.result()`` once the job has
left the queue) and queue membership from ``squeue``: on clusters without accounting
(the local test cluster of ``.ci/slurm-up.sh``) ``sacct`` fails and submitit's own job
states are unreliable.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from tqdm.auto import tqdm

from .errors import UserError
from .folder import StudyFolder
from .local import show_progress
from .profile import SlurmSettings
from .runner import run_one
from .workers import THREAD_VARIABLES

if TYPE_CHECKING:  # submitit is only imported when jobs are submitted
    import submitit

# Slurm's default MaxArraySize is 1001 (indices 0..1000): larger waves are split in arrays of this size.
MAX_ARRAY_SIZE = 1000


class SlurmUnavailable(UserError):
    """The Slurm executor was asked for on a machine where Slurm does not answer."""


def check_available() -> None:
    """Raise SlurmUnavailable, naming the reason, unless Slurm answers here."""
    reason = slurm_unavailable_reason()
    if reason:
        raise SlurmUnavailable(f"executor slurm: {reason}")


def slurm_unavailable_reason() -> str | None:
    """None when ``sbatch`` is on PATH and ``sinfo`` answers with a partition, else a one-line reason."""
    for cmd in ("sbatch", "squeue", "sinfo"):
        if shutil.which(cmd) is None:
            return f"{cmd} not found on PATH"
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%P %a"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sinfo did not answer: {exc}".splitlines()[0]
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return f"sinfo failed (exit {proc.returncode}): {lines[0] if lines else 'no output'}"
    if not proc.stdout.strip():
        return "sinfo lists no partition"
    return None


def executor_parameters(settings: SlurmSettings, job_name: str = "mtlstudy") -> dict[str, Any]:
    """The ``AutoExecutor.update_parameters`` arguments for ``settings`` (without the dependency)."""
    # requeue: a preempted or failed node puts the job back; open_mode append: the requeued job's
    # log continues the first attempt's instead of overwriting it
    additional: dict[str, Any] = {"requeue": True, "open_mode": "append"}
    for key, value in settings.additional.items():
        additional[key] = True if value == "" else value
    params: dict[str, Any] = {
        "name": job_name,
        "nodes": 1,
        "tasks_per_node": 1,
        "cpus_per_task": settings.cpus_per_run,
        "mem_gb": settings.mem_gb,
        "timeout_min": settings.time_min,
        "slurm_additional_parameters": additional,
    }
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(settings, key):
            params[f"slurm_{key}"] = getattr(settings, key)
    if settings.gpus_per_run:
        params["slurm_gres"] = f"gpu:{settings.gpus_per_run}"
    # each run's threads from the CPUs its job is given, not from the node's (a value set is kept)
    params["slurm_setup"] = [f'export {name}="${{{name}:-{settings.cpus_per_run}}}"' for name in THREAD_VARIABLES]
    return params


def _import_root(fn: Callable) -> Path | None:
    """The folder to put on PYTHONPATH so that ``fn``'s module imports in the job (None if unknown)."""
    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    file = getattr(module, "__file__", None)
    if module is None or file is None or module.__name__ == "__main__":
        return None
    path = Path(file).resolve()
    depth = len(module.__name__.split("."))
    if path.name == "__init__.py":
        depth += 1
    return path.parents[depth - 1]


def _base_id(job_id: str) -> str:
    return str(job_id).split("_")[0]


def submit_waves(
    fn: Callable,
    waves: list[list[tuple]],
    folder: Path,
    settings: SlurmSettings,
    job_name: str = "mtlstudy",
) -> list[list["submitit.Job"]]:
    """Submit wave k as one submitit job array (executor.map_array) with an `afterany`
    dependency on every job of wave k-1, so a failed run does not cancel the next wave
    (the function itself checks its inputs). Logs go to `folder`. Returns the jobs.

    ``fn`` is a module-level function; each tuple holds its positional arguments.
    An empty wave submits nothing and the next wave depends on the last non-empty one.
    """
    import submitit

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    params = executor_parameters(settings, job_name)
    root = _import_root(fn)
    if root is not None:
        params["slurm_setup"].append(f'export PYTHONPATH="{root}${{PYTHONPATH:+:$PYTHONPATH}}"')
    base_additional = params.pop("slurm_additional_parameters")
    executor.update_parameters(**params)

    out: list[list[submitit.Job]] = []
    previous: list[str] = []  # array/job ids of the last non-empty wave
    for wave in waves:
        jobs: list[submitit.Job] = []
        additional = dict(base_additional)
        if previous:
            additional["dependency"] = "afterany:" + ":".join(previous)
        executor.update_parameters(slurm_additional_parameters=additional)
        for start in range(0, len(wave), MAX_ARRAY_SIZE):
            chunk = [tuple(args) for args in wave[start : start + MAX_ARRAY_SIZE]]
            if len({len(args) for args in chunk}) != 1:
                raise ValueError("all argument tuples of a wave must have the same length")
            if not chunk[0]:  # a function without arguments
                with executor.batch():
                    batch = [executor.submit(fn) for _ in chunk]
                jobs.extend(batch)
            else:
                jobs.extend(executor.map_array(fn, *[list(col) for col in zip(*chunk)]))
        if jobs:
            previous = list(dict.fromkeys(_base_id(j.job_id) for j in jobs))
        out.append(jobs)
    return out


def job_outcome(job: "submitit.Job") -> tuple[str, Any]:
    """What became of a job that has left the queue (call after wait_all), without asking sacct:

    ("ok", return value), ("failed", error text from the job's traceback), or
    ("missing", reason) when there is no result file: cancelled, killed at its time limit,
    out of memory, or node failure. (Without accounting, submitit's own ``job.result()``
    waits forever on such a job, since ``sacct`` cannot say it ended.)
    """
    if not job.paths.result_pickle.exists():
        return "missing", f"no result file for job {job.job_id} (cancelled, timed out or killed); see {job.paths.stderr}"
    try:
        return "ok", job.result()
    except Exception as exc:  # submitit.core.utils.FailedJobError with the job's traceback
        return "failed", str(exc)


def _flatten(jobs: Iterable[Any]) -> list[Any]:
    flat: list[Any] = []
    for item in jobs:
        if isinstance(item, (list, tuple)):
            flat.extend(_flatten(item))
        else:
            flat.append(item)
    return flat


def queued_job_ids(job_ids: Sequence[str]) -> set[str]:
    """Those of ``job_ids`` ("123" or array tasks "123_4") that ``squeue`` still lists (any state)."""
    bases = sorted({_base_id(j) for j in job_ids})
    if not bases:
        return set()
    proc = subprocess.run(
        ["squeue", "-h", "-r", "-o", "%i", "-j", ",".join(bases)], capture_output=True, text=True, timeout=60
    )
    if proc.returncode != 0:
        if "Invalid job id" in proc.stderr:  # a single job id that slurmctld has already forgotten
            return set()
        raise RuntimeError(f"squeue failed (exit {proc.returncode}): {proc.stderr.strip()}")
    listed = set(proc.stdout.split())
    return {j for j in job_ids if str(j) in listed}


def wait_all(
    jobs: Iterable[Any],
    poll_s: float = 2.0,
    timeout_s: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Wait until all ``jobs`` (submitit jobs, or lists of them as returned by submit_waves)
    have left the Slurm queue. Uses squeue, not sacct. ``progress(done, total)`` is called
    at the start and whenever the count of finished jobs changes. Raises TimeoutError."""
    ids = [str(j.job_id) for j in _flatten(jobs)]
    total = len(ids)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    last_done = -1
    failures = 0
    while True:
        try:
            remaining = queued_job_ids(ids)
            failures = 0
        except (RuntimeError, OSError, subprocess.TimeoutExpired):
            failures += 1  # slurmctld busy or restarting: retry a few times
            if failures >= 5:
                raise
            remaining = None
        if remaining is not None:
            done = total - len(remaining)
            if progress is not None and done != last_done:
                progress(done, total)
            last_done = done
            if not remaining:
                return
        if deadline is not None and time.monotonic() >= deadline:
            left = total - max(last_done, 0)
            raise TimeoutError(f"{left} of {total} Slurm jobs still queued after {timeout_s} s")
        time.sleep(poll_s)


# ---- the Slurm executor -------------------------------------------------------------------

def _waves(runs: dict) -> list[list[str]]:
    depth = {}

    def d(r):
        if r not in depth:
            depth[r] = 1 + max((d(x) for x in runs[r]["deps"]), default=-1)
        return depth[r]

    for r in runs:
        d(r)
    return [[r for r in runs if depth[r] == k] for k in range(max(depth.values(), default=-1) + 1)]


def run_slurm(folder: StudyFolder, settings: SlurmSettings, notebooks: bool = True, progress: bool = True) -> dict:
    """Submit the pending runs as job arrays, one per dependency wave (afterany: each run checks
    its own dependencies and is blocked, not lost, when one failed); wait; report."""
    check_available()
    waves = [[(folder, r, notebooks) for r in w if folder.status[r] != "done"] for w in _waves(folder.runs)]
    waves = [w for w in waves if w]
    if waves:
        jobs = submit_waves(run_one, waves, folder.slurm_logs, settings, job_name=f"mtl-{folder.name}")
        bar = tqdm(total=sum(len(w) for w in waves), desc=f"slurm {folder.name}", disable=not progress, unit="run")
        t0 = time.time()

        def show(done, total):
            folder.reload()
            counts = folder.counts()
            show_progress(bar, done, done, total - done - counts["blocked"], time.time() - t0,
                          failed=counts["failed"], blocked=counts["blocked"])

        wait_all(jobs, progress=show)
        bar.close()
    folder.clean_checkpoints()
    folder.reload()
    return folder.counts()
