"""Figures of the study: the pairwise matrix (Figure 1, and side by side for Figure 3), the size
ablation (Figure 2), learning curves and the sampler's task weights over time.

Figures are built with matplotlib.figure.Figure (no pyplot state), so they work the same in a
script (Agg backend), under papermill and in JupyterLab; `show` displays one in a notebook.
"""
from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:
    matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

from mtlstudy import analysis  # noqa: E402

CELL_COLOURS = {"mtl": "#8fb8de", "stilts": "#f4b183", "": "#e6e6e6"}
CELL_LABELS = {"mtl": "MTL significantly better", "stilts": "STILTs significantly better",
               "": "not significant"}
WRONG_COLOUR = "#d62728"
METHOD_COLOURS = {"mtl": "#1f77b4", "stilts": "#ff7f0e", "single": "#7f7f7f", "mtl_all": "#2ca02c"}


FIGURE_FORMATS = ("png", "svg", "pdf")  # the report's page shows the PNG; SVG and PDF for a paper


def save_figure(fig: Figure, stem: Path) -> list[Path]:
    """Save `fig` as <stem>.png, <stem>.svg and <stem>.pdf; return the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(f".{ext}") for ext in FIGURE_FORMATS]
    for p in paths:
        fig.savefig(p, dpi=150, bbox_inches="tight")
    return paths


def show(fig: Figure):
    """Display a figure in a notebook (as PNG)."""
    import io

    from IPython.display import Image, display
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    display(Image(data=buf.getvalue()))


def _axes(ax, size=(6, 5)):
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=size)
    return fig, fig.subplots()


# ----------------------------------------------------------------------------- Figure 1 / 3

def plot_matrix(cells, order: list[str], ax=None, title: str | None = None, legend: bool = True):
    """Pairwise matrix: rows targets, columns supports (in `order`), text mean MTL - mean STILTs,
    colour by significant winner, red text where the size heuristic picks the wrong winner."""
    n = len(order)
    fig, ax = _axes(ax, (1.0 + 0.75 * n, 1.0 + 0.7 * n))
    idx = {t: i for i, t in enumerate(order)}
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylim(n - 0.5, -0.5)
    for r in cells.itertuples():
        if r.target not in idx or r.support not in idx:
            continue
        i, j = idx[r.target], idx[r.support]
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1,
                               facecolor=CELL_COLOURS[r.winner], edgecolor="white"))
        wrong = r.significant and r.heuristic != r.winner
        ax.text(j, i, "n/a" if r.diff != r.diff else f"{r.diff:+.1f}", ha="center", va="center", fontsize=9,
                color=WRONG_COLOUR if wrong else "black", fontweight="bold" if wrong else "normal")
    ax.set_xticks(range(n), order, rotation=45, ha="right")
    ax.set_yticks(range(n), order)
    ax.set_xlabel("support (largest first)")
    ax.set_ylabel("target (largest first)")
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    if title:
        ax.set_title(title)
    if legend:
        ax.legend(handles=_matrix_legend(), loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2,
                  fontsize=8, frameon=False)
    return fig


def _matrix_legend() -> list[Patch]:
    handles = [Patch(facecolor=CELL_COLOURS[k], label=v) for k, v in CELL_LABELS.items()]
    handles.append(Patch(facecolor="white", edgecolor=WRONG_COLOUR, label="red text: size heuristic wrong"))
    return handles


def plot_matrix_pair(cells_a, order_a, cells_b, order_b, titles=("DistilRoBERTa", "BERT")):
    """Two matrices side by side (Figure 3: the BERT replication beside the main study)."""
    n = max(len(order_a), len(order_b))
    fig = Figure(figsize=(2 * (1.0 + 0.75 * n), 1.5 + 0.7 * n))
    ax_a, ax_b = fig.subplots(1, 2)
    plot_matrix(cells_a, order_a, ax=ax_a, title=titles[0], legend=False)
    plot_matrix(cells_b, order_b, ax=ax_b, title=titles[1], legend=False)
    fig.tight_layout()
    fig.legend(handles=_matrix_legend(), loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4,
               fontsize=8, frameon=False)
    return fig


# ----------------------------------------------------------------------------- Figure 2

def _k_label(k: float) -> str:
    f = Fraction(k).limit_denominator(12)
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"


def plot_ablation(summary, crossings=None, confidence: float = 0.9, interval: str = "t"):
    """Score against K for MTL and STILTs with confidence bands (`interval`: "t" for the
    t-distribution's, "bootstrap" for the released plot's percentile bootstrap), one panel per
    target and target fraction; dashed vertical lines where the curves cross."""
    lo, hi = {"t": ("lo", "hi"), "bootstrap": ("boot_lo", "boot_hi")}[interval]
    panels = list(summary.groupby(["target", "target_fraction"]).groups)
    fig = Figure(figsize=(4.5 * max(len(panels), 1), 3.8))
    axes = fig.subplots(1, max(len(panels), 1), squeeze=False)[0]
    for ax, (target, frac) in zip(axes, panels):
        g = summary[(summary["target"] == target) & (summary["target_fraction"] == frac)]
        for method, label in (("mtl", "MTL"), ("stilts", "STILTs")):
            m = g[g["method"] == method].sort_values("k")
            ax.plot(m["k"], m["mean"], marker="o", color=METHOD_COLOURS[method], label=label)
            ax.fill_between(m["k"], m[lo], m[hi], color=METHOD_COLOURS[method], alpha=0.2)
        if crossings is not None:
            row = crossings[(crossings["target"] == target) & (crossings["target_fraction"] == frac)]
            for k in (row["crossings"].iloc[0] if len(row) else []):
                ax.axvline(k, color="black", linestyle="--", linewidth=1)
        ks = sorted(g["k"].unique())
        ax.set_xscale("log")
        ax.set_xticks(ks, [_k_label(k) for k in ks])
        ax.minorticks_off()
        ax.set_xlabel("K (support size = K x target size)")
        ax.set_ylabel(f"{target} dev score")
        ax.set_title(f"{target} at {frac:.0%} of its train set")
        ax.legend(title=f"{confidence:.0%} CI ({interval})", fontsize=8)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- runs

SEED_STYLES = ["-", "--", ":", "-."]
SEED_MARKERS = ["o", "s", "^", "D"]


def plot_learning_curves(runs: list[tuple[str, dict]], task: str, ax=None, title: str | None = None):
    """Dev score of `task` over training (x in epochs) for each (label, result.json dict); the
    label's first word picks the colour (mtl, stilts, single, mtl_all), the run's seed (its
    place among the seeds shown) the line style and marker. A filled marker at each run's best."""
    fig, ax = _axes(ax, (6, 4))
    seeds = sorted({run.get("seed") for _, run in runs}, key=str)
    for label, run in runs:
        h = analysis.history_frame(run)
        col = f"score:{task}"
        if h.empty or col not in h:
            continue
        x = "epoch" if h["epoch"].notna().all() else "step"
        colour = METHOD_COLOURS.get(label.split()[0], None)
        i = seeds.index(run.get("seed")) % len(SEED_STYLES)
        ax.plot(h[x], h[col], color=colour, alpha=0.8, label=label, linestyle=SEED_STYLES[i],
                marker=SEED_MARKERS[i], markersize=3)
        best = h[col].idxmax()
        ax.plot(h.at[best, x], h.at[best, col], SEED_MARKERS[i], color=colour, markersize=8)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{task} dev score")
    ax.set_title(title or f"learning curves: {task}")
    if ax.lines:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no learning curves recorded", ha="center", transform=ax.transAxes)
    return fig


def plot_sampler_weights(run: dict, ax=None, title: str | None = None):
    """The sampler's probability of each task over training (MTL and MTL-All runs)."""
    fig, ax = _axes(ax, (6, 4))
    h = analysis.history_frame(run)
    probs = [c for c in h.columns if c.startswith("prob:")]
    x = "epoch" if len(h) and h["epoch"].notna().all() else "step"
    for c in probs:
        ax.plot(h[x], h[c], marker=".", label=c.split(":", 1)[1])
    ax.set_xlabel(x)
    ax.set_ylabel("sampling probability")
    ax.set_title(title or f"sampler weights: {run.get('run_id', '')}")
    if probs:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no sampler weights recorded", ha="center", transform=ax.transAxes)
    return fig


def plot_run(run: dict):
    """One run at a glance: its training loss and dev scores over epochs (left) and the share of
    each task in the examples it trained on, per epoch (right; multi-task runs only)."""
    h = analysis.history_frame(run)
    mix = analysis.task_mix(run)
    multi = len(run.get("scored_tasks") or run.get("tasks") or []) > 1 and not mix.empty
    fig = Figure(figsize=(11 if multi else 6.5, 3.8))
    axes = fig.subplots(1, 2 if multi else 1)
    ax = axes[0] if multi else axes
    if not h.empty:
        ax.plot(h["epoch"], h["train_loss"], "k-o", markersize=3, label="training loss (mean since last eval)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax2 = ax.twinx()
    for t in [c.split(":", 1)[1] for c in h.columns if c.startswith("score:")]:
        ax2.plot(h["epoch"], h[f"score:{t}"], "--s", markersize=3, label=f"{t} dev score")
    ax2.set_ylabel("dev score")
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], fontsize=7, loc="best")
    ax.set_title(run.get("run_id", ""), fontsize=9)
    if multi:
        bottom = None
        for t in mix.columns:
            axes[1].bar(mix.index.astype(str), mix[t], bottom=bottom, label=t)
            bottom = mix[t] if bottom is None else bottom + mix[t]
        axes[1].set_xlabel("epoch" if run.get("epochs") else "epoch of the evaluation (sampler probabilities)")
        axes[1].set_ylabel("share of examples" if run.get("epochs") else "sampling probability")
        axes[1].set_ylim(0, 1)
        axes[1].set_title("task mix per epoch", fontsize=9)
        axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_cell(study_dir: Path, df, target: str, support: str):
    """The runs behind one matrix cell: learning curves of the target for its MTL and STILTs
    runs (left) and the MTL runs' sampler weights (right)."""
    rows = analysis.pairwise_rows(df)
    rows = rows[(rows["target"] == target) & (rows["support"] == support)].sort_values(["method", "seed"])
    runs = []
    for r in rows.itertuples():
        run = analysis.load_run(study_dir, r.run_id)
        if run is not None:
            runs.append((f"{r.method} seed {r.seed}", run))
    fig = Figure(figsize=(11, 3.8))
    ax_l, ax_r = fig.subplots(1, 2)
    plot_learning_curves(runs, target, ax=ax_l, title=f"target {target}, support {support}")
    mtl = [run for label, run in runs if label.startswith("mtl") and sampler_varies(run)]
    if mtl:
        plot_sampler_weights(mtl[0], ax=ax_r, title=f"sampler weights ({mtl[0].get('run_id', '')})")
    else:  # constant weights (a size or uniform sampler) say nothing over time: one panel
        fig.delaxes(ax_r)
        fig.set_size_inches(6.5, 3.8)
    fig.tight_layout()
    return fig


def sampler_varies(run: dict) -> bool:
    """True when the run's task probabilities change over training (a dynamic sampler)."""
    h = analysis.history_frame(run)
    probs = h[[c for c in h.columns if c.startswith("prob:")]]
    return bool(len(probs.columns)) and bool((probs.max() - probs.min()).abs().max() > 1e-9)


def style_table(table):
    """Table 1/2 for display: one decimal, the best non-oracle value per column in bold."""
    mask = analysis.best_mask(table)
    return table.style.format("{:.1f}", na_rep="").apply(
        lambda col: ["font-weight: bold" if m else "" for m in mask[col.name]])
