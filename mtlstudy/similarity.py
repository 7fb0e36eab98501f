"""Text similarity of two tasks: the cosine of their mean text embeddings, a seeded sample of each
task's training texts (256 by default) through the encoder (the offline MiniLM by default),
mean-pooled over the attention mask and averaged per task (Vu et al. 2020's TextEmb; Poth et al.
2021's SEmb); cached per task on disk. Computed in minutes on a CPU without training.

And their domain's closeness as Gururangan et al. (2020) measure it: the overlap of the two tasks'
most frequent words (English stop words left out), from the same sample of texts."""
from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .data import DataSource, default_cache_dir, load_examples, reads_files, subsample_indices
from .spec import OFFLINE_MINILM
from .tasks import Task

DEFAULT_SAMPLE = 256
DEFAULT_MODEL = OFFLINE_MINILM  # the offline encoder (spec.py)
VOCABULARY_TOP = 1000  # words per task for the vocabulary overlap


def cosine(a, b) -> float:
    """Cosine similarity of two vectors."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def mean_pool(last_hidden, attention_mask):
    """Attention-mask-weighted mean of the last hidden state: (batch, seq, dim) -> (batch, dim)."""
    mask = attention_mask.unsqueeze(-1).to(last_hidden.dtype)
    return (last_hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def sample_texts(task: Task, source: DataSource, sample: int = DEFAULT_SAMPLE, seed: int = 0):
    """A seeded sample of a task's training texts: (text_a, text_b or None)."""
    ex = load_examples(task, "train", source)
    idx = subsample_indices(len(ex), seed, count=min(sample, len(ex)))
    return [ex.text_a[i] for i in idx], (None if ex.text_b is None else [ex.text_b[i] for i in idx])


def texts_here(task: Task, source: DataSource) -> tuple[Task, str]:
    """The task with its training texts from what its folder under source.glue_dir holds: its train
    file, else train_sample.tsv (QQP in ../shared/data/glue), else its dev file (QNLI there); with a
    note naming the file used in place of the train file ('' when none is)."""
    if not reads_files(task, source) or Path(task.tsv["train"].file).is_absolute() or source.glue_dir is None:
        return task, ""
    folder = Path(source.glue_dir) / (task.glue_folder or task.name)
    train = task.tsv["train"]
    if (folder / train.file).is_file() or not folder.is_dir():
        return task, ""
    train = (train.model_copy(update={"file": "train_sample.tsv"}) if (folder / "train_sample.tsv").is_file()
             else task.tsv["dev"])
    note = f"{task.name}: texts from {folder / train.file} ({task.tsv['train'].file} is not there)"
    return task.model_copy(update={"tsv": {**task.tsv, "train": train}}), note


def embedding_cache_dir() -> Path:
    """Beside the token cache: $MTLSTUDY_CACHE/task_embeddings (default ~/.cache/mtlstudy/...)."""
    return default_cache_dir().parent / "task_embeddings"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[-60:]


@functools.lru_cache(maxsize=2)
def _encoder(model: str):
    """(tokenizer, encoder in eval mode), loaded once per process."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    from .model import ModelLoadError, _load_message, load_tokenizer, resolve_model

    tok = load_tokenizer(model)
    hf_logging.disable_progress_bar()  # "Loading weights" bars on stderr
    try:
        return tok, AutoModel.from_pretrained(resolve_model(model)).eval()
    except Exception as e:
        raise ModelLoadError(_load_message(model, e)) from None
    finally:
        hf_logging.enable_progress_bar()


def task_embedding(task: Task, source: DataSource | None = None, model: str = DEFAULT_MODEL,
                   sample: int = DEFAULT_SAMPLE, seed: int = 0, max_length: int = 128,
                   cache_dir: Path | None = None, batch_size: int = 32) -> np.ndarray:
    """Mean of the mean-pooled embeddings of a seeded sample of the task's training texts.

    Cached as <cache_dir>/<task>-<model>-<sample>-<hash of the texts>.npy: a second call loads
    the texts (to check they are the same) and the vector, and runs no encoder.
    """
    source = source or DataSource()
    a, b = sample_texts(task, source, sample, seed)
    h = hashlib.sha256(json.dumps([model, max_length, a, b]).encode()).hexdigest()[:10]
    cache_dir = Path(cache_dir or embedding_cache_dir())
    path = cache_dir / f"{_safe(task.name)}-{_safe(model)}-{len(a)}-{h}.npy"
    if path.is_file():
        return np.load(path)
    import torch

    tok, enc_model = _encoder(model)
    pooled = []
    with torch.inference_mode():
        for i in range(0, len(a), batch_size):
            enc = tok(a[i:i + batch_size], None if b is None else b[i:i + batch_size], truncation=True,
                      max_length=max_length, padding=True, return_tensors="pt")
            out = enc_model(**enc).last_hidden_state
            pooled.append(mean_pool(out, enc["attention_mask"]).float().numpy())
    vec = np.concatenate(pooled).mean(0)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")  # then renamed: readers never see half a file
    np.save(tmp, vec)
    tmp.replace(path)
    return vec


def similarities(target: Task, candidates: list[Task], source: DataSource | None = None,
                 **kw) -> dict[str, float]:
    """Cosine similarity of the target's mean embedding to each candidate's."""
    t = task_embedding(target, source, **kw)
    return {c.name: cosine(t, task_embedding(c, source, **kw)) for c in candidates}


def vocabulary(task: Task, source: DataSource | None = None, sample: int = DEFAULT_SAMPLE, seed: int = 0,
               top: int = VOCABULARY_TOP) -> set[str]:
    """The `top` most frequent lower-cased words of a seeded sample of the task's training texts
    (both texts of a pair), English stop words left out (scikit-learn's list and tokenizer)."""
    from sklearn.feature_extraction.text import CountVectorizer

    a, b = sample_texts(task, source or DataSource(), sample, seed)
    counter = CountVectorizer(stop_words="english")
    counts = np.asarray(counter.fit_transform(a + (b or [])).sum(axis=0)).ravel()
    words = counter.get_feature_names_out()
    return set(words[np.argsort(-counts, kind="stable")[:top]])  # ties: alphabetical, stable


def overlap(a: set, b: set) -> float:
    """Shared words over the smaller vocabulary's size: 1 when one holds the other."""
    return len(a & b) / min(len(a), len(b))
