#!/usr/bin/env python
"""`make gpu-check`: one command that measures a GPU for the `paper` study.

    python benchmarks/gpu_check.py            # on a machine with a CUDA GPU (a few minutes)
    python benchmarks/gpu_check.py --smoke    # anywhere, on CPU, tiny sizes: checks the script, not a GPU

It writes outputs/gpu_check/gpu_check.json (everything) and gpu_check.md (a table for BENCHMARKS.md):
  1. the machine: GPU, driver, torch, CUDA, transformers;
  2. training throughput and MFU at the `paper` settings (a DistilRoBERTa-shaped encoder with
     random weights built from its config, no download; batch 128, clip 1.0, bf16 autocast, fused
     AdamW; MNLI-like length-grouped batches) with 1, 2 and 4 runs at once on the one GPU, each
     its own process, without and with torch.compile; and the GPU-hours of the whole `paper`
     study's training that each setting implies (its example-passes, from `mtlstudy plan paper`,
     over the examples/s of all the runs together);
  3. a shrunk `paper` study end to end through the command line and the local executor (two
     generated tasks, or --glue-dir's RTE and MRPC; one seed, one short epoch, notebooks on),
     with its report.
The measuring model and step are benchmarks/gpu_throughput.py's (Bench); the FLOPs formula is
benchmarks/flops.py's. With --smoke everything is shrunk (a 2-layer encoder, batch 8, a few
steps, eager torch.compile) so that the test suite runs it in seconds on CPU.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

PAPER_STUDY_RUNS = 600
SMOKE_SHAPE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
SMOKE_VOCAB = 400


class CheckError(Exception):
    """Bad input or an unusable device: one line, exit 2."""


# ---- settings ---------------------------------------------------------------------------------

def settings(smoke: bool, concurrency: list[int]) -> dict:
    """Sizes of each measurement: the paper's on a GPU, tiny ones in smoke mode."""
    if smoke:
        return dict(device="cpu", batch_size=8, eval_batch_size=8, warmup=1, steps=2, concurrency=concurrency,
                    shape=SMOKE_SHAPE, compile_backend="eager", threads=1)
    return dict(device="cuda", batch_size=128, eval_batch_size=256, warmup=8, steps=30, concurrency=concurrency,
                shape={}, compile_backend="inductor", threads=None)


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


# ---- 2. throughput with 1, 2, 4 runs on one GPU -------------------------------------------------

def _batches(rng, n_batches: int, batch: int) -> list[np.ndarray]:
    """Length-grouped batches of MNLI-like lengths, as a run's epoch makes them."""
    from mtlstudy import sampling

    from benchmarks.gpu_throughput import sample_lengths

    lengths = sample_lengths("mnli", "train", batch * max(50, n_batches), rng)
    order = sampling.single_task_epoch(len(lengths), batch, rng, lengths)
    return [lengths[ix] for ix in order[:n_batches]]


def _worker(rank: int, cfg: dict, compiled: bool, commands, results):
    """One run's process: builds the model once, warms up (and compiles), then times `steps` steps
    each time the parent asks, starting at the wall-clock time it is given."""
    import torch

    from benchmarks.flops import train_flops
    from benchmarks.gpu_throughput import Bench

    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    backend = cfg["compile_backend"] if compiled else None
    bench = Bench(cfg["device"], cfg["batch_size"], cfg["eval_batch_size"], compile_=backend or False,
                  shape=cfg["shape"], log=lambda *a: None)
    rng = np.random.default_rng(rank)
    t = time.perf_counter()
    bench.train_steps(_batches(rng, cfg["warmup"], cfg["batch_size"]))
    results.put(("ready", rank, time.perf_counter() - t))
    while (start_at := commands.get()) is not None:
        batches = _batches(rng, cfg["steps"], cfg["batch_size"])
        if bench.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        time.sleep(max(0.0, start_at - time.time()))
        t0 = time.time()
        bench.train_steps(batches)
        t1 = time.time()
        mem = torch.cuda.max_memory_allocated() if bench.device.type == "cuda" else 0
        results.put(("done", rank, {"t0": t0, "t1": t1, "examples": int(sum(len(b) for b in batches)),
                                    "flops": float(sum(train_flops(b, bench.flops) for b in batches)),
                                    "peak_memory_gib": mem / 2 ** 30}))


def throughput(cfg: dict, compiled: bool, log) -> list[dict]:
    """One row per number of concurrent runs: the examples/s of all runs together and per run."""
    ctx = mp.get_context("spawn")  # CUDA cannot be forked
    n_max = max(cfg["concurrency"])
    results = ctx.Queue()
    queues = [ctx.Queue() for _ in range(n_max)]
    procs = [ctx.Process(target=_worker, args=(r, cfg, compiled, queues[r], results), daemon=True)
             for r in range(n_max)]
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
            rows.append({"runs": n, "compile": compiled, "seconds": wall,
                         "examples_per_s": sum(d["examples"] for d in done) / wall,
                         "per_run_examples_per_s": [d["examples"] / (d["t1"] - d["t0"]) for d in done],
                         "model_flops_per_s": sum(d["flops"] for d in done) / wall,
                         "peak_memory_gib": max(d["peak_memory_gib"] for d in done),
                         "warmup_s": max(r[2] for r in ready)})
            log(f"  {n} run(s) at once{', compiled' if compiled else ''}: {rows[-1]['examples_per_s']:.1f} ex/s "
                f"in all, {rows[-1]['model_flops_per_s'] / 1e12:.3f} TFLOP/s")
        return rows
    finally:
        for q in queues:
            q.put(None)
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()


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


def peaks(cfg: dict, gpu_name: str | None) -> dict:
    """The two peaks MFU is taken against: a bf16 matmul measured here, and the datasheet's."""
    import torch

    from benchmarks.flops import datasheet_peak, matmul_flops_per_s

    dtype = torch.bfloat16 if cfg["device"] == "cuda" else torch.float32  # the dtype the steps compute in
    n = 8192 if cfg["device"] == "cuda" else 512
    peak = datasheet_peak(gpu_name) if gpu_name else None
    return {"matmul_tflops": matmul_flops_per_s(n, device=cfg["device"], dtype=dtype) / 1e12,
            "matmul_dtype": str(dtype).replace("torch.", ""), "matmul_n": n,
            "datasheet_bf16_tflops": peak / 1e12 if peak else None}


def paper_plan() -> dict:
    """Runs and training example-passes of the `paper` study, as `mtlstudy plan paper` prints them."""
    out = _cli("plan", "paper", "--quiet")
    runs = re.search(r"runs: (\d+)", out.stdout)
    passes = re.search(r"training example-passes: (?:at most )?([\d,]+)", out.stdout)
    if out.returncode != 0 or not runs or not passes:
        raise RuntimeError(f"`mtlstudy plan paper` gave no run count or example-passes:\n{out.stdout}{out.stderr}")
    return {"runs": int(runs.group(1)), "example_passes": int(passes.group(1).replace(",", "")),
            "upper_bound": "at most" in out.stdout}


def add_mfu(rows: list[dict], pk: dict, plan: dict):
    for r in rows:
        r["mfu_of_matmul"] = r["model_flops_per_s"] / 1e12 / pk["matmul_tflops"]
        r["mfu"] = r["model_flops_per_s"] / 1e12 / pk["datasheet_bf16_tflops"] if pk["datasheet_bf16_tflops"] else None
        r["paper_training_gpu_hours"] = plan["example_passes"] / r["examples_per_s"] / 3600


# ---- 3. a shrunk `paper` study ------------------------------------------------------------------

def _cli(*args, timeout: float = 1800) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "mtlstudy.cli", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=timeout)


def random_encoder(folder: Path, shape: dict, vocab: int) -> Path:
    """A RoBERTa encoder of `shape` over DistilRoBERTa's, random weights, with a byte-level BPE
    trained here on the generated tasks' texts: a model folder that needs no download."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    from mtlstudy import generated

    from benchmarks.gpu_throughput import DISTILROBERTA

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
    return [x for s in sets for x in ("--set", s)]


def shrunk_study(out: Path, smoke: bool, glue_dir: str | None, log) -> dict:
    model, kind = study_model(out, smoke)
    args = ["run", "paper", *study_overrides(model, out, smoke, glue_dir), "--report"]
    log(f"  mtlstudy {' '.join(args)}")
    t = time.time()
    res = _cli(*args)
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
    return study


# ---- the files ----------------------------------------------------------------------------------

def to_markdown(res: dict) -> str:
    m, pk, plan = res["machine"], res["peaks"], res["paper_plan"]
    what = m["gpu"] or "CPU (smoke mode: these numbers check the script; they are not a GPU figure)"
    lines = [f"## GPU: {what} (`make gpu-check`)", "",
             f"- date: {res['date']}; took {res['seconds']:.0f} s",
             f"- machine: {what}; driver {m['driver']}; torch {m['torch']}; CUDA {m['cuda']}; cuDNN {m['cudnn']}; "
             f"transformers {m['transformers']}; Python {m['python']}; {m['cpus']} CPUs",
             f"- settings: {res['model']}; batch {res['settings']['batch_size']}, clip 1.0, "
             f"{res['precision']}; MNLI-like length-grouped batches; {res['settings']['steps']} timed steps a run",
             f"- peaks: measured {pk['matmul_dtype']} matmul {pk['matmul_tflops']:.1f} TFLOP/s; datasheet bf16 "
             + (f"{pk['datasheet_bf16_tflops']:.0f} TFLOP/s" if pk["datasheet_bf16_tflops"] else "unknown"),
             f"- `paper` study: {plan['runs']} runs, {plan['example_passes']:,} training example-passes "
             f"({'at most, ' if plan['upper_bound'] else ''}`mtlstudy plan paper`); the GPU-hours below are its "
             "training alone on one GPU (no evaluation, checkpoints or start-up)", "",
             "| runs at once | torch.compile | train ex/s, all runs | ex/s per run | MFU (datasheet) | "
             "MFU (measured matmul) | peak memory a run (GiB) | `paper` training, GPU-hours |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in res["throughput"]:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        lines.append(f"| {r['runs']} | {'yes' if r['compile'] else 'no'} | {r['examples_per_s']:.1f} | "
                     f"{np.mean(r['per_run_examples_per_s']):.1f} | {mfu} | {100 * r['mfu_of_matmul']:.1f}% | "
                     f"{r['peak_memory_gib']:.2f} | {r['paper_training_gpu_hours']:.1f} |")
    s = res["study"]
    lines += ["", f"Shrunk `paper` study ({s['model']}): exit {s['exit_code']} in {s['seconds']:.0f} s, "
              f"{s['counts']}, {s['results_rows']} result rows, report: {'written' if s['report'] else 'MISSING'}.",
              f"Command: `{s['command']}`"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny sizes: checks the script in seconds")
    ap.add_argument("--out", default=str(REPO / "outputs" / "gpu_check"), help="folder of the two files")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4], help="runs at once (default 1 2 4)")
    ap.add_argument("--steps", type=int, help="timed steps a run (default 30; smoke 2)")
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
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    log = lambda *x: print(*x, flush=True)  # noqa: E731
    m = machine(cfg["device"])
    log(f"GPU: {m['gpu']}; driver {m['driver']}; torch {m['torch']}; CUDA {m['cuda']}; cuDNN {m['cudnn']}; "
        f"transformers {m['transformers']}" + ("  [smoke mode, CPU]" if a.smoke else ""))
    plan = paper_plan()
    log(f"paper study: {plan['runs']} runs, {plan['example_passes']:,} training example-passes")
    rows = []
    for compiled in (False, True):
        log(f"throughput, torch.compile {'on' if compiled else 'off'}:")
        rows += throughput(cfg, compiled, log)
    pk = peaks(cfg, m["gpu"])
    add_mfu(rows, pk, plan)
    log("shrunk paper study:")
    study = shrunk_study(out, a.smoke, a.glue_dir, log)
    res = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "smoke": a.smoke,
           "machine": m, "settings": {k: v for k, v in cfg.items()},
           "model": "tiny RoBERTa (smoke)" if a.smoke else "DistilRoBERTa-shaped encoder, random weights",
           "precision": "fp32 (CPU)" if a.smoke else "bf16 autocast", "max_grad_norm": 1.0,
           "peaks": pk, "paper_plan": plan, "throughput": rows, "study": study, "seconds": time.time() - t0}
    text = to_markdown(res)
    (out / "gpu_check.json").write_text(json.dumps(res, indent=1))
    (out / "gpu_check.md").write_text(text)
    print("\n" + text)
    print(f"written: {out / 'gpu_check.json'}, {out / 'gpu_check.md'}")
    return 0 if study["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
