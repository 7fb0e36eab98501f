"""Persistent workers (workers.py) and the local executor's slots (local.plan_slots): a run's record
does not depend on the runs its worker took before; a worker killed in a run leaves that run failed,
the study goes on and --retry-failed finishes it; GPU slots and the GPU-not-usable error with a
mocked torch.cuda."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from mtlstudy import local, study
from mtlstudy import train as train_mod
from mtlstudy.folder import RunFolder, StudyFolder
from mtlstudy.cli import main as mtlstudy_main
from mtlstudy.spec import RunSpec
from mtlstudy.workers import Slot
from tests.reliability_helpers import cli, kill_group, rel_profile, start_cli, starts_in_log, wait_for

TIMINGS = {"wall_seconds", "elapsed", "seconds", "time"}


def without_timings(value):
    """A record with every timing field taken out (they differ from one run to the next)."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def test_a_run_after_three_others_in_one_worker_gives_the_same_record(tmp_path, tiny_roberta):
    """The same run, first in a fresh worker and fourth in another (after a pairwise MTL run, a
    single-task run with other threads and a run of another study), gives the same record but
    for its timings: nothing the earlier runs left (RNG, threads, cached encoder) reaches it."""
    first = study.open_study(rel_profile(tmp_path / "a", tiny_roberta, tasks=["gen_sent", "gen_para"],
                                         methods=["single", "mtl"], **{"train.epochs": 1, "train.sampler": "size"}))
    other = study.open_study(rel_profile(tmp_path / "b", tiny_roberta, name="other", tasks=["gen_sent"],
                                         methods=["single"], seeds=[7], **{"train.epochs": 1, "train.threads": 2}))
    for st in (first, other):
        st.write()
    by_kind = {(r.kind, tuple(r.spec.tasks)): r.run_id for r in first.runs}
    target = by_kind[("single", ("gen_sent",))]
    record = first.folder.run(target).record

    slot = Slot(None, threads=1)
    try:
        assert slot.run(first.dir, target, notebooks=False) == 0
        reference = json.loads(record.read_text())
        record.unlink()
        slot.close()  # a new worker: the target run comes fourth in it
        mtl = next(r.run_id for r in first.runs if r.kind == "mtl")
        for d, rid in [(first.dir, mtl), (first.dir, by_kind[("single", ("gen_para",))]),
                       (other.dir, other.runs[0].run_id)]:
            assert slot.run(d, rid, notebooks=False) == 0
            assert StudyFolder(d).read_record(rid)["status"] == "done"
        pid = slot.process.pid
        assert slot.run(first.dir, target, notebooks=False) == 0
        assert slot.process.pid == pid  # one worker took all four
    finally:
        slot.close()
    again = json.loads(record.read_text())
    assert again["status"] == "done"
    assert json.dumps(without_timings(again), sort_keys=True) == json.dumps(without_timings(reference), sort_keys=True)


def test_worker_killed_in_a_run_leaves_it_failed_the_study_goes_on_and_retry_finishes_it(tmp_path, tiny_roberta):
    """SIGKILL to the worker in the middle of a run: that run is recorded failed, the other runs of
    the study are trained (by a new worker in the same slot), `mtlstudy run` exits 1, and
    `--retry-failed` resumes the killed run from its checkpoint."""
    prof = rel_profile(tmp_path, tiny_roberta, name="killed", workers=1, tasks=["gen_sent", "gen_para"],
                       methods=["single"], **{"train.epochs": 6, "data.generated_sizes": {"gen_sent": 640, "gen_para": 96}})
    st = study.open_study(prof)
    first = st.runs[0].run_id  # plan order: the first started with one worker
    run_dirs = {r.run_id: st.folder.run(r.run_id).path for r in st.runs}
    launcher = start_cli("run", prof, log=tmp_path / "first.log")
    try:
        claim = run_dirs[first] / "claim.json"
        wait_for(lambda: claim.exists() and (run_dirs[first] / "resume").exists() and claim.read_text(), 240,
                 "a checkpoint of the first run", poll=0.01, proc=launcher)
        worker = json.loads(claim.read_text())["pid"]
        assert worker != launcher.pid
        os.kill(worker, signal.SIGKILL)
        launcher.wait(timeout=240)
    finally:
        kill_group(launcher)
    log = (tmp_path / "first.log").read_text()
    assert launcher.returncode == 1, log[-3000:]
    assert f"failed {first}: killed by SIGKILL without a record (out of memory?)" in log
    others = [r for r in run_dirs if r != first]
    assert all(st.folder.read_record(r)["status"] == "done" for r in others), log[-3000:]
    again = cli("run", prof, "--retry-failed")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert starts_in_log(run_dirs[first]) == (1, 1)  # resumed from its checkpoint
    record = st.folder.read_record(first)
    assert record["status"] == "done"
    # and it ends as a run never interrupted does (trained here, from the same spec)
    spec = RunSpec.model_validate(st.folder.read_run_list()[first]["spec"])
    reference = train_mod.train(spec, RunFolder(tmp_path / "uninterrupted"), progress=False, log=lambda m: None)
    assert record["history"] == reference["history"] and record["best"] == reference["best"]
    assert record["total_steps"] == reference["total_steps"]


class FakeCuda:
    """torch.cuda as a machine with `count` GPUs (0: none usable) shows it."""

    def __init__(self, count: int):
        self.count = count

    def is_available(self):
        return self.count > 0

    def device_count(self):
        return self.count


@pytest.fixture
def gpus(monkeypatch):
    import torch

    def have(count: int, visible: str | None = None):
        monkeypatch.setattr(torch, "cuda", FakeCuda(count))
        if visible is None:
            monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        else:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    return have


def test_every_visible_gpu_is_used_runs_per_gpu_times(gpus, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    gpus(2)
    assert [s.gpu for s in local.plan_slots()] == ["0", "1"]  # every GPU by default
    assert [s.gpu for s in local.plan_slots(runs_per_gpu=3)] == ["0", "1", "0", "1", "0", "1"]
    assert [s.threads for s in local.plan_slots(runs_per_gpu=2)] == [4] * 4  # the cores shared out
    assert [s.gpu for s in local.plan_slots(workers=3, runs_per_gpu=2)] == ["0", "1", "0"]
    assert [s.gpu for s in local.plan_slots(runs_per_gpu=2, profile_workers=8)] == ["0", "1", "0", "1"]
    gpus(4, visible="2,3")
    assert [s.gpu for s in local.plan_slots(runs_per_gpu=2)] == ["2", "3", "2", "3"]
    assert Slot("3", 4).env()["CUDA_VISIBLE_DEVICES"] == "3"
    assert [s.gpu for s in local.plan_slots(workers=2, device="cpu")] == [None, None]
    gpus(0)
    assert [s.gpu for s in local.plan_slots(workers=2)] == [None, None]


def test_more_workers_than_gpu_slots_is_an_error(gpus):
    gpus(2)
    with pytest.raises(local.UserError, match=r"--workers 5: more than the 4 run slots here \(2 visible GPU"):
        local.plan_slots(workers=5, runs_per_gpu=2)


@pytest.mark.parametrize("visible, device, asked", [("0,1", "auto", "CUDA_VISIBLE_DEVICES=0,1 asks for 2 GPU"),
                                                    (None, "cuda", "train.device 'cuda' asks for 1 GPU"),
                                                    ("", "cuda:0", "train.device 'cuda:0' with CUDA_VISIBLE_DEVICES=''")])
def test_a_gpu_asked_for_and_not_usable_is_a_one_line_error_before_any_run(tmp_path, tiny_roberta, gpus, capsys,
                                                                           visible, device, asked):
    gpus(0, visible)
    prof = rel_profile(tmp_path, tiny_roberta, tasks=["gen_sent"], methods=["single"], **{"train.device": device})
    assert mtlstudy_main(["run", str(prof)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and asked in err and "sees 0" in err, err
    assert not (tmp_path / "outputs").exists()  # nothing written, no run started


def test_runs_per_gpu_from_the_profile_and_the_command_line(tmp_path, tiny_roberta, gpus, monkeypatch):
    gpus(2)
    seen = []
    monkeypatch.setattr(StudyFolder, "write_study", lambda *a: (_ for _ in ()).throw(SystemExit(0)))
    real = local.plan_slots

    def spy(*a, **kw):
        slots = real(*a, **kw)
        seen.append([s.gpu for s in slots])
        return slots
    monkeypatch.setattr(study, "plan_slots", spy)
    prof = rel_profile(tmp_path, tiny_roberta, tasks=["gen_sent"], methods=["single"], runs_per_gpu=2,
                       **{"train.device": "auto"})
    prof_text = prof.read_text().replace("workers: 2\n", "")
    Path(prof).write_text(prof_text)
    for argv in (["run", str(prof)], ["run", str(prof), "--runs-per-gpu", "3"]):
        with pytest.raises(SystemExit):
            mtlstudy_main(argv)
    assert seen == [["0", "1", "0", "1"], ["0", "1", "0", "1", "0", "1"]]


def test_a_study_in_cpu_slots_without_bf16_is_told_its_bf16_settings_run_fp32(tmp_path, tiny_roberta, gpus,
                                                                               monkeypatch, capsys):
    from mtlstudy import precision
    from mtlstudy.spec import TrainSettings

    monkeypatch.setattr(precision, "cpu_computes_bf16", lambda: False)
    cpu, gpu = [Slot(None, 1), Slot(None, 1)], [Slot("0", 1)]
    for asked in (dict(precision="bf16_one_task"), dict(precision="bf16"), dict(eval_precision="bf16")):
        assert "run in fp32 here" in local.cpu_bf16_note(cpu, TrainSettings(**asked))
    assert local.cpu_bf16_note(cpu, TrainSettings(precision="fp32")) is None
    assert local.cpu_bf16_note(gpu, TrainSettings(precision="bf16")) is None  # on a GPU each run records its own
    # through `mtlstudy run`, on stderr before anything is written
    gpus(0)
    monkeypatch.setattr(StudyFolder, "write_study", lambda *a: (_ for _ in ()).throw(SystemExit(0)))
    prof = rel_profile(tmp_path, tiny_roberta, tasks=["gen_sent"], methods=["single"], **{"train.precision": "bf16"})
    with pytest.raises(SystemExit):
        mtlstudy_main(["run", str(prof)])
    assert "no bf16 in hardware" in capsys.readouterr().err
    monkeypatch.setattr(precision, "cpu_computes_bf16", lambda: True)
    assert local.cpu_bf16_note(cpu, TrainSettings(precision="bf16_one_task")) is None


def test_a_worker_puts_back_the_state_a_run_changed(tmp_path, monkeypatch):
    """What one run may change in its process (torch threads and RNG, numpy's and Python's RNG,
    the environment, the working directory, warning filters) is as the worker started before the next."""
    import random
    import warnings

    import numpy as np
    import torch

    from mtlstudy.workers import FreshState

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MTLSTUDY_TEST_VAR", "before")
    threads = torch.get_num_threads()
    fresh = FreshState(threads)
    expected = (torch.rand(3).tolist(), np.random.rand(), random.random())
    fresh.restore()
    torch.set_num_threads(threads + 1)
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    os.environ["MTLSTUDY_TEST_VAR"] = "after"
    os.environ["MTLSTUDY_LEFT_BEHIND"] = "1"
    os.chdir("/")
    warnings.simplefilter("ignore")
    fresh.restore()
    try:
        assert torch.get_num_threads() == threads
        assert (torch.rand(3).tolist(), np.random.rand(), random.random()) == expected
        assert os.environ["MTLSTUDY_TEST_VAR"] == "before" and "MTLSTUDY_LEFT_BEHIND" not in os.environ
        assert Path.cwd() == tmp_path
        assert warnings.filters == fresh.warning_filters
    finally:
        os.environ.pop("MTLSTUDY_LEFT_BEHIND", None)
        torch.set_num_threads(threads)


def test_a_worker_saves_and_puts_back_tf32_through_the_new_api_only():
    """precision.allow_tf32 sets `fp32_precision`; in torch 2.13 reading a legacy `allow_tf32` flag
    after that raises ("mix of the legacy and new APIs"): a worker started after a GPU run's settings
    must take and put back the state without it."""
    import torch

    from mtlstudy import precision
    from mtlstudy.workers import FreshState

    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = (matmul.fp32_precision, conv.fp32_precision)
    try:
        fresh = FreshState(torch.get_num_threads())
        precision.allow_tf32(torch.device("cuda"))  # what a GPU run sets (a CPU build of torch takes it too)
        assert (matmul.fp32_precision, conv.fp32_precision) == ("tf32", "tf32")
        fresh.restore()
        assert (matmul.fp32_precision, conv.fp32_precision) == before
        precision.allow_tf32(torch.device("cuda"))
        again = FreshState(torch.get_num_threads())  # taken with the new API in use: no legacy read
        matmul.fp32_precision = conv.fp32_precision = "ieee"
        again.restore()
        assert (matmul.fp32_precision, conv.fp32_precision) == ("tf32", "tf32")
    finally:
        matmul.fp32_precision, conv.fp32_precision = before


def test_threads_come_from_the_cpus_this_process_may_use_not_the_node(monkeypatch):
    """Inside a Slurm allocation, a cpuset container or `taskset`: 4 CPUs of a 64-core node."""
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {8, 9, 10, 11})
    assert [s.threads for s in local.plan_slots(workers=2, device="cpu")] == [2, 2]
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert Slot(None, 2).env()["OMP_NUM_THREADS"] == "2"


def test_each_slurm_run_takes_its_threads_from_cpus_per_run():
    import subprocess

    from mtlstudy.profile import SlurmSettings
    from mtlstudy.slurm import executor_parameters

    setup = executor_parameters(SlurmSettings(cpus_per_run=6))["slurm_setup"]
    script = "\n".join(setup + ['echo "$OMP_NUM_THREADS $RAYON_RS_NUM_CPUS"'])
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "RAYON_RS_NUM_CPUS")}
    assert subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True).stdout == "6 6\n"
    kept = subprocess.run(["bash", "-c", script], env={**env, "OMP_NUM_THREADS": "3"}, capture_output=True, text=True)
    assert kept.stdout == "3 6\n"  # a value set by hand is kept, as in the local executor


def test_cuda_n_under_the_local_executor_is_refused_in_one_line_before_any_run(tmp_path, tiny_roberta, gpus, capsys):
    """Each worker sees its one GPU as cuda:0: `cuda:1` would fail every run."""
    gpus(2)
    assert [s.gpu for s in local.plan_slots(device="cuda:0")] == ["0", "1"]
    prof = rel_profile(tmp_path, tiny_roberta, tasks=["gen_sent"], methods=["single"], **{"train.device": "cuda:1"})
    assert mtlstudy_main(["run", str(prof)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train.device 'cuda:1'" in err and "CUDA_VISIBLE_DEVICES=1" in err, err
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("paper", [False, True])
def test_a_cuda_build_that_sees_no_gpu_says_so_before_the_first_run(tmp_path, tiny_roberta, gpus, monkeypatch,
                                                                   capsys, paper):
    """train.device auto on a CUDA wheel that sees no GPU: a line on stderr naming what torch sees
    (not only in each run's log); a `paper: true` profile stops with exit 2 unless train.device is cpu."""
    import torch

    gpus(0)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(StudyFolder, "write_study", lambda *a: (_ for _ in ()).throw(SystemExit(0)))
    prof = rel_profile(tmp_path, tiny_roberta, tasks=["gen_sent"], methods=["single"], paper=paper,
                       **{"train.device": "auto"})
    if paper:
        assert mtlstudy_main(["run", str(prof)]) == 2
    else:
        with pytest.raises(SystemExit):  # went on to write the study
            mtlstudy_main(["run", str(prof)])
    err = capsys.readouterr().err.strip()
    assert "train.device 'auto': torch" in err and "(CUDA 12.8) sees 0 usable GPUs" in err, err
    assert ("train.device=cpu" in err and len(err.splitlines()) == 1) if paper else "trains on the CPU" in err
    assert not (tmp_path / "outputs").exists()
    cpu = rel_profile(tmp_path, tiny_roberta, "cpu", tasks=["gen_sent"], methods=["single"], paper=paper)
    with pytest.raises(SystemExit):  # train.device cpu (the shrunk paper profiles of the tests): no word, no stop
        mtlstudy_main(["run", str(cpu)])
    assert "sees 0" not in capsys.readouterr().err
    monkeypatch.setattr(torch.version, "cuda", None)  # a CPU build: the CPU is what it has
    assert local.cpu_fallback_note(local.plan_slots(), "auto", paper=True) is None


FAKE_CUDA_WORKER = '''
import os
import torch
from mtlstudy import runner, workers

broken = []


def run_one(folder, run_id, notebooks=True):
    print("pid", os.getpid())
    if run_id == "asserts":  # a device-side assert: this context is unusable from now on
        broken.append(run_id)
        return "failed"
    return "failed" if broken else "done"  # any run in a broken context fails


def synchronize():
    if broken:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


runner.run_one = run_one
torch.cuda.is_initialized = lambda: True
torch.cuda.synchronize = synchronize
workers.serve()
'''


def test_after_a_run_breaks_the_cuda_context_the_next_run_gets_a_new_worker(tmp_path):
    """The worker's real loop and the slot's real protocol; a failed run and a broken CUDA context
    are faked (torch.cuda.is_initialized, synchronize): the innocent next run runs in a new worker."""
    import sys

    from mtlstudy.workers import cuda_context_broken

    assert not cuda_context_broken()  # CUDA never used in this process
    script = tmp_path / "fake_cuda_worker.py"
    script.write_text(FAKE_CUDA_WORKER)
    folder = StudyFolder(tmp_path / "study")
    slot = Slot(None, 1, command=(sys.executable, str(script)))
    try:
        assert slot.run(folder.root, "asserts", False) == 1
        assert slot.run(folder.root, "innocent", False) == 0
        assert slot.run(folder.root, "next", False) == 0
    finally:
        slot.close()
    pid = {r: folder.run(r).log.read_text().split("pid ")[1].split()[0] for r in ("asserts", "innocent", "next")}
    assert pid["asserts"] != pid["innocent"] == pid["next"]
    assert "the CUDA context is broken" in folder.run("asserts").log.read_text()
