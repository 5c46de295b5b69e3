"""The results page: the paper's claims, benchmark by benchmark, as Markdown.

`render` judges the claims on the table copies beside the page (prunegen.analysis.report.tables;
`rules.judge`, written beside them as `verdicts.parquet`) and writes the page and its
figures, so the page regenerates byte for byte from what is committed beside it, and every
number on it is a cell of one of those tables (the paper's quoted figures aside, which are
labelled as such).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ...records import store
from ...study.grid import Study
from .. import compute
from ..figures import draw
from ..verdicts import changes, paper, rules
from ..verdicts.paper import CLAIMS
from ..verdicts.stats import INCONCLUSIVE, MAX_SEEDS, t_quantile
from .markdown import (
    duration,
    level_text,
    model_text,
    num,
    of_record,
    pct,
    seeds_text,
    sparsity_text,
    table,
    with_ci,
)
from .tables import read as read_page_tables
from .tables import read_since

PAGE_FIGURES = ("test_error", "train_loss", "memorization", "decomposition", "optimal_sparsity")


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
        sp = lambda ks: ", ".join(level_text(k, 1 - (1 - self.fraction) ** k) for k in ks) or "none"  # noqa: E731
        return [f"`{self.name}`: {bm.dataset if bm else '?'}, {model_text(bm.model) if bm else '?'}; "
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
                         level_text(by_test["level"], by_test["nominal_sparsity"]) if by_test is not None else "n/a"])
        body = table(["noise", "dense test error", "imp level chosen on validation (per seed)",
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
            rows.append([f"{r['noise']:g}", level_text(r["level"], r["sparsity"]), f"`{r['arm']}`",
                         with_ci(dense, "train_loss", num) if dense is not None else "n/a",
                         with_ci(arm, "train_loss", num) if arm is not None else "n/a", of_record(r), r["verdict"]])
        body = table(["noise", "level (sparsity)", "arm", "dense train loss", "arm train loss",
                       "change vs dense (paired)", "verdict"], rows)
        body.append("Training loss: the mean cross-entropy of the final model on the (possibly noisy) training "
                    "labels; the change is relative to the same seed's dense model.")
        return body

    def claim_3(self) -> list[str]:
        rows = []
        for _, r in self.records("3").iterrows():
            m = self.mem[(self.mem["noise"] == r["noise"]) & (self.mem["level"] == r["level"])]
            cell = {a: m[m["arm"] == a] for a in ("imp", "extended")}
            rows.append([f"{r['noise']:g}", level_text(r["level"], r["sparsity"]),
                         *(with_ci(c.iloc[0], "memorization") if len(c) else "n/a" for c in cell.values()),
                         of_record(r), r["verdict"]])
        body = table(["noise", "level (sparsity)", "imp memorization", "extended memorization",
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
            rows.append([f"{r['noise']:g}", level_text(r["level"], r["sparsity"]),
                         *(with_ci(h, "test_error") if h is not None else "n/a" for h in te.values()),
                         of_record(r), r["verdict"],
                         *((of_record(rb.iloc[0]), rb.iloc[0]["verdict"]) if len(rb) else ("n/a", "n/a"))])
        body = table(["noise", "level (sparsity)", "imp test error", "downscaled", "downscaled_extended",
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
            rows.append([f"{noise:g}", *(sparsity_text(o.loc[s, "nominal_sparsity"]) + ("" if o.loc[s, "complete_chain"]
                                          else " (incomplete chain)") if s in o.index else "n/a" for s in self.seeds)])
        r = self.records("5").iloc[0]
        body = table(["noise", *(f"seed {s}" for s in self.seeds)], rows)
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
                            f"{sparsity_text(1 - (1 - self.fraction) ** nearest_level)})")
        where = ""
        if not problems:
            where = (f"Here: noise {nearest_noise:g} ({pct(self.effective(nearest_noise))} of labels changed) "
                     f"and level {level_text(nearest_level, 1 - (1 - self.fraction) ** nearest_level)}, ")
        rows = []
        for q in paper.QUOTED:
            word = "lower" if q.figure < 0 else "higher"
            h = None if problems else self.head_row(q.arm, nearest_noise, nearest_level)
            ours = ("; ".join(problems) if problems else "no complete cells" if h is None
                    else with_ci(h, "train_loss_change"))
            rows.append([f"`{q.arm}`", q.context, f"{abs(q.figure) * 100:.2f}% {word} (quoted)", ours])
        return [*table(["arm", "as quoted for the paper", "quoted change", "this study: change vs dense (paired)"],
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
                span = seeds_text(finite.min()) if finite.min() == finite.max() else \
                    f"{seeds_text(finite.min())} to {seeds_text(finite.max())} (median {seeds_text(float(np.median(finite)))})"
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
    earlier = read_since(path)
    return what_changed(changes.compare(earlier, verdicts), changes.label_of(earlier, str(path)))


def render(study: Study, page: Path, tables_dir: Path, figures_dir: Path, source: str) -> list[Path]:
    """Judge the claims on the tables in `tables_dir` (writing `verdicts.parquet` there) and
    write the page and its figures; returns what was written."""
    tables = read_page_tables(tables_dir)
    verdicts = judge(study, tables)
    with store.atomic_write(tables_dir / "verdicts.parquet") as tmp:
        verdicts.to_parquet(tmp, index=False)
    compute_row = tables["compute"].iloc[0]
    names = sorted(tables["summary"]["benchmark"].unique())
    benchmarks = [_Benchmark(study, b, tables, verdicts) for b in names]
    written = draw.draw_from(study, tables, figures_dir, PAGE_FIGURES, formats=("png",), dpi=80)
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
        *table(["benchmark", "claim", "expects", "verdict"],
                [[f"`{r.benchmark}`", f"{r.claim}. {r.title}", CLAIMS[r.claim].expected + ": "
                  + CLAIMS[r.claim].statistic, r.verdict] for r in overall.itertuples()]),
        *_since(tables_dir, verdicts),
        "## Compute",
        "",
        f"{compute_row['cells']} cells, {compute_row['epochs']} training epochs (each counted once), "
        f"{duration(compute_row['cell_seconds'])} inside the cells, {duration(compute_row['job_seconds'])} of jobs "
        f"(with process start), {duration(compute_row['wall_seconds'])} wall clock from the first job's start "
        "to the last cell's end."
        + (f" Machines (from each cell's record): {compute_row['machines']}." if compute_row.get("machines") else "")
        + compute.engines_sentence(compute_row),
        "",
    ]
    for b in benchmarks:
        lines += b.section()
    lines += ["## Figures", "", "Intervals of quantities bounded in [0, 1] (errors, memorization) are clipped to "
              "that range; each seed's value is a faint point beside the mean.", ""]
    lines += [f"![{Path(p).stem}]({rel(p)})" for p in written] + [""]
    with store.atomic_write(page) as tmp:
        Path(tmp).write_text("\n".join(lines))
    return [page, *written]


def what_changed(changes: pd.DataFrame, label: str) -> list[str]:
    """The page's "What changed" section."""
    judged_before = changes["before"].notna()
    new = changes.loc[~judged_before, "benchmark"].unique()
    lines = [f"## What changed since {label}", "",
             f"{int(changes['moved'].sum())} of {int(judged_before.sum())} verdicts judged both times moved" + (f"; {', '.join(f'`{b}`' for b in new)} is new" if len(new) else "")
             + ". A place (noise level, sparsity) moved when its verdict differs; why is read from its two "
             "intervals.", "",
             "| benchmark | claim | before | now | why |", "|---|---|---|---|---|"]
    for r in changes.itertuples():
        title = f"{r.claim}. {CLAIMS[r.claim].title}"
        before = "-" if pd.isna(r.before) else r.before
        lines.append(f"| `{r.benchmark}` | {title} | {before} | {r.now} | {r.why} |")
    return [*lines, ""]
