"""Figures of a study, drawn from its merged tables (`prunegen.analysis.merge`).

One figure per question, facets by noise (columns) and benchmark (rows), error bars
= 95% Student-t interval over seeds, clipped to the range of a bounded quantity (an
error or a memorization rate stays in [0, 1], a loss above 0: with few seeds the
t-interval overshoots it), and each seed's own value as a faint point beside the mean.
Sparsity is the nominal sparsity of the level
(x positions are levels, so every pruning round gets the same room; tick labels give
the sparsity in percent). Each figure is written as PNG and PDF, atomically, into
`results/<study>/figures/`. Every figure renders on a partial study: missing arms,
noise levels or seeds leave gaps, never errors.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pandas as pd

from . import analysis, records
from .config import ARMS, Study

FIGURES = ("test_error", "train_loss", "memorization", "decomposition", "optimal_sparsity", "completeness")
DECOMPOSITION_ARMS = ("imp", "extended", "downscaled", "downscaled_extended")
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


def _record(**what) -> None:
    if _drawn is not None:
        _drawn.append(what)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper", font_scale=1.1)
    return plt, sns


def _palette(study: Study | None = None) -> dict[str, tuple]:
    """A colour per arm: the built-in arms' as always, then the arms `study` defines."""
    import seaborn as sns

    out = dict(zip(ARMS, ["0.15", *sns.color_palette("colorblind", len(ARMS) - 1)]))
    defined = [a for a in (study.arms if study is not None else ()) if a not in out]
    if defined:
        extra = list(sns.color_palette("tab20", 20)[1::2]) + list(sns.color_palette("dark", 10))
        out.update(zip(defined, extra * (len(defined) // len(extra) + 1)))
    return out


def study_arms(study: Study, pruned_only: bool = True) -> tuple[str, ...]:
    """The arms to draw: the built-in ones, then those the study defines (the TIE arms,
    dense models retrained at every level, left out of curves against sparsity)."""
    from .arm_specs import TIE_BASES

    return (*ARMS, *(a for a, spec in study.arm_specs.items() if not (pruned_only and spec.base in TIE_BASES)))


def _grid(rows: list, cols: list, title: str, w: float = 3.8, h: float = 3.0, **kw):
    plt, _ = _plt()
    nr, nc = max(len(rows), 1), max(len(cols), 1)
    fig, axes = plt.subplots(nr, nc, figsize=(max(w * nc + 0.6, 9.0), h * nr + 1.4), squeeze=False,
                             layout="constrained", **kw)
    fig.suptitle(title, fontweight="bold")
    return fig, axes


def _facets(rows: list, noises: list, title: str, w: float = 3.8, h: float = 3.0, max_width: float = 24.0):
    """A panel per (row key, noise): noise across, wrapped onto more lines past `max_width`
    inches, every row key (benchmark, ...) starting a new line. Returns the figure, the
    axes and [(row key, noise, axis), ...]."""
    ncols = max(1, min(len(noises), int(max_width // w)))
    lines = -(-len(noises) // ncols)
    fig, axes = _grid(range(len(rows) * lines), range(ncols), title, w, h)
    panels = [(r, f, axes[i * lines + k // ncols, k % ncols]) for i, r in enumerate(rows) for k, f in enumerate(noises)]
    used = {id(ax) for *_, ax in panels}
    for ax in axes.flat:
        ax.set_visible(id(ax) in used)
    return fig, axes, panels


def _empty(title: str, message: str):
    fig, axes = _grid([0], [0], title)
    axes[0, 0].text(0.5, 0.5, message, ha="center", va="center", transform=axes[0, 0].transAxes)
    axes[0, 0].set_axis_off()
    return fig


def _legend(fig, axes, title: str = "arm") -> None:
    handles = {}
    for ax in axes.flat:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", title=title, frameon=False,
                   ncols=max(1, min(len(handles), int(fig.get_figwidth() / 2.2))))


def _floor(ax, low: float = 0.0, high: float | None = None) -> None:
    """Keep the y axis inside the metric's range (error bars of few seeds overshoot it)."""
    y0, y1 = ax.get_ylim()
    pad = 0.03 * (y1 - y0)
    ax.set_ylim(max(y0, low - pad), y1 if high is None else min(y1, high + pad))


def _sparsity_ticks(ax, fraction: float, levels: int) -> None:
    step = max(1, int(np.ceil((levels + 1) / 9)))
    ticks = list(range(0, levels + 1, step))
    ax.set_xticks(ticks, [f"{100 * analysis.nominal_sparsity(fraction, k):.1f}".removesuffix(".0") for k in ticks])
    ax.set_xlim(-0.4, levels + 0.4)


def _fraction(study: Study, benchmark: str) -> float:
    bm = study.benchmarks.get(benchmark)
    return bm.prune.fraction if bm is not None else 0.2


def _errorbar(ax, x, df: pd.DataFrame, metric: str, column: str | None = None, **kw) -> None:
    """Mean and interval of `column` (default: `metric`) of a mean_ci table, clipped to
    BOUNDS[metric]."""
    column = column or metric
    low_bound, high_bound = BOUNDS.get(metric, (-np.inf, np.inf))
    mean = df[f"{column}_mean"].to_numpy(float)
    low = np.clip(df[f"{column}_ci_low"].to_numpy(float), low_bound, high_bound)
    high = np.clip(df[f"{column}_ci_high"].to_numpy(float), low_bound, high_bound)
    _record(kind="interval", metric=metric, mean=mean, low=low, high=high)
    yerr = [np.nan_to_num(np.maximum(mean - low, 0)), np.nan_to_num(np.maximum(high - mean, 0))]
    ax.errorbar(x, mean, yerr=yerr, marker="o", ms=4, lw=1.4, capsize=2.5, **kw)


def _seed_points(ax, positions: dict, seeds: pd.DataFrame | None, key: str, metric: str, color) -> None:
    """Each seed's value of `metric` (rows of `seeds`), at the x position of its `key`
    (level, noise) in `positions`."""
    if seeds is None or seeds.empty or metric not in seeds:
        return
    at = seeds[key].map(positions)
    ok = at.notna() & seeds[metric].notna()
    _record(kind="seeds", metric=metric, values=seeds.loc[ok, metric].to_numpy(float))
    ax.scatter(at[ok], seeds.loc[ok, metric], s=9, color=color, alpha=0.35, lw=0, zorder=2)


def _curves(ax, df: pd.DataFrame, metric: str, arms: tuple[str, ...], seeds: pd.DataFrame | None = None,
            palette: dict | None = None) -> None:
    """`metric` vs level for each arm, every curve starting at the shared dense level 0
    (drawn once; dashed line: dense), arms dodged sideways so their error bars stay apart;
    `seeds` (summary rows of the same panel) adds each seed's value."""
    palette, dense = palette or _palette(), df[df["arm"] == "dense"]
    of_arm = (lambda arm: seeds[seeds["arm"] == arm]) if seeds is not None else (lambda arm: None)
    if len(dense) and not dense[f"{metric}_mean"].isna().all():
        ax.axhline(dense[f"{metric}_mean"].iloc[0], color=palette["dense"], ls="--", lw=0.9)
        _errorbar(ax, dense["level"], dense, metric, color=palette["dense"], label="dense", zorder=3)
        _seed_points(ax, {0: 0.0}, of_arm("dense"), "level", metric, palette["dense"])
    present = [a for a in arms if a != "dense" and (df["arm"] == a).any()]
    for i, arm in enumerate(present):
        d = df[df["arm"] == arm].sort_values("level")
        x = d["level"] + 0.1 * (i - (len(present) - 1) / 2)
        _seed_points(ax, dict(zip(d["level"], x)), of_arm(arm), "level", metric, palette[arm])
        if len(dense):  # the line starts at dense, without repeating its error bar
            ax.plot([0, x.iloc[0]], [dense[f"{metric}_mean"].iloc[0], d[f"{metric}_mean"].iloc[0]],
                    color=palette[arm], lw=1.4)
        _errorbar(ax, x, d, metric, color=palette[arm], label=arm)
    _floor(ax)


def _faceted(study: Study, table: pd.DataFrame, metric: str, ylabel: str, title: str,
             empty: str = "no complete cells yet", seeds: pd.DataFrame | None = None):
    """One panel per (benchmark, noise), `metric` vs sparsity per arm (with each seed's
    value from `seeds`, summary rows, where given)."""
    if table.empty or table[f"{metric}_mean"].isna().all():
        return _empty(title, empty)
    benchmarks, noises = sorted(table["benchmark"].unique()), sorted(table["noise"].unique())
    fig, axes, panels = _facets(benchmarks, noises, f"{title}\n({CI_NOTE})")
    for b, f, ax in panels:
        panel = (lambda df: df[(df["benchmark"] == b) & (df["noise"] == f)])  # noqa: E731
        _curves(ax, panel(table), metric, study_arms(study), panel(seeds) if seeds is not None else None,
                _palette(study))
        _sparsity_ticks(ax, _fraction(study, b), study.levels)
        ax.set(title=f"{b}, noise {f:g}", xlabel="sparsity (%)", ylabel=ylabel)
    _legend(fig, axes)
    return fig


def plot_test_error(study: Study, t: dict[str, pd.DataFrame]):
    return _faceted(study, t["headline"], "test_error", "test error", "Test error vs sparsity", seeds=t.get("summary"))


def plot_train_loss(study: Study, t: dict[str, pd.DataFrame]):
    return _faceted(study, t["headline"], "train_loss", "training loss", "Training loss vs sparsity",
                    seeds=t.get("summary"))


def plot_memorization(study: Study, t: dict[str, pd.DataFrame]):
    summary = t.get("summary")
    return _faceted(study, t["memorization"].query("noise > 0"), "memorization", "memorization",
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
    from matplotlib.colors import BoundaryNorm

    title = "Decomposition: does downscaled_extended track imp?"
    head, summary = t["headline"], t["summary"]
    if head.empty:
        return _empty(title, "no complete cells yet")
    benchmarks, noises = sorted(head["benchmark"].unique()), sorted(head["noise"].unique())
    what = {"test_error": "test error", "train_loss": "training loss"}
    rows = [(b, kind, m) for b in benchmarks for kind in ("curve", "scatter") for m in what]
    fig, axes, panels = _facets(rows, noises, f"{title}\n({CI_NOTE})")
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
        _curves(ax, panel(head), m, ("dense", *DECOMPOSITION_ARMS), panel(summary))
        _sparsity_ticks(ax, _fraction(study, b), study.levels)
        ax.set(xlabel="sparsity (%)", ylabel=what[m])
    if points is not None:
        fig.colorbar(points, ax=scatter_axes, label="level (scatter)", ticks=range(1, study.levels + 1), shrink=0.6)
    _legend(fig, axes)
    return fig


def plot_optimal_sparsity(study: Study, t: dict[str, pd.DataFrame]):
    """Per benchmark: sparsity of the best-validation level vs noise, and its test error."""
    title = "Sparsity chosen on validation error vs noise"
    opt = t["optimal"]
    if opt.empty:
        return _empty(title, "no arm with pruned levels has complete cells yet")
    stats = analysis.mean_ci(opt.assign(nominal_sparsity=100 * opt["nominal_sparsity"]),
                             ["benchmark", "arm", "noise"], ["nominal_sparsity", "test_error", "dense_test_error"])
    benchmarks, noises = sorted(stats["benchmark"].unique()), sorted(stats["noise"].unique())
    fig, axes = _grid(benchmarks, ["sparsity", "test error"], f"{title}\n({CI_NOTE})")
    palette, pos = _palette(study), {f: k for k, f in enumerate(noises)}
    arms = [a for a in study_arms(study) if (stats["arm"] == a).any()]
    for i, b in enumerate(benchmarks):
        sb = stats[stats["benchmark"] == b]
        for k, arm in enumerate(arms):
            d = sb[sb["arm"] == arm]
            x = d["noise"].map(pos) + 0.08 * (k - (len(arms) - 1) / 2)
            _errorbar(axes[i, 0], x, d, "nominal_sparsity", color=palette[arm], label=arm)
            _errorbar(axes[i, 1], x, d, "test_error", color=palette[arm], label=arm)
            seeds = opt[(opt["benchmark"] == b) & (opt["arm"] == arm)].assign(
                nominal_sparsity=lambda o: 100 * o["nominal_sparsity"])
            _seed_points(axes[i, 0], dict(zip(d["noise"], x)), seeds, "noise", "nominal_sparsity", palette[arm])
            _seed_points(axes[i, 1], dict(zip(d["noise"], x)), seeds, "noise", "test_error", palette[arm])
        dense = sb.drop_duplicates("noise")
        _errorbar(axes[i, 1], dense["noise"].map(pos), dense, "dense_test_error", color=palette["dense"],
                  ls="--", label="dense")
        _floor(axes[i, 0], 0, 100)
        _floor(axes[i, 1])
        for ax, ylabel in zip(axes[i], ("sparsity of best-validation level (%)", "test error at that level")):
            ax.set_xticks(range(len(noises)), [f"{f:g}" for f in noises])
            ax.set_xlabel("noise")
            ax.set_ylabel(ylabel)
            ax.set_title(b)
    _legend(fig, axes)
    return fig


def plot_completeness(study: Study, t: dict[str, pd.DataFrame] | None = None):
    """Fraction of seeds complete per (arm, level), per benchmark and noise; from the cells'
    cell.json files, so it works on a partial study and needs no tables."""
    _, sns = _plt()
    grid = analysis.scan(study)
    frac = (grid.assign(done=grid["state"] == "complete")
            .groupby(["benchmark", "noise", "arm", "level"])["done"].mean().reset_index())
    benchmarks, noises = list(study.benchmarks), list(study.noise)
    n_done, n_stale = int((grid["state"] == "complete").sum()), int((grid["state"] == "stale").sum())
    fig, axes, panels = _facets(benchmarks, noises, f"Completeness of the grid: {n_done} of {len(grid)} cells "
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


_METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Producer": None}}  # byte-stable files


def _save(fig, out_dir: Path, name: str, formats: tuple[str, ...] = ("png", "pdf"), dpi: int = 150) -> list[Path]:
    import matplotlib.pyplot as plt

    paths = []
    for ext in formats:
        path = out_dir / f"{name}.{ext}"
        with records.atomic_write(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=dpi, metadata=_METADATA[ext])
        paths.append(path)
    plt.close(fig)
    return paths


def draw(study: Study, tables_dir: str | Path | None = None, out_dir: str | Path | None = None) -> list[Path]:
    """Draw every figure from the study's tables (merging first if there are none)."""
    tables_dir = Path(tables_dir) if tables_dir is not None else study.root / "tables"
    out = Path(out_dir) if out_dir is not None else study.root / "figures"
    out.mkdir(parents=True, exist_ok=True)
    names = ("summary", "headline", "memorization", "optimal")
    if not all((tables_dir / f"{n}.parquet").exists() for n in names):
        analysis.merge(study, tables_dir)
    tables = {n: pd.read_parquet(tables_dir / f"{n}.parquet") for n in names}
    return draw_from(study, tables, out, FIGURES)


def draw_from(study: Study, tables: dict[str, pd.DataFrame], out_dir: Path, names=FIGURES,
              formats: tuple[str, ...] = ("png", "pdf"), dpi: int = 150) -> list[Path]:
    """Draw the figures `names` from tables already read (summary, headline, memorization, optimal)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    from . import figures_methods  # the methods page's figures (Figure 8's shape, TIE)

    for name in names:
        _record(kind="figure", name=name)
        plot = globals().get(f"plot_{name}") or getattr(figures_methods, f"plot_{name}")
        paths += _save(plot(study, tables), out_dir, name, formats, dpi)
    return paths
