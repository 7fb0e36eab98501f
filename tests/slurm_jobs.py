"""Module-level functions run as Slurm jobs by tests/test_slurm.py (importable as tests.slurm_jobs)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path


def stamp(out_dir: str, name: str, sleep_s: float, needs: tuple[str, ...] = (), fail: bool = False) -> str:
    """Write out_dir/<name>.json with start/end times; fail if asked or if a needed record is missing."""
    start = time.time()
    missing = [n for n in needs if not (Path(out_dir) / f"{n}.json").exists()]
    time.sleep(sleep_s)
    if fail:
        raise RuntimeError(f"{name}: failing on purpose")
    if missing:
        raise FileNotFoundError(f"{name}: missing inputs {missing}")
    record = {"name": name, "start": start, "end": time.time(), "job": os.environ.get("SLURM_JOB_ID")}
    (Path(out_dir) / f"{name}.json").write_text(json.dumps(record))
    return name


def append_and_sleep(path: str, first_sleep_s: float, later_sleep_s: float) -> int:
    """Append 'start <restart count>' to path, sleep (first_sleep_s on the first run, later_sleep_s
    once requeued), append 'end'; return the number of starts."""
    restart = os.environ.get("SLURM_RESTART_COUNT", "0")
    with open(path, "a") as f:
        f.write(f"start {restart}\n")
    time.sleep(first_sleep_s if restart == "0" else later_sleep_s)
    with open(path, "a") as f:
        f.write("end\n")
    return sum(1 for line in Path(path).read_text().splitlines() if line.startswith("start"))
