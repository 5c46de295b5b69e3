"""The figures' shared look: facets by benchmark and noise, one colour per arm, error bars
= 95% Student-t interval over seeds clipped to the range of a bounded quantity (an error
or a memorization rate stays in [0, 1], a loss above 0: with few seeds the t-interval
overshoots it), each seed's own value as a faint point beside the mean, sparsity ticks,
and byte-stable PNG/PDF files written atomically.

`recording()` collects what every figure drawn inside it plots, for the tests to check.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pandas as pd

from ...records.store import atomic_write
from ...study.arm_specs import ARMS, TIE_BASES
from ...study.grid import Study
from ..tables import nominal_sparsity

CI_NOTE = "mean and 95% CI over seeds, clipped to the metric's range; dots: seeds"


# The range of each plotted quantity: intervals are clipped to it.
BOUNDS = {"test_error": (0.0, 1.0), "dense_test_error": (0.0, 1.0), "memorization": (0.0, 1.0),
          "train_loss": (0.0, np.inf), "nominal_sparsity": (0.0, 100.0)}  # optimal_sparsity plots percent


_drawn: list[dict] | None = None  # what `recording` collects


@contextlib.contextmanager
def recording():
    """Collect what every figure drawn inside it plots: one dict per error bar or seed
    point set (figure, metric, mean, low, high / values), for the tests to check."""
    global _drawn
    outer, _drawn = _drawn, []
    try:
        yield _drawn
    finally:
        _drawn = outer


def record(**what) -> None:
    if _drawn is not None:
        _drawn.append(what)


def pyplot():
    # matplotlib and seaborn on first draw (seconds to import): merge and scan need none of it
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper", font_scale=1.1)
    return plt, sns


def arm_colors(study: Study | None = None) -> dict[str, tuple]:
    """A colour per arm: the built-in arms' as always, then the arms `study` defines."""
    import seaborn as sns  # as pyplot(): on first draw

    out = dict(zip(ARMS, ["0.15", *sns.color_palette("colorblind", len(ARMS) - 1)]))
    defined = [a for a in (study.arms if study is not None else ()) if a not in out]
    if defined:
        extra = list(sns.color_palette("tab20", 20)[1::2]) + list(sns.color_palette("dark", 10))
        out.update(zip(defined, extra * (len(defined) // len(extra) + 1)))
    return out


def study_arms(study: Study, pruned_only: bool = True) -> tuple[str, ...]:
    """The arms to draw: the built-in ones, then those the study defines (the TIE arms,
    dense models retrained at every level, left out of curves against sparsity)."""
    return (*ARMS, *(a for a, spec in study.arm_specs.items() if not (pruned_only and spec.base in TIE_BASES)))


def subplots(rows: list, cols: list, title: str, w: float = 3.8, h: float = 3.0, **kw):
    plt, _ = pyplot()
    nr, nc = max(len(rows), 1), max(len(cols), 1)
    fig, axes = plt.subplots(nr, nc, figsize=(max(w * nc + 0.6, 9.0), h * nr + 1.4), squeeze=False,
                             layout="constrained", **kw)
    fig.suptitle(title, fontweight="bold")
    return fig, axes


def facets(rows: list, noises: list, title: str, w: float = 3.8, h: float = 3.0, max_width: float = 24.0):
    """A panel per (row key, noise): noise across, wrapped onto more lines past `max_width`
    inches, every row key (benchmark, ...) starting a new line. Returns the figure, the
    axes and [(row key, noise, axis), ...]."""
    ncols = max(1, min(len(noises), int(max_width // w)))
    lines = -(-len(noises) // ncols)
    fig, axes = subplots(range(len(rows) * lines), range(ncols), title, w, h)
    panels = [(r, f, axes[i * lines + k // ncols, k % ncols]) for i, r in enumerate(rows) for k, f in enumerate(noises)]
    used = {id(ax) for *_, ax in panels}
    for ax in axes.flat:
        ax.set_visible(id(ax) in used)
    return fig, axes, panels


def empty_figure(title: str, message: str):
    fig, axes = subplots([0], [0], title)
    axes[0, 0].text(0.5, 0.5, message, ha="center", va="center", transform=axes[0, 0].transAxes)
    axes[0, 0].set_axis_off()
    return fig


def arm_legend(fig, axes, title: str = "arm") -> None:
    handles = {}
    for ax in axes.flat:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", title=title, frameon=False,
                   ncols=max(1, min(len(handles), int(fig.get_figwidth() / 2.2))))


def clip_y(ax, low: float = 0.0, high: float | None = None) -> None:
    """Keep the y axis inside the metric's range (error bars of few seeds overshoot it)."""
    y0, y1 = ax.get_ylim()
    pad = 0.03 * (y1 - y0)
    ax.set_ylim(max(y0, low - pad), y1 if high is None else min(y1, high + pad))


def sparsity_ticks(ax, fraction: float, levels: int) -> None:
    step = max(1, int(np.ceil((levels + 1) / 9)))
    ticks = list(range(0, levels + 1, step))
    ax.set_xticks(ticks, [f"{100 * nominal_sparsity(fraction, k):.1f}".removesuffix(".0") for k in ticks])
    ax.set_xlim(-0.4, levels + 0.4)


def prune_fraction(study: Study, benchmark: str) -> float:
    bm = study.benchmarks.get(benchmark)
    return bm.prune.fraction if bm is not None else 0.2


def errorbar(ax, x, df: pd.DataFrame, metric: str, column: str | None = None, **kw) -> None:
    """Mean and interval of `column` (default: `metric`) of a mean_ci table, clipped to
    BOUNDS[metric]."""
    column = column or metric
    low_bound, high_bound = BOUNDS.get(metric, (-np.inf, np.inf))
    mean = df[f"{column}_mean"].to_numpy(float)
    low = np.clip(df[f"{column}_ci_low"].to_numpy(float), low_bound, high_bound)
    high = np.clip(df[f"{column}_ci_high"].to_numpy(float), low_bound, high_bound)
    record(kind="interval", metric=metric, mean=mean, low=low, high=high)
    yerr = [np.nan_to_num(np.maximum(mean - low, 0)), np.nan_to_num(np.maximum(high - mean, 0))]
    ax.errorbar(x, mean, yerr=yerr, marker="o", ms=4, lw=1.4, capsize=2.5, **kw)


def seed_points(ax, positions: dict, seeds: pd.DataFrame | None, key: str, metric: str, color) -> None:
    """Each seed's value of `metric` (rows of `seeds`), at the x position of its `key`
    (level, noise) in `positions`."""
    if seeds is None or seeds.empty or metric not in seeds:
        return
    at = seeds[key].map(positions)
    ok = at.notna() & seeds[metric].notna()
    record(kind="seeds", metric=metric, values=seeds.loc[ok, metric].to_numpy(float))
    ax.scatter(at[ok], seeds.loc[ok, metric], s=9, color=color, alpha=0.35, lw=0, zorder=2)


def curves(ax, df: pd.DataFrame, metric: str, arms: tuple[str, ...], seeds: pd.DataFrame | None = None,
            palette: dict | None = None) -> None:
    """`metric` vs level for each arm, every curve starting at the shared dense level 0
    (drawn once; dashed line: dense), arms dodged sideways so their error bars stay apart;
    `seeds` (summary rows of the same panel) adds each seed's value."""
    palette, dense = palette or arm_colors(), df[df["arm"] == "dense"]
    of_arm = (lambda arm: seeds[seeds["arm"] == arm]) if seeds is not None else (lambda arm: None)
    if len(dense) and not dense[f"{metric}_mean"].isna().all():
        ax.axhline(dense[f"{metric}_mean"].iloc[0], color=palette["dense"], ls="--", lw=0.9)
        errorbar(ax, dense["level"], dense, metric, color=palette["dense"], label="dense", zorder=3)
        seed_points(ax, {0: 0.0}, of_arm("dense"), "level", metric, palette["dense"])
    present = [a for a in arms if a != "dense" and (df["arm"] == a).any()]
    for i, arm in enumerate(present):
        d = df[df["arm"] == arm].sort_values("level")
        x = d["level"] + 0.1 * (i - (len(present) - 1) / 2)
        seed_points(ax, dict(zip(d["level"], x)), of_arm(arm), "level", metric, palette[arm])
        if len(dense):  # the line starts at dense, without repeating its error bar
            ax.plot([0, x.iloc[0]], [dense[f"{metric}_mean"].iloc[0], d[f"{metric}_mean"].iloc[0]],
                    color=palette[arm], lw=1.4)
        errorbar(ax, x, d, metric, color=palette[arm], label=arm)
    clip_y(ax)


def faceted(study: Study, table: pd.DataFrame, metric: str, ylabel: str, title: str,
             empty: str = "no complete cells yet", seeds: pd.DataFrame | None = None):
    """One panel per (benchmark, noise), `metric` vs sparsity per arm (with each seed's
    value from `seeds`, summary rows, where given)."""
    if table.empty or table[f"{metric}_mean"].isna().all():
        return empty_figure(title, empty)
    benchmarks, noises = sorted(table["benchmark"].unique()), sorted(table["noise"].unique())
    fig, axes, panels = facets(benchmarks, noises, f"{title}\n({CI_NOTE})")
    for b, f, ax in panels:
        panel = (lambda df: df[(df["benchmark"] == b) & (df["noise"] == f)])  # noqa: E731
        curves(ax, panel(table), metric, study_arms(study), panel(seeds) if seeds is not None else None,
                arm_colors(study))
        sparsity_ticks(ax, prune_fraction(study, b), study.levels)
        ax.set(title=f"{b}, noise {f:g}", xlabel="sparsity (%)", ylabel=ylabel)
    arm_legend(fig, axes)
    return fig


_METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Producer": None}}  # byte-stable files


def save(fig, out_dir: Path, name: str, formats: tuple[str, ...] = ("png", "pdf"), dpi: int = 150) -> list[Path]:
    import matplotlib.pyplot as plt  # as pyplot(): on first draw

    paths = []
    for ext in formats:
        path = out_dir / f"{name}.{ext}"
        with atomic_write(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=dpi, metadata=_METADATA[ext])
        paths.append(path)
    plt.close(fig)
    return paths
