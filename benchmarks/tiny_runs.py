"""Many tiny runs: what a run costs when its training is almost nothing.

The demo profile with one seed, 16 training and 16 dev examples per task, one epoch, one worker:
13 runs (3 single-task, 6 STILTs, 3 pairwise MTL, 1 MTL-All) of two optimizer steps each, through
`mtlstudy run` as a user starts it. Prints the seconds per run and where they went, from timers
put around the training's own steps in every process that trains (a `sitecustomize` on the
workers' path; nothing in mtlstudy changes): reading the data, loading the tokenizer, tokenising,
loading the model, evaluation, training (the rest of `train`), and what is left of the launcher's
wall time: process start, imports and the executor's bookkeeping.

    python benchmarks/tiny_runs.py [--repeats 1] [--json out.json]

Run it with PYTHONPATH pointing at the checkout to measure (the timers patch whatever `mtlstudy`
that path imports).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

OVERRIDES = ["seeds=[1]", "workers=1", "train.epochs=1", "notebooks=false",
             "data.generated_sizes={gen_nli: 16, gen_para: 16, gen_sent: 16}", "data.generated_dev_size=16"]

# Put timers around train.py's steps once mtlstudy.train is imported, in every process that
# imports it; each call of train() appends one line of phase seconds to $TINY_RUNS_PHASES.
SITECUSTOMIZE = textwrap.dedent('''
    import importlib.abc, importlib.util, json, os, sys, time

    PHASES = {"load_task_examples": "data read", "load_tokenizer": "tokenizer load",
              "prepare_data": "tokenisation", "load_model": "model load", "evaluate": "evaluation"}

    def instrument(mod):
        spent, cpu = {}, {}
        def timed(name, fn):
            def wrapper(*a, **kw):
                t, c = time.perf_counter(), time.process_time()
                try:
                    return fn(*a, **kw)
                finally:
                    spent[name] = spent.get(name, 0.0) + time.perf_counter() - t
                    cpu[name] = cpu.get(name, 0.0) + time.process_time() - c
            return wrapper
        for fn_name, phase in PHASES.items():
            setattr(mod, fn_name, timed(phase, getattr(mod, fn_name)))
        real_train = mod.train
        def train(*a, **kw):
            spent.clear()
            cpu.clear()
            t, c = time.perf_counter(), time.process_time()
            try:
                return real_train(*a, **kw)
            finally:
                cpu["total"] = time.process_time() - c
                row = dict(spent, total=time.perf_counter() - t, pid=os.getpid(), cpu=dict(cpu))
                with open(os.environ["TINY_RUNS_PHASES"], "a") as f:
                    f.write(json.dumps(row) + "\\n")
        mod.train = train

    class Hook(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "mtlstudy.train":
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            sys.meta_path.insert(0, self)
            real_exec = spec.loader.exec_module
            def exec_module(module):
                real_exec(module)
                instrument(module)
            spec.loader.exec_module = exec_module
            return spec

    if os.environ.get("TINY_RUNS_PHASES"):
        sys.meta_path.insert(0, Hook())
''')


def measure(work: Path) -> dict:
    """One tiny study from scratch through `mtlstudy run`: its wall time and the phases of each run."""
    hook = work / "hook"
    hook.mkdir(parents=True)
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    phases = work / "phases.jsonl"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TINY_RUNS_PHASES=str(phases),
               PYTHONPATH=os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "mtlstudy.cli", "run", "demo", "--set", f"output_dir={work / 'out'}"]
    for o in OVERRIDES:
        cmd += ["--set", o]
    t0, c0 = time.perf_counter(), _children_cpu()
    # cwd: not the checkout (`python -m` puts the working directory first on sys.path; PYTHONPATH decides)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=work)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
    if done.returncode != 0:
        raise SystemExit(f"the tiny study failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    rows = [json.loads(line) for line in phases.read_text().splitlines()]
    records = [json.loads(p.read_text()) for p in (work / "out").glob("*/runs/*/result.json")]
    return {"wall": wall, "cpu": cpu, "runs": len(records), "phases": rows,
            "processes": len({r["pid"] for r in rows}), "steps": sum(r["total_steps"] for r in records)}


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children and theirs."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def summary(m: dict, clock: str = "wall") -> dict:
    """Seconds per run on one clock ("wall", or "cpu": CPU seconds of every process, less
    sensitive to other work on the machine): the total, and each phase (what is not spent in train
    is process start, imports and the executor's bookkeeping)."""
    n = m["runs"]
    rows = m["phases"] if clock == "wall" else [r["cpu"] for r in m["phases"]]
    per_run = {"total": m[clock] / n}
    names = ["data read", "tokenizer load", "tokenisation", "model load", "evaluation"]
    in_train = sum(r["total"] for r in rows) / n
    for name in names:
        per_run[name] = sum(r.get(name, 0.0) for r in rows) / n
    per_run["training"] = in_train - sum(per_run[k] for k in names)
    per_run["process start, imports, executor"] = per_run["total"] - in_train
    return per_run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--json", help="also write the measurements here")
    a = p.parse_args(argv)
    measured = []
    for _ in range(a.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            measured.append(measure(Path(tmp)))
    best = min(measured, key=lambda m: m["wall"])
    rows = {clock: summary(best, clock) for clock in ("wall", "cpu")}
    walls = ", ".join(f"{m['wall']:.1f}" for m in measured)
    print(f"{best['runs']} tiny runs ({best['steps']} optimizer steps in all), {best['processes']} training "
          f"process(es), study wall {best['wall']:.1f} s (best of {a.repeats}: {walls})")
    print(f"  {'seconds per run':<36} {'wall':>6} {'CPU':>6}")
    for name, sec in rows["wall"].items():
        print(f"  {name:<36} {sec:6.2f} {rows['cpu'][name]:6.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps({"measured": measured, "per_run": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
