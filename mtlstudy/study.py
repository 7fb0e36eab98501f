"""The study layer, what the CLI and the stage notebooks call: open a study from its profile,
list its runs (plan), run what is not done, say where it stands (status), collect results.csv
and build the report. Below it: profile.py (the profile), plan.py (the run list), compute.py
(its cost), disk.py (its disk), local.py and slurm.py (the executors), runner.py (one run), folder.py (the study's
folder on disk).
"""
from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import slurm
from .compute import compute_summary
from .errors import StudyNotFound, UserError
from .folder import RunFolder, StudyFolder, has_weights
from .local import cpu_bf16_note, cpu_fallback_note, plan_slots, run_local
from .plan import PlannedRun, earlier_ids, make_plan
from .profile import (Profile, ProfileError, apply_overrides, check_inputs, load_profile, profile_from_dict,
                      profile_path, read_profile_file, study_task_sizes)

REPO = Path(__file__).resolve().parent.parent  # the repository: params/, notebooks/, outputs/


@dataclass
class Study:
    profile: Profile
    user: dict
    runs: list[PlannedRun]   # the run list, dependencies first
    folder: StudyFolder = None  # the study's folder on disk (its runs: those of `runs`)

    def __post_init__(self):
        if self.folder is None:
            self.folder = StudyFolder(self.profile.study_dir, [r.run_id for r in self.runs])

    @property
    def dir(self) -> Path:
        return self.folder.root

    def write(self) -> StudyFolder:
        """study.json (profile, task sizes) and this study's runs added to the folder's run list."""
        self.folder.write_study(self.profile, self.runs, study_task_sizes(self.profile, self.user))
        return self.folder


def open_study(name_or_path: str | Path, overrides: list[str] = ()) -> Study:
    profile, user = load_profile(name_or_path, overrides)
    return Study(profile, user, make_plan(profile, user))


REQUIRED_KEYS = [k for k, f in Profile.model_fields.items() if f.is_required()]


def study_from_values(values: dict, base: str | Path | None = None, overrides=(), stage_profile: str = "paper") -> Study:
    """The study of a stage notebook: the profile keys among its variables `values` (papermill
    -f params/x.yaml injects a profile's keys; a value None means "not given") over the profile
    `base`, then `overrides` (KEY=VALUE strings, as `mtlstudy run --set`; a list, or its YAML text
    as papermill's -p gives it). Without `base`: the injected keys alone when they make a whole
    profile, else `stage_profile` under them. Relative `user_tasks` and `data.glue_dir` resolve
    against the base profile's folder (the working directory when there is none); a relative
    `output_dir` against the repository, wherever the kernel runs."""
    given = {k: copy.deepcopy(v) for k, v in values.items() if k in Profile.model_fields and v is not None}
    if base is None and not all(k in given for k in REQUIRED_KEYS):
        base = stage_profile
    if base is not None:
        path = profile_path(base)
        raw = read_profile_file(path)
        where, folder = f"{path} with the notebook's parameters", path.parent
    else:
        raw, where, folder = {}, "the notebook's parameters", Path.cwd()
    raw.update(given)
    if isinstance(overrides, str):  # papermill's -p passes a list as its text
        try:
            overrides = yaml.safe_load(overrides)
        except yaml.YAMLError:
            pass
    if not isinstance(overrides, (list, tuple)) or not all(isinstance(o, str) for o in overrides):
        raise ProfileError(f"overrides: expected a list of KEY=VALUE strings like '[\"train.epochs=1\"]', got {overrides!r}")
    apply_overrides(raw, overrides, where="overrides")
    profile, user = profile_from_dict(raw, where, folder)
    profile.output_dir = resolve_path(profile.output_dir)
    return Study(profile, user, make_plan(profile, user))


def resolve_path(path: str | Path) -> Path:
    """A path given to a notebook, made absolute: a relative one against the repository (where
    `mtlstudy run` and `make demo` write outputs/), not the kernel's working directory
    (JupyterLab starts kernels in notebooks/)."""
    return (REPO / Path(path).expanduser()).resolve()  # an absolute path replaces REPO


def find_study(study_dir: str | Path) -> Path:
    """The absolute folder of a finished study (with results.csv) named by a notebook's
    `study_dir` (see resolve_path); FileNotFoundError naming the absolute path otherwise."""
    path = resolve_path(study_dir)
    if not StudyFolder(path).results_table.is_file():
        why = "no such folder" if not path.is_dir() else "no results.csv in it (has the study finished?)"
        rel = "" if Path(study_dir).expanduser().is_absolute() else f" (study_dir {str(study_dir)!r} is relative to the repository {REPO})"
        raise StudyNotFound(f"study not found at {path}: {why}{rel}")
    return path


def reusable_runs(study: Study) -> dict[str, tuple[RunFolder, list[str]]]:
    """Runs of this study not done in its folder but done in another study under the same outputs
    folder: run id -> (that run's folder, the tasks whose kept weights to take with it). A STILTs
    support that a STILTs run here still trains from is reusable only with its kept weights (a
    finished study keeps none: then it trains here)."""
    folder = study.folder
    neighbours = folder.neighbours()
    if not neighbours:
        return {}
    here = {r.run_id for r in study.runs if folder.read_status(r.run_id) == "done"}
    found = {r.run_id: src for r in study.runs if r.run_id not in here
             and (src := folder.finished_elsewhere(r.run_id, neighbours)) is not None}
    needed = {s: r.spec.tasks[0] for r in study.runs if r.kind == "stilts" and r.run_id not in here | set(found)
              for s in r.spec.support_runs if s not in here}
    return {rid: (src, [needed[rid]] if rid in needed else []) for rid, src in found.items()
            if rid not in needed or has_weights(src.best(needed[rid]))}


def plan(study: Study):
    """(rows, summary): each run with its status ("reused" when it is taken from another study),
    and the compute against the naive protocol; summary["reused"] counts the reused runs."""
    summary = compute_summary(study.runs, study.profile, study.user)
    status = study.folder.status if study.folder.is_started() and study.folder.runs else {}
    reused = reusable_runs(study)
    rows = [{"run_id": r.run_id, "method": r.spec.method, "tasks": ",".join(r.spec.tasks), "seed": r.spec.seed,
             "deps": len(r.deps), "status": "reused" if r.run_id in reused else status.get(r.run_id, "pending")}
            for r in study.runs]
    summary["reused"] = len(reused)
    return rows, summary


def disk_line(study: Study, rows: list[dict]) -> str:
    """`mtlstudy plan`'s disk line (disk.py) for the plan's `rows`: runs done or reused train nothing here."""
    from .disk import plan_disk_line  # torch and transformers: for the config's parameter count

    trained_here = {r["run_id"] for r in rows if r["status"] not in ("done", "reused")}
    return plan_disk_line(study.profile, study.runs, study.user, trained_here)


@dataclass
class Outcome:
    """What `run` leaves: the counts, failed runs with their reasons, and why runs stay unfinished."""
    counts: dict
    failures: list = field(default_factory=list)
    unfinished: str = ""     # why runs are still pending ("" when none are)
    collapsed: list = field(default_factory=list)  # (run id, task, reason): best score at the one-class level

    @property
    def exit_code(self) -> int:
        """0 all done; 1 a run failed or is blocked; 3 runs unfinished (run again)."""
        return 1 if self.counts["failed"] or self.counts["blocked"] else 3 if self.counts["pending"] else 0


def run(study: Study, executor: str | None = None, workers: int | None = None, notebooks: bool | None = None,
        retry_failed: bool = False, progress: bool = True, runs_per_gpu: int | None = None) -> Outcome:
    """Run what is not done, then write results.csv."""
    p = study.profile
    executor = executor or p.executor
    if executor not in ("local", "slurm"):
        raise UserError(f"--executor: unknown executor '{executor}'; known: local, slurm")
    # inputs first: a study with a missing file or model, or no Slurm, writes and submits nothing
    check_inputs(p, study.user)
    if executor == "slurm":
        slurm.check_available()
    else:  # GPUs asked for and not usable, or more workers than slots: an error before anything is written
        slots = plan_slots(workers, runs_per_gpu or p.runs_per_gpu, p.train.device, p.workers)
        for note in (cpu_fallback_note(slots, p.train.device, p.paper), cpu_bf16_note(slots, p.train)):
            if note:
                print(note, file=sys.stderr)
    folder = study.folder
    folder.adopt_earlier_ids(earlier_ids(study.runs))  # runs recorded before run ids held data by content
    folder.write_study(p, study.runs, study_task_sizes(p, study.user))
    if retry_failed:
        folder.reset_failed()
    tags = {r.run_id: r.spec.tags for r in study.runs}
    for rid, (source, tasks) in reusable_runs(study).items():
        folder.adopt(rid, source, tasks, tags[rid])
    folder.reopen_cleaned_supports()
    notebooks = p.notebooks if notebooks is None else notebooks
    if executor == "slurm":
        slurm.run_slurm(folder, p.slurm, notebooks=notebooks, progress=progress)
    else:
        run_local(folder, notebooks=notebooks, progress=progress, slots=slots)
    # claims first, then records: a run released in between counts as done
    held = {rid: folder.held_elsewhere(rid) for rid, s in folder.status.items() if s == "pending"}
    for rid in held:
        folder.refresh(rid)
    folder.collect()
    counts = folder.counts()
    pending = [(rid, who) for rid, who in held.items() if who != "none" and folder.status[rid] == "pending"]
    why = ""
    if counts["pending"] and not (counts["failed"] or counts["blocked"]):
        if pending:
            rid, who = pending[0]
            where = "on another host outside Slurm, which cannot be checked from here" if who == "unchecked" \
                else "still running"
            why = (f"{len(pending)} held by another launcher {where} ({rid}, ...), the rest wait on them; "
                   f"run `mtlstudy run {p.name}` again once it ends")
        else:
            why = ("their processes or Slurm jobs ended without a record (cancelled or killed?); "
                   f"`mtlstudy run {p.name}` again resumes them from their checkpoints")
    return Outcome(counts, folder.failures(), why, collapsed(folder))


def collapsed(folder: StudyFolder) -> list[tuple[str, str, str]]:
    """(run id, task, reason) of every finished run whose best dev score sits at its task's
    one-class level (analysis.collapsed_runs)."""
    from .analysis import collapsed_runs  # pandas and scipy: only once there are results

    return [(r.run_id, r.target, r.reason) for r in collapsed_runs(folder.results_frame()).itertuples()]


@dataclass
class Status:
    started: bool
    counts: dict
    in_flight: list        # (run id, who trains it)
    failures: list         # (run id, reason)
    disk_bytes: int
    collapsed: list = field(default_factory=list)  # (run id, task, reason)


def status(study: Study) -> Status:
    """Where the study stands, from its folder."""
    folder = study.folder
    if not folder.is_started():
        return Status(False, {"pending": len(study.runs)}, [], [], 0)
    return Status(True, folder.counts(), folder.runs_in_flight(), folder.failures(), folder.disk_usage(),
                  collapsed(folder))


def collect(study: Study) -> Path:
    return study.folder.collect()


def significance(study: Study) -> str:
    """The matrix's significant cells and the size heuristic's accuracy over them, in one sentence;
    '' when the study has no MTL and STILTs cells yet."""
    from . import analysis

    if not study.folder.results_table.exists():
        return ""
    cells, _ = analysis.study_cells(study.dir)
    return analysis.significance_summary(cells) if len(cells) else ""


def report(study: Study, compare_to: Study | None = None) -> Path:
    """The analysis notebooks, tables, figures and index.html of a finished study."""
    from .report import build_report

    return build_report(study.dir, compare_to=compare_to.dir if compare_to else None)



def failures(study_dir: str | Path) -> list[tuple[str, str]]:
    """(run id, reason) of every failed run in a study folder."""
    return StudyFolder(study_dir).failures()
