"""One run of a study: resolve what it needs from finished runs (the STILTs support checkpoint,
the dynamic samplers' reference scores), train, and write its record. `run_one` claims the run
first and records a failure with its reason, so no run is lost; with notebooks the training runs
inside notebooks/run.ipynb (papermill), an optional wrapper that calls `train_and_record`, the
audit trail kept beside the record.
"""
from __future__ import annotations

import os
import time
import traceback
from pathlib import Path

import numpy as np

from .folder import StudyFolder
from .kernel import kernel_config
from .spec import RunSpec

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "run.ipynb"


def _support_run(folder: StudyFolder, spec: RunSpec) -> str:
    """The id of the support run a STILTs run starts from: the best of the support's seeds on
    its dev set (first on ties), or the one closest to their mean (support_choice)."""
    support = spec.tasks[0]
    scores = np.array([folder.read_record(rid)["best"][support]["selection_score"] for rid in spec.support_runs])
    if spec.support_choice == "best":
        i = int(np.argmax(scores))  # first on ties
    else:
        i = int(np.argmin(np.abs(scores - scores.mean())))
    return spec.support_runs[i]


def _reference_scores(folder: StudyFolder, spec: RunSpec) -> dict[str, float]:
    """Mean single-task dev score per task over its seeds (the dynamic samplers' reference)."""
    return {task: float(np.mean([folder.read_record(r)["best"][task]["selection_score"] for r in rids]))
            for task, rids in spec.reference_runs.items()}


def resolve_inputs(folder: StudyFolder, run_id: str) -> tuple[RunSpec, dict]:
    """The run's spec and what it needs from earlier runs (raises if a dependency is not done):
    `init_checkpoint` and `support_run` for STILTs, `reference_scores` for a dynamic sampler."""
    entry = folder.read_run_list()[run_id]
    spec = RunSpec.recorded(entry["spec"])
    for dep in entry["deps"]:
        if folder.read_status(dep) != "done":
            raise RuntimeError(f"dependency {dep} is not done")
    inputs = {}
    if spec.method == "stilts":
        support_run = _support_run(folder, spec)
        checkpoint = folder.support_checkpoint(support_run, spec.tasks[0])
        if not folder.has_support_checkpoint(support_run, spec.tasks[0]):
            raise FileNotFoundError(f"{checkpoint}: support checkpoint missing (was it cleaned up early?)")
        inputs["support_run"], inputs["init_checkpoint"] = support_run, checkpoint
    if spec.reference_runs:
        inputs["reference_scores"] = _reference_scores(folder, spec)
    return spec, inputs


def train_and_record(study_dir: str | Path | StudyFolder, run_id: str, progress: bool = False) -> dict:
    """Train the run and write its result.json (called by the run notebook, or directly)."""
    from .train import train  # torch: only in the process that trains

    folder = study_dir if isinstance(study_dir, StudyFolder) else StudyFolder(study_dir)
    spec, inputs = resolve_inputs(folder, run_id)
    support_run = inputs.pop("support_run", None)
    record = train(spec, folder.run(run_id), progress=progress, **inputs)
    record["tags"] = {**spec.tags, "study": folder.name}
    if support_run is not None:
        record["support_run"] = support_run
        record["support_train_size"] = folder.read_record(support_run)["train_sizes"][spec.tasks[0]]
    folder.record_result(run_id, record)
    return record


def run_one(folder: StudyFolder, run_id: str, notebooks: bool = True) -> str:
    """Execute one run if it is not done and nobody else has it. Returns its status."""
    if folder.read_status(run_id) == "done":
        return "done"
    entry = folder.read_run_list()[run_id]
    deps = {d: folder.read_status(d) for d in entry["deps"]}
    if "failed" in deps.values():
        return "blocked"
    if any(s != "done" for s in deps.values()):
        return "waiting"
    if not folder.claim(run_id):
        return "claimed"
    if folder.read_status(run_id) == "done":  # finished by another process since the check above
        folder.release(run_id)
        return "done"
    t0 = time.time()
    try:
        if notebooks:
            _execute_notebook(folder, run_id)
        else:
            train_and_record(folder, run_id)
        status = folder.read_status(run_id)
        if status != "done":
            raise RuntimeError("the run finished without writing a result")
    except Exception as e:  # noqa: BLE001 - a failed run is recorded, never lost
        folder.record_failure(run_id, failure_reason(e), traceback=traceback.format_exc()[-4000:],
                              wall_seconds=round(time.time() - t0, 2))
        status = "failed"
    finally:
        folder.release(run_id)
    if status == "done" and entry["kind"] == "stilts":
        folder.release_supports(entry["spec"]["support_runs"])
    return status


def exit_code(status: str) -> int:
    """A `mtlstudy run-one` process's exit code for the run's status: 0 done (or trained by another
    launcher), 1 otherwise."""
    return 0 if status in ("done", "claimed") else 1


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


def _execute_notebook(folder: StudyFolder, run_id: str):
    import papermill  # a few seconds to import: only where a run goes through its notebook

    run = folder.run(run_id)
    tmp = run.path / "run.tmp.ipynb"
    try:
        papermill.execute_notebook(str(NOTEBOOK), str(tmp), parameters={"study_dir": str(folder.root.resolve()),
                                                                        "run_id": run_id},
                                   kernel_name="python3", progress_bar=False, log_output=False, cwd=str(run.path),
                                   config=kernel_config())
    finally:
        if tmp.exists():
            os.replace(tmp, run.notebook)
