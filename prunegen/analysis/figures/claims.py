"""The claim figures of a study, drawn from its merged tables (prunegen.analysis.merge):
test error, training loss and memorization against sparsity per arm and noise; the
decomposition (does `downscaled_extended` track `imp`?); the sparsity chosen on
validation against noise; and how complete the grid is.

One figure per question, facets by noise (columns) and benchmark (rows). Sparsity is the
nominal sparsity of the level (x positions are levels, so every pruning round gets the
same room; tick labels give the sparsity in percent). Every figure renders on a partial
study: missing arms, noise levels or seeds leave gaps, never errors.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...study.grid import Study
from ..scan import scan
from ..tables import mean_ci
from .style import (
    CI_NOTE,
    arm_colors,
    arm_legend,
    clip_y,
    curves,
    empty_figure,
    errorbar,
    faceted,
    facets,
    prune_fraction,
    pyplot,
    seed_points,
    sparsity_ticks,
    study_arms,
    subplots,
)

DECOMPOSITION_ARMS = ("imp", "extended", "downscaled", "downscaled_extended")


def plot_test_error(study: Study, t: dict[str, pd.DataFrame]):
    return faceted(study, t["headline"], "test_error", "test error", "Test error vs sparsity", seeds=t.get("summary"))


def plot_train_loss(study: Study, t: dict[str, pd.DataFrame]):
    return faceted(study, t["headline"], "train_loss", "training loss", "Training loss vs sparsity",
                    seeds=t.get("summary"))


def plot_memorization(study: Study, t: dict[str, pd.DataFrame]):
    summary = t.get("summary")
    return faceted(study, t["memorization"].query("noise > 0"), "memorization", "memorization",
                    "Memorization of noisy labels vs sparsity", "no complete cell with noisy labels (noise > 0) yet",
                    seeds=summary[summary["noise"] > 0] if summary is not None else None)


def _scatter(ax, summary: pd.DataFrame, metric: str, label: str, norm):
    """downscaled_extended vs imp, one point per (level, seed), with the diagonal."""
    keys = ["noise", "seed", "level"]
    pair = summary[summary["arm"] == "imp"][[*keys, metric]].merge(
        summary[summary["arm"] == "downscaled_extended"][[*keys, metric]], on=keys, suffixes=("_imp", "_dse"))
    ax.set_xlabel(f"{label}, imp")
    ax.set_ylabel(f"{label}, downscaled_extended")
    if pair.empty:
        ax.text(0.5, 0.5, "no imp / downscaled_extended pair", ha="center", va="center", transform=ax.transAxes)
        return None
    x, y = pair[f"{metric}_imp"], pair[f"{metric}_dse"]
    lo, hi = min(x.min(), y.min()), max(x.max(), y.max())
    lo, hi = lo - 0.08 * (hi - lo or 1), hi + 0.08 * (hi - lo or 1)
    ax.plot([lo, hi], [lo, hi], color="0.5", ls="--", lw=0.9)
    ax.set(xlim=(lo, hi), ylim=(lo, hi), aspect="equal")
    return ax.scatter(x, y, c=pair["level"], cmap="viridis", norm=norm, s=24, edgecolor="k", lw=0.3)


def plot_decomposition(study: Study, t: dict[str, pd.DataFrame]):
    """Does downscaled_extended (longer training + smaller model) track imp? Curves of test
    error and training loss, then downscaled_extended against imp per (level, seed)."""
    from matplotlib.colors import BoundaryNorm  # matplotlib on first draw: the tables need none of it

    title = "Decomposition: does downscaled_extended track imp?"
    head, summary = t["headline"], t["summary"]
    if head.empty:
        return empty_figure(title, "no complete cells yet")
    benchmarks, noises = sorted(head["benchmark"].unique()), sorted(head["noise"].unique())
    what = {"test_error": "test error", "train_loss": "training loss"}
    rows = [(b, kind, m) for b in benchmarks for kind in ("curve", "scatter") for m in what]
    fig, axes, panels = facets(rows, noises, f"{title}\n({CI_NOTE})")
    norm = BoundaryNorm(np.arange(0.5, max(study.levels, 1) + 1.5), 256)  # >= 2 boundaries, even at levels: 0
    points, scatter_axes = None, []
    for (b, kind, m), f, ax in panels:
        ax.set_title(f"{b}, noise {f:g}")
        if kind == "scatter":
            scatter_axes.append(ax)
            points = _scatter(ax, summary[(summary["benchmark"] == b) & (summary["noise"] == f)], m, what[m],
                              norm) or points
            continue
        panel = (lambda df: df[(df["benchmark"] == b) & (df["noise"] == f)])  # noqa: E731
        curves(ax, panel(head), m, ("dense", *DECOMPOSITION_ARMS), panel(summary))
        sparsity_ticks(ax, prune_fraction(study, b), study.levels)
        ax.set(xlabel="sparsity (%)", ylabel=what[m])
    if points is not None:
        fig.colorbar(points, ax=scatter_axes, label="level (scatter)", ticks=range(1, study.levels + 1), shrink=0.6)
    arm_legend(fig, axes)
    return fig


def plot_optimal_sparsity(study: Study, t: dict[str, pd.DataFrame]):
    """Per benchmark: sparsity of the best-validation level vs noise, and its test error."""
    title = "Sparsity chosen on validation error vs noise"
    opt = t["optimal"]
    if opt.empty:
        return empty_figure(title, "no arm with pruned levels has complete cells yet")
    stats = mean_ci(opt.assign(nominal_sparsity=100 * opt["nominal_sparsity"]),
                             ["benchmark", "arm", "noise"], ["nominal_sparsity", "test_error", "dense_test_error"])
    benchmarks, noises = sorted(stats["benchmark"].unique()), sorted(stats["noise"].unique())
    fig, axes = subplots(benchmarks, ["sparsity", "test error"], f"{title}\n({CI_NOTE})")
    palette, pos = arm_colors(study), {f: k for k, f in enumerate(noises)}
    arms = [a for a in study_arms(study) if (stats["arm"] == a).any()]
    for i, b in enumerate(benchmarks):
        sb = stats[stats["benchmark"] == b]
        for k, arm in enumerate(arms):
            d = sb[sb["arm"] == arm]
            x = d["noise"].map(pos) + 0.08 * (k - (len(arms) - 1) / 2)
            errorbar(axes[i, 0], x, d, "nominal_sparsity", color=palette[arm], label=arm)
            errorbar(axes[i, 1], x, d, "test_error", color=palette[arm], label=arm)
            seeds = opt[(opt["benchmark"] == b) & (opt["arm"] == arm)].assign(
                nominal_sparsity=lambda o: 100 * o["nominal_sparsity"])
            seed_points(axes[i, 0], dict(zip(d["noise"], x)), seeds, "noise", "nominal_sparsity", palette[arm])
            seed_points(axes[i, 1], dict(zip(d["noise"], x)), seeds, "noise", "test_error", palette[arm])
        dense = sb.drop_duplicates("noise")
        errorbar(axes[i, 1], dense["noise"].map(pos), dense, "dense_test_error", color=palette["dense"],
                  ls="--", label="dense")
        clip_y(axes[i, 0], 0, 100)
        clip_y(axes[i, 1])
        for ax, ylabel in zip(axes[i], ("sparsity of best-validation level (%)", "test error at that level")):
            ax.set_xticks(range(len(noises)), [f"{f:g}" for f in noises])
            ax.set_xlabel("noise")
            ax.set_ylabel(ylabel)
            ax.set_title(b)
    arm_legend(fig, axes)
    return fig


def plot_completeness(study: Study, t: dict[str, pd.DataFrame] | None = None):
    """Fraction of seeds complete per (arm, level), per benchmark and noise; from the cells'
    cell.json files, so it works on a partial study and needs no tables."""
    _, sns = pyplot()
    grid = scan(study)
    frac = (grid.assign(done=grid["state"] == "complete")
            .groupby(["benchmark", "noise", "arm", "level"])["done"].mean().reset_index())
    benchmarks, noises = list(study.benchmarks), list(study.noise)
    n_done, n_stale = int((grid["state"] == "complete").sum()), int((grid["state"] == "stale").sum())
    fig, axes, panels = facets(benchmarks, noises, f"Completeness of the grid: {n_done} of {len(grid)} cells "
                                f"complete, {n_stale} stale\n(fraction of the {len(study.seeds)} seeds complete)",
                                w=0.32 * study.levels + 3.2, h=0.3 * len(study.arms) + 1.4)
    arms = [a for a in study_arms(study, pruned_only=False) if a in study.arms or a == "dense"]
    for b, f, ax in panels:
        d = frac[(frac["benchmark"] == b) & (frac["noise"] == f)]
        m = d.pivot(index="arm", columns="level", values="done").reindex(index=arms, columns=range(study.levels + 1))
        sns.heatmap(m, ax=ax, vmin=0, vmax=1, cmap="viridis", cbar=False, linewidths=0.5,
                    annot=study.levels <= 12, fmt=".0%", annot_kws={"size": 7})
        ax.grid(False)
        ax.set(title=f"{b}, noise {f:g}", xlabel="level", ylabel="arm")
    fig.colorbar(panels[0][2].collections[0], ax=axes, label="fraction of seeds complete", shrink=0.8)
    return fig


