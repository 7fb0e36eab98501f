"""Exact resume, in-process (the unit tier, issue 39): a run that crashes at a resume checkpoint
and runs again ends with the record, the best weights and the final weights of a run that was never
interrupted: the loop position, the optimizer, the schedule, the sampler's probabilities and the
RNG streams (dropout draws from torch's generator) all come back. Damaged checkpoints fall back to
an older one or to scratch. The killed-process versions (SIGKILL at chosen places, `mtlstudy run`
killed and run again) are in test_reliability.py.

Every run here is the tiny random RoBERTa of conftest (dropout on) on generated data, on the CPU.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mtlstudy import checkpoints
from mtlstudy import train as train_mod
from mtlstudy.folder import RunFolder
from mtlstudy.spec import RunSpec
from tests.profiles import same_training, single_spec


def same_weights(a: Path, b: Path):
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


class Crash(Exception):
    pass


def crashed_run(spec: RunSpec, out: Path, monkeypatch, after_saves: int, **kw) -> list[Path]:
    """Train until the after_saves-th resume checkpoint is written, then crash; returns a copy
    of the resume folder after each save (older checkpoints, for building resume.old)."""
    real_save = train_mod.Resume.save
    copies = []

    def save(self, *a, **k):
        real_save(self, *a, **k)
        copies.append(shutil.copytree(self.folder, out.parent / f"save{len(copies) + 1}"))
        if len(copies) == after_saves:
            raise Crash()

    monkeypatch.setattr(train_mod.Resume, "save", save)
    with pytest.raises(Crash):
        train_mod.train(spec, RunFolder(out), progress=False, log=lambda m: None, **kw)
    monkeypatch.setattr(train_mod.Resume, "save", real_save)
    return copies


def resumed(spec: RunSpec, out: Path, **kw) -> tuple[dict, list[str]]:
    messages = []
    return train_mod.train(spec, RunFolder(out), progress=False, log=messages.append, **kw), messages


@pytest.fixture(scope="module")
def small_reference(tiny_roberta, tmp_path_factory):
    spec = RunSpec.model_validate(single_spec(tiny_roberta, size=96, epochs=3, keep_checkpoint="best"))
    out = tmp_path_factory.mktemp("small_ref")
    return spec, train_mod.train(spec, RunFolder(out), progress=False, log=lambda m: None), out


@pytest.mark.parametrize("after_saves", [1, 3, 4])  # a half epoch, mid-run at 1.5 epochs, at an epoch's end
def test_a_run_resumed_from_its_checkpoint_equals_an_uninterrupted_run(after_saves, tmp_path, monkeypatch,
                                                                       small_reference):
    spec, reference, ref_dir = small_reference
    out = tmp_path / "run"
    copies = crashed_run(spec, out, monkeypatch, after_saves)
    step = torch.load(copies[-1] / "state.pt", weights_only=True)["step"]
    record, messages = resumed(spec, out)
    assert messages[0] == f"resuming from {out / 'resume'} at step {step}", messages
    assert 0 < step < reference["total_steps"]
    same_training(record, reference)
    same_weights(out / "best" / "gen_sent", ref_dir / "best" / "gen_sent")  # the kept best weights
    same_weights(out / "resume", ref_dir / "resume")  # the final weights (the last evaluation's checkpoint)


def test_resume_restores_the_rng_stream(tmp_path, monkeypatch, small_reference):
    """Dropout draws from torch's generator: a resume that did not restore it would train on other
    dropout masks (the check above would fail); shown here by resuming without it."""
    spec, reference, _ = small_reference
    out = tmp_path / "run"
    crashed_run(spec, out, monkeypatch, after_saves=3)
    shutil.copytree(out, tmp_path / "again")
    monkeypatch.setattr(checkpoints, "_set_rng_state", lambda state, device, log: torch.manual_seed(12345))
    record, _ = resumed(spec, tmp_path / "again")
    assert record["history"][:3] == reference["history"][:3] and record["history"][3:] != reference["history"][3:]


def test_a_multitask_run_with_a_dynamic_sampler_resumes_exactly(tmp_path, monkeypatch, tiny_roberta):
    """Pairwise MTL with the 'gap' sampler (its probabilities change at each epoch's end, from the
    reference scores) and random task mixes per batch: crashed in epoch 2, run again."""
    spec = RunSpec.model_validate({
        "method": "mtl", "tasks": ["gen_para", "gen_sent"], "seed": 4, "model": str(tiny_roberta),
        "data": {"generated_sizes": {"gen_para": 96, "gen_sent": 64}, "generated_dev_size": 32},
        "train": {"lr": 1e-3, "batch_size": 8, "epochs": 3, "max_length": 32, "threads": 1, "device": "cpu",
                  "sampler": "gap", "schedule": "heterogeneous_random", "keep_checkpoint": "best"}})
    refs = {"reference_scores": {"gen_para": 80.0, "gen_sent": 90.0}}
    reference = train_mod.train(spec, RunFolder(tmp_path / "ref"), progress=False, log=lambda m: None, **refs)
    probs = [tuple(h["sampler_probs"].values()) for h in reference["history"]]
    assert len(set(probs)) >= 2  # the sampler moved
    out = tmp_path / "run"
    crashed_run(spec, out, monkeypatch, after_saves=3, **refs)  # 1.5 epochs: after the probabilities changed
    record, messages = resumed(spec, out, **refs)
    assert messages[0].startswith(f"resuming from {out / 'resume'} at step "), messages
    same_training(record, reference)
    assert record["epochs"] == reference["epochs"]
    for task in spec.tasks:
        same_weights(out / "best" / task, tmp_path / "ref" / "best" / task)
    same_weights(out / "resume", tmp_path / "ref" / "resume")


def _truncate(path: Path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage", ["truncated weights", "garbage state", "state of another model",
                                    "weights of another model"])
def test_corrupt_checkpoint_restarts_from_scratch_and_says_so(damage, tmp_path, monkeypatch, small_reference):
    spec, reference, _ = small_reference
    out = tmp_path / "run"
    crashed_run(spec, out, monkeypatch, after_saves=3)
    ck = out / "resume"
    if damage == "truncated weights":
        _truncate(ck / "model.safetensors")
    elif damage == "garbage state":
        (ck / "state.pt").write_bytes(b"\x80\x02not a torch file")
    elif damage == "state of another model":  # loads, but the optimizer state does not fit
        other = torch.optim.AdamW(torch.nn.Linear(3, 3).parameters())
        state = torch.load(ck / "state.pt", weights_only=True)
        state["optimizer"] = other.state_dict()
        state["optimizer"]["param_groups"][0]["params"] = [0, 1]
        torch.save(state, ck / "state.pt")
    else:  # the weights load into the model only partly
        from safetensors.torch import load_file, save_file
        w = load_file(str(ck / "model.safetensors"))
        w.pop(sorted(w)[-1])
        save_file(w, str(ck / "model.safetensors"))
    messages = []
    record = train_mod.train(spec, RunFolder(out), progress=False, log=messages.append)
    assert any("corrupt" in m and "from scratch" in m for m in messages), messages
    assert not any(m.startswith("resuming") for m in messages)
    same_training(record, reference)


def test_corrupt_checkpoint_falls_back_to_the_previous_good_one(tmp_path, monkeypatch, small_reference):
    """Killed while a new checkpoint replaced the old: resume/ damaged, resume.old intact."""
    spec, reference, _ = small_reference
    out = tmp_path / "run"
    copies = crashed_run(spec, out, monkeypatch, after_saves=4)
    shutil.copytree(copies[2], out / "resume.old")
    _truncate(out / "resume" / "model.safetensors")
    old_step = torch.load(out / "resume.old" / "state.pt", weights_only=True)["step"]
    messages = []
    record = train_mod.train(spec, RunFolder(out), progress=False, log=messages.append)
    assert any("corrupt" in m for m in messages)
    assert any(m.startswith(f"resuming from {out / 'resume.old'} at step {old_step}") for m in messages), messages
    same_training(record, reference)


def test_resume_checkpoint_restores_the_fp16_loss_scale(tmp_path):
    """fp16 training: the GradScaler's scale and growth tracker are part of the resume state."""
    model = torch.nn.Linear(4, 2)
    model.head_of = {}
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale(torch.ones(()))
    scaler.update(new_scale=8.0)
    state = {"step": 1, "epoch": 0, "batch": 1, "history": [], "best": {}, "probs": {}}
    train_mod.Resume(tmp_path / "resume").save(model, opt, sched, state, scaler)
    fresh = torch.amp.GradScaler("cpu", init_scale=1024.0)
    assert train_mod.Resume(tmp_path / "resume").load(model, opt, sched, lambda m: None, fresh)["step"] == 1
    assert fresh.get_scale() == 8.0 and fresh.state_dict() == scaler.state_dict()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_resume_checkpoint_restores_cuda_rng(tmp_path):
    model = torch.nn.Linear(4, 2).cuda()
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    model.head_of = {}
    r = train_mod.Resume(tmp_path / "resume")
    torch.cuda.manual_seed_all(1)
    r.save(model, opt, sched, {"step": 1, "epoch": 0, "batch": 1, "history": [], "best": {}, "probs": {}})
    expected = torch.rand(3, device="cuda")
    assert r.load(model, opt, sched, log=lambda m: None)["step"] == 1
    assert torch.equal(torch.rand(3, device="cuda"), expected)


