"""One training loop for single-task, STILTs (stage two), pairwise MTL and MTL-All.

Per batch: the encoder runs once over the whole batch; each task's head scores its rows; the
loss is the sum over tasks of each task's mean loss. Every 1/evals_per_epoch of an epoch the dev
sets are scored; each task keeps its best step (earliest on ties). At each evaluation the run
saves a resume checkpoint (model, optimizer, scheduler, RNG, position), so a killed run continues
exactly where its last evaluation left it.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from . import data as data_mod
from . import metrics, sampling
from .model import load_model, load_tokenizer, predictions, task_loss
from .errors import UserError
from .spec import RunSpec, TrainSettings
from .tasks import get_task
from .folder import remove_checkpoint
from .store import library_versions


class TrainingError(UserError, RuntimeError):
    pass


@dataclass
class TaskData:
    task: object
    train: data_mod.Tokenized
    select: data_mod.Tokenized   # dev examples that choose the checkpoint
    report: data_mod.Tokenized   # dev examples that give the reported score (the same unless split_dev)
    label_mean: float = 0.0      # regression with standardized targets: the head learns
    label_sd: float = 1.0        # (label - mean) / sd, and predicts mean + sd * output

    def target(self, labels: torch.Tensor) -> torch.Tensor:
        """What the head is trained to output for these labels."""
        return (labels - self.label_mean) / self.label_sd if self.task.is_regression else labels

    def prediction(self, outputs: np.ndarray) -> np.ndarray:
        """Predictions on the labels' scale from the head's outputs."""
        return self.label_mean + self.label_sd * outputs if self.task.is_regression else outputs


def load_task_examples(spec: RunSpec) -> dict[str, tuple]:
    """(task, train examples, dev examples) per trained task: read (and checked) before any model loads."""
    out = {}
    for name in spec.trained_tasks:
        task = get_task(name, spec.user_tasks)
        out[name] = (task, data_mod.load_examples(task, "train", spec.data), data_mod.load_examples(task, "dev", spec.data))
    return out


def prepare_data(spec: RunSpec, tokenizer, cache_dir=None, examples: dict | None = None) -> dict[str, TaskData]:
    out = {}
    examples = examples or load_task_examples(spec)
    for name in spec.trained_tasks:
        task, train_ex, dev_ex = examples[name]
        train = data_mod.tokenize(tokenizer, train_ex, spec.train.max_length, cache_dir)
        dev = data_mod.tokenize(tokenizer, dev_ex, spec.train.max_length, cache_dir)
        try:
            keep = data_mod.subsample_indices(len(train), spec.data_seed, count=spec.train_counts.get(name),
                                              fraction=spec.train_fractions.get(name))
        except ValueError as e:
            raise data_mod.DataError(f"task {name}: {e}") from None
        if len(keep) < len(train):
            train = train.subset(keep)
        if spec.train.selection == "split_dev":
            order = np.random.default_rng([spec.data_seed, 7]).permutation(len(dev))
            half = len(dev) // 2
            select, report = dev.subset(np.sort(order[:half])), dev.subset(np.sort(order[half:]))
        else:
            select = report = dev
        scale = {}
        if task.is_regression and spec.train.regression_targets == "standardized":
            labels = train.labels.astype(np.float64)
            scale = {"label_mean": float(labels.mean()), "label_sd": float(labels.std()) or 1.0}
        out[name] = TaskData(task, train, select, report, **scale)
    return out


def pick_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(setting)
    except RuntimeError as e:
        raise TrainingError(f"train.device '{setting}': not a device ({str(e).splitlines()[0]})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"train.device '{setting}': CUDA is not available on this machine")
    return device


def cpu_computes_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic in hardware (AMX or AVX-512 BF16). Elsewhere torch
    emulates it: bf16 autocast trained 13-17x and evaluated 5-6x slower than fp32 on an AMD EPYC
    with AVX2 only (BENCHMARKS.md). AVX-512 BF16 without AMX is counted as hardware bf16 unmeasured:
    no such CPU was at hand."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def autocast_dtype(precision: str, device: torch.device, multitask: bool = False):
    """The autocast dtype, None for fp32. `auto` is bf16 (fp16 where bf16 is missing) on a GPU and
    fp32 on CPU; `bf16` is honoured on a CPU that computes bf16 in hardware (faster with AMX:
    BENCHMARKS.md) and is fp32 on one that would emulate it, with a warning; `bf16_one_task` is
    bf16 for runs that train one task and fp32 for multi-task runs."""
    if precision == "bf16_one_task":
        precision = "fp32" if multitask else "bf16"
    if precision == "fp16" and device.type != "cuda":
        raise TrainingError(f"train.precision 'fp16' needs a CUDA GPU (device here: {device.type}); "
                            "use bf16 or fp32")
    if precision == "fp32" or device.type not in ("cuda", "cpu"):
        return None
    if device.type == "cpu":
        if precision != "bf16":
            return None
        if not cpu_computes_bf16():
            warnings.warn("bf16 asked for on a CPU without AMX or AVX-512 BF16, which would emulate it "
                          "(5-17x slower than fp32): this run trains and evaluates in fp32")
            return None
        return torch.bfloat16
    if precision == "fp16" or (precision == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def cpu_bf16_note(cfg: TrainSettings) -> str | None:
    """A line for a study about to train on this machine's CPU with settings that ask for bf16
    this CPU would emulate (those settings then run in fp32: `autocast_dtype`); None otherwise."""
    asks = cfg.precision in ("bf16", "bf16_one_task") or cfg.eval_precision == "bf16"
    try:
        on_cpu = pick_device(cfg.device).type == "cpu"
    except TrainingError:  # a bad train.device fails each run, with its message, as before
        return None
    if asks and on_cpu and not cpu_computes_bf16():
        return ("note: this CPU has no bf16 in hardware (no AMX, no AVX-512 BF16): the profile's bf16 "
                "settings run in fp32 here, as bf16 would be emulated, 5-17x slower (BENCHMARKS.md)")
    return None


def run_autocast_dtype(spec: RunSpec, device: torch.device):
    """The run's autocast dtype: `bf16_one_task` depends on whether it trains several tasks."""
    return autocast_dtype(spec.train.precision, device, multitask=spec.multitask)


def run_eval_autocast_dtype(spec: RunSpec, device: torch.device):
    """The autocast dtype of the run's dev evaluations: the training's unless `eval_precision: bf16`."""
    if spec.train.eval_precision == "bf16":
        return autocast_dtype("bf16", device)
    return run_autocast_dtype(spec, device)


def merge(parts: list[tuple[str, dict]], pad_id: int):
    """Concatenate per-task collated batches into one, padded to the longest; rows per task."""
    width = max(b["input_ids"].shape[1] for _, b in parts)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in parts[0][1]]
    merged, rows_of, labels_of, start = {k: [] for k in keys}, {}, {}, 0
    for task, b in parts:
        n = b["input_ids"].shape[0]
        for k in keys:
            fill = pad_id if k == "input_ids" else 0
            merged[k].append(torch.nn.functional.pad(b[k], (0, width - b[k].shape[1]), value=fill))
        rows_of[task] = torch.arange(start, start + n)
        labels_of[task] = b["labels"]
        start += n
    return {k: torch.cat(v) for k, v in merged.items()}, rows_of, labels_of


def compile_encoder(model):
    """torch.compile the encoder in place (its state-dict keys stay): torch.compile(model) would
    compile only model.forward, which the step never calls (it calls model.features and the heads).
    Inductor's own dropout RNG would make a compiled run a different run; with eager's RNG it
    follows the seed and agrees with the uncompiled run up to rounding (tested)."""
    import torch._inductor.config as inductor_config

    inductor_config.fallback_random = True
    model.encoder.compile(dynamic=True)


def make_optimizer(model, cfg: TrainSettings, device, fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW over the trained parameters, fused where torch has a fused kernel (CUDA, and CPU:
    1.0-1.4x faster training there) unless `fused` says otherwise (the bench's ablation)."""
    fused = device.type in ("cuda", "cpu") if fused is None else fused
    trained = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(trained, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)


def eval_batch_size_for(cfg: TrainSettings, device) -> int:
    """The evaluation batch: the setting, else 256 on an accelerator and 16 on CPU, where big
    padded batches fit no cache and run 1.4-2x slower (BENCHMARKS.md, ablation)."""
    if cfg.eval_batch_size is not None:
        return cfg.eval_batch_size
    return 16 if device.type == "cpu" else 256


def evaluate(model, tasks: dict[str, TaskData], split: str, batch_size: int, pad_id: int, device, amp) -> dict:
    """Metrics per task on its dev examples (`select` or `report`), no gradient, longest-first."""
    model.eval()
    results = {}
    with torch.no_grad():
        for name, td in tasks.items():
            d = getattr(td, split)
            order = np.argsort(-d.lengths(), kind="stable")
            preds = np.empty(len(d), dtype=np.float32 if td.task.is_regression else np.int64)
            for i in range(0, len(d), batch_size):
                idx = order[i:i + batch_size]
                batch = {k: v.to(device) for k, v in data_mod.collate(d, idx, pad_id).items() if k != "labels"}
                with _autocast(device, amp):
                    preds[idx] = predictions(td.task, model(batch, name)).cpu().numpy()
            results[name] = metrics.compute(td.task.metric, td.prediction(preds), d.labels)
    model.train()
    return results


def _autocast(device, amp):
    return torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()


def _save_model(model, folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors.tmp"))
    os.replace(folder / "model.safetensors.tmp", folder / "model.safetensors")
    (folder / "heads.json").write_text(json.dumps(model.head_of))


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


def _snapshot(model, optimizer, scheduler, scaler) -> dict:
    """Copies (on the CPU) of everything Resume.load changes, taken before it changes anything."""
    import copy

    return {"model": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
            "optimizer": copy.deepcopy(optimizer.state_dict()), "scheduler": copy.deepcopy(scheduler.state_dict()),
            "scaler": scaler.state_dict() if scaler is not None else None, "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _restore(snap: dict, model, optimizer, scheduler, scaler):
    model.load_state_dict(snap["model"])
    optimizer.load_state_dict(snap["optimizer"])
    scheduler.load_state_dict(snap["scheduler"])
    if scaler is not None:
        scaler.load_state_dict(snap["scaler"])
    torch.set_rng_state(snap["torch_rng"])
    if snap["cuda_rng"] is not None:
        torch.cuda.set_rng_state_all(snap["cuda_rng"])


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
    loss_sum: float = 0.0             # training loss since the last evaluation
    loss_count: int = 0


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


class Resume:
    """The latest evaluation's state, saved as safetensors (weights) + a weights-only torch file."""

    def __init__(self, folder: Path):
        self.folder = folder

    def save(self, model, optimizer, scheduler, state: "LoopState | dict", scaler=None):
        tmp = self.folder.with_name(self.folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        _save_model(model, tmp)
        rng = {"torch_rng": torch.get_rng_state()}
        if torch.cuda.is_available():  # dropout on the GPU draws from the CUDA generators
            rng["cuda_rng"] = torch.cuda.get_rng_state_all()
        if scaler is not None:  # fp16: the loss scale and its growth tracker
            rng["scaler"] = scaler.state_dict()
        state = asdict(state) if isinstance(state, LoopState) else state
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), **rng, **state},
                   tmp / "state.pt")
        old = self.folder.with_name(self.folder.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if self.folder.exists():
            os.replace(self.folder, old)
        os.replace(tmp, self.folder)
        shutil.rmtree(old, ignore_errors=True)

    def load(self, model, optimizer, scheduler, log, scaler=None) -> dict | None:
        """The saved state, or None. A corrupt checkpoint falls back to the previous one or to scratch.
        A checkpoint that fails half-way through loading leaves model, optimizer, scheduler and RNG
        exactly as they were, so that "from scratch" really is from scratch."""
        initial = None
        for folder in (self.folder, self.folder.with_name(self.folder.name + ".old")):
            if not (folder / "state.pt").exists():
                continue
            try:
                weights = load_file(str(folder / "model.safetensors"))
                state = torch.load(folder / "state.pt", weights_only=True)
                if initial is None:
                    initial = _snapshot(model, optimizer, scheduler, scaler)
                model.load_state_dict(weights)
                optimizer.load_state_dict(state.pop("optimizer"))
                scheduler.load_state_dict(state.pop("scheduler"))
                if scaler is not None and "scaler" in state:
                    scaler.load_state_dict(state.pop("scaler"))
                if "cuda_rng" in state and torch.cuda.is_available() \
                        and len(state["cuda_rng"]) == torch.cuda.device_count():
                    torch.cuda.set_rng_state_all(state.pop("cuda_rng"))
                torch.set_rng_state(state.pop("torch_rng"))
                for key in ("step", "epoch", "batch", "history", "best", "probs"):
                    state[key]  # noqa: B018 - a KeyError here means a damaged checkpoint
                log(f"resuming from {folder} at step {state['step']}")
                return state
            except Exception as e:  # noqa: BLE001 - any damage means: do not trust it
                if initial is not None:
                    _restore(initial, model, optimizer, scheduler, scaler)
                msg = str(e).splitlines()[0] if str(e) else ""
                log(f"checkpoint {folder} is corrupt ({type(e).__name__}: {msg}); "
                    "trying an older one or starting from scratch")
        return None

    def remove(self):
        remove_checkpoint(self.folder)


def train(spec: RunSpec, run_folder, init_checkpoint: Path | None = None,
          reference_scores: dict[str, float] | None = None, cache_dir=None, progress: bool = True,
          log=print) -> dict:
    """Train one run; return its record. Checkpoints go to run_folder (a folder.RunFolder)."""
    t0 = time.time()
    cfg = spec.train
    if cfg.sampler in sampling.DYNAMIC and spec.multitask:
        missing = [t for t in spec.trained_tasks if t not in (reference_scores or {})]
        if missing:  # otherwise it would fail after a whole epoch of training
            raise TrainingError(f"sampler '{cfg.sampler}' needs reference scores (mean single-task dev score) for "
                                f"{missing}: a study passes them; `mtlstudy train` takes --reference TASK=SCORE")
    out_dir = run_folder.path
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    amp = run_autocast_dtype(spec, device)
    eval_amp = run_eval_autocast_dtype(spec, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(spec.seed)

    examples = load_task_examples(spec)  # a broken data file fails the run now, not after the model loads
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(spec.model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    tasks = prepare_data(spec, tokenizer, cache_dir, examples)
    names = list(tasks)
    sizes = {t: len(tasks[t].train) for t in names}
    lengths = {t: tasks[t].train.lengths() for t in names} if cfg.group_by_length else None

    model = load_model(spec.model, [tasks[t].task for t in names], cfg.heads, cfg.pooling)
    if init_checkpoint is not None:
        load_encoder_from(model, init_checkpoint, reuse_heads=cfg.heads == "by_label_count")
    if cfg.freeze_word_embeddings:
        model.freeze_word_embeddings()
    model.to(device)
    if cfg.compile:
        compile_encoder(model)
    optimizer = make_optimizer(model, cfg, device)
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    schedule = LinearSchedule(optimizer, cfg.lr, cfg.epochs, cfg.warmup_ratio)
    dynamic = cfg.sampler in sampling.DYNAMIC and len(names) > 1

    def epoch_plan(probs) -> sampling.EpochPlan:
        return sampling.EpochPlan(sizes, cfg.batch_size, probs, cfg.schedule, cfg.epoch_length, cfg.drop_last)

    first = epoch_plan(sampling.task_probabilities(cfg.sampler, sizes, cfg.temperature, reference_scores, None)
                       if len(names) > 1 else None)
    resume = Resume(run_folder.resume)
    state = resume.load(model, optimizer, schedule, log, scaler)
    if state is None:
        log(f"{spec.run_id()}: training from scratch ({cfg.epochs} epochs, {first.num_batches} batches in epoch 1, "
            f"seed {spec.seed})")
    known = {f.name for f in fields(LoopState)}
    state = LoopState(**{k: v for k, v in state.items() if k in known}) if state else LoopState(probs=first.probs)
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
            loss = train_step(model, tasks, batches[b], pad_id, device, amp, cfg, optimizer, scaler)
            if not math.isfinite(loss):
                raise TrainingError(f"non-finite loss ({loss}) at step {state.step + 1}, epoch {epoch + 1}, batch {b + 1}")
            state.step += 1
            state.examples_seen += sum(len(ix) for _, ix in batches[b])
            state.loss_sum += loss
            state.loss_count += 1
            bar.update(1)
            if b + 1 in eval_points:
                state.batch = b + 1
                progress_now = epoch + (b + 1) / n
                _evaluate_and_record(model, tasks, cfg, pad_id, device, eval_amp, state, progress_now,
                                     schedule.lr(progress_now, progress_now + 1 / n), run_folder)
                if b + 1 == n:
                    state.epoch, state.batch = epoch + 1, 0
                    if dynamic:  # the evaluation just done gives the current scores: no extra pass
                        state.probs = sampling.task_probabilities(
                            cfg.sampler, sizes, cfg.temperature, reference_scores, state.history[-1]["selection_scores"])
                state.elapsed += time.time() - t0
                t0 = time.time()
                resume.save(model, optimizer, schedule, state, scaler)
    bar.close()
    record = {
        "run_id": spec.run_id(), "method": spec.method, "tasks": spec.tasks, "scored_tasks": names,
        "seed": spec.seed, "model": spec.model, "status": "done",
        "params": spec.model_dump(mode="json"), "train_sizes": sizes,
        "batches_per_epoch": state.epochs[0]["batches"], "total_steps": state.step, "epochs": state.epochs,
        "history": state.history, "best": state.best,
        "examples_seen": state.examples_seen, "wall_seconds": round(state.elapsed + time.time() - t0, 2),
        "device": str(device), "precision": str(amp or "fp32"),
        "eval_precision": str(eval_amp or "fp32"), "versions": library_versions(),
        "init_checkpoint": str(init_checkpoint) if init_checkpoint else None,
        "reference_scores": reference_scores or {},
        "majority_scores": {t: metrics.majority_score(td.task.metric, td.train.labels, td.report.labels)
                            for t, td in tasks.items()},
        "constant_scores": {t: metrics.constant_score(td.task.metric, td.train.labels, td.report.labels)
                            for t, td in tasks.items()},
    }
    return record


def pass_chunks(batch_plan, micro: int | None, per_task: bool) -> list[list[tuple[str, int]]]:
    """The batch's (task, row) pairs cut into encoder passes: all rows together, or each task's
    rows apart; then into chunks of at most `micro` rows (gradient accumulation)."""
    groups = [[(t, i) for i in ix] for t, ix in batch_plan] if per_task else \
        [[(t, i) for t, ix in batch_plan for i in ix]]
    return [rows[s:s + (micro or len(rows))] for rows in groups if rows
            for s in range(0, len(rows), micro or len(rows))]


def train_step(model, tasks, batch_plan, pad_id, device, amp, cfg, optimizer, scaler) -> float:
    """One optimizer step on one batch (the learning rate is set by the caller): sum over tasks of
    each task's mean loss. The batch runs in encoder passes (`pass_chunks`) whose losses are
    normalised by the full batch's per-task counts, so any cut gives the same gradient as one pass."""
    counts = {t: len(ix) for t, ix in batch_plan}
    total = 0.0
    for chunk in pass_chunks(batch_plan, cfg.micro_batch_size, cfg.multitask_forward == "per_task"):
        by_task: dict[str, list] = {}
        for t, i in chunk:
            by_task.setdefault(t, []).append(i)
        parts = [(t, data_mod.collate(tasks[t].train, np.array(ix), pad_id)) for t, ix in by_task.items()]
        batch, rows_of, labels_of = merge(parts, pad_id)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with _autocast(device, amp):
            feats = model.features(batch)
            logits = model.logits_by_task(feats, {t: r.to(device) for t, r in rows_of.items()})
        loss = sum(task_loss(tasks[t].task, logits[t], tasks[t].target(labels_of[t].to(device))) * (len(rows_of[t]) / counts[t])
                   for t in logits)
        (scaler.scale(loss) if scaler else loss).backward()
        total += float(loss.detach())
    if cfg.max_grad_norm is not None:
        if scaler:
            scaler.unscale_(optimizer)  # clip the true gradients, not the loss-scaled ones
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total


def _evaluate_and_record(model, tasks, cfg, pad_id, device, amp, state: LoopState, progress: float, lr: float,
                         run_folder):
    """Score the dev sets, append to the history, keep each task's best step (and its weights)."""
    eval_batch = eval_batch_size_for(cfg, device)
    select = evaluate(model, tasks, "select", eval_batch, pad_id, device, amp)
    report = select if cfg.selection == "dev" else evaluate(model, tasks, "report", eval_batch,
                                                             pad_id, device, amp)
    entry = {"step": state.step, "epoch": round(progress, 4),
             "examples_seen": state.examples_seen,
             "train_loss": state.loss_sum / max(1, state.loss_count),
             "lr": lr,
             "scores": {t: m["score"] for t, m in report.items()},
             "selection_scores": {t: m["score"] for t, m in select.items()},
             "metrics": report, "sampler_probs": dict(state.probs)}
    state.history.append(entry)
    state.loss_sum, state.loss_count = 0.0, 0
    best = state.best
    for t, m in select.items():
        if t not in best or m["score"] > best[t]["selection_score"]:  # strict: earliest wins ties
            best[t] = {"step": entry["step"], "epoch": entry["epoch"], "selection_score": m["score"],
                       "score": report[t]["score"], "metrics": report[t]}
            if cfg.keep_checkpoint == "best":
                _save_model(model, run_folder.best(t))
