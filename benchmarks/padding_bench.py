#!/usr/bin/env python
"""`python -m benchmarks.padding_bench`: the `paper` profile's batches under each `train.padding`
mode, on real GLUE rows: tokens computed per real token, and the seconds of a training step of a
DistilRoBERTa-shaped encoder with random weights (the shape benchmarks/gpu_throughput.py builds),
measured side by side on the same batches in one run. Run from the repository's root.

Batches: what the `paper` profile draws for a single-task run (sampling.EpochPlan: 128 rows, random,
no length grouping) from the real GLUE rows of MNLI (dev_matched: the training file is not in the
shared folder), QNLI (dev, likewise) and SST-2 (train), tokenized with the offline all-MiniLM-L6-v2
WordPiece tokenizer at max length 128 (the issue's measurement; RoBERTa's BPE gives lengths within
about 10% of these on English text). The step is mtlstudy.train.train_step as `paper` runs it
(first-token head, fused AdamW, clipping at norm 1.0; on a CPU fp32), only train.padding changes.

Tokens per real token: over `--batches` batches per task. "unpadded" (attention without padding)
computes exactly the real tokens, 1.00 by definition; it is not a mode of the loop (docs/gpu.md).
Step times: `--steps` batches per task, every mode on each batch in an order rotated per batch;
the table gives the median. On a shared machine run it as
`OMP_WAIT_POLICY=PASSIVE python -m benchmarks.padding_bench`.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mtlstudy import data as data_mod  # noqa: E402
from mtlstudy import passes, sampling  # noqa: E402
from mtlstudy import train as train_mod  # noqa: E402
from mtlstudy.model import OFFLINE_MINILM, MultiTaskModel, load_tokenizer  # noqa: E402
from mtlstudy.spec import TrainSettings  # noqa: E402
from mtlstudy.tasks import get_task  # noqa: E402

from benchmarks.gpu_throughput import DISTILROBERTA, MAX_GRAD_NORM, MAX_LENGTH  # noqa: E402

TASK_FILES = {"mnli": ("MNLI/dev_matched.tsv", "dev"), "qnli": ("QNLI/dev.tsv", "dev"),
              "sst2": ("SST-2/train.tsv", "train")}
BATCH = 128  # the `paper` profile's
PAD_ID = DISTILROBERTA["pad_token_id"]  # WordPiece never gives id 1 ([unused0]): padding is told apart
# The modes: (label, TrainSettings fields). Tokens per real token are given for these and "unpadded";
# steps are timed in TIMED (a padded MNLI step takes about 100 s on the 2 shared cores).
MODES = {"batch": {"padding": "batch"},
         "sorted_passes (4)": {"padding": "sorted_passes", "padding_passes": 4},
         "sorted_passes (8)": {"padding": "sorted_passes", "padding_passes": 8}}
TIMED = ("batch", "sorted_passes (8)")


def task_rows(task: str, glue_dir: Path, tokenizer) -> data_mod.Tokenized:
    path, split = TASK_FILES[task]
    examples = data_mod.read_task_data(Path(glue_dir) / path, get_task(task), split)
    rows = data_mod.tokenize(tokenizer, examples, MAX_LENGTH, cache_dir=None)
    return data_mod.Tokenized(rows.input_ids, None, rows.offsets, rows.labels)  # RoBERTa has no token types


def paper_batches(n_rows: int, count: int, seed: int = 0) -> list[list[tuple[str, np.ndarray]]]:
    """The first `count` batches of a `paper` single-task epoch over `n_rows` rows (task "x")."""
    plan = sampling.EpochPlan({"x": n_rows}, BATCH)
    return plan.batches(np.random.default_rng(seed))[:count]


def computed_tokens(plan, lengths: np.ndarray, settings: dict) -> int:
    """Tokens the encoder computes for a batch under a mode: each pass, rows x its widest row."""
    cfg = TrainSettings(**settings)
    rows = {t: lengths[ix] for t, ix in plan}
    chunks = passes.pass_chunks(plan, None, False, rows if cfg.padding == "sorted_passes" else None,
                                cfg.padding_passes)
    return passes.pass_tokens(chunks, {t: dict(zip(ix.tolist(), lengths[ix].tolist())) for t, ix in plan})


def make_model() -> MultiTaskModel:
    from transformers import RobertaConfig, RobertaModel

    torch.manual_seed(0)
    encoder = RobertaModel(RobertaConfig(**DISTILROBERTA), add_pooling_layer=False)
    model = MultiTaskModel(encoder, [get_task("mnli")], pooling="first_token")
    model.head_of["x"] = model.head_of["mnli"]  # the batches' task name
    return model


def run(tasks, glue_dir, steps: int, batches: int, modes: dict = MODES, timed=TIMED, log=print) -> list[dict]:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tokenizer = load_tokenizer(OFFLINE_MINILM)
    model = make_model()
    cpu = torch.device("cpu")
    optimizer = train_mod.make_optimizer(model, TrainSettings(), cpu)
    out = []
    for name in tasks:
        rows = task_rows(name, glue_dir, tokenizer)
        lengths = rows.lengths()
        # every task's rows go through MNLI's 3-way head (SST-2's labels 0 and 1 fit): speed does not depend on it
        td = {"x": train_mod.TaskData(get_task("mnli"), rows, rows, rows)}
        plans = paper_batches(len(rows), max(batches, steps))
        real = sum(int(lengths[ix].sum()) for p in plans[:batches] for _, ix in p)
        row = {"task": name, "mean_length": float(lengths.mean()), "batches": len(plans[:batches]),
               "ratio": {m: sum(computed_tokens(p, lengths, s) for p in plans[:batches]) / real
                         for m, s in modes.items()}, "seconds": {m: [] for m in timed}}
        row["ratio"]["unpadded"] = 1.0
        contexts = {m: train_mod.RunContext(model, td, TrainSettings(device="cpu", max_grad_norm=MAX_GRAD_NORM, **s),
                                            cpu, PAD_ID, optimizer) for m, s in modes.items() if m in timed}
        labels = list(timed)
        for k, plan in enumerate(plans[:steps]):
            for m in labels[k % len(labels):] + labels[:k % len(labels)]:
                t = time.perf_counter()
                train_mod.train_step(contexts[m], plan)
                row["seconds"][m].append(time.perf_counter() - t)
                log(f"{name} batch {k + 1}: {m}: {row['seconds'][m][-1]:.2f} s")
        out.append(row)
    return out


def to_markdown(rows: list[dict], modes: dict = MODES, timed=TIMED) -> str:
    names = list(timed)
    head = ["task", "mean length", *[f"tokens / real, {m}" for m in [*modes, "unpadded"]],
            *[f"step s, {m}" for m in names], *[f"speed-up, {m}" for m in names[1:]]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        med = {m: statistics.median(r["seconds"][m]) if r["seconds"][m] else float("nan") for m in names}
        lines.append("| " + " | ".join([r["task"], f"{r['mean_length']:.1f}",
                                        *[f"{r['ratio'][m]:.2f}" for m in [*modes, "unpadded"]],
                                        *[f"{med[m]:.2f}" for m in names],
                                        *[f"{med[names[0]] / med[m]:.2f}x" for m in names[1:]]]) + " |")
    steps = len(rows[0]["seconds"][names[0]]) if rows else 0
    lines += ["", f"Tokens per real token over up to {max((r['batches'] for r in rows), default=0)} batches of {BATCH} per task; "
              f"step seconds: the median of {steps} batches per task, every mode on the same batches, "
              f"{torch.get_num_threads()} torch threads."]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=list(TASK_FILES), choices=list(TASK_FILES))
    p.add_argument("--glue-dir", default=os.environ.get("MTLSTUDY_GLUE_DIR", "../shared/data/glue"))
    p.add_argument("--steps", type=int, default=3, help="batches timed per task (every mode on each)")
    p.add_argument("--batches", type=int, default=100, help="batches per task for tokens per real token")
    a = p.parse_args(argv)
    rows = run(a.tasks, a.glue_dir, a.steps, a.batches, log=lambda s: print(s, file=sys.stderr, flush=True))
    print(to_markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
