"""Make own_task: which team should answer a customer's message (billing, delivery or account).

A task of our own making, not GLUE: short messages put together from an opener, the problem
(worded in one of several ways, about one of several products), and a closer. About one message in
twelve carries a random label, as real annotations disagree, so no method scores 100 on dev.
Deterministic: the same files on every machine (`python examples/own_task/make_data.py`).
"""
from __future__ import annotations

import random
from pathlib import Path

TRAIN_ROWS, DEV_ROWS, NOISE, SEED = 300, 100, 1 / 12, 0

OPENERS = ["", "hi,", "hello,", "good morning,", "quick question:", "please help:", "dear support,", "sorry to bother you,"]
CLOSERS = ["", "thanks.", "thank you!", "please reply soon.", "this is urgent.", "order {n}.", "regards, {name}."]
NAMES = ["anna", "bilal", "chen", "dana", "emre", "fatima", "george", "hana", "ivan", "julia"]
PRODUCTS = ["the blender", "my headphones", "the desk lamp", "two t-shirts", "the coffee maker", "a phone case",
            "the garden chair", "my new shoes", "the printer ink", "a yoga mat"]
PROBLEMS = {
    "billing": ["I was charged twice for {p}", "the invoice for {p} shows the wrong amount",
                "the refund for {p} has not reached my card", "my card was declined when I paid for {p}",
                "there is a charge for {p} on my statement that I do not recognise",
                "I need a receipt for the payment for {p}", "the discount code did not lower the price of {p}",
                "I paid for {p} but the bank says the payment failed"],
    "delivery": ["{p} has not arrived yet", "the courier left {p} at the wrong address", "{p} came damaged",
                 "can I change the delivery date for {p}", "tracking says {p} was delivered but nothing is here",
                 "the parcel with {p} is stuck in customs", "only half of {p} was in the box",
                 "how long does shipping {p} to spain take"],
    "account": ["I cannot log in to see my order of {p}", "I forgot my password and cannot check {p}",
                "please change the email on my profile, I ordered {p} with the old one",
                "my account was locked after I tried to review {p}", "I want to delete my account after buying {p}",
                "the verification code never arrives, so I cannot track {p}",
                "someone else may have used my login to order {p}",
                "how do I turn on two factor login before I order {p}"],
}
LABELS = sorted(PROBLEMS)


def message(rng: random.Random) -> tuple[str, str]:
    label = rng.choice(LABELS)
    problem = rng.choice(PROBLEMS[label]).format(p=rng.choice(PRODUCTS))
    parts = [rng.choice(OPENERS), problem, rng.choice(CLOSERS).format(n=rng.randrange(10000, 99999),
                                                                       name=rng.choice(NAMES))]
    if rng.random() < NOISE:
        label = rng.choice(LABELS)
    return " ".join(p for p in parts if p), label


def write(path: Path, rows: int, rng: random.Random) -> None:
    lines = ["text\tlabel"] + ["\t".join(message(rng)) for _ in range(rows)]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    rng = random.Random(SEED)
    write(here / "train.tsv", TRAIN_ROWS, rng)
    write(here / "dev.tsv", DEV_ROWS, rng)
    print(f"wrote {here / 'train.tsv'} ({TRAIN_ROWS} rows) and {here / 'dev.tsv'} ({DEV_ROWS} rows)")
