"""The disk a study needs, before it starts: the peak while it runs and what is left at the end,
from the encoder's parameter count (its config, no weights downloaded) and the run list.

What a study writes (folder.py): per run in flight, a resume state (the weights, fp32, and
AdamW's two moments per parameter, fp32: 12 bytes a parameter), which a save writes beside the
previous one before it replaces it (so twice that for a moment), and for a STILTs support its best
weights with the next best waiting beside them (twice 4 bytes a parameter); every support's kept
best weights (4 bytes a parameter) until the STILTs runs that start from them are done; each run's
record, log and (with `notebooks`) executed notebook, which stay. A finished study keeps only
those: no resume states, no support weights. The estimate is an upper bound: every run in flight
counts as large as the largest run, every support as kept at once, every head with a dense layer.
"""
from __future__ import annotations

from dataclasses import dataclass

from .plan import PlannedRun
from .profile import Profile
from .tasks import get_task

WEIGHT_BYTES = 4           # a parameter in fp32, as the weights are saved
ADAMW_BYTES = 2 * 4        # AdamW's two moments (exp_avg, exp_avg_sq) per parameter, fp32
RECORD_BYTES = 4_000       # a run's record and log without its history (the demo's: 2.6 to 3.7 kB, log 0.2 kB)
EVAL_BYTES = 500           # the record's history per evaluation and trained task (the demo's: at most 460 B)
NOTEBOOK_BYTES = 20_000    # an executed run notebook (the demo's: 16.5 kB on average)

# Parameter counts of the hub encoders the shipped profiles name (AutoModel.from_config on the meta
# device, without the pooler a RoBERTa-type encoder loads without), for a plan made without their config
# at hand; tests/test_disk.py counts them again from their published configs.
# (parameters, hidden size, word embeddings' parameters)
KNOWN_PARAMETERS = {"distilroberta-base": (81_527_808, 768, 50265 * 768),
                    "bert-base-uncased": (109_482_240, 768, 30522 * 768)}


@dataclass
class Encoder:
    """The encoder's size as the estimate needs it; `source` says where the numbers come from."""
    parameters: int
    hidden: int
    source: str
    word_embeddings: int = 0  # of `parameters`: not trained with train.freeze_word_embeddings (no AdamW state)


def head_parameters(hidden: int, outputs: int) -> int:
    """One task head at its largest: a dense layer (hidden x hidden + bias) and the output layer."""
    return hidden * hidden + hidden + hidden * outputs + outputs


def run_parameters(run: PlannedRun, encoder: Encoder, user) -> int:
    """The encoder and a head for each task of the run."""
    return encoder.parameters + sum(head_parameters(encoder.hidden, get_task(t, user).num_outputs)
                                    for t in run.spec.tasks)


def record_bytes(run: PlannedRun, notebooks: bool) -> int:
    """A finished run's record, log and (with notebooks) executed notebook."""
    cfg = run.spec.train
    evaluations = cfg.epochs * cfg.evals_per_epoch * len(run.spec.trained_tasks)
    return RECORD_BYTES + EVAL_BYTES * evaluations + (NOTEBOOK_BYTES if notebooks else 0)


def keeps_weights(run: PlannedRun) -> bool:
    return run.spec.train.keep_checkpoint == "best"


@dataclass
class DiskEstimate:
    peak: int            # bytes, at most
    end: int             # bytes left once every run is done
    in_flight: int       # runs training at once
    per_run: int         # bytes of the largest run in flight: resume states and best weights
    supports: int        # support runs whose best weights are kept
    support_bytes: int   # their weights, all kept at once
    records: int         # bytes of every run's record, log and notebook
    encoder: Encoder


def estimate(runs: list[PlannedRun], encoder: Encoder, user, in_flight: int, notebooks: bool,
             trained_here: set[str] | None = None) -> DiskEstimate:
    """Peak and end of a run list with `in_flight` runs training at once. Only the runs of
    `trained_here` (all, when None) train: a run done already or taken from another study writes
    its record and nothing else."""
    training = [r for r in runs if trained_here is None or r.run_id in trained_here]

    def state(r):  # a run in flight: two resume states during a save, a support's best and next best
        p = run_parameters(r, encoder, user)
        trained = p - (encoder.word_embeddings if r.spec.train.freeze_word_embeddings else 0)
        return 2 * (p * WEIGHT_BYTES + trained * ADAMW_BYTES) + (2 * p * WEIGHT_BYTES if keeps_weights(r) else 0)

    per_run = max((state(r) for r in training), default=0)
    supports = [r for r in training if keeps_weights(r)]
    support_bytes = sum(run_parameters(r, encoder, user) * WEIGHT_BYTES for r in supports)
    records = sum(record_bytes(r, notebooks) for r in runs)
    in_flight = min(in_flight, len(training))
    return DiskEstimate(peak=in_flight * per_run + support_bytes + records, end=records, in_flight=in_flight,
                        per_run=per_run, supports=len(supports), support_bytes=support_bytes, records=records,
                        encoder=encoder)


class UnknownSize(Exception):
    """The encoder's parameter count cannot be known here (its config is not available)."""


def encoder_size(model: str) -> Encoder:
    """The encoder's parameter count and hidden size from its config (a local folder, the Hugging
    Face cache, or the hub: the config alone, never the weights), on the meta device (no memory);
    for a hub encoder a shipped profile names, its known count when the config is not at hand."""
    import torch
    from transformers import AutoConfig, AutoModel

    from .model import _NO_POOLER_TYPES, resolve_model

    path = resolve_model(model)
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        source = "its config"
    except Exception:  # noqa: BLE001 - not on this machine: the known count, else the hub
        if model in KNOWN_PARAMETERS:
            parameters, hidden, word_embeddings = KNOWN_PARAMETERS[model]
            return Encoder(parameters, hidden, f"the known size of {model}", word_embeddings)
        try:
            config = AutoConfig.from_pretrained(path)
            source = "its config (from the hub)"
        except Exception as e:  # noqa: BLE001 - offline, a typo, a private model: say so
            raise UnknownSize(f"the config of model '{model}' is not available here "
                              f"({type(e).__name__})") from None
    kwargs = {"add_pooling_layer": False} if config.model_type in _NO_POOLER_TYPES else {}
    with torch.device("meta"):
        encoder = AutoModel.from_config(config, **kwargs)
    return Encoder(sum(p.numel() for p in encoder.parameters()), config.hidden_size, source,
                   encoder.get_input_embeddings().weight.numel())


def size_text(n: int) -> str:
    """Bytes in decimal units, three significant figures: 1.23 GB, 456 MB, 12.0 kB."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


def summary_line(est: DiskEstimate, model: str, in_flight_why: str = "") -> str:
    """The plan's disk line."""
    why = f" ({in_flight_why})" if in_flight_why else ""
    return (f"disk: at most {size_text(est.peak)} at the peak: {est.in_flight} run(s) in flight{why} x "
            f"{size_text(est.per_run)} (resume states, best weights), {est.supports} kept support weights "
            f"{size_text(est.support_bytes)}, records and notebooks {size_text(est.records)}; "
            f"{size_text(est.end)} left at the end; from {model}'s {est.encoder.parameters:,} encoder "
            f"parameters ({est.encoder.source})")


def profile_in_flight(profile: Profile, runs: list[PlannedRun]) -> tuple[int, str]:
    """Runs training at once and why: on Slurm, the largest dependency wave (every job of a wave
    may run together); locally, the run slots of this machine (local.plan_slots)."""
    if profile.executor == "slurm":
        depth: dict[str, int] = {}
        by_id = {r.run_id: r for r in runs}

        def level(rid):
            if rid not in depth:
                depth[rid] = 1 + max((level(d) for d in by_id[rid].deps if d in by_id), default=-1)
            return depth[rid]

        waves = [level(r.run_id) for r in runs]
        return max((waves.count(w) for w in set(waves)), default=0), "the largest Slurm wave"
    from .local import plan_slots

    return len(plan_slots(None, profile.runs_per_gpu, profile.train.device, profile.workers)), "run slots here"


def plan_disk_line(profile: Profile, runs: list[PlannedRun], user, trained_here: set[str] | None = None) -> str:
    """`mtlstudy plan`'s disk line, or why there is none."""
    try:
        encoder = encoder_size(profile.model)
    except UnknownSize as e:
        return f"disk: cannot be estimated: {e}"
    in_flight, why = profile_in_flight(profile, runs)
    est = estimate(runs, encoder, user, in_flight, profile.notebooks, trained_here)
    return summary_line(est, profile.model, why)
