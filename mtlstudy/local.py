"""The local executor: a pool of worker processes on this machine, one run per visible GPU (or
N CPU workers), dependencies first; each run is a `mtlstudy run-one` subprocess (runner.py).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from tqdm.auto import tqdm

from .folder import StudyFolder

# how often a launcher looks again at runs another launcher holds
HELD_POLL_S = 2.0


def run_local(folder: StudyFolder, workers: int = 1, notebooks: bool = True, progress: bool = True) -> dict:
    """Run every pending run, dependencies first, `workers` at a time. Each run is its own
    process (`mtlstudy run-one`), pinned to one GPU when GPUs are visible. Runs that another
    launcher is seen training (a live process on this host, a running Slurm job) are waited for,
    so two launchers on one study both end with it finished; a claim from another host outside
    Slurm cannot be checked and is left pending (exit 3). The folder keeps the statuses: a record
    is read again only when its run ends here or another launcher lets it go."""
    total = len(folder.runs)
    gpus = _visible_gpus()
    slots = list(range(workers)) if not gpus else gpus[:workers] if workers <= len(gpus) else gpus
    threads = max(1, (os.cpu_count() or 1) // len(slots))
    free = list(slots)
    start_first = start_order(folder.runs)
    running = {}
    bar = tqdm(total=total, desc=f"study {folder.name}", disable=not progress, unit="run")
    done_before = sum(s == "done" for s in folder.status.values())
    bar.update(done_before)
    t0 = time.time()

    def redraw(n_held: int, shown):
        """Redraw the bar if a count changed since `shown`; the counts now."""
        failed, blocked = len(folder.failed()), len(folder.blocked())
        n_done = sum(s in ("done", "failed") for s in folder.status.values())
        now = (n_done, failed, blocked, n_held)
        if now != shown:
            show_progress(bar, n_done, n_done - done_before, total - n_done - blocked, time.time() - t0,
                          failed=failed, blocked=blocked, held_elsewhere=n_held if n_done < total else 0)
        return now

    shown = None
    interrupted = set()  # runs whose process was stopped by a signal: not restarted by this launcher
    was_held = set()
    with ThreadPoolExecutor(len(slots)) as pool:
        while True:
            # who holds each unfinished run not started here: "none" (free to take), "live" (another
            # launcher is seen training it: wait for it, then do what depends on it), "unchecked"
            mine = set(running.values())
            holder = {r: folder.held_elsewhere(r) for r, s in folder.status.items()
                      if s == "pending" and r not in mine}
            for rid in [r for r in was_held if holder.get(r, "none") == "none"]:
                folder.refresh(rid)  # let go by another launcher: finished there, or free now
            held = [r for r, who in holder.items() if who == "live"]
            was_held = set(held)
            ready = sorted((r for r in folder.runs if holder.get(r) == "none" and r not in interrupted
                            and folder.ready(r)), key=start_first)
            while ready and free:
                rid = ready.pop(0)
                slot = free.pop(0)
                fut = pool.submit(_subprocess_run, folder, rid, notebooks, slot if gpus else None, threads)
                running[fut] = rid
                fut.slot = slot
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
                if _record_lost_run(folder, rid, fut.result()) == "pending":
                    interrupted.add(rid)
                folder.refresh(rid)
            shown = redraw(len(held), shown)  # the loop wakes every HELD_POLL_S: redraw only on news
    redraw(0, shown)  # the last news may be a held run let go by its launcher (refreshed just before the loop ended)
    bar.close()
    folder.clean_checkpoints()
    return folder.counts()


def start_order(runs: dict) -> callable:
    """Sort key for ready runs: runs that others wait for first (the critical path), then runs
    that train more tasks (longer: MTL-All, then pairwise MTL, then single-task and STILTs), so the
    study does not end on one long run while the other workers sit idle; then plan order."""
    waiting_on = {}
    for entry in runs.values():
        for d in entry["deps"]:
            waiting_on[d] = waiting_on.get(d, 0) + 1
    position = {rid: i for i, rid in enumerate(runs)}

    def key(rid):
        spec = runs[rid]["spec"]
        trained = len(spec["tasks"]) - (spec["method"] == "stilts")
        return -waiting_on.get(rid, 0), -trained, position[rid]
    return key


def show_progress(bar, n_done: int, new: int, left: int, elapsed: float, **counts):
    """The study bar: runs finished, then failures, blocked runs, the time left at the pace of the
    `new` runs finished so far ("?" before the first), and held runs where there are any."""
    bar.n = n_done
    postfix = {k: v for k, v in counts.items() if v or k != "held_elsewhere"}
    postfix["left"] = f"{elapsed / new * left / 60:.0f}min" if new else "?"
    bar.set_postfix(postfix, refresh=False)
    bar.refresh()


def _record_lost_run(folder: StudyFolder, run_id: str, returncode: int) -> str:
    """A run's process ended without a record (run-one records every failure it can catch): killed
    by SIGKILL (the kernel's out-of-memory killer, most often) or crashed with a non-zero exit, it
    is recorded failed, so that it is not restarted in a loop; stopped by another signal (Ctrl-C, a
    cancel) it stays pending and resumes from its checkpoint on the next `mtlstudy run`. Returns the
    run's status ("held" when another launcher has taken it since)."""
    status = folder.read_status(run_id)
    if status != "pending":
        return status
    if folder.is_claimed(run_id):
        return "held"
    if returncode == -signal.SIGKILL:
        reason = "killed by SIGKILL without a record (out of memory?)"
    elif returncode > 0:
        reason = f"its process exited with code {returncode} without a record (see log.txt)"
    else:
        return "pending"
    folder.record_failure(run_id, reason)
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


def _subprocess_run(folder: StudyFolder, run_id, notebooks, gpu, threads):
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    else:
        env["CUDA_VISIBLE_DEVICES"] = ""
        env.setdefault("OMP_NUM_THREADS", str(threads))
    cmd = [sys.executable, "-m", "mtlstudy.cli", "run-one", str(folder.root), run_id]
    if not notebooks:
        cmd.append("--no-notebook")
    log = folder.run(run_id).log
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        return subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
