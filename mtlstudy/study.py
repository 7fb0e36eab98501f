"""A study end to end, as the CLI and the stage notebooks drive it: open, plan, run, collect."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import execute
from .plan import (PlannedRun, Profile, ProfileError, apply_overrides, check_inputs, load_profile, make_plan,
                   profile_from_dict, read_profile_file)

REPO = Path(__file__).resolve().parent.parent  # the repository: params/, notebooks/, outputs/
PARAMS_DIRS = [Path.cwd() / "params", REPO / "params"]


@dataclass
class Study:
    profile: Profile
    user: dict
    plan: list[PlannedRun]

    @property
    def dir(self) -> Path:
        return self.profile.study_dir


def profile_path(name_or_path: str | Path) -> Path:
    """A path (relative: to the working directory, else to the repository), or a profile name
    looked up in ./params and the repository's params/."""
    p = Path(name_or_path)
    if p.exists():
        return p
    if not p.is_absolute() and (REPO / p).is_file():
        return REPO / p
    for d in PARAMS_DIRS:
        if (d / f"{name_or_path}.yaml").exists():
            return d / f"{name_or_path}.yaml"
    raise ProfileError(f"{name_or_path}: no such profile file, and no params/{name_or_path}.yaml")


def open_study(name_or_path: str | Path, overrides: list[str] = ()) -> Study:
    profile, user = load_profile(profile_path(name_or_path), overrides)
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
    if not (path / "results.csv").is_file():
        why = "no such folder" if not path.is_dir() else "no results.csv in it (has the study finished?)"
        rel = "" if Path(study_dir).expanduser().is_absolute() else f" (study_dir {str(study_dir)!r} is relative to the repository {REPO})"
        raise FileNotFoundError(f"study not found at {path}: {why}{rel}")
    return path


def run(study: Study, executor: str | None = None, workers: int | None = None, notebooks: bool | None = None,
        retry_failed: bool = False, progress: bool = True) -> dict:
    """Run what is not done; returns counts (done, failed, blocked, pending)."""
    p = study.profile
    executor = executor or p.executor
    if executor not in ("local", "slurm"):
        raise ProfileError(f"unknown executor '{executor}'; known: local, slurm")
    # inputs first: a study with a missing file or model, or no Slurm, writes and submits nothing
    check_inputs(p, study.user)
    if executor == "slurm":
        from .slurm import slurm_unavailable_reason

        reason = slurm_unavailable_reason()
        if reason:
            raise RuntimeError(f"executor slurm: {reason}")
    d = execute.write_study(p, study.plan, study.user)
    if retry_failed:
        execute.reset_failed(d)
    notebooks = p.notebooks if notebooks is None else notebooks
    if executor == "slurm":
        counts = execute.run_slurm(d, p, notebooks=notebooks, progress=progress)
    else:
        counts = execute.run_local(d, workers=workers or p.workers, notebooks=notebooks, progress=progress)
    execute.collect(d)
    return counts


def failures(study_dir: Path) -> list[tuple[str, str]]:
    from . import store

    out = []
    for rid in execute.load_planned(study_dir):
        if execute.run_status(study_dir, rid) == "failed":
            out.append((rid, store.read_result(study_dir, rid).get("error", "")))
    return out
