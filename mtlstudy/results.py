"""A study folder and what its runs' records say: the run list, each run's status, counts, and
results.csv.

outputs/<study>/study.json     the profile and the task sizes
outputs/<study>/runs.json      every run's parameters, dependencies and kind (the run list)
outputs/<study>/runs/<id>/     each run's record (store.py), checkpoints and notebook

`RunIndex` holds the statuses in memory for a launcher: it reads each record once and again only
for a run that may have changed (one that just finished, one another launcher held), instead of
rereading every result.json on every pass.
"""
from __future__ import annotations

import os
from pathlib import Path

from . import store
from .errors import UserError

RUN_LIST = "runs.json"
STATUSES = ("done", "failed", "blocked", "pending")


def write_study(profile, runs, user) -> Path:
    """study.json (profile, task sizes) and runs.json (every run's spec and dependencies)."""
    from .plan import task_size

    d = profile.study_dir
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise UserError(f"{d}: output folder is not writable ({e.strerror})") from None
    sizes = {t: task_size(profile, user, t) for t in profile.tasks}
    store.write_json_atomic(d / "study.json", {"name": profile.name, "profile": profile.model_dump(mode="json"),
                                               "task_sizes": sizes, "paper": profile.paper})
    store.write_json_atomic(d / RUN_LIST, {r.run_id: {"spec": r.spec.model_dump(mode="json"), "deps": r.deps,
                                                      "kind": r.kind} for r in runs})
    return d


def is_started(study_dir: Path) -> bool:
    return (Path(study_dir) / RUN_LIST).exists()


def read_runs(study_dir: Path) -> dict[str, dict]:
    """The run list: run id -> {"spec", "deps", "kind"}."""
    return store.read_json(Path(study_dir) / RUN_LIST)


def run_status(study_dir: Path, run_id: str) -> str:
    """done | failed | pending (no record, or a corrupt one: that run is simply redone)."""
    try:
        rec = store.read_result(study_dir, run_id)
    except store.CorruptResultError:
        return "pending"
    return "pending" if rec is None else rec.get("status", "pending")


class RunIndex:
    """Every run's status, read once and then kept up to date by `refresh(run_id)`."""

    def __init__(self, study_dir: Path):
        self.study_dir = Path(study_dir)
        self.runs = read_runs(self.study_dir)
        self.status = {rid: run_status(self.study_dir, rid) for rid in self.runs}

    def refresh(self, run_id: str) -> str:
        self.status[run_id] = run_status(self.study_dir, run_id)
        return self.status[run_id]

    def failed(self) -> set[str]:
        return {r for r, s in self.status.items() if s == "failed"}

    def blocked(self) -> list[str]:
        """Pending runs a failed run blocks (directly)."""
        failed = self.failed()
        return [r for r, e in self.runs.items() if self.status[r] == "pending" and any(d in failed for d in e["deps"])]

    def ready(self, run_id: str) -> bool:
        return self.status[run_id] == "pending" and all(self.status[d] == "done" for d in self.runs[run_id]["deps"])

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        blocked = set(self.blocked())
        for rid, s in self.status.items():
            counts["blocked" if rid in blocked else s] += 1
        return counts


def study_counts(study_dir: Path) -> dict[str, int]:
    return RunIndex(study_dir).counts()


def failures(study_dir: Path, index: RunIndex | None = None) -> list[tuple[str, str]]:
    """(run id, reason) of every failed run."""
    index = index or RunIndex(study_dir)
    return [(rid, store.read_result(study_dir, rid).get("error", "")) for rid in sorted(index.failed())]


def reset_failed(study_dir: Path) -> list[str]:
    """--retry-failed: remove the failed records so those runs (and what they block) run again."""
    out = sorted(RunIndex(study_dir).failed())
    for rid in out:
        store.result_path(study_dir, rid).unlink()
    return out


def reopen_cleaned_supports(study_dir: Path) -> list[str]:
    """Support runs that are done but whose checkpoint is gone (a finished study removes them)
    while a STILTs run not yet done needs it: a task or method added to a finished study, or a
    second profile in its folder. Their records are removed, so they train again (seeded as before)."""
    index = RunIndex(study_dir)
    out = set()
    for rid, entry in index.runs.items():
        if entry["kind"] != "stilts" or index.status[rid] != "pending":
            continue
        support = entry["spec"]["tasks"][0]
        out.update(s for s in entry["spec"]["support_runs"] if index.status.get(s) == "done" and not
                   store.has_weights(store.support_checkpoint(study_dir, s, support)))
    for rid in sorted(out):
        store.result_path(study_dir, rid).unlink(missing_ok=True)
    return sorted(out)


def disk_usage(study_dir: Path) -> int:
    return sum(p.stat().st_size for p in Path(study_dir).rglob("*") if p.is_file())


def run_table(study_dir: Path, runs, profile, user):
    """Rows for `mtlstudy plan`: id, method, tasks, seed, dependencies, status; and the compute summary."""
    from .plan import compute_summary

    summary = compute_summary(runs, profile, user)
    started = is_started(study_dir)
    rows = [{"run_id": r.run_id, "method": r.spec.method, "tasks": ",".join(r.spec.tasks), "seed": r.spec.seed,
             "deps": len(r.deps), "status": run_status(study_dir, r.run_id) if started else "pending"} for r in runs]
    return rows, summary


def results_frame(study_dir: Path, index: RunIndex | None = None):
    """The rows of results.csv, from the finished runs' records: one per (run, scored task), with
    the task's majority-class and best one-class levels beside each score."""
    import pandas as pd

    study_dir = Path(study_dir)
    index = index or RunIndex(study_dir)
    rows = []
    for rid, status in index.status.items():
        rec = store.read_result(study_dir, rid) if status == "done" else None
        if rec:
            rows.extend(store.result_rows(rec, {"study": study_dir.name}))
    cols = ["run_id", "method", "target", "support", "seed", "score", "best_step", "best_epoch", "sampler", "target_fraction",
            "k", "target_train_size", "support_train_size", "model", "study", "majority_score", "constant_score"]
    return pd.DataFrame(rows, columns=cols).sort_values(["method", "target", "support", "seed", "run_id"])


def collect(study_dir: Path, index: RunIndex | None = None) -> Path:
    """results.csv: one row per (finished run, scored task)."""
    study_dir = Path(study_dir)
    out = study_dir / "results.csv"
    tmp = out.with_suffix(f".csv.{os.getpid()}.tmp")  # two launchers may collect at the same moment
    results_frame(study_dir, index).to_csv(tmp, index=False)
    os.replace(tmp, out)
    return out


def collapsed(study_dir: Path, index: RunIndex | None = None) -> list[tuple[str, str, str]]:
    """(run id, task, reason) of every finished run whose best dev score sits at its task's
    one-class level (analysis.collapsed_runs)."""
    from .analysis import collapsed_runs

    return [(r.run_id, r.target, r.reason) for r in collapsed_runs(results_frame(study_dir, index)).itertuples()]
