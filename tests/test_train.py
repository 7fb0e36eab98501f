"""The training loop on a tiny random RoBERTa and the generated tasks: determinism, checkpoint
choice, gradient accumulation, split-dev selection, the summed multi-task loss, STILTs stage two,
MTL pairs and non-finite losses. Each run takes a second or two on one CPU thread."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mtlstudy import data as data_mod
from mtlstudy import model as model_mod
from mtlstudy import batches, passes, store, train
from mtlstudy import precision as precision_mod
from mtlstudy.data import DataSource
from mtlstudy.folder import RunFolder
from mtlstudy.spec import RunSpec, TrainSettings
from mtlstudy.tasks import get_task
from tests.profiles import OLD_DEFAULTS

SIZES = {"gen_nli": 96, "gen_para": 64, "gen_sent": 64, "gen_sim": 48}


def make_spec(model, tasks=("gen_sent",), method=None, seed=1, dev=48, **train_kw) -> RunSpec:
    method = method or ("single" if len(tasks) == 1 else "mtl" if len(tasks) == 2 else "mtl_all")
    settings = dict(lr=1e-3, batch_size=16, epochs=1, max_length=32, evals_per_epoch=2, device="cpu",
                    sampler="uniform", **OLD_DEFAULTS)
    settings.update(train_kw)
    return RunSpec(method=method, tasks=list(tasks), seed=seed, model=str(model),
                   data=DataSource(generated_sizes=SIZES, generated_dev_size=dev),
                   train=TrainSettings(**settings))


def run(spec, out, **kw):
    return train.train(spec, RunFolder(out), progress=False, log=lambda *a: None, **kw)


def context(model, tasks, tok, spec, optimizer=None, amp=None, scaler=None, device="cpu"):
    """What a step and an evaluation of this run need, on the CPU unless told."""
    return train.RunContext(model, tasks, spec.train, torch.device(device), tok.pad_token_id, optimizer, amp, amp,
                            scaler)


def first_best(history, task):
    scores = [h["selection_scores"][task] for h in history]
    return history[int(np.argmax(scores))]  # argmax: the first of equal maxima


@pytest.fixture(scope="module")
def mtl_runs(tiny_roberta, tmp_path_factory):
    """An MTL pair trained twice with seed 1 and once with seed 2 (2 epochs, 4 evaluations each)."""
    out = tmp_path_factory.mktemp("mtl_runs")
    spec1 = make_spec(tiny_roberta, ("gen_nli", "gen_para"), epochs=2, evals_per_epoch=2)
    spec2 = make_spec(tiny_roberta, ("gen_nli", "gen_para"), epochs=2, evals_per_epoch=2, seed=2)
    return run(spec1, out / "a"), run(spec1, out / "b"), run(spec2, out / "c")


def test_same_seed_same_history(mtl_runs):
    a, b, c = mtl_runs
    assert a["run_id"] == b["run_id"] != c["run_id"]
    assert a["history"] == b["history"] and a["best"] == b["best"]
    assert len(a["history"]) == 4 and [h["epoch"] for h in a["history"]] == [0.5, 1.0, 1.5, 2.0]
    assert [h["train_loss"] for h in a["history"]] != [h["train_loss"] for h in c["history"]]


def test_best_is_earliest_best_of_history(mtl_runs):
    for record in mtl_runs:
        for t in ("gen_nli", "gen_para"):
            h = first_best(record["history"], t)
            best = record["best"][t]
            assert (best["step"], best["epoch"]) == (h["step"], h["epoch"])
            assert best["selection_score"] == h["selection_scores"][t]
            assert best["score"] == h["scores"][t] and best["metrics"] == h["metrics"][t]


def test_mtl_pair_scores_both_tasks(mtl_runs):
    record = mtl_runs[0]
    assert record["scored_tasks"] == ["gen_nli", "gen_para"] and set(record["best"]) == {"gen_nli", "gen_para"}
    steps = {h["step"] for h in record["history"]}
    for t in ("gen_nli", "gen_para"):
        assert record["best"][t]["step"] in steps and math.isfinite(record["best"][t]["score"])
    # one pair run gives both directions, (nli | para) and (para | nli)
    rows = store.result_rows(record)
    assert {(r["target"], r["support"]) for r in rows} == {("gen_nli", "gen_para"), ("gen_para", "gen_nli")}
    # heterogeneous batches: uniform p, 8 slots each; gen_para's 64 examples last 8 batches
    assert record["batches_per_epoch"] == 8 and record["total_steps"] == 16
    assert record["examples_seen"] == 16 * 16
    assert record["history"][-1]["lr"] == 0.0  # linear decay reaches 0 at the last step


def test_majority_scores_in_record_and_results_rows(mtl_runs):
    """The record's majority_scores: sklearn's most-frequent dummy fitted on the (subsampled)
    train labels, scored on dev; results rows carry it as majority_score."""
    from sklearn.dummy import DummyClassifier
    from sklearn.metrics import accuracy_score, f1_score

    from mtlstudy import generated

    record = mtl_runs[0]
    for t in ("gen_nli", "gen_para"):
        _, _, y_train = generated.generate(t, "train", SIZES[t])
        _, _, y_dev = generated.generate(t, "dev", 48)
        pred = DummyClassifier(strategy="most_frequent").fit(np.zeros((len(y_train), 1)), y_train).predict(
            np.zeros((len(y_dev), 1)))
        ref = 100 * accuracy_score(y_dev, pred)
        if t == "gen_para":  # acc_f1
            ref = (ref + 100 * f1_score(y_dev, pred, zero_division=0.0)) / 2
        assert record["majority_scores"][t] == pytest.approx(ref)
        assert record["constant_scores"][t] >= record["majority_scores"][t]
    assert {r["target"]: r["majority_score"] for r in store.result_rows(record)} == record["majority_scores"]
    assert {r["target"]: r["constant_score"] for r in store.result_rows(record)} == record["constant_scores"]


def test_earliest_checkpoint_kept_on_ties(tiny_roberta, tmp_path, monkeypatch):
    """Scripted dev scores 50, 60, 60, 55: the best is the second evaluation (earliest of the tie),
    and best/<task>/ holds the weights of that evaluation."""
    scores = iter([50.0, 60.0, 60.0, 55.0])
    weights = []

    def fake_evaluate(ctx, split, *a, **k):
        weights.append({k: v.detach().clone() for k, v in ctx.model.state_dict().items()})
        s = next(scores)
        return {t: {"accuracy": s, "score": s} for t in ctx.tasks}

    monkeypatch.setattr(train, "evaluate", fake_evaluate)
    spec = make_spec(tiny_roberta, ("gen_sent",), epochs=2, evals_per_epoch=2, keep_checkpoint="best")
    record = run(spec, tmp_path)
    assert [h["scores"]["gen_sent"] for h in record["history"]] == [50.0, 60.0, 60.0, 55.0]
    best = record["best"]["gen_sent"]
    assert best["step"] == record["history"][1]["step"] == 4 and best["score"] == 60.0
    saved = load_file(str(tmp_path / "best" / "gen_sent" / "model.safetensors"))
    assert set(saved) == set(weights[1])
    assert all(torch.equal(saved[k], weights[1][k]) for k in saved)
    assert not all(torch.equal(saved[k], weights[2][k]) for k in saved)


def test_gradient_accumulation_equals_full_batch(tiny_roberta_nodropout, tmp_path):
    """micro_batch_size=5 (chunks that cut across tasks) gives the full batch's losses and scores."""
    full = run(make_spec(tiny_roberta_nodropout, ("gen_nli", "gen_sim")), tmp_path / "full")
    micro = run(make_spec(tiny_roberta_nodropout, ("gen_nli", "gen_sim"), micro_batch_size=5), tmp_path / "micro")
    for h_full, h_micro in zip(full["history"], micro["history"], strict=True):
        assert h_micro["train_loss"] == pytest.approx(h_full["train_loss"], rel=1e-4)
        for t in ("gen_nli", "gen_sim"):
            assert h_micro["scores"][t] == pytest.approx(h_full["scores"][t], abs=0.5)


def _prepared(model_path, tasks, **train_kw):
    spec = make_spec(model_path, tasks, **train_kw)
    tok = model_mod.load_tokenizer(spec.model)
    return spec, tok, batches.prepare_data(spec, tok)


@pytest.mark.parametrize("forward", ["merged", "per_task"])
@pytest.mark.parametrize("micro", [None, 3])
def test_summed_multitask_loss_and_gradient(tiny_roberta_nodropout, micro, forward):
    """train_step on a heterogeneous batch (classification + regression rows, in one encoder pass
    or one per task, whole or in micro-batches) equals the sum of each task's mean loss computed
    separately, in loss and in the SGD update."""
    spec, tok, tasks = _prepared(tiny_roberta_nodropout, ("gen_nli", "gen_sim"), micro_batch_size=micro,
                                 multitask_forward=forward)
    model = model_mod.load_model(spec.model, [tasks[t].task for t in tasks])
    reference = copy.deepcopy(model)
    plan = [("gen_nli", np.array([0, 5, 9, 11, 40])), ("gen_sim", np.array([3, 4, 17]))]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    loss = train.train_step(context(model, tasks, tok, spec, opt), plan)

    total = 0.0
    for t, ix in plan:
        batch = data_mod.collate(tasks[t].train, ix, tok.pad_token_id)
        labels = batch.pop("labels")
        total = total + model_mod.task_loss(tasks[t].task, reference(batch, t), labels)
    total.backward()
    assert float(loss) == pytest.approx(total.item(), rel=1e-5)
    with torch.no_grad():
        for (name, p), (_, q) in zip(model.named_parameters(), reference.named_parameters(), strict=True):
            expected = q - q.grad if q.grad is not None else q
            assert torch.allclose(p, expected, atol=1e-6), name


def test_pass_chunks_cut_by_task_and_micro_batch():
    plan = [("a", np.array([0, 1, 2])), ("b", np.array([7, 8]))]
    assert passes.pass_chunks(plan, None, per_task=False) == [[("a", 0), ("a", 1), ("a", 2), ("b", 7), ("b", 8)]]
    assert passes.pass_chunks(plan, 2, per_task=False) == [[("a", 0), ("a", 1)], [("a", 2), ("b", 7)], [("b", 8)]]
    assert passes.pass_chunks(plan, None, per_task=True) == [[("a", 0), ("a", 1), ("a", 2)], [("b", 7), ("b", 8)]]
    assert passes.pass_chunks(plan, 2, per_task=True) == [[("a", 0), ("a", 1)], [("a", 2)], [("b", 7), ("b", 8)]]
    assert passes.pass_chunks([("a", np.array([], dtype=int)), ("b", np.array([7]))], None, per_task=True) == [[("b", 7)]]


def _cheapest_cut(lengths, most, multiple):
    """Tokens of the best cut of the rows, sorted longest first, into at most `passes` runs: every cut tried."""
    import itertools
    width = -(-np.sort(lengths)[::-1] // multiple) * multiple
    n = len(width)
    return min(sum((b[i + 1] - b[i]) * width[b[i]] for i in range(len(b) - 1))
               for j in range(1, min(most, n) + 1) for cut in itertools.combinations(range(1, n), j - 1)
               for b in [[0, *cut, n]])


def test_sorted_cut_computes_the_fewest_tokens_in_at_most_the_passes_allowed():
    rng = np.random.default_rng(0)
    for _ in range(150):
        lengths = rng.integers(1, 40, int(rng.integers(1, 9)))
        most, multiple = int(rng.integers(1, 5)), int(rng.choice([1, 8]))
        parts = passes.sorted_cut(lengths, most, multiple)
        assert sorted(np.concatenate(parts).tolist()) == list(range(len(lengths))) and len(parts) <= most
        tokens = sum(len(p) * -(-lengths[p].max() // multiple) * multiple for p in parts)
        assert tokens == _cheapest_cut(lengths, most, multiple)
    assert len(passes.sorted_cut(np.array([5, 5, 5, 5]), 3)) == 1  # no pass that saves nothing


def test_pass_chunks_sorted_by_length_then_cut_by_micro_batch():
    plan = [("a", np.array([0, 1, 2])), ("b", np.array([7, 8]))]
    lengths = {"a": np.array([3, 30, 4]), "b": np.array([29, 5])}
    assert passes.pass_chunks(plan, None, False, lengths, passes=2) == \
        [[("a", 1), ("b", 7)], [("b", 8), ("a", 2), ("a", 0)]]
    assert passes.pass_chunks(plan, 2, False, lengths, passes=2) == \
        [[("a", 1), ("b", 7)], [("b", 8), ("a", 2)], [("a", 0)]]
    assert passes.pass_chunks(plan, None, True, lengths, passes=2) == \
        [[("a", 1)], [("a", 2), ("a", 0)], [("b", 7)], [("b", 8)]]


@pytest.mark.parametrize("encoder", ["tiny_roberta", "tiny_bert"])
@pytest.mark.parametrize("plan", [[("gen_nli", np.arange(0, 24, 2))],
                                  [("gen_nli", np.array([0, 5, 9, 11, 40, 41, 60])), ("gen_sim", np.array([3, 4, 17, 20, 33]))]],
                         ids=["one_task", "two_tasks_one_regression"])
@pytest.mark.parametrize("padding, micro", [("sorted_passes", None), ("sorted_passes", 2)])
def test_each_padding_mode_gives_the_padded_batchs_loss_and_gradient(request, encoder, plan, padding, micro):
    """One step under each train.padding mode against the batch padded as one pass: the same loss
    and the same gradient (SGD at lr 1: the update is the gradient), dropout off (eval mode), for a
    RoBERTa- and a BERT-shaped encoder (pooler, token types). The mode computes fewer tokens."""
    tasks_ = [t for t, _ in plan]
    results = {}
    for mode, m in (("batch", None), (padding, micro)):
        spec, tok, tasks = _prepared(request.getfixturevalue(encoder), tasks_, padding=mode, micro_batch_size=m,
                                     padding_passes=3)
        torch.manual_seed(0)
        model = model_mod.load_model(spec.model, [tasks[t].task for t in tasks]).eval()
        before = copy.deepcopy(model.state_dict())
        widths = []
        features = model.features
        model.features = lambda batch: (widths.append(batch["attention_mask"].numel()), features(batch))[1]
        loss = train.train_step(context(model, tasks, tok, spec, torch.optim.SGD(model.parameters(), lr=1.0)), plan)
        grads = {k: before[k] - v for k, v in model.state_dict().items()}
        results[mode] = float(loss), grads, widths
    (loss, grads, widths), (loss_m, grads_m, widths_m) = results["batch"], results[padding]
    assert len(widths) == 1 and len(widths_m) > 1 and sum(widths_m) < widths[0]  # the test can tell the modes apart
    assert loss_m == pytest.approx(loss, rel=1e-5)
    assert any(g.abs().max() > 1e-3 for g in grads.values())
    for k in grads:
        assert torch.allclose(grads_m[k], grads[k], atol=1e-6, rtol=1e-4), k


def test_padding_defaults_to_the_batch_and_leaves_run_ids_alone(tiny_roberta_nodropout):
    spec = make_spec(tiny_roberta_nodropout, ("gen_nli", "gen_sim"))
    assert spec.train.padding == "batch"  # earlier results stay as they were
    other = make_spec(tiny_roberta_nodropout, ("gen_nli", "gen_sim"), padding="sorted_passes", padding_passes=4)
    assert other.run_id() == spec.run_id()  # the same gradient: not part of what a run is


@pytest.mark.parametrize("forward, passes", [("merged", 1), ("per_task", 2)])
def test_train_step_takes_one_encoder_pass_per_task_when_asked(tiny_roberta_nodropout, forward, passes):
    spec, tok, tasks = _prepared(tiny_roberta_nodropout, ("gen_nli", "gen_sim"), multitask_forward=forward)
    model = model_mod.load_model(spec.model, [tasks[t].task for t in tasks])
    rows = []
    features = model.features
    model.features = lambda batch: (rows.append(batch["input_ids"].shape[0]), features(batch))[1]
    plan = [("gen_nli", np.array([0, 5, 9])), ("gen_sim", np.array([3, 4]))]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    train.train_step(context(model, tasks, tok, spec, opt), plan)
    assert rows == ([5] if passes == 1 else [3, 2])


@pytest.mark.parametrize("micro, passes", [(None, [3, 2]), (2, [2, 1, 2])])
def test_every_encoder_pass_runs_under_the_run_autocast(tiny_roberta_nodropout, monkeypatch, micro, passes):
    """With bf16 on CPU every pass of a step (per task, per micro-batch) runs under bf16 autocast."""
    spec, tok, tasks = _prepared(tiny_roberta_nodropout, ("gen_nli", "gen_sim"), multitask_forward="per_task",
                                 micro_batch_size=micro)
    model = model_mod.load_model(spec.model, [tasks[t].task for t in tasks])
    rows = []
    features = model.features
    model.features = lambda batch: (rows.append((batch["input_ids"].shape[0], torch.get_autocast_dtype("cpu"),
                                                 torch.is_autocast_enabled("cpu"))), features(batch))[1]
    plan = [("gen_nli", np.array([0, 5, 9])), ("gen_sim", np.array([3, 4]))]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    train.train_step(context(model, tasks, tok, spec, opt, torch.bfloat16), plan)
    assert [r[0] for r in rows] == passes and all(r[1:] == (torch.bfloat16, True) for r in rows)


def test_multitask_forward_defaults_to_one_pass_and_leaves_run_ids_alone(tiny_roberta_nodropout):
    spec = make_spec(tiny_roberta_nodropout, ("gen_nli", "gen_sim"))
    assert spec.train.multitask_forward == "merged"  # the released code's; earlier results stay as they were
    per_task = make_spec(tiny_roberta_nodropout, ("gen_nli", "gen_sim"), multitask_forward="per_task")
    assert per_task.run_id() == spec.run_id()  # the same gradient: not part of what a run is


def _flat(batch: dict) -> list:
    return [t for v in batch.values() for t in (_flat(v) if isinstance(v, dict) else [v])]


def test_a_step_copies_only_its_batches_to_the_gpu_pinned_and_non_blocking(tiny_roberta_nodropout, monkeypatch):
    """Every host-to-device copy of a training step (in micro-batches, two tasks, one a regression)
    is recorded: there is one per tensor of each collated pass (inputs and labels) and no other (a
    task's rows are a slice, no index tensor), each pinned first and copied with non_blocking=True: a
    copy from pageable memory would make every step wait for the GPU. The device is CUDA with
    Tensor.to and pin_memory mocked: the tensors stay on the CPU, and a copy to the device is a call
    that names CUDA (calls that name the CPU are the CPU tensors' own, on a GPU device-to-device)."""
    spec, tok, tasks = _prepared(tiny_roberta_nodropout, ("gen_nli", "gen_sim"), micro_batch_size=3,
                                 max_grad_norm=1.0)
    model = model_mod.load_model(spec.model, [tasks[t].task for t in tasks])
    ctx = context(model, tasks, tok, spec, torch.optim.SGD(model.parameters(), lr=0.1), device="cuda")
    collated, pinned, copies, keep = [], {}, [], []
    chunk_batch, real_to, real_pin = train.chunk_batch, torch.Tensor.to, torch.Tensor.pin_memory

    def recording_chunk_batch(*a, **k):
        batch, rows_of = chunk_batch(*a, **k)
        collated.extend(id(t) for t in _flat(batch))
        keep.append(batch)
        return batch, rows_of

    def pin_memory(self, *a, **k):
        out = self.clone()
        pinned[id(out)] = id(self)
        keep.append(out)
        return out

    def to(self, *a, **k):
        target, dtype, non_blocking, _ = torch._C._nn._parse_to(*a, **k)
        if target is None or target.type != "cuda":  # on a GPU: a change of dtype, or on the device already
            return real_to(self, *a, **k)
        copies.append((pinned.get(id(self), id(self)), id(self) in pinned, non_blocking))
        return real_to(self, torch.device("cpu"), dtype)

    monkeypatch.setattr(train, "chunk_batch", recording_chunk_batch)
    monkeypatch.setattr(torch.Tensor, "to", to)
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: copies.append(("cuda()", False, False)))
    monkeypatch.setattr(torch.Tensor, "pin_memory", pin_memory)
    loss = train.train_step(ctx, [("gen_nli", np.array([0, 5, 9, 11])), ("gen_sim", np.array([3, 4, 17]))])
    monkeypatch.undo()
    assert torch.isfinite(loss)
    assert len(collated) == 2 * 3 + 4  # passes of 3, 3 and 1 rows: two inputs each, labels of 1, 2 and 1 tasks
    assert sorted(source for source, _, _ in copies) == sorted(collated)
    assert all(was_pinned and non_blocking for _, was_pinned, non_blocking in copies)


def test_max_grad_norm_scales_the_update_to_that_norm(tiny_roberta_nodropout):
    """train.max_grad_norm: with SGD at lr 1 the update is the gradient scaled to norm 0.01 (the
    norm computed here by hand over every parameter); unset, the full gradient (test above)."""
    spec, tok, tasks = _prepared(tiny_roberta_nodropout, ("gen_nli",), max_grad_norm=0.01)
    model = model_mod.load_model(spec.model, [tasks[t].task for t in tasks])
    reference = copy.deepcopy(model)
    plan = [("gen_nli", np.array([0, 5, 9, 11, 40]))]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    train.train_step(context(model, tasks, tok, spec, opt), plan)

    batch = data_mod.collate(tasks["gen_nli"].train, plan[0][1], tok.pad_token_id)
    labels = batch.pop("labels")
    model_mod.task_loss(tasks["gen_nli"].task, reference(batch, "gen_nli"), labels).backward()
    grads = [q.grad for q in reference.parameters() if q.grad is not None]
    norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))
    assert norm > 0.1  # clipping to 0.01 really changes the step
    moved = 0.0
    with torch.no_grad():
        for (name, p), (_, q) in zip(model.named_parameters(), reference.named_parameters(), strict=True):
            expected = q - q.grad * (0.01 / norm) if q.grad is not None else q
            assert torch.allclose(p, expected, atol=1e-7), name
            moved += float(((p - q).double() ** 2).sum())
    assert moved ** 0.5 == pytest.approx(0.01, rel=1e-3)


def test_max_grad_norm_is_part_of_the_run_id_only_when_set(tiny_roberta_nodropout):
    base = make_spec(tiny_roberta_nodropout)
    assert "max_grad_norm" not in base.train.result_fields()
    earlier = base.model_dump(mode="json")  # a spec.json written before the setting existed
    del earlier["train"]["max_grad_norm"]
    assert RunSpec.recorded(earlier).run_id() == base.run_id()
    assert make_spec(tiny_roberta_nodropout, max_grad_norm=1.0).run_id() != base.run_id()


def test_split_dev_selects_and_reports_on_different_halves(tiny_roberta, tmp_path, monkeypatch):
    spec, tok, tasks = _prepared(tiny_roberta, ("gen_nli",), selection="split_dev", dev=64)
    td = tasks["gen_nli"]
    full = data_mod.tokenize(tok, data_mod.load_examples(td.task, "dev", spec.data), spec.train.max_length)

    def rows(d):
        return [tuple(d.input_ids[d.offsets[i]:d.offsets[i + 1]].tolist()) + (int(d.labels[i]),) for i in range(len(d))]

    from collections import Counter

    assert len(td.select) == len(td.report) == 32
    assert Counter(rows(td.select)) + Counter(rows(td.report)) == Counter(rows(full))  # a partition of dev

    calls = []
    real = train.evaluate

    def spy(ctx, split, *a, **k):
        out = real(ctx, split, *a, **k)
        calls.append((split, {t: len(getattr(ctx.tasks[t], split)) for t in ctx.tasks}, out))
        return out

    monkeypatch.setattr(train, "evaluate", spy)
    record = run(make_spec(tiny_roberta, ("gen_nli",), selection="split_dev", dev=64, epochs=2), tmp_path)
    assert [c[0] for c in calls] == ["select", "report"] * 4
    assert all(c[1] == {"gen_nli": 32} for c in calls)
    for i, h in enumerate(record["history"]):
        assert h["selection_scores"]["gen_nli"] == calls[2 * i][2]["gen_nli"]["score"]
        assert h["scores"]["gen_nli"] == calls[2 * i + 1][2]["gen_nli"]["score"]
    h = first_best(record["history"], "gen_nli")
    assert record["best"]["gen_nli"]["score"] == h["scores"]["gen_nli"]
    assert record["best"]["gen_nli"]["selection_score"] == h["selection_scores"]["gen_nli"]


@pytest.fixture(scope="module")
def stage_one(tiny_roberta, tmp_path_factory):
    """STILTs stage one: gen_para alone, keeping the best checkpoint; once per head mode."""
    out = {}
    for heads in ("per_task", "by_label_count"):
        folder = tmp_path_factory.mktemp(f"stage1_{heads}")
        spec = make_spec(tiny_roberta, ("gen_para",), epochs=2, heads=heads, keep_checkpoint="best")
        out[heads] = (run(spec, folder), folder / "best" / "gen_para")
    return out


def test_stage_one_checkpoint_is_the_best(stage_one, tiny_roberta):
    record, ckpt = stage_one["per_task"]
    spec, tok, tasks = _prepared(tiny_roberta, ("gen_para",))
    model = model_mod.load_model(str(tiny_roberta), [tasks["gen_para"].task])
    model.load_state_dict(load_file(str(ckpt / "model.safetensors")))
    scores = train.evaluate(context(model, tasks, tok, spec), "report", 64)
    assert scores["gen_para"]["score"] == pytest.approx(record["best"]["gen_para"]["score"])


@pytest.mark.parametrize("heads,target,head_reused", [("per_task", "gen_sent", False),
                                                      ("by_label_count", "gen_sent", True),
                                                      ("by_label_count", "gen_nli", False)])
def test_stilts_stage_two_starts_from_best_checkpoint(stage_one, tiny_roberta, tmp_path, monkeypatch, heads, target,
                                                      head_reused):
    _, ckpt = stage_one[heads]
    saved = load_file(str(ckpt / "model.safetensors"))
    captured = {}
    real = train.load_encoder_from

    def spy(model, folder, reuse_heads):
        captured["before"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        real(model, folder, reuse_heads)
        captured["folder"], captured["reuse"] = folder, reuse_heads
        captured["state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        captured["head_of"] = dict(model.head_of)

    monkeypatch.setattr(train, "load_encoder_from", spy)
    spec = make_spec(tiny_roberta, ("gen_para", target), method="stilts", heads=heads)
    record = run(spec, tmp_path, init_checkpoint=ckpt)
    assert record["scored_tasks"] == [target] and record["init_checkpoint"] == str(ckpt)
    assert captured["folder"] == ckpt and captured["reuse"] == (heads == "by_label_count")
    state = captured["state"]
    encoder_keys = [k for k in saved if k.startswith("encoder.")]
    assert encoder_keys and all(torch.equal(state[k], saved[k]) for k in encoder_keys)
    key = captured["head_of"][target]
    head = {k: v for k, v in state.items() if k.startswith(f"task_heads.{key}.")}
    assert head
    if head_reused:  # the support's 2-way head, trained in stage one, is the target's head now
        assert all(torch.equal(v, saved[k]) for k, v in head.items())
        assert not all(torch.equal(v, captured["before"][k]) for k, v in head.items())
    else:  # the target's head is the fresh one the model was built with, untouched by the load
        assert all(torch.equal(v, captured["before"][k]) for k, v in head.items())


def test_load_encoder_from_direct(stage_one, tiny_roberta):
    _, ckpt = stage_one["per_task"]
    saved = load_file(str(ckpt / "model.safetensors"))
    model = model_mod.load_model(str(tiny_roberta), [get_task("gen_nli")])
    fresh_head = {k: v.clone() for k, v in model.task_heads.state_dict().items()}
    train.load_encoder_from(model, ckpt, reuse_heads=False)
    for k, v in model.encoder.state_dict().items():
        assert torch.equal(v, saved["encoder." + k])
    assert all(torch.equal(v, fresh_head[k]) for k, v in model.task_heads.state_dict().items())


def test_dynamic_sampler_updates_probabilities_and_epoch_lengths(tiny_roberta, tmp_path):
    """gap sampling, worked by hand: epoch 1 uses size-proportional p (96 and 64 -> 0.6, 0.4); each
    later epoch p_i = max(0, ref_i - cur_i) / sum, with cur the *selection* half's scores at the end
    of the epoch before (split_dev: the reporting half must not steer training). Each epoch's length
    follows its own p (shortest: min_i floor(|D_i| / n_i)), and the learning rate, defined on
    progress through the run, reaches exactly 0 on the last step."""
    ref = {"gen_nli": 90.0, "gen_para": 95.0}
    record = run(make_spec(tiny_roberta, ("gen_nli", "gen_para"), sampler="gap", epochs=3, lr=1e-3, dev=64,
                           selection="split_dev"), tmp_path, reference_scores=ref)
    epochs, history = record["epochs"], record["history"]
    assert epochs[0]["probs"] == pytest.approx({"gen_nli": 0.6, "gen_para": 0.4})
    assert epochs[0]["batches"] == 9 and epochs[0]["examples"] == {"gen_nli": 90, "gen_para": 54}  # slots 10/6: 96//10, 64//6
    for e in (1, 2):
        cur = history[2 * e - 1]["selection_scores"]  # the evaluation that ended epoch e
        gap = {t: max(0.0, (ref[t] - cur[t]) / 100) for t in ref}
        p = {t: g / sum(gap.values()) for t, g in gap.items()} if sum(gap.values()) else {t: 0.5 for t in ref}
        assert epochs[e]["probs"] == pytest.approx(p, abs=1e-9)
        raw = {t: 16 * p[t] for t in p}  # slots by largest remainder, each at least 1
        slots = {t: max(1, math.floor(r)) for t, r in raw.items()}
        if sum(slots.values()) < 16:
            slots[max(raw, key=lambda t: raw[t] - math.floor(raw[t]))] += 16 - sum(slots.values())
        if sum(slots.values()) > 16:
            slots[max(slots, key=slots.get)] -= sum(slots.values()) - 16
        n = min(96 // slots["gen_nli"], 64 // slots["gen_para"])
        assert epochs[e]["batches"] == n and epochs[e]["examples"] == {t: n * k for t, k in slots.items()}
    assert history[2]["sampler_probs"] == pytest.approx(epochs[1]["probs"])
    assert history[1]["scores"] != history[1]["selection_scores"]  # the halves differ, so the test can tell
    assert record["total_steps"] == sum(e["batches"] for e in epochs)
    assert len(history) == 6 and [h["epoch"] for h in history][1::2] == [1.0, 2.0, 3.0]
    for h in history:  # linear decay on progress: lr after the step at progress p is lr0 (1 - p / 3)
        assert h["lr"] == pytest.approx(1e-3 * (1 - h["epoch"] / 3), abs=1e-7)  # epoch is rounded to 1e-4
    assert history[-1]["lr"] == 0.0
    assert record["reference_scores"] == ref


def test_dynamic_sampler_without_reference_fails_before_training(tiny_roberta, tmp_path, monkeypatch):
    """The default sampler 'gap' needs reference scores: without them the run stops before its first
    step (it used to train a whole epoch, then fail computing epoch 2's p)."""
    steps = []
    real = train.train_step
    monkeypatch.setattr(train, "train_step", lambda *a, **k: (steps.append(1), real(*a, **k))[1])
    with pytest.raises(train.TrainingError, match="reference scores") as e:
        run(make_spec(tiny_roberta, ("gen_nli", "gen_para"), sampler="gap", epochs=2), tmp_path,
            reference_scores={"gen_nli": 70.0})
    assert "gen_para" in str(e.value) and not steps


def test_nonfinite_loss_detected_at_its_step(tiny_roberta, tmp_path, monkeypatch):
    calls = []
    real = train.task_loss

    def nan_at_third(task, logits, labels):
        calls.append(1)
        loss = real(task, logits, labels)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(train, "task_loss", nan_at_third)
    with pytest.raises(train.TrainingError, match=r"non-finite loss \(nan\) at step 3, epoch 1, batch 3"):
        run(make_spec(tiny_roberta, ("gen_sent",)), tmp_path)


def test_huge_learning_rate_raises_training_error(tiny_roberta, tmp_path):
    with pytest.raises(train.TrainingError, match=r"non-finite loss .* at step \d+"):
        run(make_spec(tiny_roberta, ("gen_sent",), lr=1e30, epochs=2), tmp_path)


def test_evaluation_does_not_depend_on_the_eval_batch(stage_one, tiny_roberta):
    """Padding to the longest of each eval batch must not change a score: the CPU default (16)
    and the GPU default (256) give what one example at a time gives."""
    record, ckpt = stage_one["per_task"]
    spec, tok, tasks = _prepared(tiny_roberta, ("gen_para",))
    model = model_mod.load_model(str(tiny_roberta), [tasks["gen_para"].task])
    model.load_state_dict(load_file(str(ckpt / "model.safetensors")))
    scores = [train.evaluate(context(model, tasks, tok, spec), "report", b)["gen_para"]
              for b in (1, 7, 16, 32, 256)]
    assert all(s == scores[0] for s in scores[1:])


def test_optimizer_and_eval_batch_defaults():
    cfg = train.TrainSettings()
    opt = train.make_optimizer(torch.nn.Linear(2, 2), cfg, torch.device("cpu"))
    assert opt.defaults["fused"] is True and opt.defaults["lr"] == cfg.lr
    assert train.eval_batch_size_for(cfg, torch.device("cpu")) == 16
    assert train.eval_batch_size_for(cfg, torch.device("cuda")) == 256
    assert train.eval_batch_size_for(train.TrainSettings(eval_batch_size=8), torch.device("cpu")) == 8


@pytest.mark.parametrize("precision,device,dtype", [
    ("auto", "cpu", None), ("fp32", "cpu", None), ("bf16", "cpu", torch.bfloat16),
    ("fp32", "cuda", None), ("fp16", "cuda", torch.float16), ("bf16", "cuda", torch.bfloat16),
    ("bf16_one_task", "cpu", torch.bfloat16), ("bf16_one_task", "cuda", torch.bfloat16)])
def test_autocast_dtype_per_precision_and_device(precision, device, dtype, native_bf16, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))  # an A100 or later
    assert precision_mod.autocast_dtype(precision, torch.device(device)) == dtype
    expected = None if precision == "bf16_one_task" else dtype  # multi-task runs: fp32
    assert precision_mod.autocast_dtype(precision, torch.device(device), multitask=True) == expected


def test_fp16_on_cpu_is_refused_by_name():
    with pytest.raises(train.TrainingError, match="train.precision 'fp16' needs a CUDA GPU"):
        precision_mod.autocast_dtype("fp16", torch.device("cpu"))


@pytest.mark.parametrize("method, tasks, dtype", [
    ("single", ("gen_nli",), torch.bfloat16), ("stilts", ("gen_nli", "gen_para"), torch.bfloat16),
    ("mtl", ("gen_nli", "gen_para"), None), ("mtl_all", ("gen_nli", "gen_para", "gen_sent"), None)])
def test_bf16_one_task_per_method(tiny_roberta, method, tasks, dtype, native_bf16):
    """STILTs' second stage trains its target alone: bf16; pairwise MTL and MTL-All: fp32."""
    spec = make_spec(tiny_roberta, tasks, method=method, precision="bf16_one_task")
    assert spec.multitask == (method in ("mtl", "mtl_all"))
    assert precision_mod.run_autocast_dtype(spec, torch.device("cpu")) == dtype


def test_bf16_one_task_is_bf16_for_one_task_and_fp32_for_two(tiny_roberta, tmp_path, native_bf16):
    single = run(make_spec(tiny_roberta, precision="bf16_one_task"), tmp_path / "single")
    pair = run(make_spec(tiny_roberta, ("gen_nli", "gen_para"), precision="bf16_one_task"), tmp_path / "pair")
    assert (single["precision"], pair["precision"]) == ("torch.bfloat16", "fp32")


def test_bf16_evaluation_leaves_fp32_training_as_it_was(tiny_roberta, tmp_path, monkeypatch, native_bf16):
    """`eval_precision: bf16` evaluates under bf16 autocast and trains exactly as the fp32 run
    (same losses); the setting is part of the run id, and its default leaves ids as they were."""
    from mtlstudy import train as train_mod

    seen = []
    real_evaluate = train_mod.evaluate
    monkeypatch.setattr(train_mod, "evaluate", lambda ctx, *a: seen.append(ctx.eval_amp) or real_evaluate(ctx, *a))
    pair = ("gen_nli", "gen_para")
    fp32 = run(make_spec(tiny_roberta, pair, precision="fp32"), tmp_path / "fp32")
    assert set(seen) == {None}
    seen.clear()
    mixed = run(make_spec(tiny_roberta, pair, precision="fp32", eval_precision="bf16"), tmp_path / "mixed")
    assert seen and set(seen) == {torch.bfloat16}
    assert (mixed["precision"], mixed["eval_precision"], fp32["eval_precision"]) == ("fp32", "torch.bfloat16", "fp32")
    assert [h["train_loss"] for h in mixed["history"]] == [h["train_loss"] for h in fp32["history"]]
    assert mixed["run_id"] != fp32["run_id"]
    assert make_spec(tiny_roberta, pair, eval_precision="same").run_id() == make_spec(tiny_roberta, pair).run_id()


def test_bf16_on_cpu_runs_under_autocast_and_stays_near_fp32(tiny_roberta, tmp_path, native_bf16):
    """`precision: bf16` on CPU trains and evaluates under bf16 autocast (the record says so, and
    the losses move off the fp32 run's), and lands near the fp32 run."""
    fp32 = run(make_spec(tiny_roberta, precision="fp32"), tmp_path / "fp32")
    bf16 = run(make_spec(tiny_roberta, precision="bf16"), tmp_path / "bf16")
    assert (fp32["precision"], bf16["precision"]) == ("fp32", "torch.bfloat16")
    losses = [[h["train_loss"] for h in r["history"]] for r in (fp32, bf16)]
    assert losses[0] != losses[1]
    assert np.allclose(losses[0], losses[1], rtol=0.05)
    assert fp32["run_id"] != bf16["run_id"]


def test_bf16_on_a_cpu_that_would_emulate_it_runs_fp32(tiny_roberta, tmp_path, monkeypatch):
    """On a CPU without AMX or AVX-512 BF16 every bf16 setting trains and evaluates in fp32 (the
    record says so, the losses are the fp32 run's), with a warning; a GPU is not affected."""
    monkeypatch.setattr(precision_mod, "cpu_computes_bf16", lambda: False)
    with pytest.warns(UserWarning, match="without AMX or AVX-512 BF16"):
        assert precision_mod.autocast_dtype("bf16", torch.device("cpu")) is None
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert precision_mod.autocast_dtype("bf16", torch.device("cuda")) == torch.bfloat16
    fp32 = run(make_spec(tiny_roberta, precision="fp32"), tmp_path / "fp32")
    with pytest.warns(UserWarning):
        asked = run(make_spec(tiny_roberta, precision="bf16_one_task", eval_precision="bf16"), tmp_path / "bf16")
    assert (asked["precision"], asked["eval_precision"]) == ("fp32", "fp32")
    assert [h["train_loss"] for h in asked["history"]] == [h["train_loss"] for h in fp32["history"]]


def test_cpu_computes_bf16_reads_torchs_cpu_flags(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert precision_mod.cpu_computes_bf16() is False
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert precision_mod.cpu_computes_bf16() is True


def test_compiled_run_with_inductor_equals_the_uncompiled_run(tiny_roberta, tmp_path):
    """`compile: true` must compile the encoder (torch.compile(model) would compile only
    model.forward, which the step never calls: no graph at all). With the real compiler (inductor,
    CPU) the run gives the same losses and scores as eager, since dropout keeps eager's seeded RNG
    (fallback_random); this is why `compile` is not part of a run's id."""
    from torch._dynamo.utils import counters

    plain = run(make_spec(tiny_roberta, ("gen_sent",)), tmp_path / "plain")
    torch._dynamo.reset()
    counters.clear()
    compiled = run(make_spec(tiny_roberta, ("gen_sent",), compile=True), tmp_path / "compiled")
    graphs = counters["stats"]["unique_graphs"]
    torch._dynamo.reset()
    assert graphs >= 1
    assert [h["train_loss"] for h in compiled["history"]] == pytest.approx(
        [h["train_loss"] for h in plain["history"]], rel=1e-4)
    assert {t: b["score"] for t, b in compiled["best"].items()} == {t: b["score"] for t, b in plain["best"].items()}


def test_standardized_regression_targets(tiny_roberta_nodropout):
    """train.regression_targets=standardized: the loss is the MSE against (label - mean) / sd of the
    task's training labels (numpy's mean and population sd, worked here by hand), classification
    rows are untouched, and evaluation maps the head's output back (mean + sd * output)."""
    spec, tok, tasks = _prepared(tiny_roberta_nodropout, ("gen_nli", "gen_sim"), regression_targets="standardized")
    sim = tasks["gen_sim"]
    labels = sim.train.labels.astype(np.float64)
    assert sim.label_mean == pytest.approx(labels.mean()) and sim.label_sd == pytest.approx(labels.std())
    assert sim.label_sd != pytest.approx(1.0) and sim.label_mean > 0.5   # the map really changes things
    assert (tasks["gen_nli"].label_mean, tasks["gen_nli"].label_sd) == (0.0, 1.0)

    model = model_mod.load_model(spec.model, [tasks[t].task for t in tasks])
    reference = copy.deepcopy(model)
    plan = [("gen_nli", np.array([0, 5, 9])), ("gen_sim", np.array([3, 4, 17]))]
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    loss = train.train_step(context(model, tasks, tok, spec, opt), plan)
    expected = 0.0
    for t, ix in plan:
        batch = data_mod.collate(tasks[t].train, ix, tok.pad_token_id)
        y = batch.pop("labels").numpy().astype(np.float64)
        out = reference(batch, t).detach().numpy().astype(np.float64)
        if t == "gen_sim":
            expected += np.mean((out[:, 0] - (y - labels.mean()) / labels.std()) ** 2)
        else:
            expected += float(torch.nn.functional.cross_entropy(torch.tensor(out), torch.tensor(y).long()))
    assert float(loss) == pytest.approx(expected, rel=1e-5)

    raw = {t: np.array([0.0, 1.0, -2.0]) for t in ("gen_sim", "gen_nli")}
    np.testing.assert_allclose(sim.prediction(raw["gen_sim"]), labels.mean() + labels.std() * raw["gen_sim"])
    np.testing.assert_array_equal(tasks["gen_nli"].prediction(raw["gen_nli"]), raw["gen_nli"])


def test_regression_targets_are_part_of_the_run_id_only_when_standardized(tiny_roberta_nodropout):
    base = make_spec(tiny_roberta_nodropout)
    earlier = base.model_dump(mode="json")  # a spec.json written before the setting existed
    del earlier["train"]["regression_targets"]
    assert RunSpec.recorded(earlier).run_id() == base.run_id()
    assert make_spec(tiny_roberta_nodropout, regression_targets="standardized").run_id() != base.run_id()


def test_frozen_word_embeddings_stay_as_loaded_and_the_rest_trains(tiny_roberta, tmp_path):
    """train.freeze_word_embeddings: after a run the input word-embedding matrix in the best
    checkpoint equals the pre-trained one, every other encoder weight moved, and the optimizer
    holds no state for it. Unset, it is not part of the run id."""
    spec = make_spec(tiny_roberta, keep_checkpoint="best", freeze_word_embeddings=True)
    run(spec, tmp_path / "run")
    loaded = model_mod.load_model(str(tiny_roberta), [get_task("gen_sent")]).encoder.state_dict()
    trained = load_file(tmp_path / "run" / "best" / "gen_sent" / "model.safetensors")
    word = next(k for k in trained if k.endswith("word_embeddings.weight"))
    assert torch.equal(trained[word], loaded[word.removeprefix("encoder.")])
    moved = [k for k in trained if k.startswith("encoder.") and k != word
             and not torch.equal(trained[k], loaded[k.removeprefix("encoder.")])]
    assert len(moved) > 10
    model = model_mod.load_model(str(tiny_roberta), [get_task("gen_sent")])
    model.freeze_word_embeddings()
    opt = train.make_optimizer(model, spec.train, torch.device("cpu"))
    assert all(p is not model.encoder.get_input_embeddings().weight for g in opt.param_groups for p in g["params"])

    base = make_spec(tiny_roberta)
    earlier = base.model_dump(mode="json")  # a spec.json written before the setting existed
    del earlier["train"]["freeze_word_embeddings"]
    assert RunSpec.recorded(earlier).run_id() == base.run_id()
    assert spec.run_id() != make_spec(tiny_roberta, keep_checkpoint="best").run_id()
