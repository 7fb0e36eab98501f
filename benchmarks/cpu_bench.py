"""`python -m benchmarks.cpu_bench` (`make bench`): our training loop against the Hugging Face
Trainer, on the same model, data, batch size and threads, in one process; plus model FLOPs
utilisation (MFU) on real tokens. Run from the repository's root.

Contenders (each trains one epoch over the same `examples` training examples of a task, from
freshly copied pre-trained weights; model loading and Trainer construction are not timed):
  ours         mtlstudy.train.train_step over sampling.single_task_epoch batches (padding to the
               longest in the batch, length-grouped batches, tokens from the memory-mapped cache),
               fused AdamW, and mtlstudy.train.evaluate (no gradient, longest-first, the loop's CPU
               eval batch, 16)
  hf_default   transformers.Trainer as run_glue.py sets it up by default: pad_to_max_length=True
               (every example padded to 128), default_data_collator, per_device_eval_batch_size 8
  hf_best      the Trainer's best settings: DataCollatorWithPadding (pad to the longest in the
               batch) + length-grouped batches; eval batch = the training batch (see BENCHMARKS.md)
Every repeat runs every contender on every task, in an order rotated per repeat; the table
reports the median of the repeats and the best (fastest) repeat, which on a shared machine is
the least disturbed. On a machine shared with other jobs, run it as
`OMP_WAIT_POLICY=PASSIVE python -m benchmarks.cpu_bench`: spinning OpenMP threads otherwise make every
contender several times slower and the numbers erratic (BENCHMARKS.md).

MFU: training FLOPs counted on real (non-pad) tokens (benchmarks/flops.py), divided by the time
and by the throughput of torch.matmul on two 2048 x 2048 fp32 matrices measured in the same run.

`python -m benchmarks.cpu_bench --ablate` measures single changes to our loop (what helps, and by how
much) and prints a markdown table. `python -m benchmarks.cpu_bench --multitask` measures a multi-task
step (train.multitask_forward): one encoder pass over a heterogeneous batch against one per task.
`python -m benchmarks.cpu_bench --eval` measures the dev evaluation of --tasks (train.eval_precision and
eval_batch_size): fp32 against bf16 autocast at several batch sizes.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as _dt
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mtlstudy import data as data_mod
from mtlstudy import batches as batches_mod, sampling, train as train_mod
from mtlstudy.errors import UserError
from mtlstudy.model import OFFLINE_MINILM, load_model, load_tokenizer, resolve_model
from mtlstudy.spec import TrainSettings
from mtlstudy.tasks import get_task

from benchmarks.flops import MATMUL_N, flop_model, matmul_flops_per_s, train_flops

MODEL = OFFLINE_MINILM
MAX_LENGTH = 128
HF_DEFAULT_EVAL_BATCH = 8                       # run_glue.py / TrainingArguments default
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

CONTENDERS = {
    "ours": "mtlstudy loop (pad to longest, length-grouped, fused AdamW, eval no-grad longest-first)",
    "hf_default": "HF Trainer, run_glue.py default (pad to 128)",
    "hf_best": "HF Trainer, best (DataCollatorWithPadding + group_by_length)",
}


# ---- data ---------------------------------------------------------------------------------

@dataclass
class BenchTask:
    name: str
    task: object
    train_ex: data_mod.Examples
    dev_ex: data_mod.Examples
    train: data_mod.Tokenized
    dev: data_mod.Tokenized

    @property
    def train_tokens(self) -> np.ndarray:
        return self.train.lengths()


def _take(ex: data_mod.Examples, idx: np.ndarray) -> data_mod.Examples:
    return data_mod.Examples([ex.text_a[i] for i in idx], None if ex.text_b is None else [ex.text_b[i] for i in idx],
                             ex.labels[idx])


def prepare(tasks: list[str], glue_dir, examples: int, tokenizer, cache_dir) -> list[BenchTask]:
    """A seeded random subset of `examples` train examples (and up to as many dev examples) per task."""
    source = data_mod.DataSource(source="glue_dir", glue_dir=Path(glue_dir))
    out = []
    for name in tasks:
        task = get_task(name)
        tr = data_mod.load_examples(task, "train", source)
        dv = data_mod.load_examples(task, "dev", source)
        tr = _take(tr, data_mod.subsample_indices(len(tr), 0, count=min(examples, len(tr))))
        dv = _take(dv, data_mod.subsample_indices(len(dv), 0, count=min(examples, len(dv))))
        out.append(BenchTask(name, task, tr, dv, data_mod.tokenize(tokenizer, tr, MAX_LENGTH, cache_dir),
                             data_mod.tokenize(tokenizer, dv, MAX_LENGTH, cache_dir)))
    return out


def hf_dataset(tokenizer, ex: data_mod.Examples, pad_to_max: bool):
    """What run_glue.py's preprocess_function gives: tokenized with truncation at 128, padded to
    128 when pad_to_max_length (its default), else unpadded."""
    import datasets

    enc = tokenizer(ex.text_a, ex.text_b, truncation=True, max_length=MAX_LENGTH,
                    padding="max_length" if pad_to_max else False)
    cols = {k: list(v) for k, v in enc.items()}
    cols["label"] = ex.labels.tolist()
    return datasets.Dataset.from_dict(cols)


# ---- contenders ---------------------------------------------------------------------------

def _settings(batch_size: int) -> TrainSettings:
    return TrainSettings(batch_size=batch_size, epochs=1, device="cpu", precision="fp32")


def loop_optimizer(model, cfg: TrainSettings, device: torch.device, fused: bool | None = None):
    """The optimizer as train.train builds it, or with `fused` forced on or off."""
    return train_mod.make_optimizer(model, cfg, device, fused)


def cpu_eval_batch() -> int:
    """The eval batch our loop uses on CPU."""
    return train_mod.eval_batch_size_for(_settings(8), torch.device("cpu"))


def ours_train(base, bt: BenchTask, batch_size: int, pad_id: int, *, group_by_length=True, pad_to=1,
               fused: bool | None = None, freeze_word_embeddings: bool = False, amp=None) -> float:
    """Seconds for one epoch of our loop over bt.train (optimizer and schedule built as in train.train);
    `amp` an autocast dtype (torch.bfloat16: `precision: bf16`)."""
    model = copy.deepcopy(base)
    model.train()
    if freeze_word_embeddings:
        model.freeze_word_embeddings()
    cfg = _settings(batch_size)
    device = torch.device("cpu")
    tasks = {bt.name: batches_mod.TaskData(bt.task, bt.train, bt.dev, bt.dev)}
    collate = data_mod.collate
    if pad_to != 1:
        data_mod.collate = lambda d, ix, pid, pad_to_multiple_of=1: collate(d, ix, pid, pad_to)
    try:
        t0 = time.perf_counter()
        optimizer = loop_optimizer(model, cfg, device, fused)
        plan = sampling.EpochPlan({bt.name: len(bt.train)}, batch_size)
        batches = plan.batches(np.random.default_rng([0, 0]), {bt.name: bt.train.lengths()} if group_by_length else None)
        schedule = train_mod.LinearSchedule(optimizer, cfg.lr, 1)
        for i, batch in enumerate(batches):
            schedule.set(i / len(batches), (i + 1) / len(batches))
            train_mod.train_step(train_mod.RunContext(model, tasks, cfg, device, pad_id, optimizer, amp), batch)
        return time.perf_counter() - t0
    finally:
        data_mod.collate = collate


def ours_eval(base, bt: BenchTask, eval_batch: int, pad_id: int, *, inference=False, amp=None) -> float:
    model = copy.deepcopy(base)
    tasks = {bt.name: batches_mod.TaskData(bt.task, bt.train, bt.dev, bt.dev)}
    ctx = torch.inference_mode() if inference else contextlib.nullcontext()
    t0 = time.perf_counter()
    with ctx:
        train_mod.evaluate(train_mod.RunContext(model, tasks, _settings(8), torch.device("cpu"), pad_id, eval_amp=amp),
                           "select", eval_batch)
    return time.perf_counter() - t0


def _accuracy(p):
    return {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())}


def hf_trainer(base, tokenizer, train_ds, dev_ds, batch_size: int, best: bool, out_dir: str, eval_batch: int):
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, default_data_collator

    import dataclasses

    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    # transformers 5: train_sampling_strategy="group_by_length"; 4.x: group_by_length=True
    grouping = {} if not best else {"train_sampling_strategy": "group_by_length"} \
        if "train_sampling_strategy" in fields else {"group_by_length": True}
    args = TrainingArguments(
        output_dir=out_dir, report_to=[], save_strategy="no", eval_strategy="no", use_cpu=True,
        dataloader_num_workers=0, per_device_train_batch_size=batch_size, per_device_eval_batch_size=eval_batch,
        num_train_epochs=1, learning_rate=2e-5, seed=0, disable_tqdm=True, logging_strategy="no", **grouping)
    collator = DataCollatorWithPadding(tokenizer) if best else default_data_collator
    from transformers.trainer_callback import PrinterCallback

    trainer = Trainer(model=copy.deepcopy(base), args=args, train_dataset=train_ds, eval_dataset=dev_ds,
                      data_collator=collator, processing_class=tokenizer, compute_metrics=_accuracy)
    trainer.remove_callback(PrinterCallback)  # it prints the metrics dicts; nothing else changes
    return trainer


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ---- the benchmark ------------------------------------------------------------------------

def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import transformers

    return (f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"transformers {transformers.__version__}, Python {platform.python_version()}")


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def run(tasks, glue_dir, examples=256, batch_size=16, repeats=3, threads=None, log=print) -> dict:
    """Measure every contender on every task `repeats` times, interleaved. Returns raw results."""
    from transformers import AutoModelForSequenceClassification

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if threads:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    load_start = _load()
    tokenizer = load_tokenizer(MODEL)
    pad_id = tokenizer.pad_token_id
    tmp = tempfile.TemporaryDirectory(prefix="mtlstudy-bench-")
    bts = prepare(tasks, glue_dir, examples, tokenizer, Path(tmp.name) / "cache")
    ours_base = {bt.name: load_model(MODEL, [bt.task]) for bt in bts}
    hf_base = AutoModelForSequenceClassification.from_pretrained(resolve_model(MODEL), num_labels=2)
    fm = flop_model(hf_base)
    hf_data = {(bt.name, pad): (hf_dataset(tokenizer, bt.train_ex, pad), hf_dataset(tokenizer, bt.dev_ex, pad))
               for bt in bts for pad in (True, False)}
    for bt in bts:
        if bt.task.num_outputs != 2:
            raise UserError(f"bench: task {bt.name} is not a 2-way classification task (use e.g. rte, sst2, mrpc)")

    def hf(bt, best):
        tr, dv = hf_data[(bt.name, not best)]
        return hf_trainer(hf_base, tokenizer, tr, dv, batch_size, best, str(Path(tmp.name) / "hf"),
                          batch_size if best else HF_DEFAULT_EVAL_BATCH)

    def measure(kind, bt):
        if kind == "ours":
            return (ours_train(ours_base[bt.name], bt, batch_size, pad_id),
                    ours_eval(ours_base[bt.name], bt, cpu_eval_batch(), pad_id))
        trainer = hf(bt, kind == "hf_best")
        tt = _timed(trainer.train)
        te = _timed(trainer.evaluate)
        return tt, te

    # warm-up: one small untimed pass of every contender (allocator, oneDNN primitives, lazy imports)
    small = [BenchTask(bt.name, bt.task, _take(bt.train_ex, np.arange(min(2 * batch_size, len(bt.train)))),
                       _take(bt.dev_ex, np.arange(min(2 * batch_size, len(bt.dev)))),
                       bt.train.subset(np.arange(min(2 * batch_size, len(bt.train)))),
                       bt.dev.subset(np.arange(min(2 * batch_size, len(bt.dev))))) for bt in bts[:1]]
    ours_train(ours_base[small[0].name], small[0], batch_size, pad_id)
    for best in (False, True):
        tr, dv = (hf_dataset(tokenizer, small[0].train_ex, not best), hf_dataset(tokenizer, small[0].dev_ex, not best))
        t = hf_trainer(hf_base, tokenizer, tr, dv, batch_size, best, str(Path(tmp.name) / "hf"), batch_size)
        t.train()
        t.evaluate()

    kinds = list(CONTENDERS)
    times = {(bt.name, k): {"train": [], "eval": []} for bt in bts for k in kinds}
    matmul = []
    t_all = time.perf_counter()
    for r in range(repeats):
        matmul.append(matmul_flops_per_s())
        order = kinds[r % len(kinds):] + kinds[:r % len(kinds)]
        for bt in bts:
            for kind in order:
                tt, te = measure(kind, bt)
                times[(bt.name, kind)]["train"].append(tt)
                times[(bt.name, kind)]["eval"].append(te)
                log(f"repeat {r + 1}/{repeats} {bt.name:5} {kind:10} train {len(bt.train) / tt:7.1f} ex/s, "
                    f"eval {len(bt.dev) / te:7.1f} ex/s")
                if torch.get_num_threads() != threads:
                    raise RuntimeError(f"bench: thread count changed to {torch.get_num_threads()} during {kind}")
    matmul.append(matmul_flops_per_s())
    tmp.cleanup()
    peak = statistics.median(matmul)
    rows = []
    for bt in bts:
        flops = train_flops(bt.train_tokens, fm)
        for kind in kinds:
            tt = statistics.median(times[(bt.name, kind)]["train"])
            te = statistics.median(times[(bt.name, kind)]["eval"])
            tb = min(times[(bt.name, kind)]["train"])
            rows.append({"task": bt.name, "contender": kind, "train_ex_s": len(bt.train) / tt,
                         "eval_ex_s": len(bt.dev) / te, "mfu": flops / tt / peak,
                         "train_ex_s_best": len(bt.train) / tb, "mfu_best": flops / tb / max(matmul),
                         "eval_ex_s_best": len(bt.dev) / min(times[(bt.name, kind)]["eval"]),
                         "train_runs": [round(len(bt.train) / t, 2) for t in times[(bt.name, kind)]["train"]],
                         "eval_runs": [round(len(bt.dev) / t, 2) for t in times[(bt.name, kind)]["eval"]],
                         "n_train": len(bt.train), "n_dev": len(bt.dev),
                         "mean_len": float(bt.train_tokens.mean())})
    return {"rows": rows, "matmul_gflops": peak / 1e9, "matmul_runs": [round(m / 1e9, 1) for m in matmul],
            "threads": threads, "machine": machine(), "load": (load_start, _load()),
            "seconds": time.perf_counter() - t_all, "fm": fm, "examples": examples, "batch_size": batch_size,
            "repeats": repeats, "kinds": kinds, "ours_eval_batch": cpu_eval_batch()}


TARGETS = {"hf_default": 2.0, "hf_best": 1.0}
MFU_TARGET = 0.40


def _row(rows, task, kind):
    return next(r for r in rows if r["task"] == task and r["contender"] == kind)


def to_markdown(res: dict, command: str) -> str:
    rows = res["rows"]
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    lines = [BEGIN, "## CPU: our loop vs the Hugging Face Trainer (`python -m benchmarks.cpu_bench`)", "",
             f"- command: `{command}`",
             f"- date: {now}",
             f"- machine: {res['machine']}",
             f"- load average (1, 5, 15 min) at start: {res['load'][0]}; at end: {res['load'][1]}",
             f"- model: all-MiniLM-L6-v2 (offline, `{MODEL}`), fp32; {res['examples']} training examples "
             f"(seeded random subset) and up to {res['examples']} dev examples per task; batch {res['batch_size']}; "
             f"eval batch: ours {res['ours_eval_batch']}, hf_default {HF_DEFAULT_EVAL_BATCH}, "
             f"hf_best {res['batch_size']}; "
             f"median of {res['repeats']} interleaved repeats; bench took {res['seconds']:.0f} s",
             f"- dense fp32 matmul ({MATMUL_N}x{MATMUL_N}): {res['matmul_gflops']:.1f} GFLOP/s "
             f"(per measurement: {res['matmul_runs']})", "",
             "Medians first; \"best\" is the fastest repeat (the least disturbed on a shared machine; its MFU "
             "uses the fastest matmul measurement).", "",
             "| task | contender | mean real tokens | train ex/s | eval ex/s | ours / this (train) | "
             "ours / this (eval) | real-token MFU | train ex/s, best | ours / this (train, best) | MFU, best | "
             "eval ex/s, best | train ex/s per repeat |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for t in tasks:
        ours = _row(rows, t, "ours")
        for kind in res["kinds"]:
            r = _row(rows, t, kind)
            lines.append(f"| {t} | {CONTENDERS[kind]} | {r['mean_len']:.1f} | {r['train_ex_s']:.1f} | "
                         f"{r['eval_ex_s']:.1f} | {ours['train_ex_s'] / r['train_ex_s']:.2f}x | "
                         f"{ours['eval_ex_s'] / r['eval_ex_s']:.2f}x | {100 * r['mfu']:.0f}% | "
                         f"{r['train_ex_s_best']:.1f} | {ours['train_ex_s_best'] / r['train_ex_s_best']:.2f}x | "
                         f"{100 * r['mfu_best']:.0f}% | {r['eval_ex_s_best']:.1f} | {r['train_runs']} |")
    lines += ["", "Targets (ratios from this run; medians, then best repeats in brackets):", ""]

    def verdict(value, goal, points=False):
        if value >= goal:
            return "met"
        return f"MISSED by {100 * (goal - value):.0f} points" if points else \
            f"MISSED by {goal - value:.2f} ({100 * (1 - value / goal):.0f}% short)"

    for t in tasks:
        me = _row(rows, t, "ours")
        for kind, goal in TARGETS.items():
            r = _row(rows, t, kind)
            ratio, best = me["train_ex_s"] / r["train_ex_s"], me["train_ex_s_best"] / r["train_ex_s_best"]
            lines.append(f"- {t}: training >= {goal:.1f}x {kind}: {ratio:.2f}x, {verdict(ratio, goal)} "
                         f"[best: {best:.2f}x, {verdict(best, goal)}]")
        lines.append(f"- {t}: real-token MFU >= {100 * MFU_TARGET:.0f}%: {100 * me['mfu']:.0f}%, "
                     f"{verdict(me['mfu'], MFU_TARGET, True)} [best: {100 * me['mfu_best']:.0f}%, "
                     f"{verdict(me['mfu_best'], MFU_TARGET, True)}]")
    lines += ["", END]
    return "\n".join(lines)


def write_section(path: Path, section: str, begin: str = BEGIN, end: str = END):
    """Replace the section of `path` between the markers, keeping the rest; or append it."""
    path = Path(path)
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _env_prefix() -> str:
    """Environment settings that change CPU threading, as a command prefix."""
    env = " ".join(f"{k}={os.environ[k]}" for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
                   if k in os.environ)
    return env + " " if env else ""


def main(args) -> int:
    glue = Path(args.glue_dir)
    if not glue.is_dir():
        raise UserError(f"{glue}: GLUE folder not found (--glue-dir)")
    res = run(args.tasks, glue, args.examples, args.batch_size, args.repeats, getattr(args, "threads", None))
    command = _env_prefix() + "python -m benchmarks.cpu_bench " + " ".join(
        [f"--tasks {' '.join(args.tasks)}", f"--glue-dir {args.glue_dir}", f"--examples {args.examples}",
         f"--batch-size {args.batch_size}", f"--repeats {args.repeats}", f"--out {args.out}"])
    section = to_markdown(res, command)
    write_section(Path(args.out), section)
    print(section)
    return 0


# ---- ablations: what helps our loop, measured ----------------------------------------------

ABLATE_BEGIN, ABLATE_END = "<!-- ablate:begin -->", "<!-- ablate:end -->"


def collate_seconds(bt: BenchTask, batch_size: int, pad_id: int) -> float:
    """Host time of one epoch's batch preparation alone (collate + merge), as train_step does it."""
    plan = sampling.single_task_epoch(len(bt.train), batch_size, np.random.default_rng([0, 0]), bt.train.lengths())
    t0 = time.perf_counter()
    for b in plan:
        batches_mod.merge([(bt.name, data_mod.collate(bt.train, np.array(b), pad_id))], pad_id)
    return time.perf_counter() - t0


def interleaved(variants: dict, repeats: int, log, after_each=None) -> dict:
    """Each variant's measurements, `repeats` rounds with the order rotated per round, so a slow
    spell on a shared machine does not fall on one variant; `after_each` runs after every round."""
    results = {k: [] for k in variants}
    names = list(variants)
    for r in range(repeats):
        for k in names[r % len(names):] + names[:r % len(names)]:
            results[k].append(variants[k]())
            log(r + 1, k, results[k][-1])
        if after_each:
            after_each()
    return results


def ablate(task="rte", glue_dir="../shared/data/glue", examples=256, batch_size=16, repeats=3, log=print) -> str:
    """One change at a time to our loop, interleaved (order rotated per repeat). Returns a
    markdown table with the median and the best (fastest) of the repeats."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tokenizer = load_tokenizer(MODEL)
    pad_id = tokenizer.pad_token_id
    with tempfile.TemporaryDirectory() as tmp:
        bt = prepare([task], glue_dir, examples, tokenizer, Path(tmp))[0]
    base = load_model(MODEL, [bt.task])
    eager = copy.deepcopy(base)
    eager.encoder.set_attn_implementation("eager")
    threads = torch.get_num_threads()
    ev = cpu_eval_batch()

    def with_threads(n, fn):
        def run_():
            torch.set_num_threads(n)
            try:
                return fn()
            finally:
                torch.set_num_threads(threads)
        return run_

    variants = {
        "train: our loop as is": lambda: ours_train(base, bt, batch_size, pad_id),
        "train: foreach AdamW (not fused)": lambda: ours_train(base, bt, batch_size, pad_id, fused=False),
        "train: word embeddings frozen": lambda: ours_train(base, bt, batch_size, pad_id, freeze_word_embeddings=True),
        "train: batch 8": lambda: ours_train(base, bt, 8, pad_id),
        "train: batch 8, word embeddings frozen": lambda: ours_train(base, bt, 8, pad_id, freeze_word_embeddings=True),
        "train: no length grouping": lambda: ours_train(base, bt, batch_size, pad_id, group_by_length=False),
        "train: pad to 128": lambda: ours_train(base, bt, batch_size, pad_id, pad_to=MAX_LENGTH),
        "train: eager attention (not SDPA)": lambda: ours_train(eager, bt, batch_size, pad_id),
        "train: bf16 autocast (precision: bf16)": lambda: ours_train(base, bt, batch_size, pad_id, amp=torch.bfloat16),
        "train: 1 thread": with_threads(1, lambda: ours_train(base, bt, batch_size, pad_id)),
        f"eval: our loop as is (no_grad, batch {ev})": lambda: ours_eval(base, bt, ev, pad_id),
        f"eval: inference_mode, batch {ev}": lambda: ours_eval(base, bt, ev, pad_id, inference=True),
        **{f"eval: batch {n}": (lambda n=n: ours_eval(base, bt, n, pad_id)) for n in (16, 32, 64, 256) if n != ev},
        "eval: eager attention": lambda: ours_eval(eager, bt, ev, pad_id),
        "eval: bf16 autocast (precision: bf16)": lambda: ours_eval(base, bt, ev, pad_id, amp=torch.bfloat16),
        "eval: 1 thread": with_threads(1, lambda: ours_eval(base, bt, ev, pad_id)),
    }
    ours_train(base, bt, batch_size, pad_id)  # warm-up
    ours_eval(base, bt, ev, pad_id)
    collate_t = []
    names = list(variants)
    load0 = _load()
    times = interleaved(variants, repeats, lambda r, k, t: log(f"{r}/{repeats} {k}: {t:.2f} s"),
                        after_each=lambda: collate_t.append(collate_seconds(bt, batch_size, pad_id)))
    ref_t, ref_e = times[names[0]], times[f"eval: our loop as is (no_grad, batch {ev})"]
    lines = [f"Task {task}: {len(bt.train)} train / {len(bt.dev)} dev examples (mean {bt.train_tokens.mean():.1f} real "
             f"tokens), batch {batch_size}, {threads} threads, {repeats} interleaved repeats; load average "
             f"{load0} at start, {_load()} at end.", "",
             "| change | ex/s, median | ex/s, best | vs as is (median) | vs as is (best) |",
             "|---|---:|---:|---:|---:|"]
    for k in names:
        n = len(bt.train) if k.startswith("train") else len(bt.dev)
        ref = ref_t if k.startswith("train") else ref_e
        med, best = statistics.median(times[k]), min(times[k])
        lines.append(f"| {k} | {n / med:.1f} | {n / best:.1f} | {statistics.median(ref) / med:.2f}x | "
                     f"{min(ref) / best:.2f}x |")
    lines += ["", f"Batch preparation alone (collate + merge, one epoch): {1e3 * min(collate_t):.0f} ms, "
              f"{100 * min(collate_t) / min(ref_t):.1f}% of the fastest epoch of the loop as is."]
    return "\n".join(lines)


MULTITASK_BEGIN, MULTITASK_END = "<!-- multitask:begin -->", "<!-- multitask:end -->"


def _glue_task_data(tasks, glue_dir, train_count: int):
    """The tokenizer and the GLUE `tasks` as a study run prepares them (batches_mod.prepare_data),
    `train_count` training examples each, tokenized into a throw-away cache."""
    from mtlstudy.spec import DataSource, RunSpec
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    method = "mtl_all" if len(tasks) > 2 else "mtl" if len(tasks) == 2 else "single"
    spec = RunSpec(method=method, tasks=list(tasks), seed=1, model=MODEL,
                   data=DataSource(source="glue_dir", glue_dir=str(glue_dir)),
                   train_counts={t: train_count for t in tasks})
    tokenizer = load_tokenizer(MODEL)
    with tempfile.TemporaryDirectory() as tmp:
        return tokenizer, batches_mod.prepare_data(spec, tokenizer, Path(tmp))


def multitask(tasks, glue_dir="../shared/data/glue", examples=480, batch_sizes=(8, 16), repeats=3, log=print) -> str:
    """train_step on the heterogeneous batches of a size-sampled epoch over `tasks` (`examples`
    rows per measurement; mean pooling and word embeddings frozen, as glue_cpu), one encoder pass
    (merged) against one per task, interleaved. Returns a markdown table."""
    if len(tasks) < 2:
        raise UserError(f"bench --multitask: --tasks needs at least two tasks, got {list(tasks)}")
    tokenizer, data = _glue_task_data(tasks, glue_dir, examples)
    base = load_model(MODEL, [data[t].task for t in tasks], pooling="mean")  # as glue_cpu
    base.freeze_word_embeddings()
    sizes = {t: len(data[t].train) for t in tasks}
    lengths = {t: data[t].train.lengths() for t in tasks}
    cpu = torch.device("cpu")

    def one_epoch_part(batch_size, forward):
        cfg = _settings(batch_size).model_copy(update={"multitask_forward": forward})  # base is frozen already
        plan = sampling.EpochPlan(sizes, batch_size, sampling.task_probabilities("size", sizes))
        batches = plan.batches(np.random.default_rng([0, batch_size]), lengths)[:max(1, examples // batch_size)]
        model = copy.deepcopy(base)
        optimizer = train_mod.make_optimizer(model, cfg, cpu)
        model.train()
        t0 = time.perf_counter()
        for b in batches:
            train_mod.train_step(train_mod.RunContext(model, data, cfg, cpu, tokenizer.pad_token_id, optimizer), b)
        return sum(len(ix) for b in batches for _, ix in b) / (time.perf_counter() - t0)

    variants = {(b, f): (lambda b=b, f=f: one_epoch_part(b, f)) for b in batch_sizes for f in ("merged", "per_task")}
    one_epoch_part(batch_sizes[0], "merged")  # warm-up
    names = list(variants)
    load0 = _load()
    rates = interleaved(variants, repeats, lambda r, k, v: log(f"{r}/{repeats} batch {k[0]}, {k[1]}: {v:.1f} ex/s"))
    mean_len = {t: f"{lengths[t].mean():.0f}" for t in tasks}
    lines = [f"Tasks {' + '.join(tasks)} ({examples} train examples each; mean real tokens {mean_len}), size "
             f"sampler, heterogeneous batches, {torch.get_num_threads()} threads, {repeats} interleaved repeats; "
             f"load average {load0} at start, {_load()} at end.", "",
             "| batch | encoder passes | train ex/s, median | train ex/s, best | per_task / merged (median) |",
             "|---:|---|---:|---:|---:|"]
    for b, f in names:
        ratio = statistics.median(rates[(b, f)]) / statistics.median(rates[(b, "merged")])
        lines.append(f"| {b} | {f} | {statistics.median(rates[(b, f)]):.1f} | {max(rates[(b, f)]):.1f} | {ratio:.2f}x |")
    return "\n".join(lines)


EVAL_BEGIN, EVAL_END = "<!-- eval:begin -->", "<!-- eval:end -->"


def eval_speed(tasks, glue_dir="../shared/data/glue", examples=None, batch_sizes=(16, 32, 64), repeats=3,
               log=print) -> str:
    """train.evaluate over the dev sets of `tasks` together (the first `examples` of each; all by
    default), as glue_cpu evaluates (mean pooling), in fp32 and under bf16 autocast at each batch
    size, interleaved. Returns a markdown table."""
    tokenizer, data = _glue_task_data(tasks, glue_dir, 16)  # the training examples are not used
    if examples:
        for td in data.values():
            td.select = td.report = td.select.subset(np.arange(min(examples, len(td.select))))
    model = load_model(MODEL, [data[t].task for t in tasks], pooling="mean")
    cpu, pad_id = torch.device("cpu"), tokenizer.pad_token_id
    n = sum(len(td.select) for td in data.values())

    def one_pass(batch_size, amp):
        t0 = time.perf_counter()
        train_mod.evaluate(train_mod.RunContext(model, data, _settings(8), cpu, pad_id, eval_amp=amp), "select", batch_size)
        return n / (time.perf_counter() - t0)

    variants = {(b, name): (lambda b=b, amp=amp: one_pass(b, amp))
                for name, amp in (("fp32", None), ("bf16", torch.bfloat16)) for b in batch_sizes}
    one_pass(batch_sizes[0], None)  # warm-up
    load0 = _load()
    rates = interleaved(variants, repeats, lambda r, k, v: log(f"{r}/{repeats} batch {k[0]}, {k[1]}: {v:.1f} ex/s"))
    ref = statistics.median(rates[(batch_sizes[0], "fp32")])
    lines = [f"Dev sets of {' + '.join(f'{t} ({len(data[t].select)})' for t in tasks)}: {n} examples a pass, "
             f"{torch.get_num_threads()} threads, {repeats} interleaved repeats; load average {load0} at start, "
             f"{_load()} at end.", "",
             f"| batch | autocast | eval ex/s, median | eval ex/s, best | seconds a pass (median) "
             f"| vs fp32 at {batch_sizes[0]} (median) |",
             "|---:|---|---:|---:|---:|---:|"]
    for b, name in variants:
        med = statistics.median(rates[(b, name)])
        lines.append(f"| {b} | {name} | {med:.1f} | {max(rates[(b, name)]):.1f} | {n / med:.2f} | {med / ref:.2f}x |")
    return "\n".join(lines)


def _cli(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cpu_bench", description=__doc__.split("\n")[0])
    ap.add_argument("--ablate", action="store_true", help="measure single changes to our loop instead")
    ap.add_argument("--multitask", action="store_true",
                    help="measure one encoder pass per multi-task batch against one per task, on --tasks together, "
                         "at batch 8 and --batch-size")
    ap.add_argument("--eval", action="store_true",
                    help="measure the dev evaluation of --tasks together: fp32 against bf16 autocast, batches 16/32/64")
    ap.add_argument("--tasks", nargs="+", default=["rte", "sst2"])
    ap.add_argument("--glue-dir", default="../shared/data/glue")
    ap.add_argument("--examples", type=int, default=256)
    ap.add_argument("--dev-examples", type=int, default=None, help="--eval: the first N dev examples of each task (all by default)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="BENCHMARKS.md")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.multitask or a.ablate or a.eval:
        if a.eval:
            flag, title, begin, end = "--eval", "CPU: dev evaluation, fp32 or bf16, by batch size", EVAL_BEGIN, EVAL_END
            body = eval_speed(a.tasks, a.glue_dir, a.dev_examples, repeats=a.repeats)
        elif a.multitask:
            flag, title, begin, end = ("--multitask", "CPU: a multi-task step, one encoder pass or one per task",
                                       MULTITASK_BEGIN, MULTITASK_END)
            body = multitask(a.tasks, a.glue_dir, a.examples, tuple(sorted({8, a.batch_size})), a.repeats)
        else:
            flag, title, begin, end = "--ablate", "CPU: what helps our loop", ABLATE_BEGIN, ABLATE_END
            body = "\n\n".join(ablate(t, a.glue_dir, a.examples, a.batch_size, a.repeats) for t in a.tasks)
        now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
        argv_ = " ".join(sys.argv[1:]) if argv is None else " ".join(argv)
        section = "\n".join([begin, f"## {title} (`python -m benchmarks.cpu_bench {flag}`)", "",
                              f"- command: `{_env_prefix()}python -m benchmarks.cpu_bench {argv_}`", f"- date: {now}",
                              f"- machine: {machine()}", "", body, "", end])
        write_section(Path(a.out), section, begin, end)
        print(section)
        return 0
    return main(a)


if __name__ == "__main__":
    try:
        sys.exit(_cli())
    except UserError as e:  # bad input: one line, as the mtlstudy command prints it
        print(f"benchmarks.cpu_bench: error: {e}", file=sys.stderr)
        sys.exit(2)
