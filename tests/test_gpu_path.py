"""The GPU path, checked on the CPU: device and precision rules with torch.cuda mocked; resume
across devices; the CUDA RNG of the run's own GPU; resume checkpoints at most every N seconds
with best-weights selection unchanged; an encoder stored in bf16 trained in fp32; no host-device
sync inside a step; padding to a multiple of 8 on CUDA only; the GPU named in the record; the
fp16 loss scaler and fused AdamW for real on CPU; a bounded number of compiled graphs."""
from __future__ import annotations

import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mtlstudy import batches, checkpoints, precision, train
from mtlstudy import model as model_mod
from mtlstudy.data import DataSource
from mtlstudy.errors import TrainingError
from mtlstudy.folder import RunFolder
from mtlstudy.spec import RunSpec, TrainSettings
from mtlstudy.tasks import get_task
from tests.profiles import OLD_DEFAULTS

SIZES = {"gen_nli": 96, "gen_para": 64, "gen_sent": 64, "gen_sim": 48}


def make_spec(model, tasks=("gen_sent",), **train_kw) -> RunSpec:
    settings = dict(lr=1e-3, batch_size=16, epochs=2, max_length=32, evals_per_epoch=2, device="cpu", sampler="uniform",
                    **OLD_DEFAULTS)
    settings.update(train_kw)
    method = "single" if len(tasks) == 1 else "mtl"
    return RunSpec(method=method, tasks=list(tasks), seed=1, model=str(model),
                   data=DataSource(generated_sizes=SIZES, generated_dev_size=48), train=TrainSettings(**settings))


def run(spec, folder, **kw):
    return train.train(spec, RunFolder(folder), progress=False, log=lambda *a: None, **kw)


def step_context(model_path, tasks=("gen_nli", "gen_sim"), amp=None, scaler=None, **train_kw):
    spec = make_spec(model_path, tasks, **train_kw)
    tok = model_mod.load_tokenizer(spec.model)
    data = batches.prepare_data(spec, tok)
    model = model_mod.load_model(spec.model, [data[t].task for t in data])
    opt = train.make_optimizer(model, spec.train, torch.device("cpu"))
    return train.RunContext(model, data, spec.train, torch.device("cpu"), tok.pad_token_id, opt, amp, amp, scaler)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


# ---- device and precision -----------------------------------------------------------------------

@pytest.mark.parametrize("asked", ["cuda", "cuda:0"])
def test_a_gpu_asked_for_and_not_usable_is_an_error_naming_what_torch_sees(asked, no_gpu, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(TrainingError) as e:
        precision.pick_device(asked)
    msg = str(e.value)
    assert "\n" not in msg and f"train.device '{asked}'" in msg
    assert "CUDA 12.8" in msg and "sees 0 usable GPUs" in msg and "CUDA_VISIBLE_DEVICES='0,1'" in msg


def test_a_gpu_index_beyond_those_torch_sees_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(TrainingError, match=r"train.device 'cuda:2': no such GPU, .* sees 2 usable GPUs"):
        precision.pick_device("cuda:2")
    assert precision.pick_device("cuda:1") == torch.device("cuda:1")


def test_auto_on_a_cuda_build_that_sees_no_gpu_warns_and_uses_the_cpu(no_gpu, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    with pytest.warns(UserWarning, match="sees 0 usable GPUs: this run trains on the CPU"):
        assert precision.pick_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.version, "cuda", None)  # a CPU-only torch: the CPU is what was meant
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert precision.pick_device("auto") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without a GPU")
def test_mtlstudy_train_on_a_missing_gpu_exits_2_with_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mtlstudy.cli", "train", "--tasks", "gen_sent", "--out", str(tmp_path / "r"),
                        "--set", "train.device=cuda", "--set", "data.generated_sizes={gen_sent: 32}"],
                       capture_output=True, text=True, timeout=300)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2, r.stderr[-2000:]
    assert len(lines) == 1 and "train.device 'cuda'" in lines[0] and "usable GPU" in lines[0]
    assert not (tmp_path / "r" / "result.json").exists()


@pytest.mark.parametrize("capability, asked, expected", [
    ((7, 0), "auto", torch.float16), ((7, 5), "bf16", torch.float16), ((7, 0), "fp16", torch.float16),
    ((8, 0), "auto", torch.bfloat16), ((9, 0), "bf16", torch.bfloat16), ((9, 0), "fp16", torch.float16)])
def test_bf16_only_where_the_gpu_computes_it(capability, asked, expected, monkeypatch):
    """V100 (7.0) and T4 (7.5) emulate bf16, though torch.cuda.is_bf16_supported() says yes: fp16."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert precision.autocast_dtype(asked, torch.device("cuda")) == expected
    assert bool(caught) == (asked == "bf16" and capability < (8, 0))


def test_fp16_loss_scaler_lives_on_the_runs_device():
    scaler = precision.make_scaler(torch.float16, torch.device("cpu"))
    assert scaler is not None and scaler.is_enabled() and scaler._device == "cpu"
    assert precision.make_scaler(torch.bfloat16, torch.device("cpu")) is None


def test_tf32_through_fp32_precision_on_cuda_only():
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = matmul.fp32_precision, conv.fp32_precision
    try:
        matmul.fp32_precision = conv.fp32_precision = "ieee"
        precision.allow_tf32(torch.device("cpu"))
        assert (matmul.fp32_precision, conv.fp32_precision) == ("ieee", "ieee")
        precision.allow_tf32(torch.device("cuda"))
        assert (matmul.fp32_precision, conv.fp32_precision) == ("tf32", "tf32")
    finally:
        matmul.fp32_precision, conv.fp32_precision = before


def test_regression_head_output_is_fp32_under_bf16_autocast():
    """STS-B predictions rounded to bf16 would move in steps of about 0.02; classification logits
    may stay bf16 (their argmax is what counts)."""
    torch.manual_seed(0)
    x = torch.randn(4, 32)
    regression, classification = model_mod.Head(32, 1, 0.0, dense=True), model_mod.Head(32, 3, 0.0, dense=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert regression(x).dtype == torch.float32
        assert classification(x).dtype == torch.bfloat16


def test_encoder_stored_in_bf16_loads_as_fp32(tiny_roberta, tmp_path):
    from transformers import AutoModel

    folder = tmp_path / "bf16_roberta"
    shutil.copytree(tiny_roberta, folder)
    AutoModel.from_pretrained(tiny_roberta).to(torch.bfloat16).save_pretrained(folder)
    assert {v.dtype for v in load_file(str(folder / "model.safetensors")).values()} == {torch.bfloat16}
    model = model_mod.load_model(str(folder), [get_task("gen_sim")])
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_the_record_names_the_gpu(tiny_roberta, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    assert precision.gpu_name(torch.device("cuda:0")) == "NVIDIA H200"
    assert precision.gpu_name(torch.device("cpu")) is None
    spec = make_spec(tiny_roberta, epochs=1)
    assert "gpu" not in run(spec, tmp_path / "cpu")  # a CPU record is as it was
    monkeypatch.setattr(train, "gpu_name", lambda device: "NVIDIA H200")
    assert run(spec, tmp_path / "named")["gpu"] == "NVIDIA H200"


# ---- the step -----------------------------------------------------------------------------------

SYNCS = ("item", "__float__", "__int__", "tolist", "numpy", "cpu", "__bool__")


def test_no_host_device_sync_inside_a_training_step(tiny_roberta_nodropout, monkeypatch):
    """A step reads no tensor back (no .item(), float(), .tolist(), .cpu(), bool()): on a GPU each
    would wait for the queued kernels. The loss is summed on the device and read at evaluation.
    Counted: every such call but those inside transformers (its attention-mask check, one per
    encoder pass, is the library's: docs/gpu.md)."""
    import inspect

    ctx = step_context(tiny_roberta_nodropout, micro_batch_size=3, max_grad_norm=1.0)
    plans = [[("gen_nli", np.array([0, 5, 9, 11])), ("gen_sim", np.array([3, 4, 17]))],
             [("gen_nli", np.array([1, 2])), ("gen_sim", np.array([6, 7, 8]))]]
    calls = []

    def counted(name, real):
        def call(self, *a, **k):
            caller = inspect.currentframe().f_back.f_code.co_filename
            if "/transformers/" not in caller:
                calls.append(f"{name} from {caller}")
            return real(self, *a, **k)
        return call

    for name in SYNCS:
        monkeypatch.setattr(torch.Tensor, name, counted(name, getattr(torch.Tensor, name)))
    loss = train.RunningLoss(ctx.device)
    for step, plan in enumerate(plans, 1):
        loss.add(train.train_step(ctx, plan), step)
    assert calls == []
    monkeypatch.undo()
    assert np.isfinite(loss.mean()) and loss.first_non_finite() is None


def test_running_loss_is_the_python_float_sum_and_finds_the_first_non_finite():
    values = [0.1, 0.7, 1e-8, 3.3]
    loss = train.RunningLoss(torch.device("cpu"))
    for i, v in enumerate(values, 1):
        loss.add(torch.tensor(v, dtype=torch.float32), i)
    expected = 0.0
    for v in values:
        expected += float(torch.tensor(v, dtype=torch.float32))
    assert loss.mean() == expected / 4  # exactly the sum the loop used to take in Python floats
    loss.add(float("inf"), 5)
    loss.add(float("nan"), 6)
    assert loss.first_non_finite() == (5, float("inf"))
    loss.reset()
    assert loss.first_non_finite() is None and loss.mean() == 0.0


def test_padding_to_a_multiple_of_8_on_cuda_only_and_it_changes_no_loss(tiny_roberta_nodropout, monkeypatch):
    assert batches.pad_multiple(torch.device("cuda")) == 8 and batches.pad_multiple(torch.device("cpu")) == 1
    ctx = step_context(tiny_roberta_nodropout)
    chunk = [("gen_nli", 0), ("gen_nli", 5), ("gen_sim", 3)]
    width = batches.chunk_batch(ctx.tasks, chunk, ctx.pad_id)[0]["input_ids"].shape[1]
    padded = batches.chunk_batch(ctx.tasks, chunk, ctx.pad_id, 8)[0]["input_ids"].shape[1]
    assert width % 8 != 0 and padded % 8 == 0 and padded - width < 8  # the test can tell
    plan = [("gen_nli", np.array([0, 5])), ("gen_sim", np.array([3]))]
    ctx.optimizer = torch.optim.SGD(ctx.model.parameters(), lr=0.0)
    plain = float(train.train_step(ctx, plan))
    monkeypatch.setattr(train, "pad_multiple", lambda device: 8)
    assert ctx.pad_multiple == 8
    assert float(train.train_step(ctx, plan)) == pytest.approx(plain, rel=1e-5)


def test_fp16_grad_scaler_and_fused_adamw_train_for_real_on_cpu(tiny_roberta_nodropout):
    scaler = precision.make_scaler(torch.float16, torch.device("cpu"))
    ctx = step_context(tiny_roberta_nodropout, amp=torch.float16, scaler=scaler, max_grad_norm=1.0)
    assert ctx.optimizer.defaults["fused"] is True
    before = {k: v.clone() for k, v in ctx.model.state_dict().items()}
    plan = [("gen_nli", np.array([0, 5, 9, 11])), ("gen_sim", np.array([3, 4, 17]))]
    losses = [float(train.train_step(ctx, plan)) for _ in range(3)]
    assert all(np.isfinite(losses)) and scaler.is_enabled() and scaler.get_scale() > 0
    after = ctx.model.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values())
    assert sum(not torch.equal(before[k], after[k]) for k in before) > 10  # the steps really updated weights


def test_compiled_encoder_keeps_one_graph_over_varied_batch_shapes(tiny_roberta_nodropout):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    ctx = step_context(tiny_roberta_nodropout, tasks=("gen_nli",))
    train.compile_encoder(ctx.model, backend="eager")
    sizes = [(3, 0), (5, 7), (2, 20), (7, 31), (4, 40), (6, 50)]  # rows, first row: widths differ too
    graphs = []
    for rows, start in sizes:
        train.train_step(ctx, [("gen_nli", np.arange(start, start + rows))])
        graphs.append(counters["stats"]["unique_graphs"])
    torch._dynamo.reset()
    assert graphs[0] >= 1 and graphs[-1] == graphs[0], graphs


# ---- resume checkpoints -------------------------------------------------------------------------

def _tiny(tmp_path):
    model = torch.nn.Linear(4, 2)
    model.head_of = {}
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    model(torch.ones(1, 4)).sum().backward()
    opt.step()
    return model, opt, sched


STATE = {"step": 1, "epoch": 0, "batch": 1, "history": [], "best": {}, "probs": {}}


def test_a_state_saved_with_tensors_on_a_gpu_resumes_on_the_cpu(tmp_path, monkeypatch):
    """Every tensor of state.pt tagged cuda:0, as a run on a GPU writes it: it loads here."""
    model, opt, sched = _tiny(tmp_path)
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        checkpoints.Resume(tmp_path / "resume", torch.device("cpu")).save(model, opt, sched, STATE)
    with pytest.raises(RuntimeError, match="CUDA"):  # what a load without map_location does
        torch.load(tmp_path / "resume" / "state.pt", weights_only=True)
    messages = []
    state = checkpoints.Resume(tmp_path / "resume", torch.device("cpu")).load(model, opt, sched, messages.append)
    assert state is not None and state["step"] == 1, messages
    assert all(v.device.type == "cpu" for s in opt.state.values() for v in s.values() if torch.is_tensor(v))


class FakeCudaRng:
    def __init__(self, monkeypatch):
        self.set_calls = []
        monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": torch.tensor([7, int(device.index)],
                                                                                              dtype=torch.uint8))
        monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": self.set_calls.append(
            (state.tolist(), device)))

        def every_gpu(*a, **k):
            raise AssertionError("touched every GPU's generator")

        monkeypatch.setattr(torch.cuda, "get_rng_state_all", every_gpu)
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", every_gpu)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)


def test_cuda_rng_of_the_runs_own_gpu_is_saved_and_restored(tmp_path, monkeypatch):
    rng = FakeCudaRng(monkeypatch)
    model, opt, sched = _tiny(tmp_path)
    gpu = torch.device("cuda:1")
    checkpoints.Resume(tmp_path / "resume", gpu).save(model, opt, sched, STATE)
    assert torch.load(tmp_path / "resume" / "state.pt", weights_only=True)["cuda_rng"].tolist() == [7, 1]
    assert checkpoints.Resume(tmp_path / "resume", gpu).load(model, opt, sched, lambda m: None)["step"] == 1
    assert rng.set_calls == [([7, 1], gpu)]


def test_a_gpu_run_resuming_a_state_without_cuda_rng_says_so(tmp_path, monkeypatch):
    model, opt, sched = _tiny(tmp_path)
    checkpoints.Resume(tmp_path / "resume", torch.device("cpu")).save(model, opt, sched, STATE)
    rng = FakeCudaRng(monkeypatch)
    messages = []
    state = checkpoints.Resume(tmp_path / "resume", torch.device("cuda:0")).load(model, opt, sched, messages.append)
    assert state["step"] == 1 and rng.set_calls == []
    assert any("no CUDA RNG state" in m for m in messages), messages


def test_resume_every_seconds_is_a_setting_outside_the_run_id(tiny_roberta):
    assert make_spec(tiny_roberta, resume_every_seconds=600).run_id() == make_spec(tiny_roberta).run_id()
    assert checkpoints.resume_interval(None, torch.device("cpu")) == 0
    assert checkpoints.resume_interval(None, torch.device("cuda")) == 300
    assert checkpoints.resume_interval(60, torch.device("cuda")) == 60


def test_resume_state_at_most_every_n_seconds_while_best_weights_are_chosen_as_before(tiny_roberta, tmp_path,
                                                                                      monkeypatch):
    saves = []
    real_save = checkpoints.Resume.save
    monkeypatch.setattr(checkpoints.Resume, "save", lambda self, *a, **k: (saves.append(1), real_save(self, *a, **k)))
    every = run(make_spec(tiny_roberta, keep_checkpoint="best"), tmp_path / "every")
    assert len(saves) == 4  # on the CPU by default: after each of the 4 evaluations
    saves.clear()
    rare = run(make_spec(tiny_roberta, keep_checkpoint="best", resume_every_seconds=3600), tmp_path / "rare")
    assert saves == []
    assert rare["history"] == every["history"] and rare["best"] == every["best"]
    a = load_file(str(tmp_path / "every" / "best" / "gen_sent" / "model.safetensors"))
    b = load_file(str(tmp_path / "rare" / "best" / "gen_sent" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not list((tmp_path / "rare" / "best").glob("*.new"))


def test_resumed_run_keeps_the_best_weights_its_state_chose(tmp_path):
    """Best weights found after the last resume state are dropped on resume (the replay finds them
    again, or not); those the resumed state chose are kept, even if the run was killed before
    they were made final."""
    folder = RunFolder(tmp_path)
    best = checkpoints.BestWeights(folder, ["a", "b"])
    model = torch.nn.Linear(2, 2)
    model.head_of = {}
    best.save("a", model, step=4)
    best.commit()
    best.save("a", model, step=8)   # after the resume state: not chosen by it
    best.save("b", model, step=4)   # chosen by the resume state, killed before the commit
    best.reconcile({"a": {"step": 4}, "b": {"step": 4}})
    assert (folder.best("a") / "step.json").read_text() == "4"
    assert (folder.best("b") / "step.json").read_text() == "4"
    assert not list((tmp_path / "best").glob("*.new"))
