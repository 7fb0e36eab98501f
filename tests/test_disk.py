"""`mtlstudy plan`'s disk estimate (issue 38, item 7): the peak while a study runs and what is left
at the end, from the encoder's parameter count and the run list."""
from __future__ import annotations

from pathlib import Path

import pytest

from mtlstudy import disk, study
from mtlstudy.disk import Encoder

from tests.profiles import tiny_profile

REPO = Path(__file__).resolve().parents[1]


def test_the_estimate_of_a_hand_worked_study(tmp_path):
    """gen_para and gen_sent (2 labels each), one seed, single + stilts, 1 epoch, 2 evaluations an
    epoch, no notebooks, 2 runs in flight; an encoder of 1,000 parameters, hidden 10.
    A head: 10 x 10 + 10 (dense) + 10 x 2 + 2 (out) = 132. A single run: 1,000 + 132 = 1,132
    parameters; a STILTs run has both tasks' heads: 1,264. A single run keeps its best weights (a
    support): in flight 2 x 1,132 x (4 + 8) [two resume states] + 2 x 1,132 x 4 [best and next best]
    = 27,168 + 9,056 = 36,224 bytes; a STILTs run 2 x 1,264 x 12 = 30,336: the larger counts.
    Supports kept: 2 x 1,132 x 4 = 9,056. Records: 4 runs x (4,000 + 500 x 1 epoch x 2 evaluations x
    1 trained task) = 20,000. Peak: 2 x 36,224 + 9,056 + 20,000 = 101,504; end: 20,000."""
    st = study.open_study(tiny_profile(tmp_path, "unused-model", methods=["single", "stilts"]))
    enc = Encoder(parameters=1000, hidden=10, source="by hand", word_embeddings=200)
    est = disk.estimate(st.runs, enc, st.user, in_flight=2, notebooks=False)
    assert (est.per_run, est.supports, est.support_bytes, est.records) == (36_224, 2, 9_056, 20_000)
    assert (est.peak, est.end, est.in_flight) == (101_504, 20_000, 2)
    # with notebooks: 20,000 bytes more a run, kept to the end
    assert disk.estimate(st.runs, enc, st.user, 2, notebooks=True).end == 20_000 + 4 * 20_000
    # runs not trained here (done, or taken from another study) write their record and nothing else
    singles = {r.run_id for r in st.runs if r.kind == "single"}
    only_stilts = disk.estimate(st.runs, enc, st.user, 2, False, trained_here={r.run_id for r in st.runs} - singles)
    assert (only_stilts.per_run, only_stilts.support_bytes, only_stilts.peak) == (30_336, 0, 2 * 30_336 + 20_000)
    # frozen word embeddings (200 of the 1,000) carry no AdamW state: 2 x (1,132 x 4 + 932 x 8) + 9,056
    frozen = study.open_study(tiny_profile(tmp_path, "unused-model", methods=["single", "stilts"],
                                           **{"train.freeze_word_embeddings": True}))
    assert disk.estimate(frozen.runs, enc, frozen.user, 2, False).per_run == 33_024
    # more runs in flight than runs to train: only those
    assert disk.estimate(st.runs, enc, st.user, in_flight=10, notebooks=False).in_flight == 4


def test_a_resume_state_takes_twelve_bytes_a_parameter(tmp_path, tiny_roberta):
    """The constants against the real thing: a saved resume state of a tiny model (weights and AdamW
    after a step) is 4 + 8 bytes a parameter, give or take the files' headers and the RNG state."""
    import torch

    from mtlstudy.checkpoints import Resume
    from mtlstudy.model import load_model
    from mtlstudy.tasks import get_task

    model = load_model(str(tiny_roberta), [get_task("gen_para")])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    batch = {"input_ids": torch.tensor([[0, 5, 6, 2]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    model(batch, "gen_para").sum().backward()
    optimizer.step()
    folder = tmp_path / "resume"
    Resume(folder).save(model, optimizer, scheduler, {"step": 1})
    saved = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    params = sum(p.numel() for p in model.parameters())
    expected = params * (disk.WEIGHT_BYTES + disk.ADAMW_BYTES)
    assert expected < saved < expected * 1.02 + 30_000, (saved, expected)


def test_the_encoder_size_is_counted_from_its_config_as_loaded(tiny_roberta):
    from transformers import AutoModel

    size = disk.encoder_size(str(tiny_roberta))
    loaded = AutoModel.from_pretrained(tiny_roberta, add_pooling_layer=False)  # as model.load_model loads it
    assert size.parameters == sum(p.numel() for p in loaded.parameters())
    assert size.hidden == loaded.config.hidden_size
    assert size.word_embeddings == loaded.get_input_embeddings().weight.numel()
    assert size.source == "its config"


@pytest.mark.parametrize("name", sorted(disk.KNOWN_PARAMETERS))
def test_the_known_sizes_are_those_of_the_published_configs(name):
    """distilroberta-base and bert-base-uncased as their hub config.json describe them."""
    import torch
    from transformers import AutoModel, BertConfig, RobertaConfig

    config = {"distilroberta-base": RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1,
                                                  num_hidden_layers=6, layer_norm_eps=1e-5, pad_token_id=1),
              "bert-base-uncased": BertConfig(vocab_size=30522)}[name]
    kwargs = {"add_pooling_layer": False} if config.model_type == "roberta" else {}
    with torch.device("meta"):
        encoder = AutoModel.from_config(config, **kwargs)
    assert disk.KNOWN_PARAMETERS[name] == (sum(p.numel() for p in encoder.parameters()), config.hidden_size,
                                           encoder.get_input_embeddings().weight.numel())


def test_plan_paper_prints_a_disk_estimate_and_an_unknown_model_says_it_cannot(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    paper = study.open_study(REPO / "params" / "paper.yaml", [f"output_dir={tmp_path}"])
    line = study.disk_line(paper, study.plan(paper)[0])
    assert line.startswith("disk: at most ") and "45 kept support weights" in line, line
    assert line.endswith("from distilroberta-base's 81,527,808 encoder parameters (the known size of "
                         "distilroberta-base)"), line
    unknown = study.open_study(REPO / "params" / "paper.yaml", [f"output_dir={tmp_path}", "model=nobody/no-model"])
    assert study.disk_line(unknown, study.plan(unknown)[0]).startswith(
        "disk: cannot be estimated: the config of model 'nobody/no-model' is not available here")


def test_size_text():
    assert [disk.size_text(n) for n in (999, 12_345, 2_630_000_000, 1_450_000_000_000)] == \
        ["999 B", "12.3 kB", "2.63 GB", "1.45 TB"]
