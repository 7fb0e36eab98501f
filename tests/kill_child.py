"""`python -m tests.kill_child PLACE N MARKER -- ARGS`: run `mtlstudy ARGS` (the real command line,
in this process) and SIGKILL this process at a chosen place of the training: the N-th time, counted
in this process, the run reaches

  step        a training step, after its forward and backward passes, before the optimizer's update;
  evaluation  an evaluation, after its first batch of dev predictions;
  weights     a resume checkpoint write, after its weights are written and before its state;
  swap        a resume checkpoint write, after the previous checkpoint was renamed to resume.old
              and before the new one is renamed to resume (from the N-th write on, the first
              write that has a previous checkpoint to move aside).

Before the kill it writes MARKER (JSON: the place and the count), so the test knows where it landed.
Used by tests/test_reliability.py (kill_at_place); the choice of PLACE and N comes from a printed seed.
"""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

PLACES = ("step", "evaluation", "weights", "swap")


def main(argv: list[str]) -> None:
    place, n, marker, sep, *args = argv
    assert place in PLACES and sep == "--", argv
    n = int(n)

    import torch

    from mtlstudy import checkpoints
    from mtlstudy import train as train_mod
    from mtlstudy.cli import main as cli_main

    count = {"step": 0, "evaluation": 0, "save": 0}

    def die(detail: str):
        Path(marker).write_text(json.dumps({"place": place, "n": n, "count": dict(count), "detail": detail}))
        os.kill(os.getpid(), signal.SIGKILL)

    if place == "step":
        real_step = torch.optim.AdamW.step

        def step(self, *a, **kw):
            count["step"] += 1
            if count["step"] == n:
                die("in a training step, before the optimizer's update")
            return real_step(self, *a, **kw)

        torch.optim.AdamW.step = step
    elif place == "evaluation":
        real_evaluate, real_predictions = train_mod.evaluate, train_mod.predictions

        def evaluate(*a, **kw):
            count["evaluation"] += 1
            return real_evaluate(*a, **kw)

        def predictions(*a, **kw):
            out = real_predictions(*a, **kw)
            if count["evaluation"] == n:
                die("in an evaluation, after its first batch of predictions")
            return out

        train_mod.evaluate, train_mod.predictions = evaluate, predictions
    else:
        real_save, real_torch_save, real_replace = checkpoints.Resume.save, checkpoints.torch.save, os.replace

        def save(self, *a, **kw):
            count["save"] += 1
            return real_save(self, *a, **kw)

        def torch_save(obj, f, *a, **kw):
            if place == "weights" and count["save"] == n and Path(f).name == "state.pt":
                die("in a checkpoint write, weights written, state not yet")
            return real_torch_save(obj, f, *a, **kw)

        def replace(src, dst, *a, **kw):
            real_replace(src, dst, *a, **kw)
            if place == "swap" and count["save"] >= n and Path(dst).name == "resume.old":
                die("in a checkpoint write, between resume -> resume.old and resume.tmp -> resume")

        checkpoints.Resume.save, checkpoints.torch.save, os.replace = save, torch_save, replace
    sys.exit(cli_main(args))


if __name__ == "__main__":
    main(sys.argv[1:])
