"""A study end to end, as the CLI and the stage notebooks drive it: open, plan, run, collect."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import execute
from .plan import PlannedRun, Profile, ProfileError, check_inputs, load_profile, make_plan

PARAMS_DIRS = [Path.cwd() / "params", Path(__file__).resolve().parent.parent / "params"]


@dataclass
class Study:
    profile: Profile
    user: dict
    plan: list[PlannedRun]

    @property
    def dir(self) -> Path:
        return self.profile.study_dir


def profile_path(name_or_path: str | Path) -> Path:
    """A path, or a profile name looked up in ./params and the repository's params/."""
    p = Path(name_or_path)
    if p.exists():
        return p
    for d in PARAMS_DIRS:
        if (d / f"{name_or_path}.yaml").exists():
            return d / f"{name_or_path}.yaml"
    raise ProfileError(f"{name_or_path}: no such profile file, and no params/{name_or_path}.yaml")


def open_study(name_or_path: str | Path, overrides: list[str] = ()) -> Study:
    profile, user = load_profile(profile_path(name_or_path), overrides)
    return Study(profile, user, make_plan(profile, user))


def study_from_values(values: dict, base: str | Path | None = None) -> Study:
    """A study from papermill-injected profile keys (`papermill -f params/x.yaml`), over `base`."""
    import tempfile

    import yaml

    raw = yaml.safe_load(profile_path(base).read_text()) if base else {}
    raw.update({k: v for k, v in values.items() if k in Profile.model_fields})
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=".", delete=False) as f:
        yaml.safe_dump(raw, f)
    try:
        return open_study(f.name)
    finally:
        Path(f.name).unlink()


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
