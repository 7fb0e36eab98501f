#!/usr/bin/env python
"""`make gpu-check`: the one command to run the first time a GPU is at hand, for the `paper` study.

    python benchmarks/gpu_check.py            # on a machine with a CUDA GPU (under 10 minutes on one H100)
    python benchmarks/gpu_check.py --smoke    # anywhere, on CPU, tiny sizes: checks the script, not a GPU

It writes outputs/gpu_check/gpu_check.json (everything) and gpu_check.md (for BENCHMARKS.md) again
after each section, as it is measured: a section that fails (an Inductor compile without a C
compiler, a measuring process not ready in time, a command past its time limit) is recorded with
its one-line reason and the rest still run; a check killed half-way leaves the sections it
finished. The sections, in order (`--only` picks some):
  machine        what the GPU is: name, memory, compute capability, driver, torch, CUDA, cuDNN;
  paper_plan     the `paper` study's runs and training example-passes (`mtlstudy plan paper`);
  study_batches  a random sample of the training batches the `paper` runs themselves make
                 (gpu_throughput.StudyBatches: each run's own epoch plan, random ungrouped batches
                 of 128 as `group_by_length: false` makes them, over lengths drawn from each task's
                 GLUE length distribution), with their padding;
  peaks          a matmul measured in the dtype the runs compute in (bf16 from compute capability 8,
                 fp16 before), and the card's datasheet peak in that dtype;
  memory         peak GPU memory of a step at the largest batch (128 rows of 128 tokens);
  sync           whether a training step makes the host wait for the GPU
                 (torch.cuda.set_sync_debug_mode), and where;
  throughput     those sampled batches through mtlstudy's own step (a DistilRoBERTa-shaped encoder,
                 random weights, no download) with 1, 2 and 4 runs at once on the GPU, each its own
                 process, without and with torch.compile: step time, examples/s, tokens/s, MFU,
                 and the `paper` study's training in GPU-hours (gpu_throughput.training_estimate:
                 all of its batches at the measured time of the sampled ones);
  resume         a run killed after its first resume checkpoint and run again, against the same
                 run uninterrupted: does it resume, and is its record bit-identical;
  study          a shrunk `paper` study end to end through the command line and the local
                 executor (two generated tasks, or --glue-dir's RTE and MRPC), with its report.
Each throughput, memory and sync measurement is made for each entry of MODES, the training
settings it times as `--set` changes over the `paper` profile. With --smoke everything is shrunk
(a 2-layer encoder, batch 16, a few steps, eager torch.compile) so the test suite runs it on CPU.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

SMOKE_SHAPE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
SMOKE_VOCAB = 400
SECTIONS = ("machine", "paper_plan", "study_batches", "peaks", "memory", "sync", "throughput", "resume", "study")

# The training settings each throughput, memory and sync measurement is made with: a name, `--set`
# changes over the `paper` profile, and whether throughput is timed with torch.compile off, on or
# both. The profile's own settings first (`padding: sorted_passes`, 8 passes); then the padded
# batches the released code computed, and fewer passes, which decide whether sorted_passes is the
# GPU's mode too (docs/gpu.md). Another setting of a step is one more entry: the batches are made
# and the step run with it, nothing else changes.
MODES = [{"name": "paper", "set": [], "compile": [False, True]},
         {"name": "padded", "set": ["train.padding=batch"], "compile": [False, True]},
         {"name": "sorted_4", "set": ["train.padding_passes=4"], "compile": [False]},
         {"name": "sorted_2", "set": ["train.padding_passes=2"], "compile": [False]}]


class CheckError(Exception):
    """Bad input or an unusable device: one line, exit 2."""


# ---- settings ---------------------------------------------------------------------------------

def settings(smoke: bool, concurrency: list[int]) -> dict:
    """Sizes of each measurement: the paper's on a GPU, tiny ones in smoke mode. `set`: changes
    over the `paper` profile that every mode gets (smoke: batch 16, the least that holds one row of
    each of the 9 tasks an MTL-All batch trains)."""
    if smoke:
        return dict(device="cpu", eval_batch_size=8, warmup=1, steps=2, concurrency=concurrency,
                    shape=SMOKE_SHAPE, compile_backend="eager", threads=1, set=["train.batch_size=16"],
                    study_timeout=900)
    return dict(device="cuda", eval_batch_size=256, warmup=8, steps=40, concurrency=concurrency,
                shape={}, compile_backend="inductor", threads=None, set=[], study_timeout=420)


# ---- 1. the machine ---------------------------------------------------------------------------

def machine(device: str) -> dict:
    import torch
    import transformers

    gpu = device == "cuda"
    driver = None
    if gpu and shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True)
        driver = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    props = torch.cuda.get_device_properties(0) if gpu else None
    return {"device": device, "gpu": torch.cuda.get_device_name(0) if gpu else None,
            "gpu_memory_gib": round(props.total_memory / 2 ** 30, 1) if gpu else None,
            "compute_capability": f"{props.major}.{props.minor}" if gpu else None,
            "gpus_visible": torch.cuda.device_count() if gpu else 0, "driver": driver,
            "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "transformers": transformers.__version__, "python": platform.python_version(),
            "cpus": os.cpu_count()}


def require_gpu():
    import torch

    if not torch.cuda.is_available():
        raise CheckError(f"no usable GPU: torch {torch.__version__} (CUDA build {torch.version.cuda}) sees "
                         f"{torch.cuda.device_count()} CUDA devices, CUDA_VISIBLE_DEVICES="
                         f"{os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}; --smoke checks the script on CPU")


# ---- the batches, the dtype and the peaks ------------------------------------------------------

def mode_batches(cfg: dict, mode: dict):
    """The `paper` study's training batches under `mode` (gpu_throughput.StudyBatches): a sample of
    warm-up plus timed steps, drawn from the whole study."""
    from benchmarks.gpu_throughput import study_batches

    return study_batches("paper", cfg["warmup"] + cfg["steps"], [*cfg["set"], *mode["set"]])


def describe_batches(study) -> dict:
    sample = study.sample
    rows = [sum(len(x) for _, x in b) for b in sample]
    tasks = [len(b) for b in sample]
    return {"runs": study.runs, "total_batches": study.total_batches, "example_passes": study.example_passes,
            "batch_size": study.train.batch_size, "group_by_length": study.train.group_by_length,
            "schedule": study.train.schedule, "precision": study.train.precision, "sampled": len(sample),
            "mean_rows": float(np.mean(rows)), "mean_tasks_a_batch": float(np.mean(tasks)),
            **study.padding(8)}


def compute_dtype(precision_setting: str, device: str):
    """The autocast dtype the runs train in on this device (None: fp32), as precision.autocast_dtype
    gives it: bf16 on a GPU of compute capability 8 or later, fp16 on an older one."""
    import torch

    from mtlstudy.precision import autocast_dtype

    return autocast_dtype(precision_setting, torch.device(device))


def dtype_name(dtype) -> str:
    return "fp32" if dtype is None else {"bfloat16": "bf16", "float16": "fp16"}[str(dtype).replace("torch.", "")]


def peaks(device: str, gpu_name: str | None, dtype) -> dict:
    """The two peaks MFU is taken against, in the dtype the steps compute in: a matmul measured
    here, and the card's datasheet peak (None for a card not in benchmarks/flops.GPU_PEAKS)."""
    import torch

    from benchmarks.flops import datasheet_peak, matmul_flops_per_s

    dtype = dtype or torch.float32
    n = 8192 if device == "cuda" else 512
    peak = datasheet_peak(gpu_name, dtype) if gpu_name else None
    return {"dtype": dtype_name(dtype if dtype != torch.float32 else None),
            "matmul_tflops": matmul_flops_per_s(n, device=device, dtype=dtype) / 1e12, "matmul_n": n,
            "datasheet_tflops": peak / 1e12 if peak else None}


def main_bench(cfg: dict, study):
    """A Bench in this process (memory and sync checks) for the study's settings and tasks."""
    from benchmarks.gpu_throughput import Bench

    tasks = sorted({t for b in study.sample for t, _ in b})
    return Bench(cfg["device"], study.train.batch_size, cfg["eval_batch_size"], False, shape=cfg["shape"],
                 train=study.train, tasks=tasks, log=lambda *a: None)


def largest_batch(study) -> list:
    """The largest batch a run can make: batch_size rows at max_length, of the sample's first task."""
    from benchmarks.gpu_throughput import MAX_LENGTH

    task = study.sample[0][0][0]
    return [(task, np.full(study.train.batch_size, min(study.train.max_length, MAX_LENGTH)))]


def memory(cfg: dict, study) -> dict:
    bench = main_bench(cfg, study)
    bench.train_steps(study.sample[:1])
    gib = bench.peak_memory_gib(largest_batch(study))
    return {"largest_batch": f"{study.train.batch_size} rows x {largest_batch(study)[0][1][0]} tokens",
            "peak_memory_gib": gib}


def sync(cfg: dict, study) -> dict:
    """The host-device syncs of one step (after two warm-up steps), from set_sync_debug_mode."""
    if cfg["device"] != "cuda":
        return {"syncs_a_step": None, "where": [], "note": "not checked on a CPU (nothing to wait for)"}
    bench = main_bench(cfg, study)
    bench.train_steps(study.sample[:2])
    where = bench.step_syncs(study.sample[2 % len(study.sample)])
    return {"syncs_a_step": len(where), "where": sorted(set(where))}


# ---- throughput with 1, 2, 4 runs on one GPU ------------------------------------------------------

def _worker(rank: int, cfg: dict, sample: list, train, compiled: bool, commands, results):
    """One run's process: builds the model once, warms up (and compiles) on the warm-up batches,
    then times the timed batches (rotated by rank) each time the parent asks, starting at the
    wall-clock time it is given."""
    import torch

    from benchmarks.flops import train_flops
    from benchmarks.gpu_throughput import Bench

    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    backend = cfg["compile_backend"] if compiled else None
    tasks = sorted({t for b in sample for t, _ in b})
    bench = Bench(cfg["device"], train.batch_size, cfg["eval_batch_size"], compile_=backend or False,
                  shape=cfg["shape"], train=train, tasks=tasks, log=lambda *a: None)
    warm, timed = sample[:cfg["warmup"]], sample[cfg["warmup"]:]
    k = rank % len(timed)
    timed = timed[k:] + timed[:k]
    t = time.perf_counter()
    bench.train_steps(warm)
    results.put(("ready", rank, time.perf_counter() - t))
    lengths = [np.concatenate([x for _, x in b]) for b in timed]
    while (start_at := commands.get()) is not None:
        if bench.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        time.sleep(max(0.0, start_at - time.time()))
        t0 = time.time()
        bench.train_steps(timed)
        t1 = time.time()
        mem = torch.cuda.max_memory_allocated() if bench.device.type == "cuda" else 0
        results.put(("done", rank, {"t0": t0, "t1": t1, "steps": len(timed),
                                    "examples": int(sum(len(x) for x in lengths)),
                                    "tokens": int(sum(x.sum() for x in lengths)),
                                    "flops": float(sum(train_flops(x, bench.flops) for x in lengths)),
                                    "peak_memory_gib": mem / 2 ** 30}))


def throughput(cfg: dict, study, mode: str, compiled: bool, pk: dict | None, log) -> list[dict]:
    """One row per number of concurrent runs: step time, examples/s and tokens/s of all runs
    together, MFU, and the `paper` study's training in GPU-hours at that rate."""
    from benchmarks.gpu_throughput import training_estimate

    ctx = mp.get_context("spawn")  # CUDA cannot be forked
    n_max = max(cfg["concurrency"])
    results = ctx.Queue()
    queues = [ctx.Queue() for _ in range(n_max)]
    procs = [ctx.Process(target=_worker, args=(r, cfg, study.sample, study.train, compiled, queues[r], results),
                         daemon=True) for r in range(n_max)]
    for p in procs:
        p.start()
    try:
        ready = [_get(results, procs, "ready") for _ in procs]
        log(f"  {n_max} processes ready (warm-up{' and compile' if compiled else ''}: "
            f"{max(r[2] for r in ready):.1f} s)")
        rows = []
        for n in cfg["concurrency"]:
            start_at = time.time() + 0.5
            for q in queues[:n]:
                q.put(start_at)
            done = [_get(results, procs, "done")[2] for _ in range(n)]
            wall = max(d["t1"] for d in done) - min(d["t0"] for d in done)
            steps = sum(d["steps"] for d in done)
            flops = sum(d["flops"] for d in done) / wall
            row = {"mode": mode, "runs": n, "compile": compiled, "seconds": wall,
                   "step_s": float(np.mean([(d["t1"] - d["t0"]) / d["steps"] for d in done])),
                   "examples_per_s": sum(d["examples"] for d in done) / wall,
                   "tokens_per_s": sum(d["tokens"] for d in done) / wall,
                   "per_run_examples_per_s": [d["examples"] / (d["t1"] - d["t0"]) for d in done],
                   "model_flops_per_s": flops,
                   "mfu_of_matmul": flops / 1e12 / pk["matmul_tflops"] if pk else None,
                   "mfu": flops / 1e12 / pk["datasheet_tflops"] if pk and pk["datasheet_tflops"] else None,
                   "peak_memory_gib": max(d["peak_memory_gib"] for d in done),
                   "warmup_s": max(r[2] for r in ready),
                   "paper_training_gpu_hours": training_estimate(study, wall / steps)["train_gpu_hours"]}
            rows.append(row)
            log(f"  {n} run(s) at once{', compiled' if compiled else ''}: {row['step_s'] * 1e3:.1f} ms a step, "
                f"{row['examples_per_s']:.1f} ex/s in all, {row['tokens_per_s']:.0f} tokens/s, "
                f"{flops / 1e12:.3f} TFLOP/s; `paper` training {row['paper_training_gpu_hours']:.1f} GPU-hours")
        return rows
    finally:
        for q in queues:
            q.put(None)
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()


def fastest_padding(rows: list[dict]) -> dict | None:
    """Which padding mode trains `paper` in the fewest GPU-hours (all modes time the same batches),
    beside the profile's own mode ("paper") at the same runs at once and torch.compile setting."""
    if not rows:
        return None
    best = min(rows, key=lambda r: r["paper_training_gpu_hours"])
    own = next((r for r in rows if r["mode"] == MODES[0]["name"] and r["runs"] == best["runs"]
                and r["compile"] == best["compile"]), None)
    return {"mode": best["mode"], "runs": best["runs"], "compile": best["compile"],
            "gpu_hours": best["paper_training_gpu_hours"], "profile_mode": MODES[0]["name"],
            "profile_mode_gpu_hours": own["paper_training_gpu_hours"] if own else None}


def _get(results, procs, kind: str, timeout: float = 600):
    """The next message of `kind` from the workers; an error if one died or none came in time."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            msg = results.get(timeout=1)
        except Exception:  # queue.Empty
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"a measuring process died (exit code {dead[0].exitcode}); its traceback is above")
            continue
        if msg[0] == kind:
            return msg
    raise RuntimeError(f"no '{kind}' from the measuring processes in {timeout:.0f} s")


def paper_plan() -> dict:
    """Runs and training example-passes of the `paper` study, as `mtlstudy plan paper` prints them."""
    out = _cli("plan", "paper", "--quiet", timeout=300)
    runs = re.search(r"runs: (\d+)", out.stdout)
    passes = re.search(r"training example-passes: (?:at most )?([\d,]+)", out.stdout)
    if out.returncode != 0 or not runs or not passes:
        raise RuntimeError(f"`mtlstudy plan paper` gave no run count or example-passes: {out.stderr.strip()[-300:]}")
    return {"runs": int(runs.group(1)), "example_passes": int(passes.group(1).replace(",", "")),
            "upper_bound": "at most" in out.stdout}


# ---- a shrunk `paper` study, and a killed run resumed ---------------------------------------------

def _cli(*args, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mtlstudy.cli", *args], capture_output=True, text=True,
                          cwd=REPO, env=_cli_env(), timeout=timeout)


def _cli_env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def random_encoder(folder: Path, shape: dict, vocab: int) -> Path:
    """A RoBERTa encoder of `shape` over DistilRoBERTa's, random weights, with a byte-level BPE
    trained here on the generated tasks' texts: a model folder that needs no download."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    from mtlstudy import generated

    from benchmarks.gpu_throughput import DISTILROBERTA

    if (folder / "config.json").exists():
        return folder
    texts = []
    for task in ("gen_nli", "gen_para", "gen_sim", "gen_sent"):
        a, b, _ = generated.generate(task, "train", 300, seed=0)
        texts += a + (b or [])
    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab, min_frequency=1, special_tokens=special, show_progress=False)
    bos, eos = ("<s>", bpe.token_to_id("<s>")), ("</s>", bpe.token_to_id("</s>"))
    bpe._tokenizer.post_processor = RobertaProcessing(eos, bos)
    tok = RobertaTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                               cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")
    tok.save_pretrained(folder)
    config = {**DISTILROBERTA, **shape, "pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id,
              "eos_token_id": tok.eos_token_id, "vocab_size": max(len(tok), shape.get("vocab_size", len(tok)))}
    torch.manual_seed(0)
    RobertaModel(RobertaConfig(**config), add_pooling_layer=False).save_pretrained(folder)
    return folder


def study_model(out: Path, smoke: bool) -> tuple[str, str]:
    """distilroberta-base where the hub (or its cache) has it; otherwise a random encoder of its shape."""
    if not smoke:
        from mtlstudy.model import ModelLoadError, load_tokenizer

        try:
            load_tokenizer("distilroberta-base")
            return "distilroberta-base", "distilroberta-base (pre-trained)"
        except ModelLoadError:
            pass
    shape = SMOKE_SHAPE if smoke else {"vocab_size": 50265}
    folder = random_encoder(out / "random_encoder", shape, SMOKE_VOCAB if smoke else 8000)
    kind = "tiny RoBERTa (smoke)" if smoke else "DistilRoBERTa-shaped, random weights (no hub)"
    return str(folder), kind


def _sets(items: list[str]) -> list[str]:
    return [x for s in items for x in ("--set", s)]


def study_overrides(model: str, out: Path, smoke: bool, glue_dir: str | None) -> list[str]:
    if glue_dir:
        tasks = ["rte", "mrpc"]
        data = ["data.source=glue_dir", f"data.glue_dir={Path(glue_dir).resolve()}",
                "train_counts={rte: 512, mrpc: 512}"]
    else:
        tasks = ["gen_nli", "gen_para"]
        sizes = 48 if smoke else 1024
        data = [f"data.generated_sizes={{gen_nli: {sizes}, gen_para: {sizes}}}",
                f"data.generated_dev_size={24 if smoke else 256}"]
    sets = [f"model={model}", f"tasks=[{', '.join(tasks)}]", "seeds=[42]", "train.epochs=1", "notebooks=true",
            f"output_dir={out / 'study'}", *data]
    if smoke:
        sets += ["methods=[single, mtl]", "mtl_all_samplers=[size]", "train.batch_size=8", "train.max_length=32",
                 "train.device=cpu", "train.threads=1", "workers=2"]
    else:
        sets += ["train.device=cuda"]  # a GPU that is not usable fails the study, never a CPU run
    return _sets(sets)


def shrunk_study(out: Path, smoke: bool, glue_dir: str | None, timeout: float, log) -> dict:
    model, kind = study_model(out, smoke)
    args = ["run", "paper", *study_overrides(model, out, smoke, glue_dir), "--report"]
    log(f"  mtlstudy {' '.join(args)}")
    t = time.time()
    res = _cli(*args, timeout=timeout)
    seconds = time.time() - t
    text = res.stdout
    counts = re.search(r"^study paper: (.*)$", text, re.M)
    results = re.search(r"^results: (.*)$", text, re.M)
    report = re.search(r"^report: (.*)$", text, re.M)
    study = {"command": "mtlstudy " + " ".join(args), "model": kind, "exit_code": res.returncode,
             "seconds": seconds, "counts": {}, "results_rows": 0, "report": None, "mean_scores": {},
             "stderr_tail": res.stderr[-2000:] if res.returncode else ""}
    if counts:
        study["counts"] = {k: int(v) for k, v in (c.rsplit(" ", 1) for c in counts.group(1).split(", "))}
    if results and Path(results.group(1)).exists():
        import pandas as pd

        table = pd.read_csv(results.group(1))
        study["results_rows"] = len(table)
        study["mean_scores"] = {f"{m} {t}": round(float(s), 2) for (m, t), s in
                                table.groupby(["method", "target"])["score"].mean().items()}
    if report and Path(report.group(1)).exists():
        study["report"] = report.group(1)
    log(f"  exit {res.returncode} in {seconds:.0f} s: {study['counts']}; report {study['report']}")
    if res.returncode != 0:
        raise RuntimeError(f"the shrunk study exited {res.returncode}: "
                           f"{(res.stderr.strip().splitlines() or ['no output'])[-1][:300]}")
    return study


def resume_check(out: Path, smoke: bool, timeout: float, log) -> dict:
    """One run trained twice: uninterrupted, and killed (SIGKILL, its whole process group) just
    after its first resume checkpoint, then run again. Resumed bit-compatibly when the second
    run's record (every evaluation's loss and scores, each task's best step) is the first's."""
    model, _ = study_model(out, smoke)
    size = 96 if smoke else 2048
    base = [f"model={model}", "tasks=[gen_sent]", "methods=[single]", "seeds=[42]", "notebooks=false", "workers=1",
            f"data.generated_sizes={{gen_sent: {size}}}", "data.generated_dev_size=64", "train.epochs=3",
            "train.evals_per_epoch=2", "train.resume_every_seconds=0", f"train.batch_size={8 if smoke else 32}",
            "train.max_length=32", f"train.device={'cpu' if smoke else 'cuda'}",
            *(["train.threads=1"] if smoke else [])]
    records, killed = {}, False
    for name in ("uninterrupted", "killed"):  # each under its own outputs folder: the second would take the first's run
        study_dir = out / "resume" / name / name
        shutil.rmtree(study_dir.parent, ignore_errors=True)
        args = ["run", "paper", *_sets([*base, f"output_dir={study_dir.parent}", f"name={name}"])]
        if name == "killed":
            proc = subprocess.Popen([sys.executable, "-m", "mtlstudy.cli", *args], cwd=REPO, env=_cli_env(),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            deadline = time.time() + timeout
            while time.time() < deadline and proc.poll() is None and not list(study_dir.glob("runs/*/resume")):
                time.sleep(0.02)
            killed = proc.poll() is None
            if killed:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            killed = killed and not list(study_dir.glob("runs/*/result.json"))
        res = _cli(*args, timeout=timeout)
        if res.returncode != 0:
            raise RuntimeError(f"the {name} run exited {res.returncode}: "
                               f"{(res.stderr.strip().splitlines() or ['no output'])[-1][:300]}")
        (record,) = study_dir.glob("runs/*/result.json")
        records[name] = json.loads(record.read_text())
    log_text = next((out / "resume" / "killed" / "killed").glob("runs/*/log.txt")).read_text()
    a, b = records["uninterrupted"], records["killed"]

    def trace(r):
        return [(h["step"], h["train_loss"], h["scores"]) for h in r["history"]], r["best"]

    losses = [(x["train_loss"], y["train_loss"]) for x, y in zip(a["history"], b["history"])]
    result = {"killed_mid_run": killed, "resumed": "resuming from" in log_text,
              "bit_identical": trace(a) == trace(b), "steps": a["total_steps"],
              "max_loss_difference": max((abs(x - y) for x, y in losses), default=None), "device": a["device"]}
    log(f"  killed mid-run: {killed}; resumed: {result['resumed']}; bit-identical record: {result['bit_identical']} "
        f"(largest loss difference {result['max_loss_difference']})")
    return result


# ---- the files ----------------------------------------------------------------------------------

class Report:
    """gpu_check.json and gpu_check.md, written again (whole, by rename) after every section, so a
    check killed half-way leaves the sections it finished; a section that raises is recorded with
    its one-line reason under `failed`, and the next runs."""

    def __init__(self, out: Path, head: dict, log):
        self.out, self.log, self.t0 = out, log, time.time()
        self.res = {**head, "failed": {}}

    def section(self, name: str, measure, *needs: str):
        """Measure one section (a call that returns its result) and write both files; None if it failed."""
        self.log(f"{name}:")
        missing = [n for n in needs if self.res.get(n) is None]
        try:
            if missing:
                raise RuntimeError(f"needs the {', '.join(missing)} section, which did not finish")
            value = measure()
        except Exception as e:  # noqa: BLE001 - recorded with its reason; the other sections still run
            first = (str(e).strip().splitlines() or [""])[0]
            value, self.res["failed"][name] = None, f"{type(e).__name__}: {first}"[:400]
            self.log(f"  failed: {self.res['failed'][name]}")
        self.res[name] = value
        self.res["seconds"] = time.time() - self.t0
        self.write()
        return value

    def write(self):
        self.out.mkdir(parents=True, exist_ok=True)
        for path, text in ((self.out / "gpu_check.json", json.dumps(self.res, indent=1, default=str)),
                           (self.out / "gpu_check.md", to_markdown(self.res))):
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, path)


def _f(x, fmt: str, none: str = "n/a") -> str:
    return none if x is None else format(x, fmt)


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def to_markdown(res: dict) -> str:
    m = res.get("machine") or {}
    what = m.get("gpu") or ("CPU (smoke mode: these numbers check the script; they are not a GPU figure)"
                            if res["smoke"] else "(machine section missing)")
    lines = [f"## GPU: {what} (`make gpu-check`)", "", f"- date: {res['date']}; took {res.get('seconds', 0):.0f} s"]
    if m:
        lines.append(f"- machine: {what}, {_f(m['gpu_memory_gib'], '')} GiB, compute capability "
                     f"{m['compute_capability']}; driver {m['driver']}; torch {m['torch']}; CUDA {m['cuda']}; "
                     f"cuDNN {m['cudnn']}; transformers {m['transformers']}; Python {m['python']}; {m['cpus']} CPUs")
    if plan := res.get("paper_plan"):
        lines.append(f"- `paper` study: {plan['runs']} runs, {plan['example_passes']:,} training example-passes "
                     f"({'at most, ' if plan['upper_bound'] else ''}`mtlstudy plan paper`)")
    for mode, b in (res.get("study_batches") or {}).items():
        lines.append(f"- its batches ({mode}): {b['total_batches']:,} training batches of {b['batch_size']} "
                     f"(schedule {b['schedule']}, group_by_length {b['group_by_length']}); {b['sampled']} drawn "
                     f"at random and timed; they pad to {b['padded_over_real']:.2f}x their real tokens")
    if pk := res.get("peaks"):
        lines.append(f"- peaks, in the runs' dtype ({pk['dtype']}): measured matmul {pk['matmul_tflops']:.1f} "
                     f"TFLOP/s; datasheet {_f(pk['datasheet_tflops'], '.0f', 'unknown')} TFLOP/s")
    for mode, mem in (res.get("memory") or {}).items():
        lines.append(f"- memory ({mode}): a step at the largest batch ({mem['largest_batch']}) peaks at "
                     f"{_f(mem['peak_memory_gib'], '.2f')} GiB")
    for mode, sy in (res.get("sync") or {}).items():
        said = sy.get("note") or (f"{sy['syncs_a_step']} host-device syncs a step"
                                  + (f": {'; '.join(sy['where'])}" if sy["where"] else ""))
        lines.append(f"- sync ({mode}): {said}")
    if rows := res.get("throughput"):
        lines += ["", "The `paper` runs' own batches through mtlstudy's step (DistilRoBERTa-shaped encoder, random "
                  "weights); GPU-hours: the `paper` study's training alone on one GPU (no evaluation, checkpoints "
                  "or start-up).", "",
                  "| mode | runs at once | torch.compile | step (ms) | train ex/s, all runs | tokens/s | "
                  "MFU (datasheet) | MFU (measured matmul) | peak memory a run (GiB) | `paper` training, GPU-hours |",
                  "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            lines.append(f"| {r['mode']} | {r['runs']} | {'yes' if r['compile'] else 'no'} | {1e3 * r['step_s']:.1f} | "
                         f"{r['examples_per_s']:.1f} | {r['tokens_per_s']:.0f} | "
                         f"{_pct(r['mfu'])} | {_pct(r['mfu_of_matmul'])} | "
                         f"{r['peak_memory_gib']:.2f} | {r['paper_training_gpu_hours']:.1f} |")
    if fp := res.get("fastest_padding"):
        lines += ["", f"Fastest padding mode here: {fp['mode']} ({fp['runs']} run(s) at once, torch.compile "
                  f"{'on' if fp['compile'] else 'off'}): `paper` training {fp['gpu_hours']:.1f} GPU-hours; the "
                  f"profile's own mode ({fp['profile_mode']}) at that setting: "
                  f"{_f(fp['profile_mode_gpu_hours'], '.1f')}."]
    if rc := res.get("resume"):
        lines += ["", f"Kill and resume ({rc['device']}, {rc['steps']} steps): killed mid-run {rc['killed_mid_run']}, "
                  f"resumed {rc['resumed']}, record bit-identical to the uninterrupted run's: {rc['bit_identical']} "
                  f"(largest loss difference {rc['max_loss_difference']})."]
    if s := res.get("study"):
        lines += ["", f"Shrunk `paper` study ({s['model']}): exit {s['exit_code']} in {s['seconds']:.0f} s, "
                  f"{s['counts']}, {s['results_rows']} result rows, report: {'written' if s['report'] else 'MISSING'}.",
                  f"Command: `{s['command']}`"]
    if res["failed"]:
        lines += ["", "Failed sections:"] + [f"- {name}: {why}" for name, why in res["failed"].items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny sizes: checks the script")
    ap.add_argument("--out", default=str(REPO / "outputs" / "gpu_check"), help="folder of the two files")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4], help="runs at once (default 1 2 4)")
    ap.add_argument("--steps", type=int, help="timed steps a run (default 40; smoke 2)")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, metavar="SECTION",
                    help=f"measure only these sections ({', '.join(SECTIONS)})")
    ap.add_argument("--glue-dir", help="the shrunk study on this GLUE folder's RTE and MRPC (default: generated tasks)")
    a = ap.parse_args(argv)
    try:
        return check(a)
    except CheckError as e:
        print(f"gpu_check: error: {e}", file=sys.stderr)
        return 2


def check(a) -> int:
    import datetime as dt

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if any(n < 1 for n in a.concurrency):
        raise CheckError(f"--concurrency: runs at once must be positive, got {a.concurrency}")
    if a.glue_dir and not Path(a.glue_dir).is_dir():
        raise CheckError(f"--glue-dir {a.glue_dir}: folder not found")
    if not a.smoke:
        require_gpu()
    cfg = settings(a.smoke, sorted(set(a.concurrency)))
    if a.steps:
        cfg["steps"] = a.steps
    only = set(a.only or SECTIONS)
    out = Path(a.out)
    log = lambda *x: print(*x, flush=True)  # noqa: E731
    model = "tiny RoBERTa (smoke)" if a.smoke else "DistilRoBERTa-shaped encoder, random weights"
    report = Report(out, {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "smoke": a.smoke,
                          "settings": cfg, "modes": MODES, "model": model}, log)
    report.write()
    run = lambda name, measure, *needs: report.section(name, measure, *needs) if name in only else None  # noqa: E731

    m = run("machine", lambda: machine(cfg["device"]))
    if m:
        log(f"  {m['gpu'] or 'CPU [smoke mode]'}; driver {m['driver']}; torch {m['torch']}; CUDA {m['cuda']}")
    run("paper_plan", paper_plan)
    studies = {}

    def make_batches():
        for mode in MODES:
            studies[mode["name"]] = mode_batches(cfg, mode)
        return {name: describe_batches(st) for name, st in studies.items()}

    needs_batches = ("study_batches",) if only & {"memory", "sync", "throughput", "peaks"} else ()
    if needs_batches or "study_batches" in only:
        report.section("study_batches", make_batches)
    first = studies.get(MODES[0]["name"])
    dtype = None
    if first is not None:
        dtype = compute_dtype(first.train.precision, cfg["device"])
        report.res["precision"] = f"{dtype_name(dtype)} autocast" if dtype else "fp32"
    pk = run("peaks", lambda: peaks(cfg["device"], (m or {}).get("gpu"), dtype), *needs_batches)
    run("memory", lambda: {name: memory(cfg, st) for name, st in studies.items()}, *needs_batches)
    run("sync", lambda: {name: sync(cfg, st) for name, st in studies.items()}, *needs_batches)
    if "throughput" in only:
        rows = []
        for name, compile_, st in ((mode["name"], mode["compile"], studies.get(mode["name"])) for mode in MODES):
            for compiled in compile_:
                part = f"throughput ({name}, torch.compile {'on' if compiled else 'off'})"
                got = report.section(part, lambda: throughput(cfg, st, name, compiled, pk, log), *needs_batches)
                rows += got or []
                report.res.pop(part)
                report.res["throughput"] = rows
                report.res["fastest_padding"] = fastest_padding(rows)
                report.write()
    run("resume", lambda: resume_check(out, a.smoke, cfg["study_timeout"], log))
    run("study", lambda: shrunk_study(out, a.smoke, a.glue_dir, cfg["study_timeout"], log))
    print("\n" + to_markdown(report.res))
    print(f"written: {out / 'gpu_check.json'}, {out / 'gpu_check.md'}")
    return 1 if report.res["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
