"""A run's record (result.json, written by folder.StudyFolder.record_result): the library versions
it names, and its rows of results.csv.
"""
from __future__ import annotations

import math
from importlib import metadata


def library_versions() -> dict[str, str]:
    out = {}
    for name in ("mtlstudy", "torch", "transformers", "numpy", "scikit-learn", "scipy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


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
