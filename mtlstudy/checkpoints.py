"""A run's files of weights and state: the resume checkpoint, the kept best weights of each task,
and STILTs' start from a support run's best weights.

The resume checkpoint (safetensors weights + a weights-only torch file of optimizer, scheduler,
RNG and loop position) is written after an evaluation, at most every `resume_every_seconds`, and
loads onto whatever device the run has now (tensors saved on a GPU load on the CPU and the other
way round). Best weights found after the last resume checkpoint wait beside their folder
(`best/<task>.new`) until the next resume checkpoint or the end of the run takes them: a run
resumed from an older checkpoint replays those evaluations and keeps only what the replay keeps.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .errors import TrainingError

LOOP_KEYS = ("step", "epoch", "batch", "history", "best", "probs")  # what a resume state must hold


def save_model(model, folder: Path):
    """The model's weights (safetensors) and which head each task uses (heads.json)."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors.tmp"))
    os.replace(folder / "model.safetensors.tmp", folder / "model.safetensors")
    (folder / "heads.json").write_text(json.dumps(model.head_of))


def replace_folder(new: Path, folder: Path):
    """Put `new` where `folder` is; until the swap ends the previous one is `<folder>.old`."""
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(new, folder)
    shutil.rmtree(old, ignore_errors=True)


def load_encoder_from(model, folder: Path, reuse_heads: bool):
    """STILTs stage two: the encoder (and, with heads by label count, the matching head) of a checkpoint."""
    state = load_file(str(Path(folder) / "model.safetensors"))
    enc = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    missing, unexpected = model.encoder.load_state_dict(enc, strict=False)
    if unexpected or [m for m in missing if "pooler" not in m]:
        raise TrainingError(f"{folder}: checkpoint does not match the encoder (missing {missing[:3]}, unexpected {unexpected[:3]})")
    if reuse_heads:
        for key, head in model.task_heads.items():
            sub = {k.split(f"task_heads.{key}.", 1)[1]: v for k, v in state.items() if k.startswith(f"task_heads.{key}.")}
            if sub:
                head.load_state_dict(sub)


class BestWeights:
    """Each task's kept best weights: written when the task improves, final once the resume
    checkpoint that knows of them is written (`commit`) or the run ends."""

    def __init__(self, run_folder, tasks):
        self.final = {t: run_folder.best(t) for t in tasks}

    def _pending(self, task: str) -> Path:
        return self.final[task].with_name(self.final[task].name + ".new")

    def save(self, task: str, model, step: int):
        shutil.rmtree(self._pending(task), ignore_errors=True)
        save_model(model, self._pending(task))
        (self._pending(task) / "step.json").write_text(json.dumps(step))

    def commit(self):
        for task, folder in self.final.items():
            if self._pending(task).exists():
                replace_folder(self._pending(task), folder)

    def reconcile(self, best: dict):
        """On resume: keep the pending weights the resumed state chose (killed between its save and
        the commit); drop those found after it, which the replay finds again or not."""
        for task, folder in self.final.items():
            pending, old = self._pending(task), folder.with_name(folder.name + ".old")
            if old.exists() and not folder.exists():  # a swap cut short
                os.replace(old, folder)
            chosen = task in best and (pending / "step.json").exists() \
                and json.loads((pending / "step.json").read_text()) == best[task]["step"]
            if chosen:
                replace_folder(pending, folder)
            shutil.rmtree(pending, ignore_errors=True)


def _run_device(model, device):
    return device if device is not None else next(model.parameters()).device


def _rng_state(device: torch.device) -> dict:
    """The CPU generator, and the CUDA generator of the run's own GPU (dropout there draws from it)."""
    rng = {"torch_rng": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda_rng"] = torch.cuda.get_rng_state(device)
    return rng


def _set_rng_state(state: dict, device: torch.device, log):
    torch.set_rng_state(state["torch_rng"])
    if device.type == "cuda":
        if state.get("cuda_rng") is None:
            log("the checkpoint holds no CUDA RNG state (saved off a GPU): dropout from here on "
                "differs from an uninterrupted run's")
        else:
            torch.cuda.set_rng_state(state["cuda_rng"], device)


class Resume:
    """The latest saved evaluation's state: safetensors (weights) + a weights-only torch file.
    `device`: the run's device, by default where the model's parameters are."""

    def __init__(self, folder: Path, device: torch.device | None = None):
        self.folder, self.device = Path(folder), device

    def save(self, model, optimizer, scheduler, state: dict, scaler=None):
        device = _run_device(model, self.device)
        tmp = self.folder.with_name(self.folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        save_model(model, tmp)
        extra = {"scaler": scaler.state_dict()} if scaler is not None else {}  # fp16: the loss scale
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    **_rng_state(device), **extra, **state}, tmp / "state.pt")
        replace_folder(tmp, self.folder)

    def load(self, model, optimizer, scheduler, log, scaler=None) -> dict | None:
        """The saved state, or None. A corrupt checkpoint falls back to the previous one or to scratch.
        A checkpoint that fails half-way through loading leaves model, optimizer, scheduler and RNG
        exactly as they were, so that "from scratch" really is from scratch."""
        device = _run_device(model, self.device)
        initial = None
        for folder in (self.folder, self.folder.with_name(self.folder.name + ".old")):
            if not (folder / "state.pt").exists():
                continue
            try:
                weights = load_file(str(folder / "model.safetensors"))
                state = torch.load(folder / "state.pt", weights_only=True, map_location="cpu")
                if initial is None:
                    initial = _snapshot(model, optimizer, scheduler, scaler, device)
                model.load_state_dict(weights)
                optimizer.load_state_dict(state.pop("optimizer"))  # moves its tensors to the parameters' device
                scheduler.load_state_dict(state.pop("scheduler"))
                if scaler is not None and "scaler" in state:
                    scaler.load_state_dict(state.pop("scaler"))
                for key in LOOP_KEYS:
                    state[key]  # noqa: B018 - a KeyError here means a damaged checkpoint
                _set_rng_state(state, device, log)
                log(f"resuming from {folder} at step {state['step']}")
                return state
            except Exception as e:  # noqa: BLE001 - any damage means: do not trust it
                if initial is not None:
                    _restore(initial, model, optimizer, scheduler, scaler, device)
                msg = str(e).splitlines()[0] if str(e) else ""
                log(f"checkpoint {folder} is corrupt ({type(e).__name__}: {msg}); "
                    "trying an older one or starting from scratch")
        return None


def _snapshot(model, optimizer, scheduler, scaler, device) -> dict:
    """Copies (on the CPU) of everything Resume.load changes, taken before it changes anything."""
    return {"model": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
            "optimizer": copy.deepcopy(optimizer.state_dict()), "scheduler": copy.deepcopy(scheduler.state_dict()),
            "scaler": scaler.state_dict() if scaler is not None else None, **_rng_state(device)}


def _restore(snap: dict, model, optimizer, scheduler, scaler, device):
    model.load_state_dict(snap["model"])
    optimizer.load_state_dict(snap["optimizer"])
    scheduler.load_state_dict(snap["scheduler"])
    if scaler is not None:
        scaler.load_state_dict(snap["scaler"])
    _set_rng_state(snap, device, log=lambda m: None)


def resume_interval(setting: float | None, device: torch.device) -> float:
    """Seconds between resume checkpoints: the setting; else every evaluation on a CPU, where a
    save is a small share of an evaluation's time, and at most every 300 s on an accelerator,
    where a 1 GB save every few dozen steps would keep the GPU waiting on the disk."""
    if setting is not None:
        return setting
    return 0.0 if device.type == "cpu" else 300.0
