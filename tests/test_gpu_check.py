"""`make gpu-check` (benchmarks/gpu_check.py) in its CPU smoke mode: it must write every field it
writes on a GPU, with sane values; and without a GPU, the GPU mode is a one-line error. Speed is
never asserted."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def _run(*args, timeout=900):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: the GPU mode would run")
def test_without_a_gpu_the_gpu_mode_is_a_one_line_error(tmp_path):
    res = _run("--out", str(tmp_path / "out"))
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("gpu_check: error: no usable GPU: torch ")
    assert "--smoke" in res.stderr and not (tmp_path / "out").exists()


def test_bad_concurrency_is_a_one_line_error(tmp_path):
    res = _run("--smoke", "--concurrency", "0", "--out", str(tmp_path))
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "--concurrency" in res.stderr


@pytest.mark.slow
def test_smoke_mode_writes_every_field(tmp_path):
    """Two runs at once at most (the GPU mode's default is 1, 2 and 4): the rows' fields are the same."""
    res = _run("--smoke", "--concurrency", "1", "2", "--out", str(tmp_path))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = json.loads((tmp_path / "gpu_check.json").read_text())
    m = out["machine"]
    assert m["device"] == "cpu" and m["torch"] == torch.__version__ and m["cpus"] >= 1
    assert {"gpu", "driver", "cuda", "cudnn", "gpu_memory_gib", "compute_capability", "transformers"} <= set(m)
    assert out["max_grad_norm"] == 1.0 and out["settings"]["batch_size"] == 8
    plan = out["paper_plan"]
    assert plan["runs"] == 600 and plan["example_passes"] > 100_000_000
    rows = out["throughput"]
    assert [(r["runs"], r["compile"]) for r in rows] == [(1, False), (2, False), (1, True), (2, True)]
    for r in rows:
        assert r["examples_per_s"] > 0 and len(r["per_run_examples_per_s"]) == r["runs"]
        assert all(x > 0 for x in r["per_run_examples_per_s"])
        assert 0 < r["mfu_of_matmul"] < 1 and r["mfu"] is None  # no datasheet peak for a CPU
        assert r["paper_training_gpu_hours"] == pytest.approx(plan["example_passes"] / r["examples_per_s"] / 3600)
    assert out["peaks"]["matmul_tflops"] > 0
    study = out["study"]
    assert study["exit_code"] == 0 and study["counts"]["done"] == 3 and study["counts"]["failed"] == 0
    assert study["results_rows"] >= 3 and Path(study["report"]).is_file()
    assert set(study["mean_scores"]) == {"single gen_nli", "single gen_para", "mtl gen_nli", "mtl gen_para"}
    # the study ran through its notebooks (notebooks on)
    assert list((tmp_path / "study" / "paper" / "runs").glob("*/*.ipynb"))
    md = (tmp_path / "gpu_check.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(table) == len(rows)
    assert f"600 runs, {plan['example_passes']:,} training example-passes" in md
    assert "report: written" in md
