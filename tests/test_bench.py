"""The CPU benchmarks (benchmarks/cpu_bench.py, `make bench`) in smoke mode: a few examples, one
repeat; each must write its markdown table. Speed is never asserted here. Also the FLOPs formula
(benchmarks/flops.py) and the GPU script's pure parts (benchmarks/gpu_throughput.py)."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from benchmarks import cpu_bench as bench
from benchmarks import flops
from mtlstudy.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def test_bench_writes_the_table(glue_dir, minilm_path, tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\nnotes above stay\n\n<!-- bench:begin -->\nold\n<!-- bench:end -->\n\nnotes below stay\n")
    args = argparse.Namespace(tasks=["rte", "sst2"], glue_dir=str(glue_dir), examples=16, batch_size=8, repeats=1,
                              out=str(out))
    assert bench.main(args) == 0
    text = out.read_text()
    assert "notes above stay" in text and "notes below stay" in text and "\nold\n" not in text
    assert text.count(bench.BEGIN) == 1 and text.count(bench.END) == 1
    rows = [line for line in text.splitlines() if line.startswith("| rte |") or line.startswith("| sst2 |")]
    assert len(rows) == 6
    for task in ("rte", "sst2"):
        for label in bench.CONTENDERS.values():
            assert any(r.startswith(f"| {task} | {label} |") for r in rows), (task, label)
    assert "GFLOP/s" in text and "real-token MFU" in text and "python -m benchmarks.cpu_bench --tasks rte sst2" in text
    for task in ("rte", "sst2"):
        assert f"- {task}: training >= 2.0x hf_default" in text and f"- {task}: real-token MFU >= 40%" in text


def test_flops_formula():
    fm = {"layer_params": 100, "head_params": 10, "layers": 2, "hidden": 4}
    # 6 x 100 x (3 + 5) + 12 x 2 x 4 x (9 + 25) + 6 x 10 x 2
    assert flops.train_flops(np.array([3, 5]), fm) == 6 * 100 * 8 + 12 * 2 * 4 * 34 + 6 * 10 * 2


def test_datasheet_peaks_by_card_name():
    assert flops.datasheet_peak("NVIDIA H100 PCIe") == 756e12
    assert flops.datasheet_peak("NVIDIA H100 80GB HBM3") == flops.datasheet_peak("NVIDIA H200") == 989e12
    assert flops.datasheet_peak("NVIDIA A100-SXM4-80GB") == 312e12
    assert flops.datasheet_peak("Tesla T4") is None


def _gpu_script():
    from benchmarks import gpu_throughput

    return gpu_throughput


def test_gpu_script_time_model_and_lengths():
    g = _gpu_script()
    tm = g.TimeModel([16, 64], [1.0, 3.0], rows=8)
    assert tm(40) == pytest.approx(2.0)
    assert tm(80) == pytest.approx(3.0 + 16 * 2 / 48)      # linear beyond the last width
    assert tm(64, rows=4) == pytest.approx(1.5)
    rng = np.random.default_rng(0)
    for task in g.DEV_SIZES:
        for split in ("train", "dev"):
            q = g.LENGTH_QUANTILES[task][split]
            assert len(q) == 21 and q == sorted(q) and q[-1] <= 128
        lengths = g.sample_lengths(task, "train", 2000, rng)
        assert lengths.min() >= 3 and lengths.max() <= 128


@pytest.mark.slow
def test_gpu_script_cpu_smoke(tmp_path):
    """The documented smoke mode runs end to end on CPU (a small DistilRoBERTa-shaped step or two)."""
    g = _gpu_script()
    out = tmp_path / "gpu.json"
    assert g.main(["--device", "cpu", "--steps", "1", "--warmup", "0", "--batch-size", "2",
                   "--eval-batch-size", "2", "--widths", "8", "16", "--profile", "demo", "--json", str(out)]) == 0
    import json

    res = json.loads(out.read_text())
    assert res["study"]["example_passes"] == res["study"]["plan_example_passes"]
    assert res["study"]["gpu_hours"] > 0
    assert res["max_grad_norm"] == 1.0  # the paper's clipping
    assert 0 < res["mfu"]["mfu_of_matmul"] < 1 and res["mfu"]["mfu"] is None  # no datasheet peak on CPU


def bench_into_section(tmp_path, marker: str, *args) -> str:
    """Run `python -m benchmarks.cpu_bench *args` (one repeat) into a BENCHMARKS.md that holds an old
    `marker` section; check that it replaced that section and kept the rest; return the file."""
    out = tmp_path / "BENCHMARKS.md"
    out.write_text(f"# Benchmarks\n\nkept\n\n<!-- {marker}:begin -->\nold\n<!-- {marker}:end -->\n")
    assert bench._cli([*args, "--repeats", "1", "--out", str(out)]) == 0
    text = out.read_text()
    assert "kept" in text and "old" not in text
    return text


def test_multitask_bench_writes_its_section(glue_dir, minilm_path, tmp_path):
    """`--multitask` measures both encoder-pass modes at batches 8 and 16 and rewrites only its section."""
    text = bench_into_section(tmp_path, "multitask", "--multitask", "--tasks", "cola", "mrpc",
                              "--glue-dir", str(glue_dir), "--examples", "16")
    rows = [line for line in text.splitlines() if line.startswith("| 8 |") or line.startswith("| 16 |")]
    assert [r.split("|")[2].strip() for r in rows] == ["merged", "per_task", "merged", "per_task"]
    assert all(float(r.split("|")[3]) > 0 for r in rows)


def test_eval_bench_writes_its_section(glue_dir, minilm_path, tmp_path):
    """`--eval` measures the dev evaluation in fp32 and bf16 at batches 16/32/64 and rewrites only its section."""
    text = bench_into_section(tmp_path, "eval", "--eval", "--tasks", "cola", "mrpc", "--glue-dir", str(glue_dir),
                              "--dev-examples", "24")
    assert "`python -m benchmarks.cpu_bench --eval" in text
    assert "cola (24) + mrpc (24): 48 examples a pass" in text
    rows = [line for line in text.splitlines() if line.startswith("| 16 |") or line.startswith("| 64 |")]
    assert [(r.split("|")[1].strip(), r.split("|")[2].strip()) for r in rows] == [
        ("16", "fp32"), ("64", "fp32"), ("16", "bf16"), ("64", "bf16")]
    assert all(float(r.split("|")[3]) > 0 for r in rows)
    assert rows[0].rstrip().endswith("| 1.00x |")  # fp32 at 16 is the reference


def test_multitask_bench_needs_two_tasks(glue_dir):
    with pytest.raises(UserError, match="at least two tasks"):
        bench.multitask(["cola"], glue_dir)


def test_ablate_writes_its_section(glue_dir, minilm_path, tmp_path):
    """`--ablate` measures every change, interleaved, and rewrites only its section."""
    text = bench_into_section(tmp_path, "ablate", "--ablate", "--tasks", "rte", "--glue-dir", str(glue_dir),
                              "--examples", "8")
    assert "`python -m benchmarks.cpu_bench --ablate`" in text
    rows = [line for line in text.splitlines() if line.startswith("| train:") or line.startswith("| eval:")]
    assert len(rows) >= 10 and all(float(r.split("|")[2]) > 0 for r in rows)


def test_padding_bench_counts_and_times_the_paper_batches_on_real_rows(glue_dir, monkeypatch):
    """benchmarks/padding_bench.py on MNLI's real rows (an encoder shrunk so a step takes
    milliseconds): the padded batch's tokens per real token are 128 rows x each batch's longest row
    over its real tokens, counted here by hand; the sorted passes compute fewer, more passes fewer
    still; every timed mode ran on each batch; the table has the task's row."""
    from benchmarks import padding_bench as pb

    monkeypatch.setattr(pb, "DISTILROBERTA", {**pb.DISTILROBERTA, "hidden_size": 16, "num_hidden_layers": 1,
                                              "num_attention_heads": 2, "intermediate_size": 32})
    rows = pb.run(["mnli"], glue_dir, steps=2, batches=5, log=lambda line: None)
    [r] = rows
    lengths = pb.task_rows("mnli", glue_dir, pb.load_tokenizer(pb.OFFLINE_MINILM)).lengths()
    batches = [ix for plan in pb.paper_batches(len(lengths), 5) for _, ix in plan]
    assert all(len(ix) == pb.BATCH for ix in batches)
    by_hand = sum(pb.BATCH * int(lengths[ix].max()) for ix in batches) / sum(int(lengths[ix].sum()) for ix in batches)
    assert r["batches"] == 5 and r["ratio"]["batch"] == pytest.approx(by_hand)
    assert r["ratio"]["batch"] > r["ratio"]["sorted_passes (4)"] > r["ratio"]["sorted_passes (8)"] > 1.0
    assert r["ratio"]["sorted_passes (8)"] < 1.25  # issue 35's bar for MNLI-like batches
    assert all(len(r["seconds"][m]) == 2 and min(r["seconds"][m]) > 0 for m in pb.TIMED)
    assert "| mnli |" in pb.to_markdown(rows)
