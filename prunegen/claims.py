"""The paper's five claims, checked against a study's merged tables, as a results page.

    prunegen results --study workflow/studies/mnist.yaml --out docs/results.md

Two steps. `collect` copies the tables the page reads (`summary`, `headline`,
`memorization`, `optimal`) from `results/<study>/tables` next to the page, with a
one-row `compute` table (cells, epochs, seconds). `render` writes the page and its
figures from those copies alone, so the page can be regenerated, byte for byte, from
what is committed beside it, and every number on it is a cell of one of them.

Verdicts compare 95% Student-t intervals over seeds (with 2 seeds, t = 12.7: wide):
"held" when the interval excludes the alternative, "did not hold" when the mean
points the other way, "inconclusive" in between.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import records
from .config import CHAIN_ARMS, Study

TABLES = ("summary", "headline", "memorization", "optimal", "compute")
PAGE_FIGURES = ("test_error", "train_loss", "memorization", "decomposition", "optimal_sparsity")
HELD, NOT_HELD, INCONCLUSIVE = "held", "did not hold", "inconclusive"


class TablesError(FileNotFoundError):
    """The merged tables (or the page's copies of them) are not there."""


# ---------------------------------------------------------------- collect

def compute_table(study: Study, summary: pd.DataFrame) -> pd.DataFrame:
    """Cells, epochs trained (each once: a chain cell trains one cycle), seconds inside
    the cells, and, where Snakemake's benchmark files are there, seconds per job and
    the wall-clock span from the first job's start to the last cell's end."""
    epochs_per_cycle = summary["benchmark"].map({b: bm.train.epochs for b, bm in study.benchmarks.items()})
    cycles = summary["cycles"].where(~summary["arm"].isin(CHAIN_ARMS) & (summary["arm"] != "dense"), 1)
    job_seconds, starts, ends = 0.0, [], []
    for row in summary.itertuples():
        cell = study.cell(row.benchmark, row.arm, int(row.level), float(row.noise), int(row.seed))
        tsv, marker = study.root / "benchmarks" / "cells" / f"{cell.relpath}.tsv", cell.dir / records.COMPLETE_MARKER
        if tsv.is_file() and marker.is_file():
            seconds = float(pd.read_csv(tsv, sep="\t")["s"].iloc[-1])
            job_seconds += seconds
            ends.append(marker.stat().st_mtime)
            starts.append(ends[-1] - seconds)
    return pd.DataFrame([{
        "study": study.name, "cells": len(summary), "epochs": int((cycles * epochs_per_cycle).sum()),
        "cell_seconds": float(summary["wall_seconds"].sum()),
        "job_seconds": job_seconds if ends else float("nan"),
        "wall_seconds": max(ends) - min(starts) if ends else float("nan"),
    }])


def collect(study: Study, tables_dir: Path, tables_from: Path | None = None) -> None:
    """Copy the merged tables the page needs into `tables_dir`, plus the compute table."""
    src = Path(tables_from) if tables_from is not None else study.root / "tables"
    missing = [f"{src / n}.parquet" for n in TABLES[:-1] if not (src / f"{n}.parquet").is_file()]
    if missing:
        raise TablesError(f"no merged tables: {', '.join(missing)}; run the study (snakemake) or "
                                f"`prunegen merge --study ...` first")
    tables_dir.mkdir(parents=True, exist_ok=True)
    for n in TABLES[:-1]:
        with records.atomic_write(tables_dir / f"{n}.parquet") as tmp:
            shutil.copyfile(src / f"{n}.parquet", tmp)
    summary = pd.read_parquet(src / "summary.parquet")
    with records.atomic_write(tables_dir / "compute.parquet") as tmp:
        compute_table(study, summary).to_parquet(tmp, index=False)


# ---------------------------------------------------------------- numbers and verdicts

def pct(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.2f}%"


def num(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.4f}"


def with_ci(row, metric: str, fmt=pct) -> str:
    """`mean [low, high]` of a headline/memorization row, as the page prints it."""
    lo, hi = row[f"{metric}_ci_low"], row[f"{metric}_ci_high"]
    ci = f" [{fmt(lo)}, {fmt(hi)}]" if np.isfinite(lo) and np.isfinite(hi) else ""
    return f"{fmt(row[f'{metric}_mean'])}{ci}"


def below(mean: float, high: float) -> str:
    """Verdict on 'this quantity is below zero' from its mean and the upper end of its CI."""
    if not np.isfinite(mean):
        return INCONCLUSIVE
    if mean >= 0:
        return NOT_HELD
    return HELD if np.isfinite(high) and high < 0 else INCONCLUSIVE


def overall(verdicts: list[str]) -> str:
    if not verdicts:
        return INCONCLUSIVE
    if all(v == verdicts[0] for v in verdicts):
        return verdicts[0]
    counts = {v: verdicts.count(v) for v in (HELD, INCONCLUSIVE, NOT_HELD) if v in verdicts}
    return "mixed (" + ", ".join(f"{v} in {k} of {len(verdicts)}" for v, k in counts.items()) + ")"


@dataclass
class Section:
    title: str
    claim: str
    verdict: str
    body: list[str]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(r) + " |" for r in rows), ""]


def _sparsity(s: float) -> str:
    return f"{100 * s:.1f}%"


# ---------------------------------------------------------------- the claims

def claim_test_error(head: pd.DataFrame) -> Section:
    rows, verdicts = [], []
    for noise, h in head.groupby("noise"):
        dense, imp = h[h["arm"] == "dense"], h[h["arm"] == "imp"]
        if dense.empty or imp.empty:
            continue
        best = imp.loc[imp["test_error_mean"].idxmin()]
        v = below(best["test_error_change_mean"], best["test_error_change_ci_high"])
        verdicts.append(v)
        rows.append([f"{noise:g}", with_ci(dense.iloc[0], "test_error"), f"{best['level']} ({_sparsity(best['nominal_sparsity'])})",
                     with_ci(best, "test_error"), with_ci(best, "test_error_change"), v])
    body = _table(["noise", "dense test error", "imp's best level (sparsity)", "imp test error there",
                   "change vs dense (paired per seed)", "verdict"], rows)
    body.append("The level is the one with the lowest mean test error over seeds (a best-of-levels choice, "
                "so only an interval of the paired change that excludes 0 counts as held).")
    return Section("1. Pruning reaches a lower test error than dense", "`imp` reaches a lower test error than "
                   "`dense` at some sparsity.", overall(verdicts), body)


def claim_train_loss(head: pd.DataFrame, low: list[int]) -> Section:
    rows, verdicts = [], {"imp": [], "extended": []}
    for (noise, level), h in head[head["level"].isin(low)].groupby(["noise", "level"]):
        row = [f"{noise:g}", f"{level} ({_sparsity(h['nominal_sparsity'].iloc[0])})"]
        dense = head[(head["noise"] == noise) & (head["arm"] == "dense")]
        row.append(with_ci(dense.iloc[0], "train_loss", num) if len(dense) else "n/a")
        for arm in verdicts:
            a = h[h["arm"] == arm]
            if a.empty:
                row += ["n/a", "n/a"]
                continue
            a = a.iloc[0]
            verdicts[arm].append(below(a["train_loss_change_mean"], a["train_loss_change_ci_high"]))
            row += [with_ci(a, "train_loss", num), with_ci(a, "train_loss_change")]
        rows.append(row)
    body = _table(["noise", "level (sparsity)", "dense train loss", "imp train loss", "imp change vs dense",
                   "extended train loss", "extended change vs dense"], rows)
    body.append(f"`imp`: {overall(verdicts['imp'])}; `extended`: {overall(verdicts['extended'])}. "
                "Training loss is the mean cross-entropy on the (possibly noisy) training labels of the "
                "final model.")
    return Section("2. Pruning and extended training both lower the training loss at low sparsity",
                   "At low sparsity, `imp` reaches a lower training loss than `dense`, and so does `extended`.",
                   overall(verdicts["imp"] + verdicts["extended"]), body)


def claim_memorization(mem: pd.DataFrame, high: list[int]) -> Section:
    rows, verdicts = [], []
    for (noise, level), m in mem[(mem["noise"] > 0) & mem["level"].isin(high)].groupby(["noise", "level"]):
        imp, ext = m[m["arm"] == "imp"], m[m["arm"] == "extended"]
        if imp.empty or ext.empty:
            continue
        imp, ext = imp.iloc[0], ext.iloc[0]
        if imp["memorization_mean"] >= ext["memorization_mean"]:
            v = NOT_HELD
        elif np.isfinite(imp["memorization_ci_high"]) and imp["memorization_ci_high"] < ext["memorization_ci_low"]:
            v = HELD
        else:
            v = INCONCLUSIVE
        verdicts.append(v)
        rows.append([f"{noise:g}", f"{level} ({_sparsity(imp['nominal_sparsity'])})", with_ci(imp, "memorization"),
                     with_ci(ext, "memorization"), v])
    body = _table(["noise", "level (sparsity)", "imp memorization", "extended memorization", "verdict"], rows)
    body.append("Memorization: the fraction of the noisy training examples the final model predicts with their "
                "(wrong) training label. Held needs the two intervals apart.")
    return Section("3. Under label noise, pruning memorizes fewer noisy labels than extended training",
                   "At higher sparsity, `imp` fits fewer noisy training labels than `extended`.",
                   overall(verdicts), body)


def claim_downscaled(head: pd.DataFrame) -> Section:
    rows, verdicts, counts = [], [], []
    for noise, hn in head[head["level"] > 0].groupby("noise"):
        worse, closer = [], []
        for level, h in hn.groupby("level"):
            by = {a: h[h["arm"] == a] for a in ("imp", "downscaled", "downscaled_extended")}
            if any(d.empty for d in by.values()):
                continue
            imp, ds, dse = (by[a].iloc[0] for a in by)
            gap_ds = ds["test_error_mean"] - imp["test_error_mean"]
            gap_dse = dse["test_error_mean"] - imp["test_error_mean"]
            worse.append(gap_ds > 0)
            closer.append(abs(gap_dse) < abs(gap_ds))
            rows.append([f"{noise:g}", f"{level} ({_sparsity(imp['nominal_sparsity'])})", with_ci(imp, "test_error"),
                         with_ci(ds, "test_error"), with_ci(dse, "test_error")])
        n = len(worse)
        if not n:
            continue
        if sum(worse) > n / 2 and sum(closer) > n / 2:
            verdicts.append(HELD)
        elif sum(worse) <= n / 2:
            verdicts.append(NOT_HELD)
        else:
            verdicts.append(INCONCLUSIVE)
        counts.append(f"noise {noise:g}: `downscaled` above `imp` at {sum(worse)} of {n} levels, "
                      f"`downscaled_extended` closer to `imp` at {sum(closer)} of {n} ({verdicts[-1]})")
    body = _table(["noise", "level (sparsity)", "imp test error", "downscaled test error",
                   "downscaled_extended test error"], rows)
    body.append("Mean test errors compared level by level; held at a noise level when `downscaled` is above "
                "`imp` and `downscaled_extended` is closer to `imp` than `downscaled` at most levels. "
                + "; ".join(counts) + ".")
    return Section("4. A smaller dense model alone does not match pruning; with extended training it comes closer",
                   "`downscaled` does not match `imp`'s test error; `downscaled_extended` comes closer.",
                   overall(verdicts), body)


def claim_optimal(opt: pd.DataFrame) -> Section:
    imp = opt[opt["arm"] == "imp"]
    noises = sorted(imp["noise"].unique())
    seeds = sorted(imp["seed"].unique())
    rows = []
    for noise in noises:
        o = imp[imp["noise"] == noise].set_index("seed")
        rows.append([f"{noise:g}", *(_sparsity(o.loc[s, "nominal_sparsity"]) if s in o.index else "n/a" for s in seeds),
                     _sparsity(o["nominal_sparsity"].mean())])
    per_seed = imp.pivot(index="seed", columns="noise", values="nominal_sparsity")
    if len(noises) < 2 or per_seed.empty:
        verdict = INCONCLUSIVE
    else:
        lo, hi = per_seed[noises[0]], per_seed[noises[-1]]
        moved = (hi - lo).dropna()
        if moved.empty or (moved == 0).all():
            verdict = NOT_HELD
        elif (moved > 0).all() or (moved < 0).all():
            verdict = HELD
        else:
            verdict = INCONCLUSIVE
    direction = ""
    if verdict == HELD:
        way = "up (sparser)" if (moved > 0).all() else "down (denser)"
        direction = (f" Here it moved {way} from noise {noises[0]:g} to {noises[-1]:g} in every seed; the paper "
                     "reports the best sparsity rising with noise.")
    body = _table(["noise", *(f"seed {s}" for s in seeds), "mean"], rows)
    body.append("The sparsity of the `imp` level (dense included) with the lowest validation error, per seed "
                "(the `optimal` table). Held when every seed's chosen sparsity moves the same way between the "
                "lowest and the highest noise." + direction)
    return Section("5. The best sparsity moves as noise grows",
                   "The sparsity with the best test error moves as the label noise grows.", verdict, body)


# ---------------------------------------------------------------- the page

def _levels(study: Study) -> tuple[list[int], list[int]]:
    """Low sparsity: the levels at most 50% sparse (at least level 1); high: the upper half."""
    fraction = min(bm.prune.fraction for bm in study.benchmarks.values())
    low = [k for k in range(1, study.levels + 1) if 1 - (1 - fraction) ** k <= 0.5] or [1]
    high = list(range(study.levels // 2 + 1, study.levels + 1))
    return low, high


def _model(model: dict) -> str:
    extra = model.get("hidden") or model.get("width")
    return f"{model['name']} {extra}" if extra else model["name"]


def _duration(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "n/a"
    h, m = divmod(int(round(seconds / 60)), 60)
    return f"{h} h {m:02d} min" if h else f"{m} min"


def sections(study: Study, tables: dict[str, pd.DataFrame]) -> list[Section]:
    low, high = _levels(study)
    return [claim_test_error(tables["headline"]), claim_train_loss(tables["headline"], low),
            claim_memorization(tables["memorization"], high), claim_downscaled(tables["headline"]),
            claim_optimal(tables["optimal"])]


def render(study: Study, page: Path, tables_dir: Path, figures_dir: Path, source: str) -> list[Path]:
    """Write the page and its figures from the tables in `tables_dir`; returns what was written."""
    from . import figures

    missing = [str(tables_dir / f"{n}.parquet") for n in TABLES if not (tables_dir / f"{n}.parquet").is_file()]
    if missing:
        raise TablesError(f"no page tables: {', '.join(missing)}; run `prunegen results` without "
                          "--from-page-tables to copy them from the study's merged tables")
    tables = {n: pd.read_parquet(tables_dir / f"{n}.parquet") for n in TABLES}
    compute = tables["compute"].iloc[0]
    summary = tables["summary"]
    bm = next(iter(study.benchmarks.values()))
    written = figures.draw_from(study, tables, figures_dir, PAGE_FIGURES, formats=("png",), dpi=80)
    rel = lambda p: Path(*Path(p).parts[len(page.parent.parts):]).as_posix()  # noqa: E731
    secs = sections(study, tables)
    lines = [
        f"# Results: {study.name}",
        "",
        f"<!-- generated by `prunegen results --study {source}`; do not edit by hand -->",
        "",
        f"Study `{source}`: {', '.join(f'`{b}` ({b_.dataset}, {_model(b_.model)})' for b, b_ in study.benchmarks.items())}; "
        f"arms {', '.join(f'`{a}`' for a in study.arms)}; {study.levels} levels pruning "
        f"{100 * bm.prune.fraction:g}% per level (to {_sparsity(1 - (1 - bm.prune.fraction) ** study.levels)} sparsity); "
        f"label noise {', '.join(f'{f:g}' for f in study.noise)} ({study.noise_mode}); seeds "
        f"{', '.join(str(s) for s in study.seeds)}; {bm.train.epochs} epochs per training cycle.",
        "",
        "Every number below is a cell of the tables in "
        f"[`{rel(tables_dir)}/`]({rel(tables_dir)}/) (copies of the study's merged tables). "
        "Intervals are 95% Student-t intervals over seeds.",
        "",
        "## Verdicts",
        "",
        *_table(["claim", "verdict"], [[s.title, s.verdict] for s in secs]),
        "## Compute",
        "",
        f"{compute['cells']} cells, {compute['epochs']} training epochs (each counted once), "
        f"{_duration(compute['cell_seconds'])} inside the cells, {_duration(compute['job_seconds'])} of jobs "
        f"(with process start), {_duration(compute['wall_seconds'])} wall clock from the first job's start "
        "to the last cell's end.",
        "",
    ]
    for s in secs:
        lines += [f"## {s.title}", "", f"Claim: {s.claim}", "", f"**Verdict: {s.verdict}.**", "", *s.body, ""]
    lines += ["## Figures", ""]
    lines += [f"![{Path(p).stem}]({rel(p)})" for p in written] + [""]
    lines += ["## What a proper test needs", "",
              f"This run trained {bm.train.epochs} epochs per cycle where the paper trains 40, with "
              f"{len(study.seeds)} seeds (a 95% interval over 2 seeds is the mean +- 12.7 standard errors). "
              "Claims marked inconclusive need more seeds (5 or more) before their intervals can separate; "
              "the memorization claim needs cycles long enough for the dense model to fit its noisy labels "
              "(the paper's 40 epochs or more), and the GPU grid of `workflow/studies/paper.yaml` tests it at "
              "the paper's scale.", ""]
    with records.atomic_write(page) as tmp:
        Path(tmp).write_text("\n".join(lines))
    return [page, *written]


def numbers(page_text: str) -> list[str]:
    """Percentages on a page (for the tests: each must be found in the tables)."""
    return re.findall(r"-?\d+\.\d{2}%", page_text)


def build(study: Study, page: str | Path, source: str, tables_from: Path | None = None,
          refresh: bool = True) -> list[Path]:
    """`collect` (unless refresh is False: render from the copies already beside the page) then `render`."""
    page = Path(page)
    tables_dir = page.parent / "results" / study.name / "tables"
    figures_dir = page.parent / "results" / study.name / "figures"
    if refresh:
        collect(study, tables_dir, tables_from)
    return render(study, page, tables_dir, figures_dir, source)

