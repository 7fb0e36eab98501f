"""One run of a study: resolve what it needs from finished runs (the STILTs support checkpoint,
the dynamic samplers' reference scores), train, and write its record. `run_one` claims the run
first and records a failure with its reason, so no run is lost; with notebooks the training runs
inside notebooks/run.ipynb (papermill), an optional wrapper that calls `train_and_record`, the
audit trail kept beside the record.
"""
from __future__ import annotations

import os
import shutil
import time
import traceback
from pathlib import Path

import numpy as np

from . import store
from .claims import claim, release
from .folder import RunFolder
from .results import RunIndex, read_runs, run_status
from .spec import RunSpec

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "run.ipynb"


def _best_support_checkpoint(study_dir: Path, spec: RunSpec) -> Path:
    records = [store.read_result(study_dir, rid) for rid in spec.support_runs]
    support = spec.tasks[0]
    scores = np.array([r["best"][support]["selection_score"] for r in records])
    if spec.support_choice == "best":
        i = int(np.argmax(scores))  # first on ties
    else:
        i = int(np.argmin(np.abs(scores - scores.mean())))
    path = store.support_checkpoint(study_dir, spec.support_runs[i], support)
    if not store.has_weights(path):
        raise FileNotFoundError(f"{path}: support checkpoint missing (was it cleaned up early?)")
    return path


def _reference_scores(study_dir: Path, spec: RunSpec) -> dict[str, float]:
    """Mean single-task dev score per task over its seeds (the dynamic samplers' reference)."""
    out = {}
    for task, rids in spec.reference_runs.items():
        out[task] = float(np.mean([store.read_result(study_dir, r)["best"][task]["selection_score"] for r in rids]))
    return out


def resolve_inputs(study_dir: Path, run_id: str) -> tuple[RunSpec, dict]:
    """The run's spec and what it needs from earlier runs (raises if a dependency is not done)."""
    entry = read_runs(study_dir)[run_id]
    spec = RunSpec.model_validate(entry["spec"])
    for dep in entry["deps"]:
        if run_status(study_dir, dep) != "done":
            raise RuntimeError(f"dependency {dep} is not done")
    kwargs = {}
    if spec.method == "stilts":
        kwargs["init_checkpoint"] = _best_support_checkpoint(study_dir, spec)
    if spec.reference_runs:
        kwargs["reference_scores"] = _reference_scores(study_dir, spec)
    return spec, kwargs


def train_and_record(study_dir: str | Path, run_id: str, progress: bool = False) -> dict:
    """Train the run and write its result.json (called by the run notebook, or directly)."""
    from .train import train

    study_dir = Path(study_dir)
    spec, kwargs = resolve_inputs(study_dir, run_id)
    out = store.run_dir(study_dir, run_id)
    record = train(spec, RunFolder(out), progress=progress, **kwargs)
    record["tags"] = {**spec.tags, "study": study_dir.name}
    if spec.method == "stilts":
        sup = store.read_result(study_dir, Path(kwargs["init_checkpoint"]).parent.parent.name)
        record["support_run"] = sup["run_id"]
        record["support_train_size"] = sup["train_sizes"][spec.tasks[0]]
    store.write_json_atomic(out / "result.json", record)
    store.remove_checkpoint(out / "resume")
    return record


def run_one(study_dir: str | Path, run_id: str, notebooks: bool = True) -> str:
    """Execute one run if it is not done and nobody else has it. Returns its status."""
    study_dir = Path(study_dir)
    status = run_status(study_dir, run_id)
    if status == "done":
        return "done"
    entry = read_runs(study_dir)[run_id]
    failed_deps = [d for d in entry["deps"] if run_status(study_dir, d) == "failed"]
    if failed_deps:
        return "blocked"
    if any(run_status(study_dir, d) != "done" for d in entry["deps"]):
        return "waiting"
    if not claim(study_dir, run_id):
        return "claimed"
    if run_status(study_dir, run_id) == "done":  # finished by another process since the check above
        release(study_dir, run_id)
        return "done"
    t0 = time.time()
    try:
        if notebooks:
            _execute_notebook(study_dir, run_id)
        else:
            train_and_record(study_dir, run_id)
        status = run_status(study_dir, run_id)
        if status != "done":
            raise RuntimeError("the run finished without writing a result")
    except Exception as e:  # noqa: BLE001 - a failed run is recorded, never lost
        reason = failure_reason(e)
        store.write_json_atomic(store.result_path(study_dir, run_id), {
            "run_id": run_id, "status": "failed", "error": reason, "method": entry["kind"],
            "traceback": traceback.format_exc()[-4000:], "wall_seconds": round(time.time() - t0, 2)})
        status = "failed"
    finally:
        release(study_dir, run_id)
    if status == "done" and entry["kind"] == "stilts":
        release_supports(study_dir, entry["spec"]["support_runs"])
    return status


def failure_reason(e: BaseException) -> str:
    """One line that says why a run failed; out-of-memory and a killed notebook kernel named as such."""
    from nbclient.exceptions import DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    text = str(e)
    if isinstance(e, PapermillExecutionError):
        text = f"{e.ename}: {e.evalue}"
    elif isinstance(e, DeadKernelError):  # the notebook's kernel was killed, most often for memory
        text = f"the run notebook's kernel died ({text}): killed, out of memory?"
    elif isinstance(e, MemoryError):
        text = f"out of memory: {type(e).__name__}{': ' + text if text else ''}"
    elif "out of memory" in text.lower() or "can't allocate memory" in text.lower():
        text = f"out of memory: {text.splitlines()[0]}"
    else:
        text = f"{type(e).__name__}: {text}"
    return text.splitlines()[0][:500] if text else type(e).__name__


def _execute_notebook(study_dir: Path, run_id: str):
    import papermill

    out = store.run_dir(study_dir, run_id)
    tmp = out / "run.tmp.ipynb"
    try:
        papermill.execute_notebook(str(NOTEBOOK), str(tmp), parameters={"study_dir": str(study_dir.resolve()),
                                                                        "run_id": run_id},
                                   kernel_name="python3", progress_bar=False, log_output=False, cwd=str(out))
    finally:
        if tmp.exists():
            os.replace(tmp, out / "run.ipynb")


def release_supports(study_dir: Path, support_runs: list[str]) -> None:
    """Delete the support checkpoints (best/) of these runs once every STILTs run that starts from
    them is done: it reads the records of those STILTs runs only, not the whole study's."""
    users = [rid for rid, e in read_runs(study_dir).items()
             if e["kind"] == "stilts" and set(e["spec"]["support_runs"]) & set(support_runs)]
    if all(run_status(study_dir, rid) == "done" for rid in users):
        for rid in support_runs:
            shutil.rmtree(store.run_dir(study_dir, rid) / "best", ignore_errors=True)


def cleanup_checkpoints(study_dir: Path, index: RunIndex | None = None) -> None:
    """Delete support checkpoints no unfinished STILTs run needs, and the resume checkpoints of
    finished runs (left behind when a run was killed between its record and their removal)."""
    index = index or RunIndex(study_dir)
    needed = set()
    for rid, entry in index.runs.items():
        if entry["kind"] == "stilts" and index.status[rid] != "done":
            needed.update(entry["spec"]["support_runs"])
    for rid in index.runs:
        folder = store.run_dir(study_dir, rid)
        if not folder.exists() or index.status[rid] != "done":
            continue
        if (folder / "best").exists() and rid not in needed:
            shutil.rmtree(folder / "best", ignore_errors=True)
        store.remove_checkpoint(folder / "resume")
