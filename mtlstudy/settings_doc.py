"""docs/settings.md, generated from the schema: one table per section of a profile (key, type,
default, what it does, whether it enters the run id) and one for a task file, from the pydantic
models' fields and their descriptions, so the page cannot drift from the code.

    python -m mtlstudy.settings_doc           # rewrite docs/settings.md
    python -m mtlstudy.settings_doc --check   # exit 1 when docs/settings.md is not what it would write
"""
from __future__ import annotations

import argparse
import sys
import types
import typing
from pathlib import Path

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from .data import DataSource
from .metrics import METRICS
from .profile import CHOOSE_RUNS, Ablation, Profile, SlurmSettings
from .spec import MULTITASK_ONLY, OUTSIDE_RUN_ID, RunSpec, TrainSettings
from .tasks import Metric, Task, TsvFile

PAGE = Path(__file__).resolve().parent.parent / "docs" / "settings.md"

INTRO = """\
# Settings

Every key a profile (`params/*.yaml`, or any YAML file) and a task file can hold, generated from
the schema by `python -m mtlstudy.settings_doc` (`make settings-doc`); `tests/test_settings.py`
fails when a field has no description or this page is stale. Do not edit it by hand: the
descriptions are the `description=` of each field in `mtlstudy/profile.py`, `spec.py`, `data.py`
and `tasks.py`.

Unknown keys and wrong types are refused with one line naming the key. Any key can be set on the
command line too: `mtlstudy run paper --set train.epochs=3 --set seeds=[42,544460]`. The defaults
are the paper's protocol: a profile that names only `model` and `tasks` plans the `paper` study's
runs (`params/paper.yaml`).

**Run id.** A run's id is a hash of what changes its result, so a study finds its finished runs
(docs/study.md). In the last column, *yes*: changing the key gives the runs new ids (they are
trained again); *no*: the same runs; *multi-task runs*: the ids of runs that train several tasks
at once (pairwise MTL, MTL-All) change, single-task and STILTs runs keep theirs; *which runs*: the
key chooses which runs the study has (each run's own tasks, seed and sampler are in its id);
*by content*: the content of the files a run reads enters its id, not their paths, so the same
data in another folder keeps the runs (docs/tasks.md).
"""

# Keys whose files enter a run id by their content (data.data_by_content), not by their path.
BY_CONTENT = {("Profile", "user_tasks"), ("DataSource", "glue_dir")}

SECTIONS = [
    ("Profile keys", "", Profile, "The top level of a profile."),
    ("train.*", "train.", TrainSettings, "How every run trains: the optimizer, the batches, the multi-task "
     "sampling, the head, the precision."),
    ("data.*", "data.", DataSource, "Where the tasks' data comes from. The generated tasks (`gen_*`) always "
     "come from the generator."),
    ("slurm.*", "slurm.", SlurmSettings, "What each run's Slurm job asks for, with `executor: slurm` "
     "(docs/executors.md)."),
    ("ablation.*", "ablation.", Ablation, "Figure 2's size ablation: the target subsampled to each fraction, "
     "the support to K x the subsampled target's size."),
]

TASK_INTRO = """\
## Task files

A task of your own is a YAML file listed under the profile's `user_tasks`
(`examples/own_task/own_task.yaml` is one). Every key of a user task's file enters the id of each
run that trains or evaluates the task, its files by their content (sha256), not their path: the
same study reached through another path keeps its run ids.
"""


def run_id_note(model: type[BaseModel], key: str) -> str:
    """Whether `key` of `model` enters the run id: yes, no, multi-task runs, which runs or by content."""
    if (model.__name__, key) in BY_CONTENT:
        return "by content"
    if model is Profile:
        return "which runs" if key in CHOOSE_RUNS else "yes" if key in RunSpec.model_fields else "no"
    if model is TrainSettings:
        return "no" if key in OUTSIDE_RUN_ID else "multi-task runs" if key in MULTITASK_ONLY else "yes"
    return {DataSource: "yes", SlurmSettings: "no", Ablation: "which runs"}[model]


def type_text(annotation) -> str:
    """A field's type in words: `a`, `b` for a choice; list of, map of; "or unset" for Optional."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        kinds = [type_text(a) for a in args if a is not type(None)]
        return " or ".join(kinds) + (" or unset" if type(None) in args else "")
    if origin is list:
        return f"list of {type_text(args[0])}"
    if origin is dict:
        return f"map of {type_text(args[0])} to {type_text(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return {str: "text", int: "integer", float: "number", bool: "true or false", Path: "path"}[annotation]


def bounds_text(field: FieldInfo) -> str:
    """A field's bounds (gt, ge, lt, min_length) in words."""
    parts = []
    for m in field.metadata:
        if isinstance(m, annotated_types.Gt):
            parts.append(f"> {m.gt}")
        elif isinstance(m, annotated_types.Ge):
            parts.append(f">= {m.ge}")
        elif isinstance(m, annotated_types.Lt):
            parts.append(f"< {m.lt}")
        elif isinstance(m, annotated_types.MinLen):
            parts.append("not empty")
    return ", ".join(parts)


def value_text(value) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {value_text(v)}" for k, v in value.items()) + "}"
    return str(value) if str(value) else '""'


def default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    default = field.get_default()
    return "the section's" if isinstance(default, BaseModel) else f"`{value_text(default)}`"


def table(model: type[BaseModel], prefix: str, run_ids: bool = True) -> str:
    head = "| key | type | default | what it does |" + (" run id |" if run_ids else "")
    rows = [head, "|---|---|---|---|" + ("---|" if run_ids else "")]
    for key, field in model.model_fields.items():
        kind = type_text(field.annotation)
        bounds = bounds_text(field)
        cells = [f"`{prefix}{key}`", kind + (f" ({bounds})" if bounds else ""), default_text(field),
                 field.description or ""]
        if run_ids:
            cells.append(run_id_note(model, key))
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"


def missing_descriptions() -> list[str]:
    """`Model.field` for each field of the documented models that has no description."""
    models = [m for _, _, m, _ in SECTIONS] + [Task, TsvFile]
    return [f"{m.__name__}.{k}" for m in models for k, f in m.model_fields.items() if not f.description]


def render() -> str:
    if set(METRICS) != set(typing.get_args(Metric)):
        raise RuntimeError(f"metrics.METRICS {sorted(METRICS)} and tasks.Metric {typing.get_args(Metric)} differ")
    parts = [INTRO]
    for title, prefix, model, intro in SECTIONS:
        parts.append(f"## {title}\n\n{intro}\n\n{table(model, prefix)}")
    parts.append(f"{TASK_INTRO}\n{table(Task, '', run_ids=False)}")
    parts.append("Each file under `tsv` (`tsv.train`, `tsv.dev`): TSV (GLUE's layout: tabs, no quoting), CSV "
                 "(commas, quoted fields) or JSON Lines (one object a line; columns are its keys).\n\n"
                 f"{table(TsvFile, 'tsv.<split>.', run_ids=False)}")
    parts.append("The metrics a task can name (scores are x100):\n\n| metric | score |\n|---|---|\n"
                 + "".join(f"| `{m}` | {text} |\n" for m, text in METRICS.items()))
    return "\n".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtlstudy.settings_doc", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/settings.md is stale")
    args = parser.parse_args(argv)
    missing = missing_descriptions()
    if missing:
        print(f"fields without a description: {', '.join(missing)}", file=sys.stderr)
        return 1
    text = render()
    if args.check:
        if not PAGE.is_file() or PAGE.read_text() != text:
            print(f"{PAGE} is stale: run python -m mtlstudy.settings_doc", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
