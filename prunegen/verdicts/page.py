"""A study's results page: the paper's claims, benchmark by benchmark, as Markdown.

    prunegen results --study workflow/studies/mnist.yaml --out docs/results.md

Two steps. `collect` copies the tables the page reads (`summary`, `headline`,
`memorization`, `optimal`) from `results/<study>/tables` next to the page, with a
one-row `compute` table (cells, epochs, seconds). `render` judges the claims on those
copies (`rules.judge`, written beside them as `verdicts.parquet`) and writes the page and
its figures, so the page regenerates byte for byte from what is committed beside it,
and every number on it is a cell of one of those tables (the paper's quoted figures
aside, which are labelled as such).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from .. import engine, machine, records
from ..config import Study
from . import changes, paper, rules
from .paper import CLAIMS
from .stats import INCONCLUSIVE, MAX_SEEDS, t_quantile

TABLES = ("summary", "headline", "memorization", "optimal", "compute")
PAGE_FIGURES = ("test_error", "train_loss", "memorization", "decomposition", "optimal_sparsity")


class TablesError(FileNotFoundError):
    """The merged tables (or the page's copies of them) are not there."""


# ---------------------------------------------------------------- collect

def _engines(compute: dict) -> str:
    """The compute section's engine sentence: a warning when the cells mix engines."""
    if not compute.get("engines"):  # a compute table from before engines were recorded
        return ""
    if compute["n_engines"] > 1:
        return (f" **Warning: these cells come from {compute['n_engines']} engines** (prunegen/engine.py), whose "
                f"numbers can differ in the last bits: {compute['engines']}.")
    return f" Engine: {compute['engines']}."


def compute_table(study: Study, summary: pd.DataFrame) -> pd.DataFrame:
    """Cells, epochs trained (each once: a chain cell trains one cycle), seconds inside
    the cells, and, where Snakemake's benchmark files are there, seconds per job and
    the wall-clock span from the first job's start to the last cell's end."""
    from ..plan import cycles_of

    epochs_per_cycle = summary["benchmark"].map({b: bm.train.epochs for b, bm in study.benchmarks.items()})
    job_seconds, starts, ends, cycles, machines, engines = 0.0, [], [], [], {}, []
    for row in summary.itertuples():
        cell = study.cell(row.benchmark, row.arm, int(row.level), float(row.noise), int(row.seed))
        cycles.append(cycles_of(cell))  # the cycles this cell trained itself
        meta = records.read_cell_json(cell.dir) or {}
        engines.append(engine.label(meta))
        m = meta.get("machine")
        what = machine.label(m) if m else "not recorded"
        hosts, n = machines.get(what, (set(), 0))
        machines[what] = (hosts | {m["host"]} if m else hosts, n + 1)
        tsv, marker = study.root / "benchmarks" / "cells" / f"{cell.relpath}.tsv", cell.dir / records.COMPLETE_MARKER
        if tsv.is_file() and marker.is_file():
            seconds = float(pd.read_csv(tsv, sep="\t")["s"].iloc[-1])
            job_seconds += seconds
            ends.append(marker.stat().st_mtime)
            starts.append(ends[-1] - seconds)
    return pd.DataFrame([{
        "study": study.name, "cells": len(summary),
        "epochs": int((np.array(cycles, dtype=np.int64) * epochs_per_cycle.to_numpy()).sum()),
        "cell_seconds": float(summary["wall_seconds"].sum()),
        "job_seconds": job_seconds if ends else float("nan"),
        "wall_seconds": max(ends) - min(starts) if ends else float("nan"),
        "machines": "; ".join(f"{what} ({n} cell{'s' if n != 1 else ''}"
                              + (f" on {len(hosts)} host{'s' if len(hosts) != 1 else ''})" if hosts else ")")
                              for what, (hosts, n) in sorted(machines.items(), key=lambda kv: -kv[1][1])),
        "engines": "; ".join(f"{e} ({n} cell{'s' if n != 1 else ''})" for e, n in engine.tally(engines)),
        "n_engines": len(set(engines)),
    }])


def collect(study: Study, tables_dir: Path, tables_from: Path | None = None, since: Path | None = None,
            since_label: str | None = None) -> None:
    """Copy the merged tables the page needs into `tables_dir`, plus the compute table, and
    the earlier verdict records `since` (for the "What changed" section) with their label."""
    src = Path(tables_from) if tables_from is not None else study.root / "tables"
    missing = [f"{src / n}.parquet" for n in TABLES[:-1] if not (src / f"{n}.parquet").is_file()]
    if missing:
        raise TablesError(f"no merged tables: {', '.join(missing)}; run the study (snakemake) or "
                          f"`prunegen merge --study ...` first")
    earlier = None if since is None else changes.read_since(since)  # before render overwrites it
    tables_dir.mkdir(parents=True, exist_ok=True)
    if earlier is not None:
        with records.atomic_write(tables_dir / changes.SINCE_FILE) as tmp:
            # a label given wins; re-collecting kept records keeps theirs
            earlier.assign(since=since_label or changes.label_of(earlier, str(since))).to_parquet(tmp, index=False)
    for n in TABLES[:-1]:
        with records.atomic_write(tables_dir / f"{n}.parquet") as tmp:
            shutil.copyfile(src / f"{n}.parquet", tmp)
    summary = pd.read_parquet(src / "summary.parquet")
    with records.atomic_write(tables_dir / "compute.parquet") as tmp:
        compute_table(study, summary).to_parquet(tmp, index=False)


# ---------------------------------------------------------------- formatting

def pct(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.2f}%"


def num(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.4f}"


def interval(mean: float, low: float, high: float, fmt=pct) -> str:
    ci = f" [{fmt(low)}, {fmt(high)}]" if np.isfinite(low) and np.isfinite(high) else ""
    return f"{fmt(mean)}{ci}"


def with_ci(row, metric: str, fmt=pct) -> str:
    """`mean [low, high]` of a headline/memorization row, as the page prints it."""
    return interval(row[f"{metric}_mean"], row[f"{metric}_ci_low"], row[f"{metric}_ci_high"], fmt)


def of_record(r, fmt=pct) -> str:
    """A verdict record's statistic: `mean [low, high]`."""
    return interval(r["mean"], r["ci_low"], r["ci_high"], fmt)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(r) + " |" for r in rows), ""]


def _sparsity(s: float) -> str:
    return f"{100 * s:.1f}%"


def _level(level: float, sparsity: float) -> str:
    return f"{int(level)} ({_sparsity(sparsity)})"


def _model(model: dict) -> str:
    extra = model.get("hidden") or model.get("width")
    return f"{model['name']} {extra}" if extra else model["name"]


def _duration(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "n/a"
    h, m = divmod(int(round(seconds / 60)), 60)
    return f"{h} h {m:02d} min" if h else f"{m} min"


def _seeds(x: float) -> str:
    return "n/a" if np.isnan(x) else f"> {MAX_SEEDS}" if np.isinf(x) else str(int(x))


def numbers(page_text: str) -> list[str]:
    """Percentages and 4-decimal values on a page (for the tests: each must be in the tables)."""
    return re.findall(r"-?\d+\.\d{2}%|-?\d+\.\d{4}(?!\d)", page_text)


# ---------------------------------------------------------------- one benchmark

class _Benchmark:
    """The tables' rows of one benchmark, and the page section that reports them."""

    def __init__(self, study: Study, name: str, tables: dict[str, pd.DataFrame], verdicts: pd.DataFrame):
        self.study, self.name = study, name
        self.bm = study.benchmarks.get(name)
        pick = lambda df: df[df["benchmark"] == name]  # noqa: E731
        self.summary, self.head, self.mem, self.opt = (pick(tables[n]) for n in ("summary", "headline",
                                                                               "memorization", "optimal"))
        self.verdicts = pick(verdicts)
        self.seeds = sorted(self.summary["seed"].unique())
        self.noises = sorted(self.summary["noise"].unique())
        self.fraction = self.bm.prune.fraction if self.bm else 0.2

    def records(self, claim: str) -> pd.DataFrame:
        return self.verdicts[self.verdicts["claim"] == claim]

    def head_row(self, arm: str, noise: float, level: int):
        h = self.head[(self.head["arm"] == arm) & (self.head["noise"] == noise) & (self.head["level"] == level)]
        return h.iloc[0] if len(h) else None

    def effective(self, noise: float) -> float:
        m = self.mem[(self.mem["noise"] == noise) & (self.mem["arm"] == "dense")]
        return float(m["noise_effective_mean"].iloc[0]) if len(m) else float("nan")

    # ---- text computed from the study

    def setup(self) -> list[str]:
        bm, n = self.bm, len(self.seeds)
        theirs = paper.paper_epochs(bm.dataset, bm.model["name"]) if bm else None
        epochs = (f"{bm.train.epochs} epochs per training cycle "
                  + (f"(the paper: {theirs})" if theirs else "(not one of the paper's benchmarks)")) if bm else ""
        noise = ", ".join(f"{f:g}" + (f" ({pct(self.effective(f))} of labels changed)" if f > 0 else "")
                          for f in self.noises)
        t = t_quantile(n)
        seeds = (f"{n} seeds ({', '.join(map(str, self.seeds))}): intervals are the mean +- {t:.2f} standard "
                 "errors" if n >= 2 else f"{n} seed: no interval, so every verdict is inconclusive")
        low = rules.low_levels(self.fraction, self.study.levels)
        high = rules.high_levels(self.study.levels)
        sp = lambda ks: ", ".join(_level(k, 1 - (1 - self.fraction) ** k) for k in ks) or "none"  # noqa: E731
        return [f"`{self.name}`: {bm.dataset if bm else '?'}, {_model(bm.model) if bm else '?'}; "
                f"{100 * self.fraction:g}% pruned per level; {epochs}; {seeds}; label noise {noise} "
                f"({self.study.noise_mode}). Low sparsity (claim 2): levels {sp(low)}; high sparsity "
                f"(claim 3): levels {sp(high)}.", ""]

    # ---- the claims

    def claim_1(self) -> list[str]:
        rows = []
        imp = self.opt[self.opt["arm"] == "imp"]
        for _, r in self.records("1").iterrows():
            o = imp[imp["noise"] == r["noise"]].set_index("seed")
            dense = self.head_row("dense", r["noise"], 0)
            chosen = ", ".join(f"{int(o.loc[s, 'level'])}" if s in o.index else "-" for s in self.seeds)
            best = self.head[(self.head["noise"] == r["noise"]) & (self.head["arm"] == "imp")]
            by_test = best.loc[best["test_error_mean"].idxmin()] if len(best) else None
            rows.append([f"{r['noise']:g}", with_ci(dense, "test_error") if dense is not None else "n/a", chosen,
                         of_record(r), r["verdict"], r["reason"],
                         _level(by_test["level"], by_test["nominal_sparsity"]) if by_test is not None else "n/a"])
        body = _table(["noise", "dense test error", "imp level chosen on validation (per seed)",
                       "imp - dense test error (paired)", "verdict", "why",
                       "best level by mean test error (description only)"], rows)
        body.append("Each seed's `imp` level (dense included) is the one with the lowest validation error "
                    "(the `optimal` table), as the paper chooses it; its test error is paired with the same "
                    "seed's dense model. The level with the lowest mean *test* error is shown for description "
                    "and never used for a verdict (it would be chosen on the data it is judged on).")
        return body

    def claim_2(self) -> list[str]:
        rows = []
        for _, r in self.records("2").iterrows():
            dense, arm = self.head_row("dense", r["noise"], 0), self.head_row(r["arm"], r["noise"], int(r["level"]))
            rows.append([f"{r['noise']:g}", _level(r["level"], r["sparsity"]), f"`{r['arm']}`",
                         with_ci(dense, "train_loss", num) if dense is not None else "n/a",
                         with_ci(arm, "train_loss", num) if arm is not None else "n/a", of_record(r), r["verdict"]])
        body = _table(["noise", "level (sparsity)", "arm", "dense train loss", "arm train loss",
                       "change vs dense (paired)", "verdict"], rows)
        body.append("Training loss: the mean cross-entropy of the final model on the (possibly noisy) training "
                    "labels; the change is relative to the same seed's dense model.")
        return body

    def claim_3(self) -> list[str]:
        rows = []
        for _, r in self.records("3").iterrows():
            m = self.mem[(self.mem["noise"] == r["noise"]) & (self.mem["level"] == r["level"])]
            cell = {a: m[m["arm"] == a] for a in ("imp", "extended")}
            rows.append([f"{r['noise']:g}", _level(r["level"], r["sparsity"]),
                         *(with_ci(c.iloc[0], "memorization") if len(c) else "n/a" for c in cell.values()),
                         of_record(r), r["verdict"]])
        body = _table(["noise", "level (sparsity)", "imp memorization", "extended memorization",
                       "imp - extended (paired)", "verdict"], rows)
        body.append("Memorization: the fraction of the noisy training examples the final model predicts with "
                    "their (wrong) training label.")
        return body

    def claim_4(self) -> list[str]:
        rows = []
        a, b = self.records("4a"), self.records("4b")
        for _, r in a.iterrows():
            level = int(r["level"])
            te = {arm: self.head_row(arm, r["noise"], level) for arm in ("imp", "downscaled", "downscaled_extended")}
            rb = b[(b["noise"] == r["noise"]) & (b["level"] == r["level"])]
            rows.append([f"{r['noise']:g}", _level(r["level"], r["sparsity"]),
                         *(with_ci(h, "test_error") if h is not None else "n/a" for h in te.values()),
                         of_record(r), r["verdict"],
                         *((of_record(rb.iloc[0]), rb.iloc[0]["verdict"]) if len(rb) else ("n/a", "n/a"))])
        body = _table(["noise", "level (sparsity)", "imp test error", "downscaled", "downscaled_extended",
                       "4a: downscaled - imp (paired)", "4a",
                       "4b: distance of downscaled_extended - of downscaled (paired)",
                       "4b"], rows)
        body.append("4a expects `downscaled` above `imp` (the difference > 0); 4b expects `downscaled_extended` "
                    "closer to `imp` than `downscaled`: per seed, |downscaled_extended - imp| minus "
                    "|downscaled - imp| in test error, < 0.")
        return body

    def claim_5(self) -> list[str]:
        imp = self.opt[self.opt["arm"] == "imp"]
        rows = []
        for noise in sorted(imp["noise"].unique()):
            o = imp[imp["noise"] == noise].set_index("seed")
            rows.append([f"{noise:g}", *(_sparsity(o.loc[s, "nominal_sparsity"]) + ("" if o.loc[s, "complete_chain"]
                                          else " (incomplete chain)") if s in o.index else "n/a" for s in self.seeds)])
        r = self.records("5").iloc[0]
        body = _table(["noise", *(f"seed {s}" for s in self.seeds)], rows)
        body.append(f"Change of the validation-chosen sparsity from the lowest to the highest noise (paired per "
                    f"seed): {of_record(r)}, expected > 0: **{r['verdict']}** ({r['reason']}). The paper's "
                    "regularization account predicts the best sparsity to *rise* with noise.")
        return body

    def quoted(self) -> list[str]:
        """The relative changes of the average training loss quoted for the paper, beside this study's."""
        noisy = [f for f in self.noises if f > 0 and np.isfinite(self.effective(f))]
        levels = list(range(1, self.study.levels + 1))
        nearest_noise = min(noisy, key=lambda f: abs(self.effective(f) - paper.NOISE_EFFECTIVE), default=None)
        nearest_level = min(levels, key=lambda k: abs(1 - (1 - self.fraction) ** k - paper.SPARSITY), default=None)
        problems = []
        if nearest_noise is None:
            problems.append("no noise level above 0")
        elif not 1 / paper.NOISE_FACTOR <= self.effective(nearest_noise) / paper.NOISE_EFFECTIVE <= paper.NOISE_FACTOR:
            problems.append(f"no noise level near 2.81% of labels changed (the nearest changes "
                            f"{pct(self.effective(nearest_noise))})")
        if nearest_level is None:
            problems.append("no pruned level")
        elif abs(1 - (1 - self.fraction) ** nearest_level - paper.SPARSITY) > paper.SPARSITY_TOLERANCE:
            problems.append(f"no level near 80% sparsity (the nearest is "
                            f"{_sparsity(1 - (1 - self.fraction) ** nearest_level)})")
        where = ""
        if not problems:
            where = (f"Here: noise {nearest_noise:g} ({pct(self.effective(nearest_noise))} of labels changed) "
                     f"and level {_level(nearest_level, 1 - (1 - self.fraction) ** nearest_level)}, ")
        rows = []
        for q in paper.QUOTED:
            word = "lower" if q.figure < 0 else "higher"
            h = None if problems else self.head_row(q.arm, nearest_noise, nearest_level)
            ours = ("; ".join(problems) if problems else "no complete cells" if h is None
                    else with_ci(h, "train_loss_change"))
            rows.append([f"`{q.arm}`", q.context, f"{abs(q.figure) * 100:.2f}% {word} (quoted)", ours])
        return [*_table(["arm", "as quoted for the paper", "quoted change", "this study: change vs dense (paired)"],
                        rows),
                where + "relative change of the average training loss over all training examples (the `all` "
                "subgroup: equal-sized loss-quantile subgroups average to it) against the same seed's dense model. "
                "The quoted figures come from third-party summaries of the paper; their exact context (benchmark, "
                "noise, subgroup) is unverified, so they are context, not a test.", ""]

    def deciding(self) -> list[str]:
        """What would decide the inconclusive verdicts, claim by claim, with a number: the
        seeds at the spread measured where more seeds would, else the epochs per cycle or the
        sparsity grid that could."""
        v, bm = self.verdicts, self.bm
        open_ = v[v["verdict"] == INCONCLUSIVE]
        lines = [f"{len(open_)} of {len(v)} judged places are inconclusive."]
        epochs = bm.train.epochs if bm else None
        own = paper.paper_epochs(bm.dataset, bm.model["name"]) if bm else None  # a benchmark of the paper's
        theirs = own or (paper.family_epochs(bm.model["name"]) if bm else None)
        longer = (f"cycles of {theirs} epochs, as the paper trains {'it' if own else 'this model'}, where this "
                  f"study trains {epochs}") if theirs and epochs and epochs < theirs else None
        for key in CLAIMS:
            c = open_[open_["claim"] == key]
            if not len(c):
                continue
            need = c["seeds_needed"]
            finite, beyond, none = need[np.isfinite(need)], int(np.isinf(need).sum()), int(need.isna().sum())
            parts = []
            if len(finite):
                span = _seeds(finite.min()) if finite.min() == finite.max() else \
                    f"{_seeds(finite.min())} to {_seeds(finite.max())} (median {_seeds(float(np.median(finite)))})"
                parts.append(f"at the spread measured, {span} seeds would decide {len(finite)}")
            if beyond:
                parts.append(f"{beyond} would need more than {MAX_SEEDS} seeds (an effect too small for its spread)")
            if none:
                parts.append(f"{none} {'has' if none == 1 else 'have'} no spread, or a mean of 0, to extrapolate "
                             "a seed count from")
            if beyond or none:
                if key == "5":
                    parts.append(f"what could decide {'it' if beyond + none == 1 else 'those'}: a finer sparsity "
                                 f"grid (the chosen level moves in steps of {100 * self.fraction:g}% of the remaining "
                                 "weights)")
                else:
                    parts.append(f"what could decide {'it' if beyond + none == 1 else 'those'}: "
                                 + (longer or "a larger model or dataset"))
            lines.append(f"- claim {key}: {len(c)} inconclusive; " + "; ".join(parts) + ".")
        if longer and len(open_[open_["claim"] == "3"]):
            lines.append(f"- The memorization claim (3) needs the dense model to fit its noisy labels, which "
                         f"longer cycles allow ({longer}).")
        return [*lines, ""]

    def section(self) -> list[str]:
        out = [f"## Benchmark `{self.name}`", "", *self.setup()]
        bodies = {"1": self.claim_1, "2": self.claim_2, "3": self.claim_3, "4a": self.claim_4, "5": self.claim_5}
        summary = rules.summarize(self.verdicts, [self.name]).set_index("claim")
        for key, body in bodies.items():
            claim = CLAIMS[key]
            if key == "4a":
                title = "4. A smaller dense model alone does not match pruning; extended, it comes closer"
                verdict = f"4a {summary.loc['4a', 'verdict']}; 4b {summary.loc['4b', 'verdict']}"
                text = f"{claim.statement} {CLAIMS['4b'].statement}"
            else:
                title, verdict, text = f"{key}. {claim.title}", summary.loc[key, "verdict"], claim.statement
            out += [f"### {title}", "", f"Claim: {text}", "", f"**Verdict: {verdict}.**", "", *body(), ""]
        out += ["### The paper's headline numbers", "", *self.quoted(),
                "### What would decide it", "", *self.deciding()]
        return out


# ---------------------------------------------------------------- the page

def judge(study: Study, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return rules.judge(tables, study.levels, {b: bm.prune.fraction for b, bm in study.benchmarks.items()})


def _since(tables_dir: Path, verdicts: pd.DataFrame) -> list[str]:
    """The "What changed" section, where earlier verdict records lie beside the page."""
    path = tables_dir / changes.SINCE_FILE
    if not path.is_file():
        return []
    earlier = changes.read_since(path)
    return changes.render(changes.compare(earlier, verdicts), changes.label_of(earlier, str(path)))


def render(study: Study, page: Path, tables_dir: Path, figures_dir: Path, source: str) -> list[Path]:
    """Judge the claims on the tables in `tables_dir` (writing `verdicts.parquet` there) and
    write the page and its figures; returns what was written."""
    from .. import figures

    missing = [str(tables_dir / f"{n}.parquet") for n in TABLES if not (tables_dir / f"{n}.parquet").is_file()]
    if missing:
        raise TablesError(f"no page tables: {', '.join(missing)}; run `prunegen results` without "
                          "--from-page-tables to copy them from the study's merged tables")
    tables = {n: pd.read_parquet(tables_dir / f"{n}.parquet") for n in TABLES}
    verdicts = judge(study, tables)
    with records.atomic_write(tables_dir / "verdicts.parquet") as tmp:
        verdicts.to_parquet(tmp, index=False)
    compute = tables["compute"].iloc[0]
    names = sorted(tables["summary"]["benchmark"].unique())
    benchmarks = [_Benchmark(study, b, tables, verdicts) for b in names]
    written = figures.draw_from(study, tables, figures_dir, PAGE_FIGURES, formats=("png",), dpi=80)
    rel = lambda p: Path(*Path(p).parts[len(page.parent.parts):]).as_posix()  # noqa: E731
    overall = rules.summarize(verdicts, names)
    lines = [
        f"# Results: {study.name}",
        "",
        f"<!-- generated by `prunegen results --study {source}`; do not edit by hand -->",
        "",
        f"Study `{source}`: {len(names)} benchmark{'s' if len(names) != 1 else ''} "
        f"({', '.join(f'`{b}`' for b in names)}); arms {', '.join(f'`{a}`' for a in study.arms)}; levels 0 to "
        f"{study.levels}; label noise {', '.join(f'{f:g}' for f in study.noise)} ({study.noise_mode}); seeds "
        f"{', '.join(str(s) for s in study.seeds)}. Each benchmark is judged on its own.",
        "",
        "Every number below is a cell of the tables in "
        f"[`{rel(tables_dir)}/`]({rel(tables_dir)}/) (copies of the study's merged tables, and the verdict "
        "records judged from them), except the figures quoted for the paper, which are labelled.",
        "",
        "## Verdicts",
        "",
        "A verdict reads the 95% Student-t interval over seeds of a paired per-seed difference: **held** when "
        "it excludes 0 on the side the paper expects, **did not hold** when it excludes 0 on the other side, "
        "**inconclusive** when it contains 0 (or there are fewer than 2 seeds). A claim judged at several noise "
        "levels or sparsities is `mixed` when those disagree, with the counts.",
        "",
        *_table(["benchmark", "claim", "expects", "verdict"],
                [[f"`{r.benchmark}`", f"{r.claim}. {r.title}", CLAIMS[r.claim].expected + ": "
                  + CLAIMS[r.claim].statistic, r.verdict] for r in overall.itertuples()]),
        *_since(tables_dir, verdicts),
        "## Compute",
        "",
        f"{compute['cells']} cells, {compute['epochs']} training epochs (each counted once), "
        f"{_duration(compute['cell_seconds'])} inside the cells, {_duration(compute['job_seconds'])} of jobs "
        f"(with process start), {_duration(compute['wall_seconds'])} wall clock from the first job's start "
        "to the last cell's end."
        + (f" Machines (from each cell's record): {compute['machines']}." if compute.get("machines") else "")
        + _engines(compute),
        "",
    ]
    for b in benchmarks:
        lines += b.section()
    lines += ["## Figures", "", "Intervals of quantities bounded in [0, 1] (errors, memorization) are clipped to "
              "that range; each seed's value is a faint point beside the mean.", ""]
    lines += [f"![{Path(p).stem}]({rel(p)})" for p in written] + [""]
    with records.atomic_write(page) as tmp:
        Path(tmp).write_text("\n".join(lines))
    return [page, *written]


def build(study: Study, page: str | Path, source: str, tables_from: Path | None = None,
          refresh: bool = True, since: Path | None = None, since_label: str | None = None) -> list[Path]:
    """`collect` (unless refresh is False: render from the copies already beside the page) then `render`."""
    page = Path(page)
    tables_dir = page.parent / "results" / study.name / "tables"
    figures_dir = page.parent / "results" / study.name / "figures"
    if refresh:
        collect(study, tables_dir, tables_from, since, since_label)
    if study.arm_specs:  # a study that defines arms gets the methods page (prunegen/verdicts/methods.py)
        from . import methods

        return methods.render(study, page, tables_dir, figures_dir, source)
    return render(study, page, tables_dir, figures_dir, source)
