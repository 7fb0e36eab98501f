"""Files of a study, whatever their place (folder.py knows the places): JSON written atomically
and read with a one-line error, checkpoint folders, and a run record's rows of results.csv.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

from .errors import UserError


class CorruptResultError(UserError, ValueError):
    """A study file that is not valid JSON: the message names it."""


def write_json_atomic(path: Path, obj) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, allow_nan=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise CorruptResultError(f"{path}: corrupt JSON at line {e.lineno} ({e.msg})") from None


def library_versions() -> dict[str, str]:
    out = {}
    for name in ("mtlstudy", "torch", "transformers", "numpy", "scikit-learn", "scipy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def remove_checkpoint(folder: Path) -> None:
    """Delete a resume checkpoint folder and the siblings a save leaves while it replaces it
    (`<folder>.tmp` being written, `<folder>.old` the previous one)."""
    for suffix in ("", ".tmp", ".old"):
        shutil.rmtree(Path(folder).with_name(Path(folder).name + suffix), ignore_errors=True)


def has_weights(folder: Path) -> bool:
    return (Path(folder) / "model.safetensors").exists()


RESULT_COLUMNS = ["run_id", "method", "target", "support", "seed", "score", "best_step", "best_epoch", "sampler",
                  "target_fraction", "k", "target_train_size", "support_train_size", "model", "study", "majority_score",
                  "constant_score"]


def result_rows(record: dict, tags: dict | None = None) -> list[dict]:
    """Rows of results.csv for one finished run: one per scored task."""
    tags = {**record.get("tags", {}), **(tags or {})}
    method, tasks = record["method"], record["tasks"]
    rows = []
    for target in record["scored_tasks"]:
        if method == "stilts":
            support = tasks[0]
        elif method == "mtl":
            support = [t for t in tasks if t != target][0]
        else:
            support = ""
        best = record["best"][target]
        sizes = record.get("train_sizes", {})
        rows.append({
            "run_id": record["run_id"], "method": method, "target": target, "support": support,
            "seed": record["seed"], "score": best["score"], "best_step": best["step"],
            "best_epoch": best.get("epoch", math.nan),
            "sampler": record["params"]["train"]["sampler"] if method in ("mtl", "mtl_all") else "",
            "target_fraction": float(tags.get("target_fraction", 1.0)),
            "k": float(tags.get("k", math.nan)),
            "target_train_size": sizes.get(target),
            "support_train_size": record.get("support_train_size") if method == "stilts" else sizes.get(support, math.nan),
            "model": record["model"], "study": tags.get("study", ""),
            "majority_score": record.get("majority_scores", {}).get(target, math.nan),
            "constant_score": record.get("constant_scores", {}).get(target, math.nan),
        })
    return rows
