"""Persistent workers for the local executor: one long-lived process per slot (a GPU, or a share of
one with runs_per_gpu > 1, or a CPU worker) that imports torch and transformers once, keeps the
tokenizer and the encoder's pre-trained weights in memory (model.keep_pretrained_in_memory), and
takes runs one after another, each through `runner.run_one`, the same call a `mtlstudy run-one`
process makes. Before each run it puts back the process state a fresh process would have (torch's
RNG and thread count, the environment, the working directory, warning filters), so a run's record
does not depend on the runs before it. Each run's output goes to its own log.txt.

A worker that dies in a run (segfault, SIGKILL from the out-of-memory killer) answers with its
exit status, as a `run-one` process would; the launcher records the run (local._record_lost_run)
and the next run on that slot starts a new worker. After a run that failed with CUDA in use the
worker checks its CUDA context (a device-side assert or an illegal memory access leaves it
unusable); if it is broken, the worker answers, saying so, and exits, and the slot's next run
starts in a new worker instead of failing in the broken one.

Protocol: the launcher writes one JSON line per run on the worker's stdin ({"study_dir", "run_id",
"notebooks"}); the worker answers one JSON line ({"status", "exit", "restart"}) on the stdout it was started
with, `restart` true when it exits after answering. End of stdin ends the worker.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path


# The thread counts a run's process takes from its environment (a value already set is kept): torch's
# and OpenMP's, and the fast tokenizers' pool. The local executor sets them per slot, Slurm per job.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "RAYON_RS_NUM_CPUS")


@dataclass
class Slot:
    """Where runs go one at a time: a GPU (its id in CUDA_VISIBLE_DEVICES) or the CPU (gpu None),
    with the torch threads its worker uses, and the worker process once started."""
    gpu: str | None
    threads: int
    process: subprocess.Popen | None = field(default=None, repr=False)
    command: tuple = (sys.executable, "-m", "mtlstudy.workers")  # the worker process's command line

    def env(self) -> dict:
        env = dict(os.environ)
        env["CUDA_VISIBLE_DEVICES"] = "" if self.gpu is None else str(self.gpu)
        for name in THREAD_VARIABLES:
            env.setdefault(name, str(self.threads))
        env["MTLSTUDY_WORKER_THREADS"] = str(self.threads)
        return env

    def run(self, study_dir: Path, run_id: str, notebooks: bool) -> int:
        """Have this slot's worker (started now if there is none) execute one run; 0 or 1 as the
        exit code of `mtlstudy run-one` would be, or the worker's exit status when it died in the
        run (then the next run starts a new worker)."""
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen(list(self.command), env=self.env(),
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        job = {"study_dir": str(study_dir), "run_id": run_id, "notebooks": notebooks}
        try:
            self.process.stdin.write(json.dumps(job) + "\n")
            self.process.stdin.flush()
            answer = self.process.stdout.readline()
        except (BrokenPipeError, OSError):
            answer = ""
        if not answer:  # the worker died
            code = self.process.wait()
            self.process = None
            return code if code != 0 else 1
        reply = json.loads(answer)
        if reply.get("restart"):  # its CUDA context broke in this run: it exits, the next run gets a new one
            self.close()
        return int(reply["exit"])

    def close(self):
        """End the worker: it finishes nothing more (end of its stdin) and exits."""
        if self.process is not None:
            try:
                self.process.stdin.close()
            except OSError:
                pass
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


# ---- the worker process ------------------------------------------------------------------------

class FreshState:
    """The process state a run may change, taken when the worker starts and put back before each run."""

    def __init__(self, threads: int):
        import random
        import warnings

        import numpy as np
        import torch

        self.threads = threads
        self.cwd = os.getcwd()
        self.environ = dict(os.environ)
        self.torch_rng = torch.get_rng_state()
        self.numpy_rng = np.random.get_state()
        self.python_rng = random.getstate()
        self.warning_filters = list(warnings.filters)
        self.deterministic = torch.are_deterministic_algorithms_enabled()
        self.tf32 = tf32_settings()

    def restore(self):
        import gc
        import random
        import warnings

        import numpy as np
        import torch

        if "torch._dynamo" in sys.modules:  # graphs compiled by an earlier run (train.compile)
            sys.modules["torch._dynamo"].reset()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        os.chdir(self.cwd)
        os.environ.clear()
        os.environ.update(self.environ)
        torch.set_num_threads(self.threads)
        torch.set_rng_state(self.torch_rng)
        np.random.set_state(self.numpy_rng)
        random.setstate(self.python_rng)
        warnings.filters[:] = self.warning_filters
        torch.use_deterministic_algorithms(self.deterministic)
        torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = self.tf32


def tf32_settings() -> tuple[str, str]:
    """The TF32 settings a run may change (precision.allow_tf32), read through the current API only:
    in torch 2.13, reading a legacy `allow_tf32` flag after `fp32_precision` was set raises."""
    import torch

    return torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision


def _output_to(path: Path | None, saved: tuple[int, int]):
    """Send this process's stdout and stderr (file descriptors 1 and 2) to `path` (appended), or
    back to the `saved` descriptors."""
    sys.stdout.flush()
    sys.stderr.flush()
    if path is None:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def serve() -> None:
    """The worker's loop: one run per line on stdin until its end. Torch and the rest are imported
    at the first run, with the output already in that run's log (an import that fails is there)."""
    from .folder import StudyFolder

    answers = os.fdopen(os.dup(1), "w")  # the launcher's pipe; fd 1 itself goes to each run's log
    saved = (os.open(os.devnull, os.O_WRONLY), os.dup(2))
    os.dup2(saved[0], 1)  # nothing but answers on the pipe
    fresh = None
    for line in sys.stdin:
        job = json.loads(line)
        folder, run_id = StudyFolder(job["study_dir"]), job["run_id"]
        _output_to(folder.run(run_id).log, saved)
        try:
            fresh = fresh or _start()
            fresh.restore()
            from .runner import exit_code, run_one

            status = run_one(folder, run_id, notebooks=job["notebooks"])
            print(f"{run_id}: {status}", flush=True)
            broken = status == "failed" and cuda_context_broken()
            if broken:
                print("the CUDA context is broken after this run's failure: this worker exits, and the "
                      "slot's next run starts in a new one", flush=True)
        finally:
            _output_to(None, saved)
        answers.write(json.dumps({"status": status, "exit": exit_code(status), "restart": broken}) + "\n")
        answers.flush()
        if broken:
            return


def cuda_context_broken() -> bool:
    """Whether this process's CUDA context is unusable (after a device-side assert or an illegal
    memory access every later CUDA call fails, the next run's included). False where CUDA was
    never used."""
    import torch

    if not torch.cuda.is_initialized():
        return False
    try:
        torch.cuda.synchronize()
    except RuntimeError:  # torch.AcceleratorError is one
        return True
    return False


def _start() -> FreshState:
    """Import once, keep pre-trained weights in memory, and take the state each run starts from."""
    import torch

    from . import model, runner, train  # noqa: F401 - imported once, for every run

    threads = int(os.environ.get("MTLSTUDY_WORKER_THREADS") or torch.get_num_threads())
    torch.set_num_threads(threads)
    model.keep_pretrained_in_memory()
    return FreshState(threads)


if __name__ == "__main__":
    serve()
