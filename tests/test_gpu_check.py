"""`make gpu-check` (benchmarks/gpu_check.py) in its CPU smoke mode: it must write every field it
writes on a GPU, with sane values, section by section (killed half-way, the finished sections are
on disk; a section that fails is recorded and the next runs); without a GPU, the GPU mode is a
one-line error. Its pure parts: the `paper` runs' own batches (benchmarks/gpu_throughput.py), the
dtype and the datasheet peak MFU is taken against. Speed is never asserted."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _run(*args, timeout=900):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=ENV,
                          timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def gpu_check():
    sys.path.insert(0, str(REPO))
    from benchmarks import gpu_check

    return gpu_check


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: the GPU mode would run")
def test_without_a_gpu_the_gpu_mode_is_a_one_line_error(tmp_path):
    res = _run("--out", str(tmp_path / "out"))
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("gpu_check: error: no usable GPU: torch ")
    assert "--smoke" in res.stderr and not (tmp_path / "out").exists()


def test_bad_concurrency_is_a_one_line_error(tmp_path):
    res = _run("--smoke", "--concurrency", "0", "--out", str(tmp_path))
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "--concurrency" in res.stderr


# ---- what is timed: the paper runs' own batches, in the runs' dtype ----------------------------

def test_the_timed_batches_are_those_the_profile_makes(gpu_check, monkeypatch):
    """`paper` sets group_by_length: false: its batches are random, not length-grouped (which pads
    about 2-3x less); the batches come from the runs' own epoch plans, and a mode's `--set` changes
    reach them (the seam a padding mode would use)."""
    from mtlstudy import sampling

    grouped = []
    real = sampling.EpochPlan.batches

    def spy(self, rng, lengths=None):
        grouped.append(lengths is not None)
        return real(self, rng, lengths)
    monkeypatch.setattr(sampling.EpochPlan, "batches", spy)
    cfg = gpu_check.settings(smoke=False, concurrency=[1])
    assert gpu_check.MODES[0]["name"] == "paper" and gpu_check.MODES[0]["set"] == []
    paper = gpu_check.mode_batches(cfg, gpu_check.MODES[0])
    assert grouped and not any(grouped)
    assert paper.train.batch_size == 128 and not paper.train.group_by_length and paper.runs == 600
    assert len(paper.sample) == cfg["warmup"] + cfg["steps"]
    rows = [sum(len(x) for _, x in b) for b in paper.sample]
    assert np.median(rows) == 128 and max(rows) <= 128
    assert {t for b in paper.sample for t, _ in b} <= {"mnli", "qqp", "qnli", "sst2", "cola", "stsb", "mrpc",
                                                       "rte", "wnli"}
    grouped.clear()
    random = ["tasks=[mnli]", "methods=[single]", "train.padding=batch"]  # each batch padded to its longest
    mnli = gpu_check.mode_batches(cfg, {"name": "grouped", "set": [*random, "train.group_by_length=true"]})
    assert grouped and all(grouped) and mnli.train.group_by_length
    ungrouped = gpu_check.mode_batches(cfg, {"name": "random", "set": random})
    assert ungrouped.padding()["padded_over_real"] > 1.5 * mnli.padding()["padded_over_real"]
    # the tokens computed follow the mode's padding: paper's sorted passes against padded batches
    padded = gpu_check.mode_batches(cfg, next(m for m in gpu_check.MODES if m["name"] == "padded"))
    assert paper.train.padding == "sorted_passes" and padded.train.padding == "batch"
    assert paper.padding()["real_tokens"] == padded.padding()["real_tokens"]  # the same batches
    assert paper.padding()["padded_over_real"] < 1.3 < 2.0 < padded.padding()["padded_over_real"]
    # one estimate for both scripts: every batch of the study at the measured time of the sampled ones
    from benchmarks.gpu_throughput import training_estimate

    est = training_estimate(paper, 0.1)
    assert est["train_gpu_hours"] == pytest.approx(paper.total_batches * 0.1 / 3600)
    assert paper.example_passes > 100_000_000 and paper.total_batches > paper.example_passes / 128


@pytest.mark.parametrize("capability, dtype", [((7, 0), torch.float16), ((7, 5), torch.float16),
                                               ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_mfu_is_taken_in_the_dtype_the_runs_compute_in(gpu_check, monkeypatch, capability, dtype):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert gpu_check.compute_dtype("auto", "cuda") == dtype
    assert gpu_check.compute_dtype("auto", "cpu") is None  # fp32 on a CPU
    pk = gpu_check.peaks("cpu", "Tesla T4" if dtype == torch.float16 else "NVIDIA H100 80GB HBM3", dtype)
    assert pk["dtype"] == {torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype] and pk["matmul_tflops"] > 0
    assert pk["datasheet_tflops"] == (65 if dtype == torch.float16 else 989)


def test_datasheet_peaks_match_whole_card_names_longest_first():
    from benchmarks.flops import datasheet_peak

    assert datasheet_peak("NVIDIA L4") == 121e12 and datasheet_peak("NVIDIA L40") == 181e12
    assert datasheet_peak("NVIDIA L40S") == 362e12
    assert datasheet_peak("NVIDIA A10") == 125e12 and datasheet_peak("NVIDIA A10G") is None  # not an A10
    assert datasheet_peak("NVIDIA H100 NVL") == 835e12 and datasheet_peak("NVIDIA H100 PCIe") == 756e12
    assert datasheet_peak("NVIDIA H100 80GB HBM3") == datasheet_peak("NVIDIA H200") == 989e12
    assert datasheet_peak("NVIDIA A100-SXM4-80GB") == 312e12
    assert datasheet_peak("Tesla T4", torch.float16) == 65e12 and datasheet_peak("Tesla T4", torch.bfloat16) is None
    assert datasheet_peak("Tesla V100-SXM2-16GB", "float16") == 125e12
    assert datasheet_peak("Tesla V100-PCIE-16GB", "float16") == 112e12


def test_the_fastest_padding_mode_is_named_beside_the_profiles_own(gpu_check):
    """The mode with the fewest `paper` GPU-hours wins, compared with the profile's own mode at the
    same runs at once and torch.compile setting; the page says it."""
    row = lambda mode, runs, compiled, hours: {"mode": mode, "runs": runs, "compile": compiled,  # noqa: E731
                                                "paper_training_gpu_hours": hours}
    rows = [row("paper", 1, False, 12.0), row("paper", 4, False, 9.0), row("padded", 4, False, 20.0),
            row("sorted_4", 1, False, 11.0), row("sorted_4", 4, False, 8.5), row("paper", 4, True, 9.5)]
    got = gpu_check.fastest_padding(rows)
    assert got == {"mode": "sorted_4", "runs": 4, "compile": False, "gpu_hours": 8.5,
                   "profile_mode": "paper", "profile_mode_gpu_hours": 9.0}
    assert gpu_check.fastest_padding([]) is None
    md = gpu_check.to_markdown({"smoke": False, "date": "d", "failed": {}, "fastest_padding": got})
    assert "Fastest padding mode here: sorted_4 (4 run(s) at once, torch.compile off)" in md
    assert "8.5 GPU-hours" in md and "(paper) at that setting: 9.0" in md


# ---- the sections, as they are measured ---------------------------------------------------------

def test_a_failed_section_is_recorded_and_the_next_still_runs(gpu_check, tmp_path, monkeypatch):
    """An Inductor compile that fails and a command past its time limit: each section's one-line
    reason is recorded, and the sections after it are measured."""
    def no_compiler(*a, **kw):
        raise RuntimeError("InductorError: CppCompileError: C++ compile error\nfull log follows")

    def too_long(*args, timeout):
        raise subprocess.TimeoutExpired(["mtlstudy", *args], timeout)
    monkeypatch.setattr(gpu_check, "peaks", no_compiler)
    monkeypatch.setattr(gpu_check, "_cli", too_long)
    assert gpu_check.main(["--smoke", "--only", "machine", "peaks", "memory", "study", "--out", str(tmp_path)]) == 1
    out = json.loads((tmp_path / "gpu_check.json").read_text())
    assert out["failed"] == {"peaks": "RuntimeError: InductorError: CppCompileError: C++ compile error",
                             "study": out["failed"]["study"]}
    assert out["failed"]["study"].startswith("TimeoutExpired: Command '['mtlstudy', 'run', 'paper'")
    assert out["peaks"] is None and out["study"] is None
    assert out["machine"]["device"] == "cpu" and out["memory"]["paper"]["largest_batch"] == "16 rows x 128 tokens"
    md = (tmp_path / "gpu_check.md").read_text()
    assert "- peaks: RuntimeError: InductorError" in md and "memory (paper)" in md


@pytest.mark.slow
def test_killed_half_way_the_sections_measured_are_on_disk(tmp_path):
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--smoke", "--concurrency", "1", "--out", str(tmp_path)],
                            env=ENV, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    path, seen = tmp_path / "gpu_check.json", {}
    try:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None and "sync" not in seen:
            time.sleep(0.2)
            if path.exists():
                seen = json.loads(path.read_text())  # whole at every moment: written by rename
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    out = json.loads(path.read_text())
    assert {"machine", "paper_plan", "study_batches", "peaks", "memory", "sync"} <= set(out), sorted(out)
    assert "study" not in out and not out["failed"]
    assert out["paper_plan"]["runs"] == 600 and out["study_batches"]["paper"]["total_batches"] > 0
    assert "600 runs" in (tmp_path / "gpu_check.md").read_text()


@pytest.mark.slow
def test_smoke_mode_writes_every_field(tmp_path, gpu_check):
    """Two runs at once at most (the GPU mode's default is 1, 2 and 4): the rows' fields are the same."""
    res = _run("--smoke", "--concurrency", "1", "2", "--out", str(tmp_path))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = json.loads((tmp_path / "gpu_check.json").read_text())
    assert out["failed"] == {}
    m = out["machine"]
    assert m["device"] == "cpu" and m["torch"] == torch.__version__ and m["cpus"] >= 1
    assert {"gpu", "driver", "cuda", "cudnn", "gpu_memory_gib", "compute_capability", "transformers"} <= set(m)
    assert out["precision"] == "fp32" and out["peaks"]["dtype"] == "fp32" and out["peaks"]["matmul_tflops"] > 0
    plan = out["paper_plan"]
    assert plan["runs"] == 600 and plan["example_passes"] > 100_000_000
    batches = out["study_batches"]["paper"]
    assert batches["batch_size"] == 16 and batches["group_by_length"] is False and batches["padded_over_real"] > 1
    assert out["memory"]["paper"]["peak_memory_gib"] is None and out["sync"]["paper"]["syncs_a_step"] is None
    rows = out["throughput"]
    assert [(r["mode"], r["runs"], r["compile"]) for r in rows] == [
        (mode, n, compiled) for mode, compiles in (("paper", (False, True)), ("padded", (False, True)),
                                                   ("sorted_4", (False,)), ("sorted_2", (False,)))
        for compiled in compiles for n in (1, 2)]
    for r in rows:
        assert r["examples_per_s"] > 0 and r["tokens_per_s"] > r["examples_per_s"] and r["step_s"] > 0
        assert len(r["per_run_examples_per_s"]) == r["runs"] and all(x > 0 for x in r["per_run_examples_per_s"])
        assert 0 < r["mfu_of_matmul"] < 1 and r["mfu"] is None  # no datasheet peak for a CPU
        steps = r["runs"] * out["settings"]["steps"]
        assert r["paper_training_gpu_hours"] == pytest.approx(batches["total_batches"] * r["seconds"] / steps / 3600)
    assert out["fastest_padding"] == gpu_check.fastest_padding(rows)
    resume = out["resume"]
    assert resume["killed_mid_run"] and resume["resumed"] and resume["bit_identical"]
    study = out["study"]
    assert study["exit_code"] == 0 and study["counts"]["done"] == 3 and study["counts"]["failed"] == 0
    assert study["results_rows"] >= 3 and Path(study["report"]).is_file()
    assert set(study["mean_scores"]) == {"single gen_nli", "single gen_para", "mtl gen_nli", "mtl gen_para"}
    # the study ran through its notebooks (notebooks on)
    assert list((tmp_path / "study" / "paper" / "runs").glob("*/*.ipynb"))
    md = (tmp_path / "gpu_check.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| paper |")]
    assert len(table) == len([r for r in rows if r["mode"] == "paper"])
    assert f"600 runs, {plan['example_passes']:,} training example-passes" in md
    assert "report: written" in md and "bit-identical to the uninterrupted run's: True" in md
    assert "Fastest padding mode here:" in md
