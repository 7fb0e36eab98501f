"""Data: load a task's split from the hub, TSV files or the generator (and check a task's files
before a study starts); subsample with a seed; tokenize once and cache on disk (memory-mapped);
collate batches padded to their longest.
"""
from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import generated
from .errors import UserError, validation_message
from .tasks import Task, TaskFileError, get_task, is_builtin

csv.field_size_limit(sys.maxsize)


class DataError(UserError, ValueError):
    """Bad or missing data; the message names the file, line or field."""


class DataSource(BaseModel):
    """Where GLUE-style tasks come from. Generated tasks always come from the generator."""

    model_config = ConfigDict(extra="forbid")
    source: Literal["hub", "glue_dir"] = Field("hub", description=(
        "GLUE's tasks from the Hugging Face hub (`hub`, downloaded) or from a folder of GLUE's TSV files "
        "(`glue_dir`, offline)."))
    glue_dir: Optional[Path] = Field(None, description=(
        "The GLUE folder (one sub-folder per task, as GLUE's download) for `source: glue_dir`; relative "
        "to the profile's folder (or the working directory, where it exists there)."))
    generated_sizes: dict[str, int] = Field({}, description=(
        "Training examples per generated task (task -> count). Unset: the task's own size."))
    generated_dev_size: int = Field(300, description="Dev examples of every generated task.")
    generated_seed: int = Field(0, description="The generator's seed.")


@dataclass
class Examples:
    text_a: list[str]
    text_b: Optional[list[str]]
    labels: np.ndarray  # int64 class ids, or float32 for regression

    def __len__(self):
        return len(self.text_a)


def _labels_to_array(task: Task, raw: list, where) -> np.ndarray:
    """Map raw labels (strings from TSV, ints from the hub) to class ids or floats.
    `where(i)` names the file/line or field of row i for the error message."""
    if task.is_regression:
        out = np.empty(len(raw), dtype=np.float32)
        for i, v in enumerate(raw):
            try:
                out[i] = float(v)
            except (TypeError, ValueError):
                raise DataError(f"{where(i)}: label {v!r} is not a number (task {task.name} is regression)") from None
            if not np.isfinite(out[i]):  # 'nan' and 'inf' parse as floats, then poison the loss
                raise DataError(f"{where(i)}: label {v!r} is not a finite number (task {task.name} is regression)")
        return out
    index = {name: i for i, name in enumerate(task.labels)}
    out = np.empty(len(raw), dtype=np.int64)
    for i, v in enumerate(raw):
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            if not 0 <= v < len(task.labels):
                raise DataError(f"{where(i)}: label id {v} outside 0..{len(task.labels) - 1} of task {task.name}")
            out[i] = v
        elif str(v) in index:
            out[i] = index[str(v)]
        else:
            raise DataError(f"{where(i)}: label {v!r} not in the label set {task.labels} of task {task.name}")
    return out


def read_task_data(path: Path, task: Task, split: str) -> Examples:
    """Read one split's file: TSV (GLUE's: tabs, no quoting), CSV (commas, quoted fields) or JSON
    Lines (TsvFile.file_format); UTF-8 with an optional byte-order mark; blank lines skipped.
    Errors name the file and its line (the header is line 1) and what is wrong there."""
    spec = task.tsv[split]
    if not path.is_file():
        raise DataError(f"{path}: file not found (task {task.name}, split {split})")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            read = _read_json_lines if spec.file_format == "jsonl" else _read_delimited
            texts, raw_labels, lines = read(f, path, spec)
    except UnicodeDecodeError:
        raise DataError(_not_utf8(path)) from None
    if not raw_labels:
        raise DataError(f"{path}:{lines[0]}: no rows after the header (task {task.name})" if lines
                        else f"{path}: is empty (task {task.name}, split {split})")
    labels = _labels_to_array(task, raw_labels, lambda i: f"{path}:{lines[i]}")
    return Examples(texts[0], texts[1] if len(texts) > 1 else None, labels)


def _read_delimited(f, path: Path, spec) -> tuple[list[list[str]], list[str], list[int]]:
    """(texts per text column, raw labels, line of each row) of a TSV or CSV file; `lines` holds
    the header's line alone when the file has a header and no rows, and nothing when it is empty."""
    if spec.file_format == "tsv":
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(f, strict=True)

    def records():
        try:
            for row in reader:
                if row:  # a blank line
                    yield reader.line_num, row
        except csv.Error as e:  # CSV: a quote left open, a character after a closing quote; a NUL byte
            raise DataError(f"{path}:{reader.line_num}: {e}") from None

    rows = records()
    texts, raw_labels, lines = [[] for _ in spec.text_columns], [], []
    if spec.header:
        first = next(rows, None)
        if first is None:
            return texts, raw_labels, lines
        lineno, header = first
        lines.append(lineno)
        cols = [_header_position(path, lineno, header, c) for c in spec.text_columns]
        label_col = _header_position(path, lineno, header, spec.label_column)
        width = len(header)
    else:
        cols, label_col, width = list(spec.text_columns), spec.label_column, None
    data_lines = []
    for lineno, row in rows:
        if width is None:
            width = len(row)
            if max([*cols, label_col]) >= width:
                raise DataError(f"{path}:{lineno}: no column {max([*cols, label_col])} (the row has {width} columns)")
        if len(row) != width:
            raise DataError(f"{path}:{lineno}: {len(row)} columns, expected {width}")
        for t, c in zip(texts, cols):
            t.append(row[c])
        raw_labels.append(row[label_col])
        data_lines.append(lineno)
    return texts, raw_labels, data_lines or lines


def _header_position(path: Path, lineno: int, header: list[str], column: str | int) -> int:
    """Where a column named in the task file is in the header (an index is taken as it is)."""
    if isinstance(column, int):
        return column
    where = [i for i, name in enumerate(header) if name == column]
    if not where:
        raise DataError(f"{path}:{lineno}: header lacks column '{column}' (has {header})")
    if len(where) > 1:
        raise DataError(f"{path}:{lineno}: column '{column}' is in the header twice (columns "
                        f"{' and '.join(str(i + 1) for i in where)}), so which to read is not known")
    return where[0]


def _read_json_lines(f, path: Path, spec) -> tuple[list[list[str]], list, list[int]]:
    """(texts per text key, raw labels, line of each row) of a JSON Lines file: one object a line.
    A label that is not a string (1, true) is read as its JSON text ("1", "true")."""
    texts, raw_labels, lines = [[] for _ in spec.text_columns], [], []
    for lineno, line in enumerate(f, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg}, column {e.colno})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        for key in [*spec.text_columns, spec.label_column]:
            if key not in row:
                raise DataError(f"{path}:{lineno}: no key '{key}' (has {sorted(row)})")
        for t, key in zip(texts, spec.text_columns):
            if not isinstance(row[key], str):
                raise DataError(f"{path}:{lineno}: key '{key}' is {json.dumps(row[key])}, not a string")
            t.append(row[key])
        label = row[spec.label_column]
        raw_labels.append(label if isinstance(label, (str, float)) else json.dumps(label))
        lines.append(lineno)
    return texts, raw_labels, lines


def _not_utf8(path: Path) -> str:
    """The first byte of a file that is not UTF-8, by line and column, in one line."""
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                return (f"{path}:{lineno}: not UTF-8 text (byte 0x{line[e.start]:02x} at column {e.start + 1}; "
                        "save the file as UTF-8)")
    return f"{path}: not UTF-8 text"


def load_hub(task: Task, split: str) -> Examples:
    """The real path users run: `datasets.load_dataset(hub_id, hub_config)`."""
    import datasets

    if not task.hub_id:
        raise DataError(f"task {task.name}: no hub_id to load from the hub")
    try:
        ds = datasets.load_dataset(task.hub_id, task.hub_config, split=task.hub_splits[split])
    except Exception as e:  # offline, unknown id, ...
        raise DataError(f"task {task.name}: cannot load {task.hub_id}/{task.hub_config} "
                        f"split {task.hub_splits[split]} from the hub ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''})") from None
    fields = task.hub_text_fields
    for f in fields + [task.hub_label_field]:
        if f not in ds.column_names:
            raise DataError(f"task {task.name}: hub dataset {task.hub_id} has no field '{f}' ({ds.column_names})")
    labels = _labels_to_array(task, ds[task.hub_label_field],
                              lambda i: f"{task.hub_id}/{task.hub_config}[{split}] row {i}")
    return Examples(list(ds[fields[0]]), list(ds[fields[1]]) if len(fields) > 1 else None, labels)


def reads_files(task: Task, source: DataSource) -> bool:
    """Whether a task's splits come from TSV files (else from the hub or the generator)."""
    return bool(task.tsv) and not task.generated and (source.source == "glue_dir" or not task.hub_id)


def task_file(task: Task, split: str, source: DataSource) -> Path:
    """Where a split's TSV file is: its path when absolute (a task file's paths are made absolute
    when it is read), else in the task's folder under data.glue_dir (GLUE's layout)."""
    file = Path(task.tsv[split].file)
    if file.is_absolute():
        return file
    if source.glue_dir is None:
        raise DataError(f"task {task.name}: data source glue_dir needs a 'glue_dir' folder")
    folder = Path(source.glue_dir) / (task.glue_folder or task.name)
    if not folder.is_dir():
        raise DataError(f"{folder}: GLUE task folder not found (task {task.name})")
    return folder / file


def check_task_files(task: Task, source: DataSource) -> None:
    """Read every split of a task that comes from files, as a run will: a missing column, a label
    outside `labels`, an empty file, a regression label that is not a number or a training file
    whose rows are not the task's train_size is a DataError naming the file, its line and what is
    wrong. Before a study starts, so no run fails on it."""
    if reads_files(task, source):
        for split in task.tsv:
            file = task_file(task, split, source)
            rows = len(read_task_data(file, task, split))
            if split == "train" and task.train_size not in (None, rows):
                raise DataError(f"{file}: {rows} rows, but task {task.name} says train_size {task.train_size}")


def load_examples(task: Task, split: str, source: DataSource) -> Examples:
    """One split ('train' or 'dev') of a task, from the generator, its TSV files or the hub."""
    if task.generated:
        size = source.generated_sizes.get(task.name, task.train_size) if split == "train" else source.generated_dev_size
        a, b, y = generated.generate(task.name, split, size, seed=source.generated_seed)
        return Examples(a, b, _labels_to_array(task, y, lambda i: f"{task.name} row {i}"))
    if reads_files(task, source):
        return read_task_data(task_file(task, split, source), task, split)
    return load_hub(task, split)


# ---- what the data is, for a run id ---------------------------------------------------------

def data_by_content(source: DataSource, user_tasks: dict[str, Task], tasks: list[str]) -> tuple[dict, dict]:
    """`source` and `user_tasks` as they enter the id of a run of `tasks`: every file a task reads
    named by its content's sha256, not its path, so the same data reached through another path (a
    moved checkout, a cluster's other mount, a colleague's copy) is the same run. `data.glue_dir`
    becomes the digests of the files the run's GLUE tasks read from it, by their path under it
    (None when they read none, as without a glue_dir); `user_tasks` holds the run's own."""
    data, users, glue_files = source.model_dump(mode="json"), {}, {}
    for name in tasks:
        if name in user_tasks:
            task = user_tasks[name]
            users[name] = task.model_dump(mode="json")
            if reads_files(task, source):
                for split, f in users[name]["tsv"].items():
                    f["file"] = _content(task, split, source)
        elif is_builtin(name) and reads_files(task := get_task(name), source):
            glue_files.update({f"{task.glue_folder or name}/{f.file}": _content(task, split, source)
                               for split, f in task.tsv.items()})
    if source.glue_dir is not None:
        data["glue_dir"] = glue_files or None
    return data, users


def _content(task: Task, split: str, source: DataSource) -> str:
    try:
        return file_digest(task_file(task, split, source))
    except (DataError, FileNotFoundError):  # `plan` before the data is there; `run` checks it first and stops
        return "missing"


def data_by_path(source: DataSource, user_tasks: dict[str, Task], tasks: list[str]) -> tuple[dict, dict]:
    """`source` and `user_tasks` as they entered a run id before 2026-12: with the files' absolute
    paths and data.glue_dir's (a key added since, at its default, is left out)."""
    users = {name: task.model_dump(mode="json") for name, task in user_tasks.items()}
    for task in users.values():
        for f in task["tsv"].values():
            if f["format"] is None:
                del f["format"]
    return source.model_dump(mode="json"), users


def file_digest(path: Path) -> str:
    """'sha256:<hex>' of a file's bytes; read once in a process while its size and time stamp stay."""
    stat = Path(path).stat()
    return _digest(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=None)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


# ---- subsampling -------------------------------------------------------------------------

def subsample_size(n: int, count: int | None = None, fraction: float | None = None) -> int:
    """Examples kept of n: `count` caps the set (a cap above n keeps all), then `fraction` of what
    is left (the ablation's target fraction of a capped task). The planner and the loader both
    ask this function."""
    if count is not None:
        if count <= 0:
            raise ValueError(f"subsample of {n} examples is empty (count {count})")
        n = min(n, count)
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        n = round(fraction * n)
        if n <= 0:
            raise ValueError(f"subsample at fraction {fraction} is empty")
    return n


def subsample_indices(n: int, seed: int, count: int | None = None, fraction: float | None = None) -> np.ndarray:
    """Seeded random subset of range(n) of subsample_size(n, count, fraction) examples. The subsets
    for one seed are nested: a smaller one is a prefix of the same permutation, so it lies inside a
    larger one."""
    size = subsample_size(n, count, fraction)
    if size == n:
        return np.arange(n)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[:size])


# ---- tokenization cache ------------------------------------------------------------------

@dataclass
class Tokenized:
    """Token ids of one split, stored flat with offsets (memory-mapped from the cache)."""

    input_ids: np.ndarray       # int32, all examples concatenated
    token_type_ids: Optional[np.ndarray]
    offsets: np.ndarray         # int64, len n+1
    labels: np.ndarray

    def __len__(self):
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def subset(self, indices: np.ndarray) -> "Tokenized":
        """A copy holding only `indices` (in that order)."""
        lengths = self.lengths()[indices]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        take = np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in indices]) \
            if len(indices) else np.zeros(0, dtype=np.int64)
        return Tokenized(self.input_ids[take], None if self.token_type_ids is None else self.token_type_ids[take],
                         offsets, self.labels[indices])


def _content_key(tokenizer, examples: Examples, max_length: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([type(tokenizer).__name__, str(tokenizer.name_or_path), len(tokenizer),
                         max_length, examples.text_b is not None]).encode())
    for t in examples.text_a:
        h.update(t.encode() + b"\0")
    for t in examples.text_b or []:
        h.update(t.encode() + b"\0")
    h.update(examples.labels.tobytes())
    return h.hexdigest()[:20]


def default_cache_dir() -> Path:
    return Path(os.environ.get("MTLSTUDY_CACHE", Path.home() / ".cache" / "mtlstudy")) / "tokenized"


def tokenize(tokenizer, examples: Examples, max_length: int, cache_dir: Path | None = None) -> Tokenized:
    """Tokenize once per (tokenizer, content, max length); later calls memory-map the cache."""
    cache_dir = Path(cache_dir or default_cache_dir())
    folder = cache_dir / _content_key(tokenizer, examples, max_length)
    if (folder / "done").exists():
        return _load_cached(folder)
    enc = tokenizer(examples.text_a, examples.text_b, truncation=True, max_length=max_length)
    ids = enc["input_ids"]
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in ids])]).astype(np.int64)
    arrays = {"input_ids": np.fromiter((t for x in ids for t in x), dtype=np.int32, count=offsets[-1]),
              "offsets": offsets, "labels": examples.labels}
    if "token_type_ids" in enc:
        arrays["token_type_ids"] = np.fromiter((t for x in enc["token_type_ids"] for t in x),
                                               dtype=np.int8, count=offsets[-1])
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".tmp-"))
    for name, arr in arrays.items():
        np.save(tmp / f"{name}.npy", arr)
    (tmp / "done").touch()
    try:
        os.rename(tmp, folder)
    except OSError:  # another process finished first: theirs is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return _load_cached(folder)


def _load_cached(folder: Path) -> Tokenized:
    def load(name):
        p = folder / f"{name}.npy"
        return np.load(p, mmap_mode="r") if p.exists() else None

    return Tokenized(load("input_ids"), load("token_type_ids"), np.asarray(load("offsets")), np.asarray(load("labels")))


# ---- batches -----------------------------------------------------------------------------

def collate(data: Tokenized, indices, pad_id: int, pad_to_multiple_of: int = 1) -> dict[str, "torch.Tensor"]:
    """A batch of `indices`, padded to the longest example in it (rounded up to a multiple)."""
    import torch  # here, not at the top: `mtlstudy plan` and input validation need no torch (3 s to import)

    starts, ends = data.offsets[indices], data.offsets[np.asarray(indices) + 1]
    width = int((ends - starts).max())
    width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    ids = np.full((len(indices), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(indices), width), dtype=np.int64)
    types = np.zeros((len(indices), width), dtype=np.int64) if data.token_type_ids is not None else None
    for row, (s, e) in enumerate(zip(starts, ends)):
        ids[row, : e - s] = data.input_ids[s:e]
        mask[row, : e - s] = 1
        if types is not None:
            types[row, : e - s] = data.token_type_ids[s:e]
    batch = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
             "labels": torch.from_numpy(np.asarray(data.labels[indices]))}
    if types is not None:
        batch["token_type_ids"] = torch.from_numpy(types)
    return batch


def load_task_file(path: str | Path) -> Task:
    """A user task from YAML (same fields as Task). Its data files are found where it says: paths
    relative to the task file's folder are made absolute (unless it names a `glue_folder`, GLUE's
    layout under data.glue_dir). Its train size is the training file's rows (so the file is read
    and checked); a `train_size` that says otherwise is an error. Errors name the file and the
    field, or the data file and its line."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise TaskFileError(f"{path}: task file not found") from None
    except UnicodeDecodeError as e:
        raise TaskFileError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except yaml.YAMLError as e:
        raise TaskFileError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise TaskFileError(f"{path}: " + ("is empty" if raw is None else "a task file must be a mapping of fields to values"))
    try:
        task = Task.model_validate(raw)
    except ValidationError as e:
        raise TaskFileError(validation_message(e, f"{path}: ", what="field")) from None
    if task.glue_folder is not None or not task.tsv:
        return task
    for split, f in task.tsv.items():
        f.file = str((path.parent / f.file).resolve())  # an absolute path stays as it is
        if not Path(f.file).is_file():
            raise TaskFileError(f"{path}: field 'tsv.{split}.file': {f.file}: file not found")
    if "train" in task.tsv:
        rows = len(read_task_data(Path(task.tsv["train"].file), task, "train"))
        if task.train_size not in (None, rows):
            raise TaskFileError(f"{path}: field 'train_size': {task.train_size}, but {task.tsv['train'].file} has "
                                f"{rows} rows (leave train_size out: it is counted)")
        task.train_size = rows
    return task
