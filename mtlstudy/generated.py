"""A small GLUE-shaped suite made by code: deterministic from a seed, any size on demand.

Not GLUE. Every sentence fills four slots (adjective, subject, verb, object) from small word
lists, with synonyms. The pair tasks all ask the same underlying question, "which slots of the
second sentence match the first (up to synonyms)?", so they share structure and transfer between
them is measurable; the single-sentence task asks something else: which way the verb goes.

- gen_nli  (3 labels): entailment = same slots, synonyms allowed, adjective may be dropped;
                        contradiction = verb replaced by its antonym; neutral = other object.
- gen_para (2 labels): 1 = paraphrase (synonyms only); 0 = says something else: the verb's
                        antonym or a different object (gen_nli's contradiction and neutral).
- gen_sim  (regression 0-5): 5 x the fraction of the four slots that match.
- gen_sent (2 labels, single sentence): 1 if the verb is the first of its pair (bought, opened,
                        found...), 0 if it is the antonym (sold, closed, lost...). It used to be
                        the adjective's sentiment, which gen_nli teaches a model to ignore (its
                        entailments drop the adjective): STILTs gen_nli -> gen_sent then stayed
                        at the one-class level in 2 of 3 seeds.
"""
from __future__ import annotations

import zlib

import numpy as np

POSITIVE = [("happy", "cheerful"), ("kind", "gentle"), ("brave", "bold"), ("clever", "smart"),
            ("calm", "peaceful"), ("friendly", "warm")]
NEGATIVE = [("angry", "furious"), ("cruel", "mean"), ("lazy", "idle"), ("rude", "impolite"),
            ("sad", "unhappy"), ("nervous", "anxious")]
SUBJECTS = [("doctor", "physician"), ("child", "kid"), ("teacher", "instructor"),
            ("farmer", "grower"), ("soldier", "fighter"), ("lawyer", "attorney"),
            ("student", "pupil"), ("chef", "cook")]
VERBS = [("bought", "sold"), ("opened", "closed"), ("found", "lost"), ("liked", "hated"),
         ("built", "destroyed"), ("accepted", "refused"), ("carried", "dropped"),
         ("started", "stopped")]
VERB_SYNONYMS = {"bought": "purchased", "opened": "unlocked", "found": "discovered",
                 "liked": "enjoyed", "built": "constructed", "accepted": "took",
                 "carried": "held", "started": "began"}
OBJECTS = [("car", "automobile"), ("house", "home"), ("book", "novel"), ("boat", "ship"),
           ("shop", "store"), ("gift", "present"), ("road", "street"), ("door", "gate")]
ADJECTIVES = POSITIVE + NEGATIVE


def _rng(seed: int, task: str, split: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(task.encode()), zlib.crc32(split.encode())])


def _slots(rng):
    return [int(rng.integers(len(ADJECTIVES))), int(rng.integers(len(SUBJECTS))),
            int(rng.integers(len(VERBS))), int(rng.integers(len(OBJECTS)))]


def _say(slots, rng, synonyms=False, drop_adjective=False, antonym=False):
    a, s, v, o = slots

    def word(pair):
        return pair[1] if synonyms and rng.random() < 0.5 else pair[0]

    verb = VERBS[v][1] if antonym else (
        VERB_SYNONYMS[VERBS[v][0]] if synonyms and rng.random() < 0.5 else VERBS[v][0])
    adjective = "" if drop_adjective else word(ADJECTIVES[a]) + " "
    return f"the {adjective}{word(SUBJECTS[s])} {verb} the {word(OBJECTS[o])} ."


def _other(rng, n, current):
    return int((current + rng.integers(1, n)) % n)


def _nli(rng):
    slots = _slots(rng)
    label = int(rng.integers(3))
    if label == 0:
        hyp = _say(slots, rng, synonyms=True, drop_adjective=rng.random() < 0.5)
    elif label == 1:
        changed = list(slots)
        changed[3] = _other(rng, len(OBJECTS), slots[3])
        hyp = _say(changed, rng, synonyms=True)
    else:
        hyp = _say(slots, rng, synonyms=True, antonym=True)
    return _say(slots, rng), hyp, label


def _para(rng):
    slots = _slots(rng)
    label = int(rng.integers(2))
    if label == 1:
        return _say(slots, rng), _say(slots, rng, synonyms=True), label
    if rng.random() < 0.5:
        return _say(slots, rng), _say(slots, rng, synonyms=True, antonym=True), label
    changed = list(slots)
    changed[3] = _other(rng, len(OBJECTS), slots[3])
    return _say(slots, rng), _say(changed, rng, synonyms=True), label


def _sim(rng):
    slots = _slots(rng)
    n_changed = int(rng.integers(5))
    changed = list(slots)
    sizes = [len(ADJECTIVES), len(SUBJECTS), len(VERBS), len(OBJECTS)]
    for k in rng.permutation(4)[:n_changed]:
        changed[k] = _other(rng, sizes[k], slots[k])
    return _say(slots, rng), _say(changed, rng, synonyms=True), 5.0 * (4 - n_changed) / 4


def _sent(rng):
    slots = _slots(rng)
    label = int(rng.integers(2))
    return _say(slots, rng, synonyms=True, antonym=label == 0), None, label


_MAKERS = {"gen_nli": _nli, "gen_para": _para, "gen_sim": _sim, "gen_sent": _sent}


def generate(task: str, split: str, size: int, seed: int = 0):
    """(text_a, text_b or None, labels) for `size` examples of a generated task."""
    if task not in _MAKERS:
        raise ValueError(f"unknown generated task '{task}'; known: {', '.join(_MAKERS)}")
    if size <= 0:
        raise ValueError(f"generated task '{task}': size must be positive, got {size}")
    rng = _rng(seed, task, split)
    rows = [_MAKERS[task](rng) for _ in range(size)]
    text_a = [r[0] for r in rows]
    text_b = None if rows[0][1] is None else [r[1] for r in rows]
    return text_a, text_b, [r[2] for r in rows]
