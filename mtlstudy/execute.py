"""Execute a study: every run not yet done, in dependency order, locally or on Slurm.

A run is executed by `run_one(study_dir, run_id)`: it claims the run (a file created
atomically; a claim of a dead process is recovered), resolves what it needs from finished runs
(STILTs support checkpoint, dynamic-sampler reference scores), trains through the notebook
notebooks/run.ipynb (papermill) or directly, and writes result.json atomically: status done, or
failed with the reason. Runs whose dependencies failed are blocked; independent runs go on.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import store
from .plan import PlannedRun, Profile, compute_summary
from .spec import RunSpec

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "run.ipynb"


# ---- the study folder ----------------------------------------------------------------------

def write_study(profile: Profile, plan: list[PlannedRun], user) -> Path:
    """study.json (profile, task sizes) and plan.json (every run's spec and dependencies)."""
    from .plan import task_size

    d = profile.study_dir
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise PermissionError(f"{d}: output folder is not writable ({e.strerror})") from None
    sizes = {t: task_size(profile, user, t) for t in profile.tasks}
    store.write_json_atomic(d / "study.json", {"name": profile.name, "profile": profile.model_dump(mode="json"),
                                               "task_sizes": sizes, "paper": profile.paper})
    store.write_json_atomic(d / "plan.json", {r.run_id: {"spec": r.spec.model_dump(mode="json"), "deps": r.deps,
                                                         "kind": r.kind} for r in plan})
    return d


def load_planned(study_dir: Path) -> dict[str, dict]:
    return store.read_json(Path(study_dir) / "plan.json")


def run_status(study_dir: Path, run_id: str) -> str:
    """done | failed | pending (no record, or a corrupt one: that run is simply redone)."""
    try:
        rec = store.read_result(study_dir, run_id)
    except store.CorruptResultError:
        return "pending"
    return "pending" if rec is None else rec.get("status", "pending")


# ---- claims ----------------------------------------------------------------------------------

def _claim_path(study_dir, run_id):
    return store.run_dir(study_dir, run_id) / "claim.json"


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


def claim(study_dir: Path, run_id: str) -> bool:
    """Take the run by creating its claim file with O_EXCL. A stale claim (see _claim_is_stale)
    is taken over."""
    path = _claim_path(study_dir, run_id)
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


def held_elsewhere(study_dir: Path, run_id: str) -> str:
    """Who holds the run's claim: "none", "live" or "unchecked" (see _claim_holder)."""
    path = _claim_path(study_dir, run_id)
    return _claim_holder(path) if path.exists() else "none"


def is_claimed(study_dir: Path, run_id: str) -> bool:
    """Claimed by a live process, or one on another host that cannot be checked (a stale claim does not count)."""
    return held_elsewhere(study_dir, run_id) != "none"


def runs_in_flight(study_dir: Path) -> list[tuple[str, str]]:
    """(run id, who trains it) for every unfinished run whose claim is held: "pid 123 on host,
    for 4 min", with the Slurm job where there is one, "(unchecked)" for another host outside Slurm."""
    out = []
    for rid in load_planned(study_dir):
        if run_status(study_dir, rid) != "pending" or (holder := held_elsewhere(study_dir, rid)) == "none":
            continue
        claim_of = _read_claim(_claim_path(study_dir, rid)) or {}
        who = f"pid {claim_of.get('pid', '?')} on {claim_of.get('host', '?')}"
        if claim_of.get("slurm_job"):
            who += f", Slurm job {claim_of['slurm_job']}"
        if claim_of.get("time"):
            who += f", for {(time.time() - claim_of['time']) / 60:.0f} min"
        out.append((rid, who + (" (another host outside Slurm: unchecked)" if holder == "unchecked" else "")))
    return out


def release(study_dir: Path, run_id: str):
    _claim_path(study_dir, run_id).unlink(missing_ok=True)


# ---- one run ----------------------------------------------------------------------------------

def _best_support_checkpoint(study_dir: Path, spec: RunSpec) -> Path:
    records = [store.read_result(study_dir, rid) for rid in spec.support_runs]
    support = spec.tasks[0]
    scores = np.array([r["best"][support]["selection_score"] for r in records])
    if spec.support_choice == "best":
        i = int(np.argmax(scores))  # first on ties
    else:
        i = int(np.argmin(np.abs(scores - scores.mean())))
    path = store.run_dir(study_dir, spec.support_runs[i]) / "best" / support
    if not (path / "model.safetensors").exists():
        raise FileNotFoundError(f"{path}: support checkpoint missing (was it cleaned up early?)")
    return path


def _reference_scores(study_dir: Path, spec: RunSpec) -> dict[str, float]:
    """Mean single-task dev score per task over its seeds (the dynamic samplers' reference)."""
    out = {}
    for task, rids in spec.reference_runs.items():
        out[task] = float(np.mean([store.read_result(study_dir, r)["best"][task]["selection_score"] for r in rids]))
    return out


def inputs_for(study_dir: Path, run_id: str) -> tuple[RunSpec, dict]:
    """The run's spec and what it needs from earlier runs (raises if a dependency is not done)."""
    entry = load_planned(study_dir)[run_id]
    spec = RunSpec.model_validate(entry["spec"])
    for dep in entry["deps"]:
        if run_status(study_dir, dep) != "done":
            raise RuntimeError(f"dependency {dep} is not done")
    kwargs = {}
    if spec.method == "stilts":
        kwargs["init_checkpoint"] = _best_support_checkpoint(study_dir, spec)
    if spec.reference_runs:
        kwargs["reference_scores"] = _reference_scores(study_dir, spec)
    return spec, kwargs


def train_and_record(study_dir: str | Path, run_id: str, progress: bool = False) -> dict:
    """Train the run and write its result.json (called by the run notebook, or directly)."""
    from .train import train

    study_dir = Path(study_dir)
    spec, kwargs = inputs_for(study_dir, run_id)
    out = store.run_dir(study_dir, run_id)
    record = train(spec, out, progress=progress, **kwargs)
    record["tags"] = {**spec.tags, "study": study_dir.name}
    if spec.method == "stilts":
        sup = store.read_result(study_dir, Path(kwargs["init_checkpoint"]).parent.parent.name)
        record["support_run"] = sup["run_id"]
        record["support_train_size"] = sup["train_sizes"][spec.tasks[0]]
    store.write_json_atomic(out / "result.json", record)
    store.remove_checkpoint(out / "resume")
    return record


def run_one(study_dir: str | Path, run_id: str, notebooks: bool = True) -> str:
    """Execute one run if it is not done and nobody else has it. Returns its status."""
    study_dir = Path(study_dir)
    status = run_status(study_dir, run_id)
    if status == "done":
        return "done"
    entry = load_planned(study_dir)[run_id]
    failed_deps = [d for d in entry["deps"] if run_status(study_dir, d) == "failed"]
    if failed_deps:
        return "blocked"
    if any(run_status(study_dir, d) != "done" for d in entry["deps"]):
        return "waiting"
    if not claim(study_dir, run_id):
        return "claimed"
    if run_status(study_dir, run_id) == "done":  # finished by another process since the check above
        release(study_dir, run_id)
        return "done"
    t0 = time.time()
    try:
        if notebooks:
            _execute_notebook(study_dir, run_id)
        else:
            train_and_record(study_dir, run_id)
        status = run_status(study_dir, run_id)
        if status != "done":
            raise RuntimeError("the run finished without writing a result")
    except Exception as e:  # noqa: BLE001 - a failed run is recorded, never lost
        reason = _failure_reason(e)
        store.write_json_atomic(store.result_path(study_dir, run_id), {
            "run_id": run_id, "status": "failed", "error": reason, "method": entry["kind"],
            "traceback": traceback.format_exc()[-4000:], "wall_seconds": round(time.time() - t0, 2)})
        status = "failed"
    finally:
        release(study_dir, run_id)
    cleanup_checkpoints(study_dir)
    return status


def _failure_reason(e: Exception) -> str:
    text = str(e)
    if type(e).__name__ == "PapermillExecutionError":
        text = f"{e.ename}: {e.evalue}"
    elif type(e).__name__ == "DeadKernelError":  # the notebook's kernel was killed, most often for memory
        text = f"the run notebook's kernel died ({text}): killed, out of memory?"
    elif isinstance(e, MemoryError):
        text = f"out of memory: {type(e).__name__}{': ' + text if text else ''}"
    elif "out of memory" in text.lower() or "can't allocate memory" in text.lower():
        text = f"out of memory: {text.splitlines()[0]}"
    else:
        text = f"{type(e).__name__}: {text}"
    return text.splitlines()[0][:500] if text else type(e).__name__


def _execute_notebook(study_dir: Path, run_id: str):
    import papermill

    out = store.run_dir(study_dir, run_id)
    tmp = out / "run.tmp.ipynb"
    try:
        papermill.execute_notebook(str(NOTEBOOK), str(tmp), parameters={"study_dir": str(study_dir.resolve()),
                                                                        "run_id": run_id},
                                   kernel_name="python3", progress_bar=False, log_output=False, cwd=str(out))
    finally:
        if tmp.exists():
            os.replace(tmp, out / "run.ipynb")


def cleanup_checkpoints(study_dir: Path):
    """Delete support checkpoints once every STILTs run that could use them is done, and the resume
    checkpoints of finished runs (left behind when a run was killed between its record and their removal)."""
    plan = load_planned(study_dir)
    needed = set()
    for rid, entry in plan.items():
        if entry["kind"] == "stilts" and run_status(study_dir, rid) != "done":
            needed.update(entry["spec"]["support_runs"])
    for rid, entry in plan.items():
        folder = store.run_dir(study_dir, rid)
        if not folder.exists() or run_status(study_dir, rid) != "done":
            continue
        if (folder / "best").exists() and rid not in needed:
            shutil.rmtree(folder / "best", ignore_errors=True)
        store.remove_checkpoint(folder / "resume")


def disk_usage(study_dir: Path) -> int:
    return sum(p.stat().st_size for p in Path(study_dir).rglob("*") if p.is_file())


# ---- many runs ---------------------------------------------------------------------------------

def study_counts(study_dir: Path) -> dict:
    plan = load_planned(study_dir)
    counts = {"done": 0, "failed": 0, "blocked": 0, "pending": 0}
    failed = set()
    for rid in plan:
        s = run_status(study_dir, rid)
        if s == "failed":
            failed.add(rid)
    for rid, entry in plan.items():
        s = run_status(study_dir, rid)
        if s == "pending" and any(d in failed for d in entry["deps"]):
            s = "blocked"
        counts[s] += 1
    return counts


def reset_failed(study_dir: Path) -> list[str]:
    """--retry-failed: remove the failed records so those runs (and what they block) run again."""
    out = []
    for rid in load_planned(study_dir):
        if run_status(study_dir, rid) == "failed":
            store.result_path(study_dir, rid).unlink()
            out.append(rid)
    return out


# how often a launcher looks again at runs another launcher holds
HELD_POLL_S = 2.0


def run_local(study_dir: Path, workers: int = 1, notebooks: bool = True, progress: bool = True) -> dict:
    """Run every pending run, dependencies first, `workers` at a time. Each run is its own
    process (`mtlstudy run-one`), pinned to one GPU when GPUs are visible. Runs that another
    launcher is seen training (a live process on this host, a running Slurm job) are waited for,
    so two launchers on one study both end with it finished; a claim from another host outside
    Slurm cannot be checked and is left pending (exit 3)."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    study_dir = Path(study_dir)
    plan = load_planned(study_dir)
    gpus = _visible_gpus()
    slots = list(range(workers)) if not gpus else gpus[:workers] if workers <= len(gpus) else gpus
    threads = max(1, (os.cpu_count() or 1) // len(slots))
    free = list(slots)
    running = {}
    bar = tqdm(total=len(plan), desc=f"study {study_dir.name}", disable=not progress, unit="run")
    done_before = sum(run_status(study_dir, r) == "done" for r in plan)
    bar.update(done_before)
    t0 = time.time()
    shown = None
    interrupted = set()  # runs whose process was stopped by a signal: not restarted by this launcher
    with ThreadPoolExecutor(len(slots)) as pool:
        while True:
            status = {r: run_status(study_dir, r) for r in plan}
            failed = {r for r, s in status.items() if s == "failed"}
            # who holds each unfinished run not started here: "none" (free to take), "live" (another
            # launcher is seen training it: wait for it, then do what depends on it), "unchecked"
            holder = {r: held_elsewhere(study_dir, r) for r, s in status.items()
                      if s == "pending" and r not in running.values()}
            ready = [r for r, e in plan.items() if holder.get(r) == "none" and r not in interrupted
                     and all(status[d] == "done" for d in e["deps"])]
            blocked = [r for r, e in plan.items() if status[r] == "pending" and any(d in failed for d in e["deps"])]
            while ready and free:
                rid = ready.pop(0)
                slot = free.pop(0)
                fut = pool.submit(_subprocess_run, study_dir, rid, notebooks, slot if gpus else None, threads)
                running[fut] = rid
                fut.slot = slot
            held = [r for r, who in holder.items() if who == "live"]
            if not running and not held:
                break
            if running:
                finished, _ = wait(list(running), timeout=HELD_POLL_S, return_when=FIRST_COMPLETED)
            else:
                finished = ()
                time.sleep(HELD_POLL_S)
            for fut in finished:
                rid = running.pop(fut)
                free.append(fut.slot)
                if _record_lost_run(study_dir, rid, fut.result()) == "pending":
                    interrupted.add(rid)
            n_done = sum(run_status(study_dir, r) in ("done", "failed") for r in plan)
            if (n_done, len(failed), len(blocked), len(held)) == shown:
                continue  # the loop wakes every HELD_POLL_S: redraw only on news
            shown = (n_done, len(failed), len(blocked), len(held))
            _show_progress(bar, n_done, n_done - done_before, len(plan) - n_done - len(blocked), time.time() - t0,
                           failed=len(failed), blocked=len(blocked),
                           held_elsewhere=len(held) if n_done < len(plan) else 0)
    bar.close()
    return study_counts(study_dir)


def _show_progress(bar, n_done: int, new: int, left: int, elapsed: float, **counts):
    """The study bar: runs finished, then failures, blocked runs, the time left at the pace of the
    `new` runs finished so far ("?" before the first), and held runs where there are any."""
    bar.n = n_done
    postfix = {k: v for k, v in counts.items() if v or k != "held_elsewhere"}
    postfix["left"] = f"{elapsed / new * left / 60:.0f}min" if new else "?"
    bar.set_postfix(postfix, refresh=False)
    bar.refresh()


def _record_lost_run(study_dir: Path, run_id: str, returncode: int) -> str:
    """A run's process ended without a record (run-one records every failure it can catch): killed
    by SIGKILL (the kernel's out-of-memory killer, most often) or crashed with a non-zero exit, it
    is recorded failed, so that it is not restarted in a loop; stopped by another signal (Ctrl-C, a
    cancel) it stays pending and resumes from its checkpoint on the next `mtlstudy run`. Returns the
    run's status ("held" when another launcher has taken it since)."""
    import signal

    status = run_status(study_dir, run_id)
    if status != "pending":
        return status
    if is_claimed(study_dir, run_id):
        return "held"
    if returncode == -signal.SIGKILL:
        reason = "killed by SIGKILL without a record (out of memory?)"
    elif returncode > 0:
        reason = f"its process exited with code {returncode} without a record (see log.txt)"
    else:
        return "pending"
    store.write_json_atomic(store.result_path(study_dir, run_id), {
        "run_id": run_id, "status": "failed", "error": reason,
        "method": load_planned(study_dir)[run_id]["kind"]})
    return "failed"


def _visible_gpus() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    try:
        import torch
        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001
        return []


def _subprocess_run(study_dir, run_id, notebooks, gpu, threads):
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    else:
        env["CUDA_VISIBLE_DEVICES"] = ""
        env.setdefault("OMP_NUM_THREADS", str(threads))
    cmd = [sys.executable, "-m", "mtlstudy.cli", "run-one", str(study_dir), run_id]
    if not notebooks:
        cmd.append("--no-notebook")
    log = store.run_dir(study_dir, run_id) / "log.txt"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        return subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT).returncode


def _waves(plan: dict) -> list[list[str]]:
    depth = {}

    def d(r):
        if r not in depth:
            depth[r] = 1 + max((d(x) for x in plan[r]["deps"]), default=-1)
        return depth[r]

    for r in plan:
        d(r)
    return [[r for r in plan if depth[r] == k] for k in range(max(depth.values(), default=-1) + 1)]


def run_slurm(study_dir: Path, profile: Profile, notebooks: bool = True, progress: bool = True) -> dict:
    """Submit the pending runs as job arrays, one per dependency wave (afterany: each run checks
    its own dependencies and is blocked, not lost, when one failed); wait; report."""
    from . import slurm

    reason = slurm.slurm_unavailable_reason()
    if reason:
        raise RuntimeError(f"executor slurm: {reason}")
    study_dir = Path(study_dir).resolve()
    plan = load_planned(study_dir)
    waves = [[(str(study_dir), r, notebooks) for r in w if run_status(study_dir, r) != "done"] for w in _waves(plan)]
    waves = [w for w in waves if w]
    if waves:
        jobs = slurm.submit_waves(run_one, waves, study_dir / "slurm", profile.slurm, job_name=f"mtl-{profile.name}")
        bar = tqdm(total=sum(len(w) for w in waves), desc=f"slurm {profile.name}", disable=not progress, unit="run")
        t0 = time.time()

        def show(done, total):
            counts = study_counts(study_dir)
            _show_progress(bar, done, done, total - done - counts["blocked"], time.time() - t0,
                           failed=counts["failed"], blocked=counts["blocked"])

        slurm.wait_all(jobs, progress=show)
        bar.close()
    return study_counts(study_dir)


def plan_table(study_dir: Path, plan: list[PlannedRun], profile, user):
    """Rows for `mtlstudy plan`: id, method, tasks, seed, dependencies, done?"""
    summary = compute_summary(plan, profile, user)
    rows = [{"run_id": r.run_id, "method": r.spec.method, "tasks": ",".join(r.spec.tasks), "seed": r.spec.seed,
             "deps": len(r.deps), "status": run_status(study_dir, r.run_id) if (Path(study_dir) / "plan.json").exists()
             else "pending"} for r in plan]
    return rows, summary


def collect(study_dir: Path) -> Path:
    """results.csv: one row per (finished run, scored task)."""
    study_dir = Path(study_dir)
    df = results_frame(study_dir)
    out = study_dir / "results.csv"
    tmp = out.with_suffix(f".csv.{os.getpid()}.tmp")  # two launchers may collect at the same moment
    df.to_csv(tmp, index=False)
    os.replace(tmp, out)
    return out


def results_frame(study_dir: Path):
    """The rows of results.csv, from the finished runs' records."""
    import pandas as pd

    study_dir = Path(study_dir)
    rows = []
    for rid in load_planned(study_dir):
        rec = store.read_result(study_dir, rid) if run_status(study_dir, rid) == "done" else None
        if rec:
            rows.extend(store.result_rows(rec, {"study": study_dir.name}))
    cols = ["run_id", "method", "target", "support", "seed", "score", "best_step", "sampler", "target_fraction",
            "k", "target_train_size", "support_train_size", "model", "study", "majority_score", "constant_score"]
    return pd.DataFrame(rows, columns=cols).sort_values(["method", "target", "support", "seed", "run_id"])
