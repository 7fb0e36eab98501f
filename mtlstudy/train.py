"""One training loop for single-task, STILTs (stage two), pairwise MTL and MTL-All.

Per batch: the encoder runs once over the whole batch; each task's head scores its rows; the
loss is the sum over tasks of each task's mean loss. Every 1/evals_per_epoch of an epoch the dev
sets are scored; each task keeps its best step (earliest on ties). After an evaluation the run
saves a resume checkpoint (checkpoints.py), so a killed run continues exactly where it left off.

`train` reads top to bottom: set up, loop, evaluate and select, record. Where and in which
precision it computes is precision.py; the data, batches.py; the files of weights, checkpoints.py.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import data as data_mod
from . import metrics, sampling
from .batches import TaskData, chunk_batch, load_task_examples, pad_multiple, prepare_data, row_lengths, to_device
from .checkpoints import BestWeights, Resume, load_encoder_from, resume_interval
from .errors import TrainingError
from .folder import RunFolder
from .model import load_model, load_tokenizer, predictions, task_loss
from .passes import pass_chunks
from .precision import (allow_tf32, autocast, gpu_name, make_scaler, pick_device, run_autocast_dtype,
                        run_eval_autocast_dtype)
from .spec import RunSpec, TrainSettings
from .store import library_versions


@dataclass
class LoopState:
    """Where a run is: saved with every resume checkpoint, so a killed run continues exactly here."""
    probs: dict                       # this epoch's sampler probabilities
    step: int = 0                     # optimizer steps taken
    epoch: int = 0                    # epochs finished
    batch: int = 0                    # batches of the current epoch done
    history: list = field(default_factory=list)   # one entry per evaluation
    best: dict = field(default_factory=dict)      # per task: its best evaluation
    epochs: list = field(default_factory=list)    # per epoch begun: batches, examples per task, p
    examples_seen: int = 0
    elapsed: float = 0.0

    @classmethod
    def from_saved(cls, saved: dict) -> "LoopState":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in known})


@dataclass
class RunContext:
    """What a step and an evaluation need: the model and its optimizer, the tasks' data, the
    settings, the device and the precision of training and of evaluation."""
    model: torch.nn.Module
    tasks: dict[str, TaskData]
    cfg: TrainSettings
    device: torch.device
    pad_id: int
    optimizer: torch.optim.Optimizer | None = None
    amp: torch.dtype | None = None          # training autocast, None for fp32
    eval_amp: torch.dtype | None = None     # evaluation autocast
    scaler: torch.amp.GradScaler | None = None  # fp16 only

    @property
    def pad_multiple(self) -> int:
        return pad_multiple(self.device)


def loss_sum_dtype(device: torch.device) -> torch.dtype:
    """The dtype losses are summed in on the device: float64, float32 on MPS (which has none)."""
    return torch.float32 if device.type == "mps" else torch.float64


class RunningLoss:
    """The training loss since the last evaluation, summed on the device and read once per
    evaluation, so a step never waits for the GPU. float64 (float32 on MPS, which has none): the
    same sum of the same float32 values as Python floats gave. Also the first non-finite loss."""

    def __init__(self, device: torch.device):
        self.device = device
        self.dtype = loss_sum_dtype(device)
        self.reset()

    def reset(self):
        self.sum, self.count = torch.zeros((), dtype=self.dtype, device=self.device), 0
        self.bad_step = torch.full((), -1, dtype=torch.int64, device=self.device)
        self.bad_loss = torch.zeros((), dtype=self.dtype, device=self.device)

    def add(self, loss, step: int):
        loss = torch.as_tensor(loss, dtype=self.dtype, device=self.device)
        self.sum += loss
        self.count += 1
        first = ~torch.isfinite(loss) & (self.bad_step < 0)
        self.bad_step = torch.where(first, step, self.bad_step)
        self.bad_loss = torch.where(first, loss, self.bad_loss)

    def mean(self) -> float:
        return float(self.sum) / max(1, self.count)

    def first_non_finite(self) -> tuple[int, float] | None:
        """(step, loss) of the first non-finite loss since the last reset, or None."""
        step = int(self.bad_step)
        return None if step < 0 else (step, float(self.bad_loss))


def train(spec: RunSpec, run_folder: RunFolder, init_checkpoint: Path | None = None,
          reference_scores: dict[str, float] | None = None, cache_dir=None, progress: bool = True,
          log=print) -> dict:
    """Train one run; return its record. Its checkpoints go to run_folder (resume state, best
    weights); a plain path is taken as the run's folder (`mtlstudy train --out`)."""
    # ---- set up: device and precision, data, model, optimizer, the state to start from
    t0 = time.time()
    cfg = spec.train
    if cfg.sampler in sampling.DYNAMIC and spec.multitask:
        missing = [t for t in spec.trained_tasks if t not in (reference_scores or {})]
        if missing:  # otherwise it would fail after a whole epoch of training
            raise TrainingError(f"sampler '{cfg.sampler}' needs reference scores (mean single-task dev score) for "
                                f"{missing}: a study passes them; `mtlstudy train` takes --reference TASK=SCORE")
    run_folder = run_folder if isinstance(run_folder, RunFolder) else RunFolder(Path(run_folder))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    amp, eval_amp = run_autocast_dtype(spec, device), run_eval_autocast_dtype(spec, device)
    allow_tf32(device)
    torch.manual_seed(spec.seed)

    examples = load_task_examples(spec)  # a broken data file fails the run now, not after the model loads
    run_folder.path.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(spec.model, cfg.lower_case)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    tasks = prepare_data(spec, tokenizer, cache_dir, examples)
    names = list(tasks)
    sizes = {t: len(tasks[t].train) for t in names}
    lengths = {t: tasks[t].train.lengths() for t in names} if cfg.group_by_length else None

    model = load_model(spec.model, [tasks[t].task for t in names], cfg.heads, cfg.pooling, cfg.head_init)
    if init_checkpoint is not None:
        load_encoder_from(model, init_checkpoint, reuse_heads=cfg.heads == "by_label_count")
    if cfg.freeze_word_embeddings:
        model.freeze_word_embeddings()
    model.to(device)
    if cfg.compile:
        compile_encoder(model)
    ctx = RunContext(model, tasks, cfg, device, pad_id, make_optimizer(model, cfg, device), amp, eval_amp,
                     make_scaler(amp, device))
    schedule = LinearSchedule(ctx.optimizer, cfg.lr, cfg.epochs, cfg.warmup_ratio)
    dynamic = cfg.sampler in sampling.DYNAMIC and len(names) > 1

    def epoch_plan(probs) -> sampling.EpochPlan:
        return sampling.EpochPlan(sizes, cfg.batch_size, probs, cfg.schedule, cfg.epoch_length, cfg.drop_last)

    first = epoch_plan(sampling.task_probabilities(cfg.sampler, sizes, cfg.temperature, reference_scores, None)
                       if len(names) > 1 else None)
    resume = Resume(run_folder.resume, device)
    best_weights = BestWeights(run_folder, names) if cfg.keep_checkpoint == "best" else None
    saved = resume.load(model, ctx.optimizer, schedule, log, ctx.scaler)
    if saved is None:
        log(f"{spec.run_id()}: training from scratch ({cfg.epochs} epochs, {first.num_batches} batches in epoch 1, "
            f"seed {spec.seed})")
    state = LoopState.from_saved(saved) if saved else LoopState(probs=first.probs)
    if best_weights:
        best_weights.reconcile(state.best)
    every, last_save = resume_interval(cfg.resume_every_seconds, device), time.time()
    loss = RunningLoss(device)

    # ---- loop: epochs of batches; evaluate and select every 1/evals_per_epoch of an epoch
    model.train()
    bar = tqdm(total=cfg.epochs * first.num_batches, initial=state.step, desc=spec.run_id()[:40],
               disable=not progress, mininterval=2, unit="step")
    while state.epoch < cfg.epochs:
        epoch = state.epoch
        plan = epoch_plan(state.probs)
        batches = plan.batches(np.random.default_rng([spec.seed, epoch]), lengths)
        n = len(batches)
        if len(state.epochs) == epoch:
            state.epochs.append(plan.summary(epoch + 1, batches))
        bar.total = state.step - state.batch + n * (cfg.epochs - epoch)  # later epochs: as long as this one
        eval_points = {max(1, round(n * k / cfg.evals_per_epoch)) for k in range(1, cfg.evals_per_epoch + 1)}
        for b in range(state.batch, n):
            schedule.set(epoch + b / n, epoch + (b + 1) / n)
            state.step += 1
            loss.add(train_step(ctx, batches[b]), state.step)
            state.examples_seen += sum(len(ix) for _, ix in batches[b])
            bar.update(1)
            if b + 1 not in eval_points:
                continue
            bad = loss.first_non_finite()  # read here, not after each step: a step never waits
            if bad:
                raise TrainingError(f"non-finite loss ({bad[1]}) at step {bad[0]}, epoch {epoch + 1}, "
                                    f"batch {bad[0] - (state.step - b - 1)}")
            state.batch = b + 1
            progress_now = epoch + (b + 1) / n
            evaluate_and_select(ctx, state, loss, progress_now, schedule.lr(progress_now, progress_now + 1 / n),
                                best_weights)
            if b + 1 == n:
                state.epoch, state.batch = epoch + 1, 0
                if dynamic:  # the evaluation just done gives the current scores: no extra pass
                    state.probs = sampling.task_probabilities(
                        cfg.sampler, sizes, cfg.temperature, reference_scores, state.history[-1]["selection_scores"])
            state.elapsed += time.time() - t0
            t0 = time.time()
            if t0 - last_save >= every:
                resume.save(model, ctx.optimizer, schedule, asdict(state), ctx.scaler)
                last_save = time.time()
                if best_weights:
                    best_weights.commit()
    bar.close()
    if best_weights:
        best_weights.commit()

    # ---- record
    name = gpu_name(device)
    return {
        "run_id": spec.run_id(), "method": spec.method, "tasks": spec.tasks, "scored_tasks": names,
        "seed": spec.seed, "model": spec.model, "status": "done",
        "params": spec.model_dump(mode="json"), "train_sizes": sizes,
        "batches_per_epoch": state.epochs[0]["batches"], "total_steps": state.step, "epochs": state.epochs,
        "history": state.history, "best": state.best,
        "examples_seen": state.examples_seen, "wall_seconds": round(state.elapsed + time.time() - t0, 2),
        "device": str(device), **({"gpu": name} if name else {}), "precision": str(amp or "fp32"),
        "eval_precision": str(eval_amp or "fp32"), "versions": library_versions(),
        "init_checkpoint": str(init_checkpoint) if init_checkpoint else None,
        "reference_scores": reference_scores or {},
        "majority_scores": {t: metrics.majority_score(td.task.metric, td.train.labels, td.report.labels)
                            for t, td in tasks.items()},
        "constant_scores": {t: metrics.constant_score(td.task.metric, td.train.labels, td.report.labels)
                            for t, td in tasks.items()},
    }


def train_step(ctx: RunContext, batch_plan) -> torch.Tensor:
    """One optimizer step on one batch (the learning rate is set by the caller); returns its loss,
    a tensor on the device (reading it would make the step wait for the GPU). The loss is the sum
    over tasks of each task's mean loss. The batch runs in encoder passes (`pass_chunks`) whose
    losses are normalised by the full batch's per-task counts, so any cut gives the same gradient."""
    model, tasks, device, scaler = ctx.model, ctx.tasks, ctx.device, ctx.scaler
    counts = {t: len(ix) for t, ix in batch_plan}
    total, sum_dtype = None, loss_sum_dtype(device)
    cfg = ctx.cfg
    lengths = {t: row_lengths(tasks[t].train, ix) for t, ix in batch_plan} if cfg.padding == "sorted_passes" else None
    for chunk in pass_chunks(batch_plan, cfg.micro_batch_size, cfg.multitask_forward == "per_task", lengths,
                             cfg.padding_passes, ctx.pad_multiple):
        batch, rows_of = chunk_batch(tasks, chunk, ctx.pad_id, ctx.pad_multiple)
        batch = to_device(batch, device)  # the step's only host-to-device copy: pinned, non-blocking on CUDA
        with autocast(device, ctx.amp):
            feats = model.features(batch)
            logits = model.logits_by_task(feats, rows_of)
        loss = sum(task_loss(tasks[t].task, logits[t], tasks[t].target(batch["labels"][t]))
                   * ((rows_of[t].stop - rows_of[t].start) / counts[t]) for t in logits)
        (scaler.scale(loss) if scaler else loss).backward()
        total = loss.detach().to(sum_dtype) if total is None else total + loss.detach()
    if ctx.cfg.max_grad_norm is not None:
        if scaler:
            scaler.unscale_(ctx.optimizer)  # clip the true gradients, not the loss-scaled ones
        torch.nn.utils.clip_grad_norm_(model.parameters(), ctx.cfg.max_grad_norm)
    if scaler:
        scaler.step(ctx.optimizer)
        scaler.update()
    else:
        ctx.optimizer.step()
    ctx.optimizer.zero_grad(set_to_none=True)
    return total


def evaluate(ctx: RunContext, split: str, batch_size: int | None = None) -> dict:
    """Metrics per task on its dev examples (`select` or `report`), no gradient, longest-first."""
    model, device = ctx.model, ctx.device
    batch_size = batch_size or eval_batch_size_for(ctx.cfg, device)
    model.eval()
    results = {}
    with torch.no_grad():
        for name, td in ctx.tasks.items():
            d = getattr(td, split)
            order = np.argsort(-d.lengths(), kind="stable")
            preds = np.empty(len(d), dtype=np.float32 if td.task.is_regression else np.int64)
            for i in range(0, len(d), batch_size):
                idx = order[i:i + batch_size]
                batch = to_device({k: v for k, v in data_mod.collate(d, idx, ctx.pad_id, ctx.pad_multiple).items()
                                   if k != "labels"}, device)
                with autocast(device, ctx.eval_amp):
                    preds[idx] = predictions(td.task, model(batch, name)).cpu().numpy()
            results[name] = metrics.compute(td.task.metric, td.prediction(preds), d.labels)
    model.train()
    return results


def evaluate_and_select(ctx: RunContext, state: LoopState, loss: RunningLoss, progress: float, lr: float,
                        best_weights: BestWeights | None):
    """Score the dev sets, append to the history, keep each task's best step (and its weights)."""
    select = evaluate(ctx, "select")
    report = select if ctx.cfg.selection == "dev" else evaluate(ctx, "report")
    entry = {"step": state.step, "epoch": round(progress, 4),
             "examples_seen": state.examples_seen,
             "train_loss": loss.mean(),
             "lr": lr,
             "scores": {t: m["score"] for t, m in report.items()},
             "selection_scores": {t: m["score"] for t, m in select.items()},
             "metrics": report, "sampler_probs": dict(state.probs)}
    state.history.append(entry)
    loss.reset()
    for t, m in select.items():
        if t not in state.best or m["score"] > state.best[t]["selection_score"]:  # strict: earliest wins ties
            state.best[t] = {"step": entry["step"], "epoch": entry["epoch"], "selection_score": m["score"],
                             "score": report[t]["score"], "metrics": report[t]}
            if best_weights:
                best_weights.save(t, ctx.model, entry["step"])


class LinearSchedule:
    """The learning rate as a function of progress through the run, in epochs (epoch + batch /
    batches in that epoch): linear warm-up over the first warmup_ratio of the run, then linear decay
    to exactly 0 at the end. Defined on progress, not on a step count fixed in advance, because a
    dynamic sampler's later epochs differ in length (sampling.py). With epochs of equal length it is
    the step-based linear schedule of the Hugging Face examples."""

    def __init__(self, optimizer, base_lr: float, epochs: int, warmup_ratio: float = 0.0):
        self.optimizer, self.base_lr, self.epochs = optimizer, base_lr, epochs
        self.warmup = warmup_ratio * epochs

    def lr(self, start: float, end: float) -> float:
        """The rate of the step that takes progress from `start` to `end`."""
        if self.warmup > 0 and end <= self.warmup + 1e-9:
            return self.base_lr * end / self.warmup
        return self.base_lr * max(0.0, (self.epochs - start) / (self.epochs - self.warmup))

    def set(self, start: float, end: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr(start, end)

    def state_dict(self) -> dict:  # progress lives in the loop's state; nothing else changes
        return {"base_lr": self.base_lr}

    def load_state_dict(self, state: dict) -> None:
        self.base_lr = state["base_lr"]


def make_optimizer(model, cfg: TrainSettings, device, fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW over the trained parameters, fused where torch has a fused kernel (CUDA, and CPU:
    1.0-1.4x faster training there) unless `fused` says otherwise (the bench's ablation)."""
    fused = device.type in ("cuda", "cpu") if fused is None else fused
    trained = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(trained, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)


def compile_encoder(model, backend: str = "inductor"):
    """torch.compile the encoder in place (its state-dict keys stay): torch.compile(model) would
    compile only model.forward, which the step never calls (it calls model.features and the heads).
    Shapes are dynamic, so batches of new lengths reuse the graph instead of compiling again.
    Inductor's own dropout RNG would make a compiled run a different run; with eager's RNG it
    follows the seed and agrees with the uncompiled run up to rounding (tested)."""
    import torch._inductor.config as inductor_config

    inductor_config.fallback_random = True
    model.encoder.compile(dynamic=True, backend=backend)


def eval_batch_size_for(cfg: TrainSettings, device) -> int:
    """The evaluation batch: the setting, else 256 on an accelerator and 16 on CPU, where big
    padded batches fit no cache and run 1.4-2x slower (BENCHMARKS.md, ablation)."""
    if cfg.eval_batch_size is not None:
        return cfg.eval_batch_size
    return 16 if device.type == "cpu" else 256
