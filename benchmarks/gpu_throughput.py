#!/usr/bin/env python
"""GPU throughput of mtlstudy's training loop on a DistilRoBERTa-shaped model, and the GPU-hours
of a whole study (default: the `paper` profile) estimated from it.

    python benchmarks/gpu_throughput.py                          # a GPU machine: cuda, bf16, batch 128
    python benchmarks/gpu_throughput.py --device cpu --steps 2   # smoke check anywhere (small batch)

No download: the model is a RobertaModel with random weights built from a RobertaConfig of
DistilRoBERTa's shape (6 layers, hidden 768, 12 heads, FFN 3072, vocabulary 50,265, 82M
parameters); speed does not depend on the weights' values. It runs through the real code path:
mtlstudy.model.MultiTaskModel, mtlstudy.train.train_step with the profile's own training settings
(its precision, padding, clipping; fused AdamW, TF32 on GPU, SDPA attention) and
mtlstudy.train.evaluate. MFU: real-token training FLOPs (benchmarks/flops.py) over the time and
the card's datasheet peak in the dtype the run computes in, and over a matmul in that dtype
measured here. `make gpu-check` (benchmarks/gpu_check.py) uses this model, step and estimate.

What it measures (all in one short run):
  1. seconds per training step of `--batch-size` examples at padded widths `--widths`, and seconds
     per evaluation batch of `--eval-batch-size`; peak GPU memory;
  2. the study's own training batches (StudyBatches): every run of `mtlstudy plan <profile>` makes
     its epochs with the real batch planner (mtlstudy.sampling, with the run's batch size,
     sampler, schedule and `group_by_length`) over lengths drawn from each task's GLUE length
     distribution; `--steps` of those batches, drawn at random from the whole study, are timed
     through the real step, with their MFU;
  3. the study estimate (study_estimate): training is every batch of the study at the mean time
     of the sampled ones (training_estimate, which gpu_check uses too); evaluation is each trained
     task's full dev set every 1/evals_per_epoch epoch (official GLUE dev sizes), longest-first, at
     the measured time of its padded width; one resume checkpoint per evaluation (measured here).
`--set KEY=VALUE` changes the profile first, as `mtlstudy --set` does (a train setting to compare).

Length distributions: the quantiles below were computed from the real GLUE files with
all-MiniLM-L6-v2's WordPiece tokenizer (uncased BERT vocabulary) at max length 128. RoBERTa's
byte-level BPE gives lengths within about 10% of these on English text. MNLI and QNLI train use
their dev distribution and QQP a 23,497-row sample of its train set, for both splits (the full
files were not on the machine where this was made).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mtlstudy import data as data_mod  # noqa: E402
from mtlstudy import sampling  # noqa: E402
from mtlstudy import precision  # noqa: E402
from mtlstudy import train as train_mod  # noqa: E402
from mtlstudy.model import MultiTaskModel  # noqa: E402
from mtlstudy.passes import pass_chunks, pass_tokens  # noqa: E402
from mtlstudy.spec import TrainSettings  # noqa: E402
from mtlstudy.tasks import GLUE_TASKS, get_task  # noqa: E402

from benchmarks.flops import datasheet_peak, flop_model, matmul_flops_per_s, train_flops  # noqa: E402

from mtlstudy import glue_lengths  # noqa: E402
from mtlstudy.glue_lengths import LENGTH_QUANTILES  # noqa: E402  (token-length quantiles; see the docstring)

# Official GLUE dev sizes (MNLI: matched, the split the study scores).
DEV_SIZES = {"mnli": 9815, "qqp": 40430, "qnli": 5463, "sst2": 872, "cola": 1043, "stsb": 1500,
             "mrpc": 408, "rte": 277, "wnli": 71}
DISTILROBERTA = dict(vocab_size=50265, hidden_size=768, num_hidden_layers=6, num_attention_heads=12,
                     intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1,
                     pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5)
MAX_LENGTH = 128
MAX_GRAD_NORM = 1.0  # the `paper` profile's clipping


def sample_lengths(task: str, split: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Lengths drawn from a task's quantiles (glue_lengths.sample_lengths); a task not in the table
    (a user's or generated task) gets MNLI's distribution."""
    return glue_lengths.sample_lengths(task if task in LENGTH_QUANTILES else "mnli", split, n, rng, MAX_LENGTH)


def synthetic(lengths: np.ndarray, rng: np.random.Generator, n_labels: int = 2) -> data_mod.Tokenized:
    """Token ids of the given lengths (random ids: speed does not depend on them)."""
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = rng.integers(3, DISTILROBERTA["vocab_size"], offsets[-1]).astype(np.int32)
    ids[offsets[:-1]] = DISTILROBERTA["bos_token_id"]
    return data_mod.Tokenized(ids, None, offsets, rng.integers(0, max(1, n_labels), len(lengths)).astype(np.int64))


def batch_lengths(width: int, rows: int, rng) -> np.ndarray:
    """A length-grouped batch padded to `width`: one row at the width, the rest a little shorter
    (so the attention mask has padding, as in real batches)."""
    out = rng.integers(max(3, int(0.8 * width)), width + 1, rows)
    out[0] = width
    return out


class Bench:
    """A DistilRoBERTa-shaped MultiTaskModel (random weights) with heads for `tasks`, trained and
    evaluated through mtlstudy's own step (train.train_step) and evaluation with the settings
    `train` (a profile's: its padding, precision, clipping; by default the `paper` clipping)."""

    def __init__(self, device: str, batch_size: int, eval_batch_size: int, compile_: bool, log=print,
                 shape: dict | None = None, train: TrainSettings | None = None, tasks=("rte",)):
        """`shape`: RobertaConfig fields over DISTILROBERTA's (a smaller model for a CPU smoke check)."""
        self.device = torch.device(device)
        base = train or TrainSettings(max_grad_norm=MAX_GRAD_NORM)
        self.cfg = base.model_copy(update={"batch_size": batch_size, "eval_batch_size": eval_batch_size,
                                           "device": device})
        self.amp = precision.autocast_dtype(self.cfg.precision, self.device)
        precision.allow_tf32(self.device)  # what train.train sets
        from transformers import RobertaConfig, RobertaModel

        torch.manual_seed(0)
        self.shape = {**DISTILROBERTA, **(shape or {})}
        encoder = RobertaModel(RobertaConfig(**self.shape), add_pooling_layer=False)
        self.attn = encoder.config._attn_implementation
        self.tasks = {t: get_task(t) for t in tasks}
        self.model = MultiTaskModel(encoder, list(self.tasks.values())).to(self.device)
        self.params = sum(p.numel() for p in self.model.parameters())
        if compile_ in (True, "inductor"):
            train_mod.compile_encoder(self.model)  # as train.train does with `compile: true`
        elif compile_:  # another torch.compile backend ("eager": the compile path, quickly, for a smoke check)
            self.model.encoder.compile(backend=compile_, dynamic=True)
        self.flops = flop_model(self.model)
        self.optimizer = train_mod.make_optimizer(self.model, self.cfg, self.device)
        self.schedule = train_mod.LinearSchedule(self.optimizer, self.cfg.lr, 1)
        self.scaler = precision.make_scaler(self.amp, self.device)
        self.rng = np.random.default_rng(0)
        self.log = log

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def step_input(self, batch) -> tuple[train_mod.RunContext, list]:
        """The context and batch plan of one training step over `batch`: a list of (task, real
        lengths), as StudyBatches holds them, or one array of lengths (the first task's rows)."""
        if isinstance(batch, np.ndarray):
            batch = [(next(iter(self.tasks)), batch)]
        tasks, plan = {}, []
        for t, lengths in batch:
            tok = synthetic(np.asarray(lengths), self.rng, self.tasks[t].num_outputs)
            tasks[t] = train_mod.TaskData(self.tasks[t], tok, tok, tok)
            plan.append((t, np.arange(len(lengths))))
        ctx = train_mod.RunContext(self.model, tasks, self.cfg, self.device, 1, self.optimizer, self.amp, self.amp,
                                   self.scaler)
        return ctx, plan

    def train_steps(self, batches: list) -> list[float]:
        """Seconds of each training step, one per batch (see step_input)."""
        out = []
        for batch in batches:
            ctx, plan = self.step_input(batch)
            self._sync()
            t = time.perf_counter()
            train_mod.train_step(ctx, plan)
            self._sync()
            out.append(time.perf_counter() - t)
        return out

    def peak_memory_gib(self, batch) -> float | None:
        """Peak GPU memory of one training step over `batch` (None off CUDA)."""
        if self.device.type != "cuda":
            self.train_steps([batch])
            return None
        self._sync()
        torch.cuda.reset_peak_memory_stats()
        self.train_steps([batch])
        return torch.cuda.max_memory_allocated() / 2 ** 30

    def step_syncs(self, batch) -> list[str]:
        """Where one training step over `batch` makes the host wait for the GPU: the warnings of
        torch.cuda.set_sync_debug_mode, each as 'file:line: message'. Only meaningful on CUDA."""
        import warnings

        ctx, plan = self.step_input(batch)
        self._sync()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                train_mod.train_step(ctx, plan)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return [f"{Path(w.filename).name}:{w.lineno}: {str(w.message).splitlines()[0][:160]}" for w in caught
                if "synchroniz" in str(w.message).lower()]

    def eval_batch(self, lengths: np.ndarray) -> float:
        name = next(iter(self.tasks))
        tok = synthetic(lengths, self.rng, self.tasks[name].num_outputs)
        tasks = {name: train_mod.TaskData(self.tasks[name], tok, tok, tok)}
        self._sync()
        t = time.perf_counter()
        train_mod.evaluate(train_mod.RunContext(self.model, tasks, self.cfg, self.device, 1, eval_amp=self.amp), "select")
        self._sync()
        return time.perf_counter() - t

    def checkpoint_seconds(self) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            train_mod.Resume(Path(tmp) / "resume").save(self.model, self.optimizer, self.schedule, {"step": 0})
            return time.perf_counter() - t


class TimeModel:
    """Seconds per batch as a piecewise-linear function of the padded width (linear beyond the
    measured widths), scaled by rows / measured rows."""

    def __init__(self, widths, seconds, rows):
        # a longer batch never costs less: timing noise must not give a falling (or negative) model
        self.w, self.s, self.rows = np.asarray(widths, float), np.maximum.accumulate(np.asarray(seconds, float)), rows

    def __call__(self, width, rows=None):
        width = np.asarray(width, float)
        if len(self.w) == 1:
            s = self.s[0] * width / self.w[0]
        else:
            s = np.interp(width, self.w, self.s)
            hi = (self.s[-1] - self.s[-2]) / (self.w[-1] - self.w[-2])
            s = np.where(width < self.w[0], self.s[0] * width / self.w[0], s)
            s = np.where(width > self.w[-1], self.s[-1] + hi * (width - self.w[-1]), s)
        s = np.maximum(s, 0.0)
        return s if rows is None else s * np.asarray(rows, float) / self.rows


# ---- the study estimate ----------------------------------------------------------------------

@dataclass
class StudyBatches:
    """The training batches a study's runs make, as each run makes them: its own epoch plan
    (sampling.EpochPlan with its settings: batch size, sampler, schedule, `group_by_length`) over
    lengths drawn from each task's length distribution. How many batches and example-passes the
    whole study trains, and a uniform random sample of those batches, each a list of (task, real
    lengths). Timing the sample through the real step (Bench) and scaling by `total_batches` is
    the study's training estimate: whatever the settings do to a batch (padding, grouping) is in
    the time, with nothing modelled apart."""
    profile: str
    overrides: tuple              # --set style changes over the profile (a padding mode, ...)
    train: TrainSettings          # the profile's training settings, the overrides applied
    runs: int
    total_batches: int
    example_passes: int
    sample: list

    def padding(self, multiple: int = 1) -> dict:
        """Real tokens of the sample and the tokens its encoder passes compute, each pass padded to
        its longest row (rounded up to `multiple`), the passes cut as train_step cuts them under the
        settings (`padding`, `padding_passes`, `multitask_forward`, `micro_batch_size`)."""
        cfg, real, padded = self.train, 0, 0
        for b in self.sample:
            plan, lengths = [(t, np.arange(len(x))) for t, x in b], dict(b)
            chunks = pass_chunks(plan, cfg.micro_batch_size, cfg.multitask_forward == "per_task",
                                 lengths if cfg.padding == "sorted_passes" else None, cfg.padding_passes, multiple)
            real += int(sum(x.sum() for _, x in b))
            padded += pass_tokens(chunks, {t: dict(enumerate(x.tolist())) for t, x in b}, multiple)
        return {"real_tokens": real, "padded_tokens": padded, "padded_over_real": padded / max(1, real)}


def study_batches(profile_name: str, sample_size: int, overrides=(), seed: int = 1) -> StudyBatches:
    """The study's training batches (see StudyBatches): epoch 1's plan of each run, as train.train
    builds it; a dynamic sampler's later epochs are taken to be as long (the planner's bound)."""
    from mtlstudy.plan import make_plan, run_train_sizes
    from mtlstudy.profile import load_profile, task_size

    path = Path(profile_name)
    profile, user = load_profile(path if path.exists() else profile_name, list(overrides))
    plan = make_plan(profile, user)
    rng = np.random.default_rng(seed)
    full_lengths, epochs = {}, {}
    for run in plan:  # runs that make the same batches share one epoch plan, counted once per epoch they train
        cfg, sizes = run.spec.train, run_train_sizes(run, profile, user)
        key = (tuple(sizes.items()), cfg.sampler if len(sizes) > 1 else "", cfg.schedule, cfg.epoch_length,
               cfg.batch_size, cfg.group_by_length, cfg.temperature, cfg.drop_last)
        if key not in epochs:
            probs = sampling.task_probabilities(cfg.sampler, sizes, cfg.temperature) if len(sizes) > 1 else None
            epochs[key] = [sampling.EpochPlan(sizes, cfg.batch_size, probs, cfg.schedule, cfg.epoch_length,
                                              cfg.drop_last), cfg.group_by_length, 0]
        epochs[key][2] += cfg.epochs
    total = sum(e.num_batches * n for e, _, n in epochs.values())
    picks = np.sort(rng.choice(total, size=min(sample_size, total), replace=False))
    sample, start = [], 0
    for epoch, grouped, n in epochs.values():
        end = start + epoch.num_batches * n
        mine = picks[(picks >= start) & (picks < end)] - start
        start = end
        if not len(mine):
            continue
        lengths = {}
        for t, size in epoch.sizes.items():
            if t not in full_lengths:
                full_lengths[t] = sample_lengths(t, "train", task_size(profile, user, t), rng)
            lengths[t] = full_lengths[t][:size]
        batches = epoch.batches(np.random.default_rng([seed, len(sample)]), lengths if grouped else None)
        sample += [[(t, lengths[t][ix]) for t, ix in batches[i % len(batches)] if len(ix)] for i in mine]
    order = rng.permutation(len(sample))  # no run's batches bunched together in time
    return StudyBatches(profile.name, tuple(overrides), profile.train, len(plan), int(total),
                        int(sum(e.rows * n for e, _, n in epochs.values())), [sample[i] for i in order])


def training_estimate(study: StudyBatches, seconds_per_batch: float) -> dict:
    """The study's training time on one device: every batch it trains at the mean measured
    seconds of its sampled batches (with N runs sharing a GPU: wall time / batches of all runs)."""
    return {"train_gpu_hours": study.total_batches * seconds_per_batch / 3600, "total_batches": study.total_batches,
            "example_passes": study.example_passes, "seconds_per_batch": seconds_per_batch}


def study_estimate(study: StudyBatches, seconds_per_batch: float, t_eval: TimeModel, eval_batch: int,
                   checkpoint_s: float, log=print) -> dict:
    """Device-hours of the whole study: training (training_estimate), evaluation of each trained
    task's full dev set every 1/evals_per_epoch epoch (official GLUE dev sizes, longest-first, at
    t_eval's measured time per padded width) and one resume checkpoint per evaluation."""
    from mtlstudy.compute import compute_summary
    from mtlstudy.plan import make_plan, run_train_sizes
    from mtlstudy.profile import load_profile

    path = Path(study.profile)
    profile, user = load_profile(path if path.exists() else study.profile, list(study.overrides))
    plan = make_plan(profile, user)
    summary = compute_summary(plan, profile, user)
    rng = np.random.default_rng(1)
    dev_cost = {}
    unknown = sorted({t for r in plan for t in r.spec.trained_tasks if t not in LENGTH_QUANTILES})
    if unknown:
        log(f"note: no length table for {unknown}: MNLI's lengths are used for them")

    def dev_size(task):
        if task in DEV_SIZES:
            return DEV_SIZES[task]
        return profile.data.generated_dev_size if get_task(task, user).generated else 1000

    def dev_seconds(task):
        if task not in dev_cost:
            dev = np.sort(sample_lengths(task, "dev", dev_size(task), rng))[::-1]
            chunks = [dev[i:i + eval_batch] for i in range(0, len(dev), eval_batch)]
            dev_cost[task] = float(sum(t_eval(c.max(), len(c)) for c in chunks))
        return dev_cost[task]

    train = training_estimate(study, seconds_per_batch)
    totals = {"train_s": train["train_gpu_hours"] * 3600, "eval_s": 0.0, "checkpoint_s": 0.0,
              "example_passes": study.example_passes, "eval_examples": 0}
    for run in plan:
        cfg, sizes = run.spec.train, run_train_sizes(run, profile, user)
        evals = cfg.epochs * cfg.evals_per_epoch
        totals["eval_s"] += evals * sum(dev_seconds(t) for t in sizes)
        totals["checkpoint_s"] += evals * checkpoint_s
        totals["eval_examples"] += evals * sum(dev_size(t) for t in sizes)
    totals.update(runs=len(plan), plan_example_passes=summary["example_passes"], total_batches=study.total_batches,
                  seconds_per_batch=seconds_per_batch,
                  gpu_hours=(totals["train_s"] + totals["eval_s"] + totals["checkpoint_s"]) / 3600)
    return totals


def single_task_rates(t_train: TimeModel, batch: int) -> dict:
    """Training examples/s of a single-task epoch per GLUE task (length-grouped batches)."""
    out = {}
    for t in DEV_SIZES:
        rng = np.random.default_rng(3)
        n = min(GLUE_TASKS[t].train_size, 50_000)
        lengths = sample_lengths(t, "train", n, rng)
        batches = sampling.single_task_epoch(n, batch, rng, lengths)
        s = sum(float(t_train(lengths[b].max(), len(b))) for b in batches)
        out[t] = {"ex_s": n / s, "mean_tokens": float(lengths.mean())}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per width, and sampled study batches")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps per width (default 3 on GPU, 1 on CPU)")
    ap.add_argument("--batch-size", type=int, default=None, help="default 128 on GPU (the paper), 8 on CPU")
    ap.add_argument("--eval-batch-size", type=int, default=None, help="default 256 on GPU (our loop), 16 on CPU")
    ap.add_argument("--widths", type=int, nargs="+", default=None,
                    help="padded widths to time (default 16 32 48 64 96 128 on GPU, 16 64 on CPU)")
    ap.add_argument("--profile", default="paper", help="study profile to estimate (params/<name>.yaml or a path)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the encoder (dynamic shapes)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="change the profile as `mtlstudy --set` does (e.g. a train setting); repeatable")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args(argv)
    gpu = a.device.startswith("cuda")
    if gpu and not torch.cuda.is_available():
        ap.error("--device cuda but no GPU is visible (use --device cpu --steps 2 for a smoke check)")
    batch = a.batch_size or (128 if gpu else 8)
    eval_batch = a.eval_batch_size or (256 if gpu else 16)
    widths = sorted(a.widths or ([16, 32, 48, 64, 96, 128] if gpu else [16, 64]))
    warmup = a.warmup if a.warmup is not None else (3 if gpu else 1)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    t_start = time.time()

    study = study_batches(a.profile, a.steps, a.set)
    tasks = dict.fromkeys(["rte", *sorted({t for bt in study.sample for t, _ in bt})])
    b = Bench(a.device, batch, eval_batch, a.compile, train=study.train, tasks=tasks)
    dev_name = torch.cuda.get_device_name() if gpu else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {dev_name}; torch {torch.__version__}; attention: {b.attn}; precision: {b.amp or 'fp32'}; "
          f"model: DistilRoBERTa shape, {b.params / 1e6:.1f}M parameters (random weights); batch {batch}, "
          f"eval batch {eval_batch}; compile: {a.compile}")
    rng = np.random.default_rng(0)
    train_s, eval_s, mem_train, mem_eval = [], [], 0, 0
    for w in widths:
        if gpu:
            torch.cuda.reset_peak_memory_stats()
        b.train_steps([batch_lengths(w, batch, rng) for _ in range(warmup)])
        s = float(np.median(b.train_steps([batch_lengths(w, batch, rng) for _ in range(a.steps)])))
        if gpu:
            mem_train = max(mem_train, torch.cuda.max_memory_allocated())
            torch.cuda.reset_peak_memory_stats()
        for _ in range(warmup):
            b.eval_batch(batch_lengths(w, eval_batch, rng))
        e = float(np.median([b.eval_batch(batch_lengths(w, eval_batch, rng)) for _ in range(a.steps)]))
        if gpu:
            mem_eval = max(mem_eval, torch.cuda.max_memory_allocated())
        train_s.append(s)
        eval_s.append(e)
        print(f"width {w:4d}: train {s * 1e3:8.1f} ms/step ({batch / s:8.1f} ex/s, {batch * w / s:9.0f} padded tok/s); "
              f"eval {e * 1e3:8.1f} ms/batch ({eval_batch / e:8.1f} ex/s)")
    t_train, t_eval = TimeModel(widths, train_s, batch), TimeModel(widths, eval_s, eval_batch)

    # the study's own training batches (a random sample, as its runs make them) through the real step
    b.train_steps(study.sample[:warmup])
    seconds = b.train_steps(study.sample)
    per_batch = float(np.mean(seconds))
    pad = study.padding()
    print(f"'{a.profile}' batches ({len(study.sample)} of its {study.total_batches:,}, batch "
          f"{study.train.batch_size}, group_by_length {study.train.group_by_length}; padded/real tokens "
          f"{pad['padded_over_real']:.2f}): {per_batch * 1e3:.1f} ms a step")
    flops_per_s = sum(train_flops(np.concatenate([x for _, x in bt]), b.flops) for bt in study.sample) / sum(seconds)
    peak = datasheet_peak(dev_name, b.amp) if gpu else None
    matmul_peak = matmul_flops_per_s(device=a.device, dtype=b.amp or torch.float32)
    mfu = {"model_tflops_per_s": flops_per_s / 1e12, "matmul_tflops_per_s": matmul_peak / 1e12,
           "mfu_of_matmul": flops_per_s / matmul_peak, "datasheet_tflops": peak and peak / 1e12,
           "mfu": peak and flops_per_s / peak, "dtype": str(b.amp or torch.float32).replace("torch.", "")}
    print(f"MFU (real-token training FLOPs of those batches): {flops_per_s / 1e12:.2f} TFLOP/s; "
          f"{100 * mfu['mfu_of_matmul']:.1f}% of a measured {matmul_peak / 1e12:.1f} TFLOP/s {mfu['dtype']} matmul"
          + (f"; {100 * mfu['mfu']:.1f}% of the datasheet's {peak / 1e12:.0f} TFLOP/s {mfu['dtype']}" if peak else ""))
    ckpt = b.checkpoint_seconds()
    print(f"resume checkpoint save (model + optimizer state): {ckpt:.2f} s")
    if gpu:
        print(f"peak GPU memory: training {mem_train / 2 ** 30:.2f} GiB, evaluation {mem_eval / 2 ** 30:.2f} GiB "
              f"(width {widths[-1]})")

    rates = single_task_rates(t_train, batch)
    print("\nsingle-task training at GLUE lengths (length-grouped batches, padding to the longest):")
    print("| task | mean tokens | train ex/s |\n|---|---:|---:|")
    for t, r in rates.items():
        print(f"| {t} | {r['mean_tokens']:.1f} | {r['ex_s']:.0f} |")

    est = study_estimate(study, per_batch, t_eval, eval_batch, ckpt)
    print(f"\nstudy '{a.profile}': {est['runs']} runs; training example-passes {est['example_passes']:,} "
          f"(plan: {est['plan_example_passes']:,}); evaluation examples {est['eval_examples']:,}")
    print(f"estimated device-hours: {est['gpu_hours']:.1f} (training {est['train_s'] / 3600:.1f}, evaluation "
          f"{est['eval_s'] / 3600:.1f}, resume checkpoints {est['checkpoint_s'] / 3600:.1f})")
    print(f"study-average training rate: {est['example_passes'] / est['train_s']:.0f} ex/s")
    if not gpu:
        print("(CPU smoke mode: these numbers check that the script works; they are not a GPU figure)")
    print(f"took {time.time() - t_start:.0f} s")
    if a.json:
        Path(a.json).write_text(json.dumps({
            "device": dev_name, "torch": torch.__version__, "attention": b.attn, "precision": str(b.amp or "fp32"),
            "batch_size": batch, "eval_batch_size": eval_batch, "widths": widths, "train_step_s": train_s,
            "eval_batch_s": eval_s, "peak_memory_train_bytes": mem_train, "peak_memory_eval_bytes": mem_eval,
            "study_batches": {"sampled": len(study.sample), "step_s": seconds, **pad}, "checkpoint_s": ckpt, "mfu": mfu,
            "max_grad_norm": MAX_GRAD_NORM,
            "single_task": rates, "study": est, "compile": a.compile}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
