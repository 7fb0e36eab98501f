"""One study's folder on disk, and the only code that knows its layout:

outputs/<study>/study.json                 the profile and the task sizes
outputs/<study>/runs.json                  the run list: every run's spec, dependencies and kind
outputs/<study>/results.csv                one row per (finished run, scored task)
outputs/<study>/slurm/                     the Slurm jobs' logs
outputs/<study>/runs/<run_id>/             one run (RunFolder): result.json, claim.json, log.txt,
                                           run.ipynb, resume/ (while it trains), best/<task>/ (kept
                                           weights of a STILTs support)
outputs/<other study>/                     another study under the same outputs folder: a run
                                           finished there is taken, not trained again (`adopt`)

`StudyFolder` holds the run list and each run's status in memory: it reads every record once,
then again only for a run that may have changed (`refresh`), instead of rereading every
result.json on every pass. Several launchers may share a folder (a second profile, a task added
while the first still runs): the run list on disk is their union, and checkpoints are removed
only after the run list and the records of the runs that need them are read again. Its JSON
files are written atomically (never half-written) and a corrupt one is named in a one-line error.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import claims, store
from .errors import UserError


# ---- files: JSON written atomically and read with a one-line error; checkpoint folders ----------

class CorruptResultError(UserError, ValueError):
    """A study file that is not valid JSON: the message names it."""


def write_json_atomic(path: Path, obj) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, allow_nan=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise CorruptResultError(f"{path}: corrupt JSON at line {e.lineno} ({e.msg})") from None


def remove_checkpoint(folder: Path) -> None:
    """Delete a resume checkpoint folder and the siblings a save leaves while it replaces it
    (`<folder>.tmp` being written, `<folder>.old` the previous one)."""
    for suffix in ("", ".tmp", ".old"):
        shutil.rmtree(Path(folder).with_name(Path(folder).name + suffix), ignore_errors=True)


def has_weights(folder: Path) -> bool:
    return (Path(folder) / "model.safetensors").exists()


def _link_or_copy(src: str, dst: str) -> None:
    """A hard link (no second copy of the weights on disk), a copy where the file system refuses one."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


STATUSES = ("done", "failed", "blocked", "pending")


@dataclass(frozen=True)
class RunFolder:
    """One run's folder."""

    path: Path

    @property
    def record(self) -> Path:
        return self.path / "result.json"

    @property
    def resume(self) -> Path:
        """The resume checkpoint folder (saved at each evaluation, removed once the run is recorded)."""
        return self.path / "resume"

    def best(self, task: str) -> Path:
        """The kept best weights of one task (a STILTs support's)."""
        return self.path / "best" / task

    @property
    def kept_weights(self) -> Path:
        """The folder of every task's kept best weights."""
        return self.path / "best"

    @property
    def claim(self) -> Path:
        return self.path / "claim.json"

    @property
    def log(self) -> Path:
        return self.path / "log.txt"

    @property
    def notebook(self) -> Path:
        return self.path / "run.ipynb"

    def write_record(self, record: dict) -> None:
        """Write a finished run's record; its resume checkpoint is no longer needed."""
        write_json_atomic(self.record, record)
        self.remove_resume()

    def remove_resume(self) -> None:
        """Delete the resume checkpoint and the siblings a save leaves while it replaces it."""
        remove_checkpoint(self.resume)


class StudyFolder:
    """One study's folder: its paths, run list, run statuses and the operations on them.

    `run_ids` scopes the statuses, counts and results.csv to one launcher's plan (its profile's
    runs); without it, every run of the run list on disk."""

    def __init__(self, root: str | Path, run_ids: list[str] | None = None):
        self.root = Path(root)
        self._scope = list(run_ids) if run_ids is not None else None
        self._runs: dict[str, dict] | None = None
        self.status: dict[str, str] = {}

    def __getstate__(self) -> dict:
        """Sent to another process (a Slurm job) as its absolute path alone: the job reads the rest."""
        return {"root": self.root.resolve(), "_scope": None, "_runs": None, "status": {}}

    # ---- paths ---------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def run_list(self) -> Path:
        return self.root / "runs.json"

    @property
    def study_file(self) -> Path:
        return self.root / "study.json"

    @property
    def results_table(self) -> Path:
        return self.root / "results.csv"

    @property
    def report_dir(self) -> Path:
        """The HTML report and what the analysis notebooks record: tables/*.csv, figures/*."""
        return self.root / "report"

    @property
    def slurm_logs(self) -> Path:
        return self.root / "slurm"

    def run(self, run_id: str) -> RunFolder:
        return RunFolder(self.root / "runs" / str(run_id))

    def support_checkpoint(self, run_id: str, task: str) -> Path:
        """The folder of a support run's best weights for `task` (train.keep_checkpoint)."""
        return self.run(run_id).best(task)

    def has_support_checkpoint(self, run_id: str, task: str) -> bool:
        return has_weights(self.support_checkpoint(run_id, task))

    # ---- the run list --------------------------------------------------------------------------

    def write_study(self, profile, runs, task_sizes: dict[str, int]) -> None:
        """study.json (the profile, its task sizes) and the run list: `runs` (plan.PlannedRun) added
        to the one on disk, under a lock, so a second launcher on the folder adds its runs and
        removes none of the first's."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test-{os.getpid()}"
            probe.touch()
            probe.unlink()
        except OSError as e:
            raise UserError(f"{self.root}: output folder is not writable ({e.strerror})") from None
        write_json_atomic(self.study_file, {"name": profile.name, "profile": profile.model_dump(mode="json"),
                                            "task_sizes": task_sizes, "paper": profile.paper})
        entries = {r.run_id: {"spec": r.spec.model_dump(mode="json"), "deps": r.deps, "kind": r.kind} for r in runs}
        with open(self.root / ".runs.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            merged = self.read_run_list() if self.is_started() else {}
            merged.update(entries)
            write_json_atomic(self.run_list, merged)
        self._runs = None

    def adopt_earlier_ids(self, earlier: dict[str, str]) -> list[str]:
        """Runs found under the id they had before (run id -> earlier id, plan.earlier_ids): each
        folder renamed to its id now, with the ids in its record, and its earlier entry dropped
        from the run list. Once: then the run is found under its id. A run another process holds
        is left. The earlier ids renamed."""
        now = {old: new for new, old in earlier.items()}
        moved = []
        for old, new in now.items():
            source, target = self.run(old), self.run(new)
            if not source.path.is_dir() or target.path.exists() or self.is_claimed(old):
                continue
            os.rename(source.path, target.path)
            moved.append(old)
            try:
                record = self.read_record(new)
            except CorruptResultError:
                continue  # redone as any corrupt record
            if record:
                record["run_id"] = new
                if "support_run" in record:
                    record["support_run"] = now.get(record["support_run"], record["support_run"])
                write_json_atomic(target.record, record)
        if moved and self.is_started():
            with open(self.root / ".runs.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                runs = self.read_run_list()
                write_json_atomic(self.run_list, {rid: e for rid, e in runs.items() if rid not in moved})
        self._runs = None
        return moved

    def is_started(self) -> bool:
        return self.run_list.exists()

    def read_run_list(self) -> dict[str, dict]:
        """The run list on disk, every launcher's: run id -> {"spec", "deps", "kind"}."""
        return read_json(self.run_list)

    @property
    def runs(self) -> dict[str, dict]:
        """This folder's runs (those of `run_ids` where given), read once; their statuses beside."""
        if self._runs is None:
            self.reload()
        return self._runs

    def reload(self) -> None:
        """Read the run list and every run's status again."""
        runs = self.read_run_list()
        self._runs = runs if self._scope is None else {r: runs[r] for r in self._scope if r in runs}
        self.status = {rid: self.read_status(rid) for rid in self._runs}

    # ---- records and statuses ------------------------------------------------------------------

    def read_record(self, run_id: str) -> dict | None:
        """The run's record, or None if it has none. A corrupt record raises CorruptResultError."""
        path = self.run(run_id).record
        return read_json(path) if path.exists() else None

    def read_status(self, run_id: str) -> str:
        """done | failed | pending, from disk (no record, or a corrupt one: that run is simply redone)."""
        try:
            rec = self.read_record(run_id)
        except CorruptResultError:
            return "pending"
        return "pending" if rec is None else rec.get("status", "pending")

    def refresh(self, run_id: str) -> str:
        """Read one run's status again (it just finished, or another launcher let it go)."""
        self.runs  # noqa: B018 - loads the statuses first
        self.status[run_id] = self.read_status(run_id)
        return self.status[run_id]

    def failed(self) -> set[str]:
        return {r for r in self.runs if self.status[r] == "failed"}

    def blocked(self) -> list[str]:
        """Pending runs a failed run blocks (directly)."""
        failed = self.failed()
        return [r for r, e in self.runs.items() if self.status[r] == "pending" and any(d in failed for d in e["deps"])]

    def ready(self, run_id: str) -> bool:
        return self.status[run_id] == "pending" and all(self.status.get(d) == "done" for d in self.runs[run_id]["deps"])

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        blocked = set(self.blocked())
        for rid in self.runs:
            counts["blocked" if rid in blocked else self.status[rid]] += 1
        return counts

    def failures(self) -> list[tuple[str, str]]:
        """(run id, reason) of every failed run."""
        return [(rid, self.read_record(rid).get("error", "")) for rid in sorted(self.failed())]

    def record_result(self, run_id: str, record: dict) -> None:
        """Write a finished run's record; its resume checkpoint is no longer needed."""
        self.run(run_id).write_record(record)

    def record_failure(self, run_id: str, reason: str, **details) -> None:
        """Write a failed run's record: its reason in one line, and `details` (traceback, wall time)."""
        kind = self.read_run_list()[run_id]["kind"]
        write_json_atomic(self.run(run_id).record, {"run_id": run_id, "status": "failed", "error": reason,
                                                          "method": kind, **details})

    def reset_failed(self) -> list[str]:
        """--retry-failed: remove the failed records so those runs (and what they block) run again."""
        out = sorted(self.failed())
        for rid in out:
            self.run(rid).record.unlink(missing_ok=True)
            self.status[rid] = "pending"
        return out

    def reopen_cleaned_supports(self) -> list[str]:
        """Support runs that are done but whose checkpoint is gone (a finished study removes them)
        while a STILTs run not yet done needs it: a task or method added to a finished study, or a
        second profile in its folder. Their records are removed, so they train again (seeded as before)."""
        runs = self.read_run_list()
        out = set()
        for rid, entry in runs.items():
            if entry["kind"] != "stilts" or self.read_status(rid) != "pending":
                continue
            support = entry["spec"]["tasks"][0]
            out.update(s for s in entry["spec"]["support_runs"]
                       if self.read_status(s) == "done" and not self.has_support_checkpoint(s, support))
        for rid in sorted(out):
            self.run(rid).record.unlink(missing_ok=True)
            if rid in self.status:
                self.status[rid] = "pending"
        return sorted(out)

    # ---- runs finished in another study under the same outputs folder ---------------------------

    def neighbours(self) -> list[StudyFolder]:
        """The other study folders (those with a run list) beside this one, by name."""
        parent, me = self.root.parent, self.root.resolve()
        if not parent.is_dir():
            return []
        return [StudyFolder(p) for p in sorted(parent.iterdir())
                if (p / "runs.json").is_file() and p.resolve() != me]

    def finished_elsewhere(self, run_id: str, neighbours: list[StudyFolder] | None = None) -> RunFolder | None:
        """The folder of this run in the first neighbour where it is done, or None."""
        for other in self.neighbours() if neighbours is None else neighbours:
            if other.read_status(run_id) == "done":
                return other.run(run_id)
        return None

    def adopt(self, run_id: str, source: RunFolder, weights_of: list[str] = (), tags: dict | None = None) -> None:
        """Take a run finished in another study: its record, with `reused_from` naming the study that
        trained it (kept where that record was itself taken) and this study's `tags` for the run (tags
        are not in a run id: the same run may be a size-ablation cell here and a plain pair there),
        and the kept best weights of the tasks `weights_of` (hard links where the file system
        allows). The record goes last: an adoption cut short leaves the run pending."""
        mine = self.run(run_id)
        for task in weights_of:
            shutil.rmtree(mine.best(task), ignore_errors=True)
            shutil.copytree(source.best(task), mine.best(task), copy_function=_link_or_copy)
        record = read_json(source.record)
        record.setdefault("reused_from", source.path.parent.parent.name)
        record["tags"] = {**(tags or {}), "study": self.name}
        write_json_atomic(mine.record, record)
        if run_id in self.status:
            self.status[run_id] = "done"

    # ---- checkpoints ---------------------------------------------------------------------------

    def _supports_needed(self, runs: dict[str, dict]) -> set[str]:
        """Support runs whose checkpoint a STILTs run of `runs` not yet done (on disk, now) needs."""
        return {s for rid, e in runs.items() if e["kind"] == "stilts" and self.read_status(rid) != "done"
                for s in e["spec"]["support_runs"]}

    def release_supports(self, support_runs: list[str]) -> None:
        """Delete these runs' support checkpoints once every STILTs run (of any launcher) that
        starts from them is done."""
        runs = self.read_run_list()
        users = {rid: e for rid, e in runs.items()
                 if e["kind"] == "stilts" and set(e["spec"]["support_runs"]) & set(support_runs)}
        if not self._supports_needed(users):
            for rid in support_runs:
                shutil.rmtree(self.run(rid).kept_weights, ignore_errors=True)

    def clean_checkpoints(self) -> None:
        """Delete support checkpoints no unfinished STILTs run needs, and the resume checkpoints of
        finished runs (left behind when a run was killed between its record and their removal).
        The run list and records are read again first: another launcher may have added STILTs
        runs that wait for a support since this one read them."""
        runs = self.read_run_list()
        needed = self._supports_needed(runs)
        for rid in runs:
            run = self.run(rid)
            if not run.path.exists() or self.read_status(rid) != "done":
                continue
            if run.kept_weights.exists() and rid not in needed:
                shutil.rmtree(run.kept_weights, ignore_errors=True)
            run.remove_resume()

    def disk_usage(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())

    # ---- claims: which process trains a run (claims.py) ---------------------------------------

    def claim(self, run_id: str) -> bool:
        return claims.claim(self.run(run_id).claim)

    def release(self, run_id: str) -> None:
        self.run(run_id).claim.unlink(missing_ok=True)

    def held_elsewhere(self, run_id: str) -> str:
        """Who holds the run's claim: "none", "live" or "unchecked" (claims.holder)."""
        return claims.holder(self.run(run_id).claim)

    def is_claimed(self, run_id: str) -> bool:
        """Claimed by a live process, or one on another host that cannot be checked."""
        return self.held_elsewhere(run_id) != "none"

    def runs_in_flight(self) -> list[tuple[str, str]]:
        """(run id, who trains it) for every unfinished run whose claim is held."""
        return [(rid, who) for rid in self.runs if self.status[rid] == "pending"
                and (who := claims.describe(self.run(rid).claim))]

    # ---- results.csv ---------------------------------------------------------------------------

    def results_frame(self):
        """The rows of results.csv, from the finished runs' records: one per (run, scored task), with
        the task's majority-class and best one-class levels beside each score."""
        import pandas as pd  # a second to import: not for `mtlstudy plan` or a bad profile

        rows = []
        for rid in self.runs:
            rec = self.read_record(rid) if self.status[rid] == "done" else None
            if rec:
                rows.extend(store.result_rows(rec, {"study": self.name}))
        return pd.DataFrame(rows, columns=store.RESULT_COLUMNS).sort_values(
            ["method", "target", "support", "seed", "run_id"])

    def collect(self) -> Path:
        """results.csv: one row per (finished run, scored task)."""
        out = self.results_table
        tmp = out.with_suffix(f".csv.{os.getpid()}.tmp")  # two launchers may collect at the same moment
        self.results_frame().to_csv(tmp, index=False)
        os.replace(tmp, out)
        return out
