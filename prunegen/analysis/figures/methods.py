"""Figures of a study that defines arms (prunegen.analysis.verdicts.methods' tables): test error
against sparsity and against total training epochs per pruning arm (the shape of the
paper supplement's Figure 8), and the TIE arms' test error per level. Same conventions
as the claim figures (prunegen.analysis.figures.style): a panel per (benchmark, noise), 95% t-intervals over seeds clipped
to [0, 1]."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...study.grid import Study
from .style import (
    CI_NOTE,
    arm_colors,
    arm_legend,
    clip_y,
    empty_figure,
    errorbar,
    facets,
    prune_fraction,
    sparsity_ticks,
)


def _method_curves(study: Study, t: dict[str, pd.DataFrame], x: str, title: str, xlabel: str):
    m = t["methods"]
    if m.empty:
        return empty_figure(title, "no complete cells yet")
    benchmarks, noises = sorted(m["benchmark"].unique()), sorted(m["noise"].unique())
    fig, axes, panels = facets(benchmarks, noises, f"{title}\n({CI_NOTE})", w=4.6, h=3.4)
    palette = arm_colors(study)
    arms = [a for a in ("dense", *study.arms) if (m["arm"] == a).any()]
    for b, f, ax in panels:
        panel = m[(m["benchmark"] == b) & (m["noise"] == f)]
        dense = panel[panel["arm"] == "dense"]
        present = [a for a in arms if a != "dense" and (panel["arm"] == a).any()]
        for i, arm in enumerate(present):
            d = pd.concat([dense, panel[panel["arm"] == arm]]).sort_values("level")
            pos = (d["level"] if x == "level" else d["total_epochs"]).astype(float)
            step = 1.0 if x == "level" else float(study.benchmarks[b].train.epochs) if b in study.benchmarks else 1.0
            dodge = 0.5 * step / max(len(present), 1) * (i - (len(present) - 1) / 2)  # within half a step
            errorbar(ax, pos + np.where(d["level"] > 0, dodge, 0.0), d, "test_error", color=palette[arm],
                      label=arm)
        if len(dense):
            ax.axhline(dense["test_error_mean"].iloc[0], color=palette["dense"], ls="--", lw=0.9, label="dense")
        if x == "level":
            sparsity_ticks(ax, prune_fraction(study, b), study.levels)
        clip_y(ax)
        ax.set(title=f"{b}, noise {f:g}", xlabel=xlabel, ylabel="test error")
    arm_legend(fig, axes)
    return fig


def plot_methods_sparsity(study: Study, t: dict[str, pd.DataFrame]):
    return _method_curves(study, t, "level", "Test error vs sparsity, per pruning method and control",
                          "sparsity (%)")


def plot_methods_epochs(study: Study, t: dict[str, pd.DataFrame]):
    return _method_curves(study, t, "total_epochs", "Test error vs training epochs behind the model, per "
                          "pruning method and control", "epochs in all (the dense cycle included)")


def plot_tie(study: Study, t: dict[str, pd.DataFrame]):
    title = "Dense retrained without the top-improved examples (TIE) or as many random ones"
    tie = t["tie"]
    if tie.empty:
        return empty_figure(title, "no complete TIE cells yet")
    benchmarks, noises = sorted(tie["benchmark"].unique()), sorted(tie["noise"].unique())
    fig, axes, panels = facets(benchmarks, noises, f"{title}\n({CI_NOTE})", w=4.6, h=3.4)
    palette = arm_colors(study)
    for b, f, ax in panels:
        panel = tie[(tie["benchmark"] == b) & (tie["noise"] == f)]
        for (removed, rand), g in panel.groupby(["removed_arm", "random_arm"], sort=False):
            g = g.sort_values("level")
            for k, (arm, col) in enumerate(((removed, "tie_removed"), (rand, "tie_random"))):
                errorbar(ax, g["level"] + 0.08 * (k - 0.5), g, "test_error", column=col, color=palette[arm],
                          label=arm)
            ax.axhline(g["dense_mean"].iloc[0], color=palette["dense"], ls="--", lw=0.9, label="dense (all examples)")
        sparsity_ticks(ax, prune_fraction(study, b), study.levels)
        ax.set_xlim(0.5, study.levels + 0.5)
        clip_y(ax)
        ax.set(title=f"{b}, noise {f:g}", xlabel="sparsity of the imp level ranked against (%)",
               ylabel="test error")
    arm_legend(fig, axes)
    return fig
