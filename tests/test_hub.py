"""The hub path (`data.load_hub`, the default source of the `paper` and `bert` profiles), offline:
`datasets.load_dataset` is replaced by a stand-in that serves the real schema of the hub's GLUE
(nyu-mll/glue): its configs, split names (MNLI's `validation_matched`), field names, label
ClassLabels (ids and names; STS-B a float) and the -1 labels of the test splits.
"""
from __future__ import annotations

import datasets
import pytest

from mtlstudy import data
from mtlstudy.data import DataError, DataSource, load_examples
from mtlstudy.tasks import GLUE_TASKS

# nyu-mll/glue, config -> (text fields, label names or None for STS-B's float score, splits)
SPLITS = ["train", "validation", "test"]
MNLI_SPLITS = ["train", "validation_matched", "validation_mismatched", "test_matched", "test_mismatched"]
HUB_GLUE = {
    "cola": (["sentence"], ["unacceptable", "acceptable"], SPLITS),
    "sst2": (["sentence"], ["negative", "positive"], SPLITS),
    "mrpc": (["sentence1", "sentence2"], ["not_equivalent", "equivalent"], SPLITS),
    "qqp": (["question1", "question2"], ["not_duplicate", "duplicate"], SPLITS),
    "stsb": (["sentence1", "sentence2"], None, SPLITS),
    "mnli": (["premise", "hypothesis"], ["entailment", "neutral", "contradiction"], MNLI_SPLITS),
    "qnli": (["question", "sentence"], ["entailment", "not_entailment"], SPLITS),
    "rte": (["sentence1", "sentence2"], ["entailment", "not_entailment"], SPLITS),
    "wnli": (["sentence1", "sentence2"], ["not_entailment", "entailment"], SPLITS),
}
# What GLUE's own TSV files write for each class id the hub gives (the files' label strings):
# a task's label list must map the hub's ids to the same classes as the files.
TSV_LABEL_OF_HUB_ID = {
    "cola": ["0", "1"], "sst2": ["0", "1"], "mrpc": ["0", "1"], "qqp": ["0", "1"],
    "mnli": ["entailment", "neutral", "contradiction"], "qnli": ["entailment", "not_entailment"],
    "rte": ["entailment", "not_entailment"], "wnli": ["0", "1"],
}
ROWS = 7


def hub_rows(config: str, split: str) -> datasets.Dataset:
    fields, names, _ = HUB_GLUE[config]
    test = split.startswith("test")
    columns = {f: [f"{config} {split} {f} {i}" for i in range(ROWS)] for f in fields}
    features = {f: datasets.Value("string") for f in fields}
    if names is None:
        columns["label"] = [-1.0] * ROWS if test else [i * 5 / (ROWS - 1) for i in range(ROWS)]
        features["label"] = datasets.Value("float32")
    else:
        columns["label"] = [-1] * ROWS if test else [i % len(names) for i in range(ROWS)]
        features["label"] = datasets.ClassLabel(names=names)
    columns["idx"], features["idx"] = list(range(ROWS)), datasets.Value("int32")
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


@pytest.fixture
def hub(monkeypatch):
    """datasets.load_dataset answering for nyu-mll/glue as the hub does; the calls it got."""
    calls = []

    def load_dataset(path, name=None, split=None, **kw):
        calls.append((path, name, split))
        if path != "nyu-mll/glue" or name not in HUB_GLUE:
            raise FileNotFoundError(f"Dataset '{path}' config '{name}' doesn't exist on the Hub")
        if split not in HUB_GLUE[name][2]:
            raise ValueError(f'Unknown split "{split}". Should be one of {HUB_GLUE[name][2]}.')
        return hub_rows(name, split)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


@pytest.mark.parametrize("name", sorted(GLUE_TASKS))
def test_every_glue_task_loads_from_the_hub_schema(hub, name):
    task = GLUE_TASKS[name]
    fields, names, _ = HUB_GLUE[task.hub_config]
    for split in ("train", "dev"):
        ex = load_examples(task, split, DataSource(source="hub"))
        hub_split = "validation_matched" if name == "mnli" and split == "dev" else \
            "validation" if split == "dev" else "train"
        assert hub[-1] == ("nyu-mll/glue", name, hub_split)
        rows = hub_rows(name, hub_split)
        assert len(ex) == ROWS
        assert ex.text_a == rows[fields[0]]
        assert ex.text_b == (rows[fields[1]] if len(fields) == 2 else None)
        if names is None:  # STS-B: the float score as it is
            assert task.is_regression and ex.labels.dtype.kind == "f"
            assert ex.labels.tolist() == pytest.approx(rows["label"])
        else:  # class ids as the hub's, and each id the class the GLUE files call it
            assert task.num_outputs == len(names)
            assert ex.labels.tolist() == rows["label"]
            assert [task.labels[i] for i in range(len(names))] == TSV_LABEL_OF_HUB_ID[name]
            if task.labels != ["0", "1"]:  # named classes: the hub's names, in the hub's order
                assert task.labels == names


@pytest.mark.parametrize("name", sorted(set(GLUE_TASKS) - {"stsb"}))
def test_hub_test_splits_with_label_minus_one_are_refused_naming_the_row(hub, monkeypatch, name):
    task = GLUE_TASKS[name]
    test = "test_matched" if name == "mnli" else "test"
    monkeypatch.setitem(task.hub_splits, "dev", test)
    with pytest.raises(DataError) as e:
        data.load_hub(task, "dev")
    message = str(e.value)
    assert "\n" not in message and f"nyu-mll/glue/{name}[dev] row 0: label id -1 outside" in message


def test_hub_sts_b_test_split_reads_its_placeholder_scores(hub, monkeypatch):
    """STS-B's test labels are -1.0, a valid float: read as they are (the study never reads test)."""
    task = GLUE_TASKS["stsb"]
    monkeypatch.setitem(task.hub_splits, "dev", "test")
    assert data.load_hub(task, "dev").labels.tolist() == [-1.0] * ROWS


def test_hub_schema_mismatches_are_one_line_errors(hub, monkeypatch):
    rte = GLUE_TASKS["rte"]
    monkeypatch.setattr(rte, "hub_text_fields", ["premise", "hypothesis"])
    with pytest.raises(DataError, match=r"task rte: hub dataset nyu-mll/glue has no field 'premise' \(\['sentence1'"):
        data.load_hub(rte, "train")
    mnli = GLUE_TASKS["mnli"]
    monkeypatch.setitem(mnli.hub_splits, "dev", "validation")
    with pytest.raises(DataError, match=r"task mnli: cannot load nyu-mll/glue/mnli split validation from the hub "
                                        r"\(ValueError: Unknown split \"validation\""):
        data.load_hub(mnli, "dev")
