"""The tiny study profile the study and reliability tests write: two generated tasks, one seed,
a tiny model, seconds a run."""
from __future__ import annotations

from pathlib import Path

import yaml


# The defaults TrainSettings had before they became the paper's (issue 38): the tests written
# against them name them, so their runs train (and are identified) as before.
OLD_DEFAULTS = {"schedule": "heterogeneous", "group_by_length": True, "pooling": "auto", "max_grad_norm": None}


def tiny_profile(folder: Path, model, name: str = "tiny", **changes) -> Path:
    """Write <folder>/<name>.yaml: gen_para + gen_sent, seed 3, every method, one epoch, 2 workers, no
    notebooks, outputs under <folder>/outputs. `changes` replace keys; a dotted key ("train.epochs")
    replaces one field inside a section."""
    prof = {
        "name": name, "model": str(model), "tasks": ["gen_para", "gen_sent"], "seeds": [3],
        "methods": ["single", "stilts", "mtl", "mtl_all"], "mtl_all_samplers": ["size"],
        "data": {"generated_sizes": {"gen_para": 48, "gen_sent": 24}, "generated_dev_size": 24},
        "train": {"lr": 1e-3, "batch_size": 8, "epochs": 1, "max_length": 32, "sampler": "gap", "threads": 1,
                  **OLD_DEFAULTS},
        "output_dir": str(Path(folder) / "outputs"), "workers": 2, "notebooks": False,
    }
    for key, value in changes.items():
        node = prof
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    path = Path(folder) / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(prof))
    return path


def single_spec(model, size=320, epochs=4, seed=5, **train) -> dict:
    """A single-task run of gen_sent on the tiny model on CPU (RunSpec fields): `train` changes settings."""
    return {"method": "single", "tasks": ["gen_sent"], "seed": seed, "model": str(model),
            "data": {"generated_sizes": {"gen_sent": size}, "generated_dev_size": 32},
            "train": {"lr": 1e-3, "batch_size": 8, "epochs": epochs, "max_length": 32, "threads": 1, "device": "cpu",
                      **train}}


def same_training(a: dict, b: dict):
    """Two run records trained the same: every evaluation, each task's best, examples and steps."""
    assert a["history"] == b["history"]
    assert a["best"] == b["best"]
    assert a["examples_seen"] == b["examples_seen"] and a["total_steps"] == b["total_steps"]
