"""The local executor: runs on this machine, dependencies first, one at a time in each slot: every
visible GPU `runs_per_gpu` times over (or N CPU workers). Each slot keeps one persistent worker
process that takes its runs one after another (workers.py), as a `mtlstudy run-one` process would.
"""
from __future__ import annotations

import os
import signal
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import ExitStack

from tqdm.auto import tqdm

from .errors import UserError
from .folder import StudyFolder
from .spec import TrainSettings
from .workers import Slot

# how often a launcher looks again at runs another launcher holds
HELD_POLL_S = 2.0


def run_local(folder: StudyFolder, workers: int | None = 1, notebooks: bool = True, progress: bool = True,
              slots: list[Slot] | None = None) -> dict:
    """Run every pending run, dependencies first, one per slot at a time (`slots`, from plan_slots;
    by default `workers` of them). Each slot's runs go to its persistent worker process, pinned to
    its GPU when it has one. Runs that another launcher is seen training (a live process on this
    host, a running Slurm job) are waited for, so two launchers on one study both end with it
    finished; a claim from another host outside Slurm cannot be checked and is left pending (exit
    3). The folder keeps the statuses: a record is read again only when its run ends here or
    another launcher lets it go."""
    total = len(folder.runs)
    slots = slots or plan_slots(workers)
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
    with ExitStack() as closing, ThreadPoolExecutor(len(slots)) as pool:
        for slot in slots:
            closing.callback(slot.close)  # the workers end after the last run, on an error or Ctrl-C too
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
                fut = pool.submit(_run_in_slot, folder, rid, notebooks, slot)
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


class GpuNotUsable(UserError):
    """GPUs were asked for (CUDA_VISIBLE_DEVICES, train.device) and torch cannot use them."""


def plan_slots(workers: int | None = None, runs_per_gpu: int = 1, device: str = "auto",
               profile_workers: int | None = None) -> list[Slot]:
    """The run slots of this machine. On GPUs: each visible GPU `runs_per_gpu` times, spread over
    the GPUs first; all of them unless `workers` (--workers: more than there are is an error) or
    the profile's `workers` (capped at the slots) asks for fewer. Without a visible GPU, or with
    train.device 'cpu': that many CPU slots (1 by default). The cores are shared out between the
    slots (torch threads, OMP, the tokenizers' pool), GPU slots included."""
    _check_device_index(device)
    gpus = _visible_gpus(device)
    if not gpus:
        n = workers or profile_workers or 1
        return [Slot(None, _threads(n)) for _ in range(n)]
    capacity = len(gpus) * runs_per_gpu
    if workers and workers > capacity:
        raise UserError(f"--workers {workers}: more than the {capacity} run slots here ({len(gpus)} visible GPU(s) "
                        f"x runs_per_gpu {runs_per_gpu}); raise --runs-per-gpu or lower --workers")
    n = workers or min(profile_workers or capacity, capacity)
    order = [g for _ in range(runs_per_gpu) for g in gpus]
    return [Slot(g, _threads(n)) for g in order[:n]]


def cpu_bf16_note(slots: list[Slot], train: TrainSettings) -> str | None:
    """A line for a study about to train in CPU slots with settings that ask for bf16 this CPU
    would emulate (precision.autocast_dtype runs them in fp32); None otherwise (on a GPU each run
    records its own precision)."""
    asks = train.precision in ("bf16", "bf16_one_task") or train.eval_precision == "bf16"
    if not asks or any(slot.gpu is not None for slot in slots):
        return None
    from .precision import cpu_computes_bf16  # torch: only once the inputs are known to be good

    if cpu_computes_bf16():
        return None
    return ("note: this CPU has no bf16 in hardware (no AMX, no AVX-512 BF16): the profile's bf16 "
            "settings run in fp32 here, as bf16 would be emulated, 5-17x slower (BENCHMARKS.md)")


def usable_cpus() -> int:
    """The CPUs this process may run on: inside a Slurm allocation, a cpuset container or `taskset`,
    those it was given, not the whole node's (os.cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity call (macOS, Windows)
        return os.cpu_count() or 1


def cpu_fallback_note(slots: list[Slot], device: str, paper: bool) -> str | None:
    """A line for a study that `train.device: auto` sends to the CPU although torch is a CUDA build
    (a wheel newer than the driver, most often), naming what torch sees; each run would only say so
    in its log. A profile marked `paper: true` stops there (GpuNotUsable) unless it asks for
    `train.device: cpu`. None when the study has a GPU, asks for the CPU, or torch is a CPU build."""
    if device != "auto" or any(slot.gpu is not None for slot in slots):
        return None
    import torch

    if not torch.version.cuda:
        return None
    from .precision import what_torch_sees

    if paper:
        raise GpuNotUsable(f"train.device 'auto': {what_torch_sees()}: this `paper: true` study would train on "
                           "the CPU; fix the driver or the CUDA wheel, or set train.device=cpu to train on the CPU")
    return f"note: train.device 'auto': {what_torch_sees()}: this study trains on the CPU"


def _check_device_index(device: str) -> None:
    """Each slot's worker sees its one GPU as cuda:0 (its own CUDA_VISIBLE_DEVICES), so a profile's
    `cuda:N` with N > 0 would fail every run: refused before any run, with what to write instead."""
    index = device.partition(":")[2]
    if device.startswith("cuda:") and index.isdigit() and int(index) > 0:
        raise UserError(f"train.device '{device}': under the local executor each run sees only its own GPU, as "
                        f"cuda:0; to train on GPU {index}, set CUDA_VISIBLE_DEVICES={index} and train.device=cuda")


def _threads(slots: int) -> int:
    return max(1, usable_cpus() // slots)


def _visible_gpus(device: str = "auto") -> list[str]:
    """The GPUs runs go to: those CUDA_VISIBLE_DEVICES names (every GPU torch sees when it is unset;
    none when it is empty or -1, or train.device is 'cpu'). GPUs asked for, by CUDA_VISIBLE_DEVICES
    or train.device 'cuda', that torch cannot use are a GpuNotUsable error, not a study on the CPU."""
    if device == "cpu":
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    named = None if env is None else [g.strip() for g in env.split(",") if g.strip()]
    if named is not None and all(g.lstrip("-").isdigit() and int(g) < 0 for g in named):
        named = []  # empty or -1: no GPU
    asked = bool(named) or device.startswith("cuda")
    if not asked and named == []:
        return []
    import torch

    try:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a broken driver: torch sees no GPU
        count = 0
    wanted = len(named) if named else 1
    if asked and count < wanted:
        what = f"CUDA_VISIBLE_DEVICES={env}" if named else f"train.device '{device}'"
        if named == []:
            what += f" with CUDA_VISIBLE_DEVICES={env!r}"
        raise GpuNotUsable(f"{what} asks for {wanted} GPU(s) but torch {torch.__version__} "
                           f"(CUDA {torch.version.cuda or 'none'}) sees {count}: check the driver and the CUDA "
                           "wheel, or set train.device=cpu")
    return named if named else [str(i) for i in range(count)]


def _run_in_slot(folder: StudyFolder, run_id, notebooks, slot: Slot) -> int:
    """One run in the slot's persistent worker: 0 or 1 as a `mtlstudy run-one` process exits, or
    the worker's exit status when the run killed it (the slot then starts a new worker)."""
    return slot.run(folder.root, run_id, notebooks)
