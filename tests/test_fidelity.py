"""The paper profiles do what the paper and its released code did (docs/protocol.md, fidelity table):
random batch-mates (no length grouping), a random task mix per batch, the first-token head on BERT,
lower-cased texts under paper_code, the Hugging Face head initialisation as an option, paper_code's
STILTs from the support seed closest to the mean, and the size ablation as released."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from mtlstudy import model as model_mod
from mtlstudy.plan import make_plan
from mtlstudy.profile import load_profile
from mtlstudy.sampling import EpochPlan, task_probabilities
from mtlstudy.spec import TrainSettings
from mtlstudy.tasks import get_task

PAPER_PROFILES = ("paper", "paper_code", "bert", "size_ablation", "mtl_all")


def _train(name) -> TrainSettings:
    return load_profile(name)[0].train


def _pairs(batches) -> set:
    return {pair for batch in batches for _, ix in batch for pair in itertools.combinations(sorted(ix.tolist()), 2)}


def _recurring_pairs(cfg: TrainSettings, size: int, lengths: np.ndarray) -> float:
    """Share of epoch 1's batch-mate pairs that are batch-mates again in epoch 2, for one task epoched
    as train.py does under `cfg` (lengths passed only with group_by_length)."""
    plan = EpochPlan({"t": size}, cfg.batch_size, drop_last=cfg.drop_last)
    given = {"t": lengths} if cfg.group_by_length else None
    first, second = (_pairs(plan.batches(np.random.default_rng([42, epoch]), given)) for epoch in (1, 2))
    return len(first & second) / len(first)


@pytest.mark.parametrize("profile", PAPER_PROFILES)
def test_consecutive_epochs_share_batch_mates_as_random_batches_do(profile):
    """RTE's size (2,490) at the profile's batch size: about (B - 1) / (N - 1) = 5% of batch-mate pairs
    recur by chance; length-grouped batches repeat 87% of them here."""
    cfg = _train(profile)
    size = 2490
    lengths = np.random.default_rng(0).integers(8, 128, size)
    chance = (cfg.batch_size - 1) / (size - 1)
    share = _recurring_pairs(cfg, size, lengths)
    assert not cfg.group_by_length
    assert share < 2 * chance, (share, chance)


@pytest.mark.parametrize("profile", PAPER_PROFILES)
def test_a_small_task_in_a_pair_meets_new_batch_mates_each_epoch(profile):
    """RTE beside QNLI (10,000 here) in a multi-task epoch of the profile: RTE's rows that share a
    batch in epoch 1 share one again in epoch 2 at about the rate of chance, not more as with grouped
    fixed slots."""
    cfg = _train(profile)
    sizes = {"rte": 2490, "qnli": 10000}
    rng = np.random.default_rng(0)
    lengths = {t: rng.integers(8, 128, n) for t, n in sizes.items()}
    plan = EpochPlan(sizes, cfg.batch_size, task_probabilities("size", sizes), cfg.schedule, cfg.epoch_length)

    def rte_pairs(epoch):
        batches = plan.batches(np.random.default_rng([42, epoch]), lengths if cfg.group_by_length else None)
        return _pairs([[(t, ix) for t, ix in batch if t == "rte"] for batch in batches])

    first, second = rte_pairs(1), rte_pairs(2)
    chance = (plan.slots["rte"] - 1) / (sizes["rte"] - 1)
    assert len(first & second) / len(first) < 2 * chance


def test_length_grouping_stays_an_option_and_repeats_batches():
    """The check above can fail: with grouping on, most pairs recur."""
    cfg = TrainSettings(group_by_length=True)
    lengths = np.random.default_rng(0).integers(8, 128, 2490)
    assert _recurring_pairs(cfg, 2490, lengths) > 0.5


@pytest.mark.parametrize("profile", ["paper", "paper_code", "bert", "size_ablation", "mtl_all"])
def test_paper_batches_vary_their_task_mix(profile):
    """The authors' `heterogeneous`: the epoch's drawn examples shuffled together, so batches differ
    in how many rows each task has; every row of the epoch is still used once."""
    cfg = _train(profile)
    sizes = {"big": 3000, "small": 700}
    probs = task_probabilities("size", sizes)
    plan = EpochPlan(sizes, cfg.batch_size, probs, cfg.schedule, cfg.epoch_length)
    batches = plan.batches(np.random.default_rng([42, 1]))
    mixes = {tuple(sorted((t, len(ix)) for t, ix in batch)) for batch in batches}
    assert cfg.schedule == "heterogeneous_random"
    assert len(mixes) > 3, mixes
    drawn = {t: np.concatenate([ix for batch in batches for tt, ix in batch if tt == t]) for t in sizes}
    assert all(len(drawn[t]) == len(set(drawn[t].tolist())) == plan.num_batches * plan.slots[t] for t in sizes)


def _tiny_bert_encoder():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    return BertModel(config)  # with its pooler, as bert-base-uncased


def test_bert_profile_head_is_dense_tanh_linear_on_the_first_token():
    cfg = _train("bert")
    task = get_task("rte")
    model = model_mod.MultiTaskModel(_tiny_bert_encoder(), [task], cfg.heads, cfg.pooling).eval()
    batch = {"input_ids": torch.randint(0, 50, (3, 9)), "attention_mask": torch.ones(3, 9, dtype=torch.long),
             "token_type_ids": torch.zeros(3, 9, dtype=torch.long)}
    head = model.task_heads[model.head_of[task.name]]
    with torch.no_grad():
        first = model.encoder(**batch).last_hidden_state[:, 0]
        expected = first @ head.dense.weight.T + head.dense.bias
        expected = torch.tanh(expected) @ head.out.weight.T + head.out.bias
        got = model(batch, task.name)
    assert cfg.pooling == "first_token" and not model.use_pooler
    assert torch.allclose(got, expected, atol=1e-6)


def test_auto_pooling_on_bert_still_uses_the_pooler():
    """The old behaviour stays what `auto` means (glue_cpu and the demo keep their run ids)."""
    model = model_mod.MultiTaskModel(_tiny_bert_encoder(), [get_task("rte")], pooling="auto")
    assert model.use_pooler and model.task_heads["rte"].dense is None


def test_paper_code_lower_cases_its_texts(tiny_roberta):
    cfg = _train("paper_code")
    assert cfg.lower_case and not _train("paper").lower_case
    plain = model_mod.load_tokenizer(str(tiny_roberta))
    lowered = model_mod.load_tokenizer(str(tiny_roberta), cfg.lower_case)
    text, pair = ["The Happy Doctor bought THE car ."], ["A Man is playing ."]
    got = lowered(text, pair, truncation=True, max_length=32)["input_ids"]
    assert got == plain([t.lower() for t in text], [t.lower() for t in pair], truncation=True, max_length=32)["input_ids"]
    assert got != plain(text, pair, truncation=True, max_length=32)["input_ids"]
    assert len(lowered) == len(plain) and lowered.pad_token_id == plain.pad_token_id


def test_lower_cased_tokens_are_cached_apart(tiny_roberta, tmp_path):
    from mtlstudy import data

    examples = data.Examples(["The Doctor ."], None, np.array([1]))
    cased = data.tokenize(model_mod.load_tokenizer(str(tiny_roberta)), examples, 32, tmp_path)
    lowered = data.tokenize(model_mod.load_tokenizer(str(tiny_roberta), True), examples, 32, tmp_path)
    assert list(cased.input_ids) != list(lowered.input_ids)


def test_hf_head_init_is_normal_002_with_zero_bias():
    encoder = _tiny_bert_encoder()
    model = model_mod.MultiTaskModel(encoder, [get_task("mnli"), get_task("stsb")], pooling="first_token",
                                     head_init="hf")
    weights = torch.cat([p.detach().flatten() for n, p in model.task_heads.named_parameters() if n.endswith("weight")])
    biases = [p for n, p in model.task_heads.named_parameters() if n.endswith("bias")]
    assert abs(weights.std().item() - 0.02) < 0.002 and abs(weights.mean().item()) < 0.002
    assert all(torch.count_nonzero(b) == 0 for b in biases)
    fresh = model_mod.MultiTaskModel(encoder, [get_task("rte")], pooling="first_token", head_init="hf")
    fresh.add_task(get_task("rte"), fresh=True)  # STILTs' new head gets the same init
    assert torch.count_nonzero(fresh.task_heads["rte"].out.bias) == 0


def test_torch_head_init_is_the_released_codes():
    """nn.Linear's own: uniform(+-1/sqrt(fan_in)) weights and biases (non-zero biases)."""
    model = model_mod.MultiTaskModel(_tiny_bert_encoder(), [get_task("rte")], pooling="first_token")
    out = model.task_heads["rte"].out
    assert torch.count_nonzero(out.bias) > 0 and out.weight.abs().max() <= 1 / 32 ** 0.5


def test_new_settings_leave_earlier_run_ids_alone():
    unset = TrainSettings().result_fields()
    assert "head_init" not in unset and "lower_case" not in unset
    assert TrainSettings(head_init="hf").result_fields()["head_init"] == "hf"
    assert TrainSettings(lower_case=True).result_fields()["lower_case"] is True


def _plan(name, overrides=()):
    profile, user = load_profile(name, list(overrides))
    return make_plan(profile, user)


def test_paper_code_transfers_from_the_support_seed_closest_to_the_mean():
    """The released create_data_matrix.py writes closest-to-mean (and median) support lists only;
    paper_code's STILTs runs use that choice, and only their ids change with it."""
    code = {r.run_id: r for r in _plan("paper_code")}
    as_paper = {r.run_id: r for r in _plan("paper_code", ["support_choice=best"])}
    stilts = [r for r in code.values() if r.kind == "stilts"]
    assert load_profile("paper")[0].support_choice == "best"
    assert len(stilts) == 9 * 8 * 5 and all(r.spec.support_choice == "closest_to_mean" for r in stilts)
    assert {i for i, r in code.items() if r.kind != "stilts"} == {i for i, r in as_paper.items() if r.kind != "stilts"}
    assert not {r.run_id for r in stilts} & set(as_paper)


# The released size ablation's support sizes: len(target) // d for its divisors d
# (bin/create_differing_sizes.py:38, 98), plotted as K by the map of bin/plot_validation_exp.py:13.
RELEASED_DIVISOR_OF_K = {0.33: 3, 0.5: 2, 1: 1, 2: 0.5, 3: 0.33}
QNLI, MNLI = 104743, 392702


def test_size_ablation_code_trains_as_paper_code_with_the_released_ablation():
    code, ablation = load_profile("size_ablation_code")[0], load_profile("size_ablation")[0]
    assert code.train == load_profile("paper_code")[0].train.model_copy(update={"sampler": "softmax_gap"})
    assert code.support_choice == "closest_to_mean"
    assert (code.ablation.sizes, code.ablation.references) == ("released", "by_task")
    assert (ablation.ablation.sizes, ablation.ablation.references, ablation.train.sampler) == ("multiply", "per_size", "gap")
    assert code.ablation.model_dump(exclude={"sizes", "references"}) == ablation.ablation.model_dump(
        exclude={"sizes", "references"})


def _sizes(run) -> dict:
    profile, user = load_profile("size_ablation_code")
    from mtlstudy.plan import run_train_sizes

    return run_train_sizes(run, profile, user)


def test_size_ablation_code_plans_one_reference_per_task_whatever_k_or_fraction():
    """155 runs: QNLI and MNLI trained alone on their full sets (the references, 5 seeds each), MNLI
    alone at each (fraction, K) for STILTs (45: one size recurs), and an MTL and a STILTs run per
    fraction, K and seed (100)."""
    runs = _plan("size_ablation_code")
    by_id = {r.run_id: r for r in runs}
    mtl = [r for r in runs if r.kind == "mtl"]
    assert len(runs) == 155 and sum(r.kind == "single" for r in runs) == 55 and len(mtl) == 50
    refs = {tuple(sorted((t, tuple(ids)) for t, ids in r.spec.reference_runs.items())) for r in mtl}
    assert len(refs) == 1
    ref = dict(refs.pop())
    assert {t: {_sizes(by_id[i])[t] for i in ids} for t, ids in ref.items()} == {"qnli": {QNLI}, "mnli": {MNLI}}
    assert all(len(ids) == 5 and set(r.deps) == set(sum(map(list, ref.values()), [])) for ids in ref.values()
               for r in mtl)
    assert {r.spec.train.sampler for r in mtl} == {"softmax_gap"}


def test_size_ablation_code_sizes_the_support_as_the_released_code():
    """Target int(fraction x |QNLI|); support target // d, d the released divisor of the plotted K:
    its K = 3 is 3.03 x the target, K = 1/3 is 1/3."""
    for run in _plan("size_ablation_code"):
        if run.kind != "mtl":
            continue
        k, frac = run.spec.tags["k"], run.spec.tags["target_fraction"]
        n_target = int(frac * QNLI)
        assert _sizes(run) == {"qnli": n_target, "mnli": int(n_target // RELEASED_DIVISOR_OF_K[round(k, 2)])}
    k3 = next(r for r in _plan("size_ablation_code") if r.kind == "mtl" and r.spec.tags == {"k": 3, "target_fraction": 1})
    assert _sizes(k3) == {"qnli": QNLI, "mnli": 317403} and round(317403 / QNLI, 2) == 3.03
    k3 = next(r for r in _plan("size_ablation") if r.kind == "mtl" and r.spec.tags == {"k": 3, "target_fraction": 1})
    assert _sizes(k3) == {"qnli": QNLI, "mnli": 3 * QNLI}


def test_a_support_run_that_is_also_a_reference_keeps_its_checkpoint():
    """MNLI capped at 2,000 beside QNLI at 1,000: the released K = 2 support (1000 // 0.5) is the whole
    capped MNLI, the same run as the reference; STILTs needs its checkpoint, so the plan keeps it."""
    runs = _plan("size_ablation_code", ["train_counts={qnli: 1000, mnli: 2000}", "ablation.ks=[0.5, 2]"])
    by_id = {r.run_id: r for r in runs}
    supports = {d for r in runs if r.kind == "stilts" for d in r.deps}
    refs = {d for r in runs if r.kind == "mtl" for d in r.deps}
    assert supports & refs
    assert all(by_id[d].spec.train.keep_checkpoint == "best" for d in supports)
    assert all(by_id[d].spec.train.keep_checkpoint == "never" for d in refs - supports)


def test_roberta_segments_are_tokenized_without_a_prefix_space(tiny_roberta):
    """As the transformers the released code pins (v2.4.1, whose encode_plus tokenized each segment as
    given); 2.5.0 and later 2.x put a space before each segment when adding special tokens."""
    tok = model_mod.load_tokenizer(str(tiny_roberta))
    first, second = "the doctor bought the car .", "a man is playing ."

    def bare(text):
        return tok(text, add_special_tokens=False)["input_ids"]

    pair = tok([first], [second], truncation=True, max_length=64)["input_ids"][0]
    assert pair == [tok.cls_token_id, *bare(first), tok.sep_token_id, tok.sep_token_id, *bare(second), tok.sep_token_id]
    assert bare(" " + first) != bare(first) and bare(" " + second) != bare(second)
