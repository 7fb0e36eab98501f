"""Data loading (real GLUE files, user tasks, generator, hub error path), subsampling, the
tokenization cache and collation."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mtlstudy import data, generated, tasks
from mtlstudy.data import DataError, DataSource, load_examples
from mtlstudy.tasks import Task, TsvFile

# (task, split) -> (official rows, label counts by label name; None for STS-B scores).
# From ../shared/data/glue/PROVENANCE.md.
REAL_FILES = {
    ("cola", "train"): (8551, {"1": 6023, "0": 2528}),
    ("cola", "dev"): (1043, {"1": 721, "0": 322}),
    ("sst2", "train"): (67349, {"1": 37569, "0": 29780}),
    ("sst2", "dev"): (872, {"1": 444, "0": 428}),
    ("mrpc", "train"): (3668, {"1": 2474, "0": 1194}),
    ("mrpc", "dev"): (408, {"1": 279, "0": 129}),
    ("stsb", "train"): (5749, None),
    ("stsb", "dev"): (1500, None),
    ("rte", "train"): (2490, {"entailment": 1249, "not_entailment": 1241}),
    ("rte", "dev"): (277, {"entailment": 146, "not_entailment": 131}),
    ("wnli", "train"): (635, {"0": 323, "1": 312}),
    ("wnli", "dev"): (71, {"0": 40, "1": 31}),
    ("qnli", "dev"): (5463, {"not_entailment": 2761, "entailment": 2702}),
    ("mnli", "dev"): (9815, {"entailment": 3479, "contradiction": 3213, "neutral": 3123}),
}


def _label_counts(task: Task, ex) -> dict | None:
    if task.is_regression:
        return None
    return {task.labels[i]: int(c) for i, c in enumerate(np.bincount(ex.labels, minlength=task.num_outputs))}


@pytest.mark.parametrize("name,split", sorted(REAL_FILES))
def test_real_glue_file_loads_with_official_counts(glue_dir, name, split):
    task = tasks.get_task(name)
    path = glue_dir / task.glue_folder / task.tsv[split].file
    if not path.exists():
        pytest.skip(f"{path} not present")
    ex = load_examples(task, split, DataSource(source="glue_dir", glue_dir=glue_dir))
    rows, counts = REAL_FILES[(name, split)]
    assert len(ex) == rows
    assert (ex.text_b is None) == (not task.is_pair)
    if task.is_pair:
        assert len(ex.text_b) == rows
    if counts is None:
        assert ex.labels.dtype == np.float32 and ex.labels.min() >= 0 and ex.labels.max() <= 5
    else:
        assert ex.labels.dtype == np.int64
        assert {k: v for k, v in _label_counts(task, ex).items() if v} == counts
    assert all(isinstance(t, str) and t for t in ex.text_a[:50])


def test_glue_quirks(glue_dir):
    src = DataSource(source="glue_dir", glue_dir=glue_dir)
    # CoLA has no header: the first row is data (the sentence is column 3)
    cola = load_examples(tasks.get_task("cola"), "train", src)
    first = (glue_dir / "CoLA/train.tsv").read_text().split("\n")[0].split("\t")
    assert cola.text_a[0] == first[3] and cola.labels[0] == int(first[1])
    # MRPC starts with a byte-order mark: the header still matches, the BOM is not in the text
    mrpc_path = glue_dir / "MRPC/train.tsv"
    assert mrpc_path.read_bytes()[:3] == b"\xef\xbb\xbf"
    mrpc = load_examples(tasks.get_task("mrpc"), "train", src)
    assert not mrpc.text_a[0].startswith("\ufeff")
    # MNLI dev is dev_matched.tsv with 16 columns; text from sentence1/sentence2, label gold_label
    mnli_path = glue_dir / "MNLI/dev_matched.tsv"
    header = mnli_path.read_text().split("\n")[0].split("\t")
    assert len(header) == 16 and tasks.get_task("mnli").tsv["dev"].file == "dev_matched.tsv"
    mnli = load_examples(tasks.get_task("mnli"), "dev", src)
    row0 = mnli_path.read_text().split("\n")[1].split("\t")
    assert (mnli.text_a[0], mnli.text_b[0]) == (row0[8], row0[9])


def test_qqp_sample_as_user_task(glue_dir):
    """QQP ships only train_sample.tsv here: a user task pointing at it loads."""
    path = glue_dir / "QQP/train_sample.tsv"
    if not path.exists():
        pytest.skip(f"{path} not present")
    qqp = tasks.get_task("qqp")
    sample = Task(name="qqp_sample", labels=["0", "1"], metric="acc_f1", glue_folder="QQP",
                  tsv={"train": TsvFile(file="train_sample.tsv", text_columns=["question1", "question2"],
                                        label_column="is_duplicate")})
    ex = load_examples(sample, "train", DataSource(source="glue_dir", glue_dir=glue_dir))
    assert len(ex) == 23497
    assert np.bincount(ex.labels).tolist() == [14750, 8747]
    # the registry's QQP reads the same columns; its train.tsv is absent here: a clear error
    with pytest.raises(DataError, match="train.tsv: file not found"):
        load_examples(qqp, "train", DataSource(source="glue_dir", glue_dir=glue_dir))


# ---- bad input -------------------------------------------------------------------------------

def _tsv_task(folder="T", **kw):
    spec = dict(file="train.tsv", text_columns=["sentence1", "sentence2"], label_column="label")
    spec.update(kw)
    return Task(name="mytask", labels=["no", "yes"], metric="accuracy", glue_folder=folder,
                tsv={"train": TsvFile(**spec), "dev": TsvFile(**{**spec, "file": "dev.tsv"})})


def _write(path: Path, lines: list[str]):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def test_wrong_column_count_names_file_and_line(tmp_path):
    _write(tmp_path / "T/train.tsv", ["sentence1\tsentence2\tlabel", "a\tb\tyes", "a\tb", "c\td\tno"])
    with pytest.raises(DataError) as e:
        load_examples(_tsv_task(), "train", DataSource(source="glue_dir", glue_dir=tmp_path))
    msg = _one_line(e)
    assert f"{tmp_path / 'T/train.tsv'}:3:" in msg and "2 columns, expected 3" in msg


def test_label_outside_label_set(tmp_path):
    _write(tmp_path / "T/train.tsv", ["sentence1\tsentence2\tlabel", "a\tb\tyes", "a\tb\tmaybe"])
    with pytest.raises(DataError) as e:
        load_examples(_tsv_task(), "train", DataSource(source="glue_dir", glue_dir=tmp_path))
    msg = _one_line(e)
    assert f"{tmp_path / 'T/train.tsv'}:3:" in msg and "'maybe'" in msg and "mytask" in msg


def test_regression_label_not_a_number(tmp_path):
    _write(tmp_path / "T/train.tsv", ["sentence1\tsentence2\tlabel", "a\tb\t4.5", "a\tb\thigh"])
    task = _tsv_task().model_copy(update={"labels": None, "metric": "spearman"})
    with pytest.raises(DataError) as e:
        load_examples(task, "train", DataSource(source="glue_dir", glue_dir=tmp_path))
    assert f"{tmp_path / 'T/train.tsv'}:3:" in _one_line(e) and "not a number" in str(e.value)


def test_header_lacks_column(tmp_path):
    _write(tmp_path / "T/train.tsv", ["sentence1\tsentence\tlabel", "a\tb\tyes"])
    with pytest.raises(DataError) as e:
        load_examples(_tsv_task(), "train", DataSource(source="glue_dir", glue_dir=tmp_path))
    assert "sentence2" in _one_line(e) and "train.tsv" in str(e.value)


def test_missing_file_and_folder(tmp_path):
    (tmp_path / "T").mkdir()
    with pytest.raises(DataError) as e:
        load_examples(_tsv_task(), "dev", DataSource(source="glue_dir", glue_dir=tmp_path))
    assert f"{tmp_path / 'T/dev.tsv'}: file not found" in _one_line(e)
    with pytest.raises(DataError) as e:
        load_examples(_tsv_task(folder="Nowhere"), "dev", DataSource(source="glue_dir", glue_dir=tmp_path))
    assert f"{tmp_path / 'Nowhere'}" in _one_line(e) and "folder not found" in str(e.value)
    with pytest.raises(DataError) as e:
        load_examples(tasks.get_task("rte"), "dev", DataSource(source="glue_dir", glue_dir=None))
    assert "glue_dir" in _one_line(e) and "rte" in str(e.value)


def test_unknown_task():
    with pytest.raises(tasks.UnknownTaskError) as e:
        tasks.get_task("rtee")
    assert "'rtee'" in _one_line(e) and "rte" in str(e.value)


def test_user_task_yaml_bad_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: mine\nmetric: accuracy\nlabels: [a, b]\ntrain_size: -3\n")
    with pytest.raises(ValueError) as e:
        data.load_task_file(path)
    assert str(path) in _one_line(e) and "'train_size'" in str(e.value)
    path.write_text("name: mine\nmetric: f2\n")
    with pytest.raises(ValueError, match="field 'metric'"):
        data.load_task_file(path)
    path.write_text("name: mine\nmetric: accuracy\ntsv:\n  train: {file: t.tsv, text_columns: [0], label_colum: 1}\n")
    with pytest.raises(ValueError) as e:
        data.load_task_file(path)
    assert "tsv.train" in _one_line(e)
    with pytest.raises(ValueError, match="not found"):
        data.load_task_file(tmp_path / "absent.yaml")


def test_user_task_yaml_with_local_tsv(tmp_path):
    """A user task: YAML naming a folder and TSV files (no header, integer columns for train)."""
    _write(tmp_path / "glue/Mine/train.tsv", ["x1\tgood movie\tpos", "x2\tbad film\tneg", "x3\tfine\tpos"])
    _write(tmp_path / "glue/Mine/dev.tsv", ["text\tlabel", "great\tpos", "awful\tneg"])
    yaml_path = tmp_path / "mine.yaml"
    yaml_path.write_text(
        "name: mine\nlabels: [neg, pos]\nmetric: accuracy\ntrain_size: 3\nglue_folder: Mine\n"
        "tsv:\n"
        "  train: {file: train.tsv, header: false, text_columns: [1], label_column: 2}\n"
        "  dev: {file: dev.tsv, text_columns: [text], label_column: label}\n")
    task = data.load_task_file(yaml_path)
    assert tasks.get_task("mine", {"mine": task}) is task
    # a task without hub_id reads its files even when the source says hub
    src = DataSource(glue_dir=tmp_path / "glue")
    train = load_examples(task, "train", src)
    dev = load_examples(task, "dev", src)
    assert train.text_a == ["good movie", "bad film", "fine"] and train.text_b is None
    assert train.labels.tolist() == [1, 0, 1] and dev.labels.tolist() == [1, 0]


def test_hub_offline_error_names_task(monkeypatch):
    """The real hub path, offline: one line naming the task (no network on these machines)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    with pytest.raises(DataError) as e:
        data.load_hub(tasks.get_task("rte"), "train")
    msg = _one_line(e)
    assert "rte" in msg and "nyu-mll/glue" in msg
    with pytest.raises(DataError, match="no hub_id"):
        data.load_hub(Task(name="nohub", labels=["a", "b"], metric="accuracy"), "train")


# ---- subsampling -----------------------------------------------------------------------------

def test_subsample_sizes_seeds_nesting():
    n = 1000
    for count in (1, 10, 333, 1000):
        idx = data.subsample_indices(n, seed=3, count=count)
        assert len(idx) == count == len(set(idx.tolist())) and idx.min() >= 0 and idx.max() < n
        assert np.all(np.diff(idx) > 0)
    assert len(data.subsample_indices(n, 3, fraction=0.25)) == 250
    assert np.array_equal(data.subsample_indices(n, 3), np.arange(n))  # nothing asked: everything
    assert np.array_equal(data.subsample_indices(n, 3, count=100), data.subsample_indices(n, 3, count=100))
    assert not np.array_equal(data.subsample_indices(n, 3, count=100), data.subsample_indices(n, 4, count=100))
    small, large = data.subsample_indices(n, 5, count=100), data.subsample_indices(n, 5, fraction=0.5)
    assert set(small.tolist()) <= set(large.tolist())


@pytest.mark.parametrize("kw,message", [(dict(fraction=0.0), r"fraction must be in \(0, 1\], got 0.0"),
                                        (dict(fraction=1.5), r"fraction must be in \(0, 1\], got 1.5"),
                                        (dict(fraction=-0.2), r"fraction must be in \(0, 1\], got -0.2"),
                                        (dict(count=0), r"subsample of 1000 examples is empty \(count 0\)"),
                                        (dict(fraction=0.0004), "subsample at fraction 0.0004 is empty")])
def test_subsample_bad_requests(kw, message):
    with pytest.raises(ValueError, match=message):
        data.subsample_indices(1000, 0, **kw)


def test_count_caps_then_fraction_one_rule_for_planner_and_loader():
    """A capped ablation target at a fraction: the cap first, then the fraction of the capped set
    (before, the loader ignored the cap when a fraction was given and trained on more than planned)."""
    assert data.subsample_size(1000, count=200, fraction=0.5) == 100
    assert len(data.subsample_indices(1000, 0, count=200, fraction=0.5)) == 100
    assert set(data.subsample_indices(1000, 0, count=200, fraction=0.5)) <= set(data.subsample_indices(1000, 0, count=200))
    assert len(data.subsample_indices(1000, 0, count=1001)) == 1000  # a cap above the size keeps everything


# ---- tokenization cache and collation --------------------------------------------------------

@pytest.fixture(scope="module")
def roberta_tok(tiny_roberta):
    from mtlstudy.model import load_tokenizer

    return load_tokenizer(str(tiny_roberta))


def _gen_examples(task="gen_para", size=40, seed=0):
    a, b, y = generated.generate(task, "train", size, seed)
    t = tasks.get_task(task)
    return data.Examples(a, b, data._labels_to_array(t, y, str))


def test_tokenize_cache_reused(roberta_tok, tmp_path, monkeypatch):
    ex = _gen_examples()
    expected = roberta_tok(ex.text_a, ex.text_b, truncation=True, max_length=32)["input_ids"]
    calls = []
    cls = type(roberta_tok)
    original = cls.__call__

    def counting(self, *a, **k):
        calls.append(1)
        return original(self, *a, **k)

    monkeypatch.setattr(cls, "__call__", counting)
    first = data.tokenize(roberta_tok, ex, 32, tmp_path)
    second = data.tokenize(roberta_tok, ex, 32, tmp_path)
    assert len(calls) == 1
    for name in ("input_ids", "offsets", "labels"):
        assert np.array_equal(getattr(first, name), getattr(second, name))
    assert len(first) == 40 and first.lengths().max() <= 32
    assert [first.input_ids[first.offsets[i]:first.offsets[i + 1]].tolist() for i in range(40)] == expected
    # another max length or other content is another cache entry
    data.tokenize(roberta_tok, ex, 16, tmp_path)
    data.tokenize(roberta_tok, _gen_examples(seed=1), 32, tmp_path)
    assert len(calls) == 3
    assert len([p for p in tmp_path.iterdir() if not p.name.startswith(".")]) == 3


def test_tokenize_default_cache_is_session_dir(roberta_tok):
    import os

    data.tokenize(roberta_tok, _gen_examples(size=5), 16)
    assert str(data.default_cache_dir()).startswith(os.environ["MTLSTUDY_CACHE"])
    assert any(data.default_cache_dir().iterdir())


def test_subset_and_collate_pad_to_longest(roberta_tok, tmp_path):
    tok = data.tokenize(roberta_tok, _gen_examples("gen_sent", 30), 64, tmp_path)
    lengths = tok.lengths()
    idx = np.array([3, 0, 7, 12])
    batch = data.collate(tok, idx, pad_id=roberta_tok.pad_token_id)
    width = int(lengths[idx].max())
    assert batch["input_ids"].shape == (4, width) and batch["attention_mask"].shape == (4, width)
    assert batch["attention_mask"].sum(1).tolist() == lengths[idx].tolist()
    for row, i in enumerate(idx):
        n = lengths[i]
        assert batch["input_ids"][row, :n].tolist() == tok.input_ids[tok.offsets[i]:tok.offsets[i + 1]].tolist()
        assert torch.all(batch["input_ids"][row, n:] == roberta_tok.pad_token_id)
    assert batch["labels"].tolist() == tok.labels[idx].tolist()
    assert "token_type_ids" not in batch  # RoBERTa's tokenizer gives none
    assert data.collate(tok, idx, 1, pad_to_multiple_of=8)["input_ids"].shape[1] % 8 == 0
    sub = tok.subset(idx)
    assert len(sub) == 4 and torch.equal(data.collate(sub, np.arange(4), 1)["input_ids"], batch["input_ids"])


def test_collate_token_type_ids(tiny_bert, tmp_path):
    from mtlstudy.model import load_tokenizer

    bert_tok = load_tokenizer(str(tiny_bert))
    tok = data.tokenize(bert_tok, _gen_examples("gen_nli", 10), 64, tmp_path)
    batch = data.collate(tok, np.arange(10), bert_tok.pad_token_id)
    assert batch["token_type_ids"].shape == batch["input_ids"].shape
    assert batch["token_type_ids"].max() == 1  # the second sentence


# ---- the generated suite ---------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(tasks.GENERATED_TASKS))
def test_generated_tasks(name):
    task = tasks.get_task(name)
    a1, b1, y1 = generated.generate(name, "train", 500, seed=0)
    a2, b2, y2 = generated.generate(name, "train", 500, seed=0)
    assert (a1, b1, y1) == (a2, b2, y2)
    a3, _, y3 = generated.generate(name, "train", 500, seed=1)
    assert a3 != a1
    ad, _, _ = generated.generate(name, "dev", 500, seed=0)
    assert ad != a1  # dev is not train
    assert generated.generate(name, "train", 1, seed=0)[0] == a1[:1]  # any size, a prefix of longer
    assert len(generated.generate(name, "train", 3001, seed=0)[0]) == 3001
    assert (b1 is not None) == task.is_pair
    if task.is_regression:
        assert set(y1) <= {0.0, 1.25, 2.5, 3.75, 5.0} and len(set(y1)) == 5
    else:
        assert set(y1) == set(range(task.num_outputs))  # every declared label occurs
    ex = load_examples(task, "train", DataSource(generated_sizes={name: 77}, generated_seed=2))
    assert len(ex) == 77 and len(load_examples(task, "dev", DataSource(generated_dev_size=12))) == 12
    with pytest.raises(ValueError, match=f"generated task '{name}': size must be positive, got 0"):
        generated.generate(name, "train", 0)


def _canonical(sentence: str) -> list[str]:
    """A generated sentence's words with every synonym mapped to the first word of its pair."""
    first = {}
    for pairs in (generated.ADJECTIVES, generated.SUBJECTS, generated.OBJECTS):
        first.update({w: p[0] for p in pairs for w in p})
    first.update({syn: verb for verb, syn in generated.VERB_SYNONYMS.items()})
    return [first.get(w, w) for w in sentence.split()]


def test_gen_para_labels_say_what_changed():
    """gen_para: 1 = the same sentence up to synonyms; 0 = the verb's antonym or another object
    (gen_nli's contradiction and neutral), never another adjective or subject; both kinds occur."""
    antonyms = {a: b for a, b in generated.VERBS}
    a, b, y = generated.generate("gen_para", "train", 400, seed=0)
    kinds = set()
    for premise, hypothesis, label in zip(a, b, y):
        p, h = _canonical(premise), _canonical(hypothesis)
        assert len(p) == len(h) == 7, (premise, hypothesis)  # the ADJ SUBJ VERB the OBJ .
        changed = [i for i in range(7) if p[i] != h[i]]
        if label == 1:
            assert changed == [], (premise, hypothesis)
        else:
            assert changed in ([3], [5]), (premise, hypothesis)
            if changed == [3]:
                assert h[3] == antonyms[p[3]]
            kinds.add(changed[0])
    assert kinds == {3, 5} and 150 < sum(y) < 250


def test_gen_sent_label_is_the_verbs_direction():
    """gen_sent: 1 = the verb is the first of its pair (a synonym allowed), 0 = its antonym."""
    first = {v for v, _ in generated.VERBS} | set(generated.VERB_SYNONYMS.values())
    second = {a for _, a in generated.VERBS}
    a, b, y = generated.generate("gen_sent", "train", 300, seed=0)
    assert b is None
    for sentence, label in zip(a, y):
        verb = sentence.split()[-4]  # ... VERB the OBJ .
        assert verb in (first if label == 1 else second), (sentence, label)
    assert 100 < sum(y) < 200
