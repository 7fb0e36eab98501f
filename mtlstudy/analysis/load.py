"""Reading a finished study folder: its results table, study.json, run records, and the tasks'
train sizes and order. Scores are dev scores x100 ("points")."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import BadValue, StudyNotFound
from ..folder import StudyFolder

PAIR_METHODS = ("mtl", "stilts")


def load_results(study_dir: Path) -> pd.DataFrame:
    """Read <study_dir>/results.csv with empty strings (not NaN) in the text columns."""
    path = StudyFolder(study_dir).results_table
    if not path.is_file():
        raise StudyNotFound(f"no results.csv in {study_dir}")
    df = pd.read_csv(path, dtype={"run_id": str, "target": str, "support": str, "sampler": str,
                                  "method": str, "model": str, "study": str})
    for col in ("support", "sampler", "model", "study"):
        if col not in df:
            df[col] = ""
        df[col] = df[col].fillna("").astype(str)
    for col, default in (("k", np.nan), ("target_fraction", 1.0), ("support_train_size", np.nan)):
        if col not in df:
            df[col] = default
    if "best_epoch" not in df:  # written before the column existed: each run's record has it
        df["best_epoch"] = [((load_run(study_dir, r.run_id) or {}).get("best", {}).get(r.target) or {}).get("epoch", np.nan)
                            for r in df.itertuples()]
    return df


def load_study_info(study_dir: Path) -> dict:
    """study.json as a dict, or {} when the study has none."""
    path = StudyFolder(study_dir).study_file
    return json.loads(path.read_text()) if path.is_file() else {}


def is_paper_study(study_dir: Path) -> bool:
    """True when study.json says the study follows the paper's setting (so paper values apply)."""
    info = load_study_info(study_dir)
    return bool(info.get("paper", False))


def load_run(study_dir: Path, run_id: str) -> dict | None:
    """The run's record (result.json) as a dict, or None when it has none; a corrupt record is a
    one-line error naming the file (the store's reader)."""
    return StudyFolder(study_dir).read_record(str(run_id))


def pairwise_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of the pairwise comparison: MTL and STILTs, not the size ablation."""
    return df[df["method"].isin(PAIR_METHODS) & df["k"].isna()]


def ablation_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of the size ablation (support subsampled to k x target size)."""
    return df[df["method"].isin(PAIR_METHODS) & df["k"].notna()]


def task_sizes(df: pd.DataFrame, study_dir: Path | None = None) -> dict[str, int]:
    """Train size per task: study.json task_sizes if present, else the largest size in results."""
    if study_dir is not None:
        sizes = load_study_info(study_dir).get("task_sizes")
        if sizes:
            return {t: int(s) for t, s in sizes.items()}
    full = df[df["k"].isna()]
    sizes = full.groupby("target")["target_train_size"].max().to_dict()
    supports = full[full["support"] != ""].dropna(subset=["support_train_size"])
    for task, size in supports.groupby("support")["support_train_size"].max().items():
        sizes.setdefault(task, size)
    return {t: int(s) for t, s in sizes.items()}


def task_order(sizes: dict[str, int], tasks=None) -> list[str]:
    """Tasks ordered by train size, largest first (ties by name); only `tasks` if given."""
    names = sizes if tasks is None else [t for t in tasks if t in sizes]
    missing = [] if tasks is None else [t for t in tasks if t not in sizes]
    if missing:
        raise BadValue(f"no train size for task(s) {', '.join(map(str, missing))}")
    return sorted(names, key=lambda t: (-sizes[t], t))


def study_model(df: pd.DataFrame) -> str:
    """The model name(s) of a study's results, for titles."""
    return ", ".join(sorted(set(df["model"]) - {""})) or "model"
