"""A tiny finished study folder with known answers, for the analysis and report tests.

Three tasks: big (10,000), mid (1,000), small (100); seeds 1, 2, 3. Per cell the STILTs scores
are base[target] + (0.5, -0.5, 0) and the MTL scores base[target] + EFFECTS[cell] + (-1, 1, 0),
so mean MTL - mean STILTs = EFFECTS[cell] exactly. The heuristic is wrong on (mid, big) only;
(big, small) has no difference. Size ablation: target mid, support big, at target fractions 1.0
(curves cross at K = 1.5) and 0.5 (MTL always 1 point better: no crossing).
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

SIZES = {"big": 10000, "mid": 1000, "small": 100}
SEEDS = [1, 2, 3]
BASE = {"big": 80.0, "mid": 70.0, "small": 60.0}
EFFECTS = {("big", "mid"): -3.0, ("big", "small"): 0.0, ("mid", "big"): -3.0,
           ("mid", "small"): -2.0, ("small", "big"): 4.0, ("small", "mid"): 3.0}
STILTS_NOISE = [0.5, -0.5, 0.0]
MTL_NOISE = [-1.0, 1.0, 0.0]
KS = [1 / 3, 1 / 2, 1.0, 2.0, 3.0]
MTL_ALL = {"size": -5.0, "uniform": -8.0, "gap": -6.0}  # sampler names as profiles spell them


def _history(scores: dict[str, float], probs: bool) -> list[dict]:
    """Four half-epoch evaluations climbing to `scores` at the third, then dipping."""
    out = []
    for i, frac in enumerate([0.8, 0.95, 1.0, 0.98]):
        h = {"step": 10 * (i + 1), "epoch": 0.5 * (i + 1), "examples_seen": 1280 * (i + 1),
             "train_loss": 1.0 / (i + 1), "lr": 2e-5 * (1 - i / 4),
             "scores": {t: s * frac for t, s in scores.items()},
             "metrics": {t: {"main": s * frac} for t, s in scores.items()}}
        if probs:
            n = len(scores)
            h["sampler_probs"] = {t: (1 + (j - (n - 1) / 2) * 0.1 * i) / n for j, t in enumerate(scores)}
        out.append(h)
    return out


def _write_run(root: Path, run_id: str, method: str, scores: dict[str, float], seed: int):
    d = root / "runs" / run_id
    d.mkdir(parents=True, exist_ok=True)
    result = {"run_id": run_id, "method": method, "tasks": list(scores), "seed": seed,
              "status": "done", "history": _history(scores, method in ("mtl", "mtl_all")),
              "best": {t: {"step": 30, "score": s} for t, s in scores.items()}}
    (d / "result.json").write_text(json.dumps(result))


def make_study(root: Path, name: str = "fake", ablation: bool = True, mtl_all: bool = True,
               paper: bool = False, study_json: bool = True, flip=(), model: str = "distilroberta-base") -> Path:
    """Write a finished study into root/name and return its folder. `flip`: cells whose effect
    is negated (to make a second study that disagrees)."""
    study = Path(root) / name
    rows = []

    def row(run_id, method, target, support, seed, score, sampler="", frac=1.0, k=float("nan"),
            t_size=None, s_size=float("nan")):
        rows.append(dict(run_id=run_id, method=method, target=target, support=support, seed=seed,
                         score=score, best_step=30, best_epoch=1.5, sampler=sampler, target_fraction=frac, k=k,
                         target_train_size=t_size or SIZES[target], support_train_size=s_size,
                         model=model, study=name))

    for i, seed in enumerate(SEEDS):
        for t in SIZES:
            score = BASE[t] + STILTS_NOISE[i]
            row(f"single-{t}-s{seed}", "single", t, "", seed, score)
            _write_run(study, f"single-{t}-s{seed}", "single", {t: score}, seed)
        for (t, s), effect in EFFECTS.items():
            score = BASE[t] + STILTS_NOISE[i]
            rid = f"stilts-{s}-{t}-s{seed}"
            row(rid, "stilts", t, s, seed, score, s_size=SIZES[s])
            _write_run(study, rid, "stilts", {t: score}, seed)
        for a, b in [("big", "mid"), ("big", "small"), ("mid", "small")]:
            rid = f"mtl-{a}-{b}-s{seed}"
            scores = {}
            for t, s in [(a, b), (b, a)]:
                effect = -EFFECTS[t, s] if (t, s) in flip else EFFECTS[t, s]
                scores[t] = BASE[t] + effect + MTL_NOISE[i]
                row(rid, "mtl", t, s, seed, scores[t], sampler="gap", s_size=SIZES[s])
            _write_run(study, rid, "mtl", scores, seed)
        if mtl_all:
            for sampler, drop in MTL_ALL.items():
                rid = f"mtl_all-{sampler}-s{seed}"
                scores = {t: BASE[t] + drop + STILTS_NOISE[i] for t in SIZES}
                for t, score in scores.items():
                    row(rid, "mtl_all", t, "", seed, score, sampler=sampler)
                _write_run(study, rid, "mtl_all", scores, seed)
        if ablation:
            for frac in (1.0, 0.5):
                t_size = int(SIZES["mid"] * frac)
                for k in KS:
                    s_size = round(k * t_size)
                    d = (k - 1.5) if frac == 1.0 else 1.0
                    for method, score in (("stilts", 70 * frac + STILTS_NOISE[i]),
                                          ("mtl", 70 * frac + d + MTL_NOISE[i])):
                        rid = f"abl-{method}-{frac}-{k:.3f}-s{seed}"
                        row(rid, method, "mid", "big", seed, score,
                            sampler="gap" if method == "mtl" else "", frac=frac, k=k,
                            t_size=t_size, s_size=s_size)
                        _write_run(study, rid, method, {"mid": score}, seed)
    study.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(study / "results.csv", index=False)
    if study_json:
        info = {"name": name, "profile": "paper" if paper else "fake", "task_sizes": SIZES, "paper": paper}
        (study / "study.json").write_text(json.dumps(info))
    return study
