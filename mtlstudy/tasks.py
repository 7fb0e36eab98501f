"""Task registry: GLUE's nine tasks, the generated demo suite, and user tasks from YAML.

A task says where its text and labels live (hub dataset, TSV, CSV or JSON Lines files, or the
generator), what the labels are (a list of two or more, or None for regression), which metric
scores it, and its official train size (used by the size heuristic before any data is loaded). A
user task's files are where its task file says (relative to the task file, or absolute); its train
size is the number of rows of its training file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import UserError

Metric = Literal["mcc", "accuracy", "acc_f1", "spearman"]


FileFormat = Literal["tsv", "csv", "jsonl"]
SUFFIX_FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl"}  # a file's format by its name


class TsvFile(BaseModel):
    """One split's file: TSV (GLUE's layout: tabs, no quoting), CSV (commas, quoted fields) or JSON
    Lines (one object a line). Columns are header names (JSON Lines: keys), or 0-based indices if
    no header. `format`: None takes it from the file's suffix, .tsv when it has none of these."""

    model_config = ConfigDict(extra="forbid")
    file: str = Field(description="The file: relative to the task file, or absolute.")
    format: Optional[FileFormat] = Field(None, description=(
        "`tsv`, `csv` or `jsonl`; unset: from the file's suffix (.tsv when it has none of these)."))
    header: bool = Field(True, description="The first line names the columns (else columns are 0-based indices).")
    text_columns: list[str | int] = Field(description="The text column, or the two of a sentence pair.")
    label_column: str | int = Field(description="The label column.")

    @property
    def file_format(self) -> FileFormat:
        return self.format or SUFFIX_FORMATS.get(Path(self.file).suffix.lower(), "tsv")

    @model_validator(mode="after")
    def _keys_for_json_lines(self):
        if self.file_format == "jsonl" and any(isinstance(c, int) for c in [*self.text_columns, self.label_column]):
            raise ValueError("a JSON Lines file's columns are its keys (names), not positions")
        return self


class Task(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The task's name, as the profile's `tasks` lists it.")
    labels: Optional[list[str]] = Field(None, description=(
        "The class labels as they appear in the files (every label there must be one of them); unset: "
        "a regression task (numeric labels)."))
    metric: Metric = Field(description="How dev is scored (the metrics below).")
    train_size: Optional[int] = Field(default=None, gt=0, description=(
        "Training examples, for the size heuristic and the plan. A task file's own files are counted: a "
        "train_size that differs is an error naming both; leave it out."))
    # Hugging Face hub source
    hub_id: Optional[str] = Field(None, description="A hub dataset to read with `datasets.load_dataset`.")
    hub_config: Optional[str] = Field(None, description="The hub dataset's configuration.")
    hub_text_fields: list[str] = Field([], description="The hub dataset's text field, or the two of a pair.")
    hub_label_field: str = Field("label", description="The hub dataset's label field.")
    hub_splits: dict[str, str] = Field({"train": "train", "dev": "validation"}, description=(
        "The hub dataset's split for `train` and for `dev`."))
    # local files. A path relative to the task file (load_task_file makes it absolute), or, for a
    # task with a glue_folder (GLUE's own tasks), relative to that folder under data.glue_dir
    glue_folder: Optional[str] = Field(None, description=(
        "Read the files from this sub-folder of `data.glue_dir` (GLUE's layout) instead of relative to "
        "the task file."))
    tsv: dict[str, TsvFile] = Field({}, description="The data files: `train` and `dev`, each a file as below.")
    generated: bool = Field(False, description="A task of the generated suite (mtlstudy/generated.py).")

    @field_validator("labels")
    @classmethod
    def _two_labels_or_more(cls, v):
        if v is not None and len(v) < 2:
            raise ValueError("empty list: a task needs two labels or more (leave labels out for regression)"
                             if not v else f"one label {v}: a task needs two or more")
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"labels repeated: {v}")
        return v

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_outputs(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def is_pair(self) -> bool:
        if self.hub_text_fields:
            return len(self.hub_text_fields) == 2
        return any(len(f.text_columns) == 2 for f in self.tsv.values())


class UnknownTaskError(UserError, ValueError):
    pass


class TaskFileError(UserError, ValueError):
    """A user task file that cannot be read or validated: the message names the file and field."""


def _glue(name, folder, hub_config, fields, labels, metric, size, train, dev):
    return Task(name=name, glue_folder=folder, hub_id="nyu-mll/glue", hub_config=hub_config,
                hub_text_fields=fields, labels=labels, metric=metric, train_size=size,
                hub_splits={"train": "train",
                            "dev": "validation_matched" if name == "mnli" else "validation"},
                tsv={"train": train, "dev": dev})


def _same(file_cols):
    return {"train": TsvFile(file="train.tsv", **file_cols), "dev": TsvFile(file="dev.tsv", **file_cols)}


_PAIR = dict(text_columns=["sentence1", "sentence2"], label_column="label")
_BIN = ["0", "1"]
_ENT = ["entailment", "not_entailment"]

GLUE_TASKS: dict[str, Task] = {t.name: t for t in [
    _glue("cola", "CoLA", "cola", ["sentence"], _BIN, "mcc", 8551,
          **_same(dict(header=False, text_columns=[3], label_column=1))),
    _glue("sst2", "SST-2", "sst2", ["sentence"], _BIN, "accuracy", 67349,
          **_same(dict(text_columns=["sentence"], label_column="label"))),
    _glue("mrpc", "MRPC", "mrpc", ["sentence1", "sentence2"], _BIN, "acc_f1", 3668,
          **_same(dict(text_columns=["#1 String", "#2 String"], label_column="Quality"))),
    _glue("stsb", "STS-B", "stsb", ["sentence1", "sentence2"], None, "spearman", 5749,
          **_same(dict(text_columns=["sentence1", "sentence2"], label_column="score"))),
    _glue("qqp", "QQP", "qqp", ["question1", "question2"], _BIN, "acc_f1", 363846,
          **_same(dict(text_columns=["question1", "question2"], label_column="is_duplicate"))),
    _glue("mnli", "MNLI", "mnli", ["premise", "hypothesis"],
          ["entailment", "neutral", "contradiction"], "accuracy", 392702,
          train=TsvFile(file="train.tsv", text_columns=["sentence1", "sentence2"], label_column="gold_label"),
          dev=TsvFile(file="dev_matched.tsv", text_columns=["sentence1", "sentence2"], label_column="gold_label")),
    _glue("qnli", "QNLI", "qnli", ["question", "sentence"], _ENT, "accuracy", 104743,
          **_same(dict(text_columns=["question", "sentence"], label_column="label"))),
    _glue("rte", "RTE", "rte", ["sentence1", "sentence2"], _ENT, "accuracy", 2490, **_same(_PAIR)),
    _glue("wnli", "WNLI", "wnli", ["sentence1", "sentence2"], _BIN, "accuracy", 635, **_same(_PAIR)),
]}

# The generated suite (mtlstudy.generated builds the examples). Not GLUE: made-up tasks for the
# offline demo and the tests. train_size is the default size; profiles choose their own.
GENERATED_TASKS: dict[str, Task] = {t.name: t for t in [
    Task(name="gen_nli", labels=["entailment", "neutral", "contradiction"], metric="accuracy",
         train_size=1200, generated=True, hub_text_fields=["premise", "hypothesis"]),
    Task(name="gen_para", labels=["0", "1"], metric="acc_f1", train_size=600, generated=True,
         hub_text_fields=["sentence1", "sentence2"]),
    Task(name="gen_sim", labels=None, metric="spearman", train_size=300, generated=True,
         hub_text_fields=["sentence1", "sentence2"]),
    Task(name="gen_sent", labels=["0", "1"], metric="accuracy", train_size=400, generated=True,
         hub_text_fields=["sentence"]),
]}


def is_builtin(name: str) -> bool:
    """A GLUE task or one of the generated suite."""
    return name in GLUE_TASKS or name in GENERATED_TASKS


def get_task(name: str, extra: dict[str, Task] | None = None) -> Task:
    """Look a task up by name among GLUE, the generated suite and `extra` (user tasks; one named
    like a built-in task replaces it: the profile allows that only when it says so)."""
    known = {**GLUE_TASKS, **GENERATED_TASKS, **(extra or {})}
    if name not in known:
        raise UnknownTaskError(f"unknown task '{name}'; known tasks: {', '.join(sorted(known))}")
    return known[name]
