"""The results page: the paper's claims, benchmark by benchmark, as Markdown.

`render` judges the claims on the table copies beside the page (prunegen.analysis.report.tables;
`rules.judge`, written beside them as `verdicts.parquet`) and writes the page and its
figures, so the page regenerates byte for byte from what is committed beside it, and every
number on it is a cell of one of those tables (the paper's quoted figures aside, which are
labelled as such).

A page can set a second study beside its own (`beside.json` in its tables folder: that
study's file, its page tables and a label), judged by the same rules: the "Two regimes"
section puts the two side by side (the 4-epoch study beside the paper's 40 epochs).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ...records import store
from ...study.grid import Study
from ...study.load import load_study
from .. import compute
from ..figures import draw
from ..verdicts import changes, paper, rules
from ..verdicts.paper import CLAIMS
from ..verdicts.stats import ALPHA, HELD, INCONCLUSIVE, MAX_SEEDS, NOT_HELD, POWER
from .markdown import (
    duration,
    level_text,
    model_text,
    num,
    p_text,
    pct,
    points,
    seeds_text,
    sparsity_text,
    table,
    with_ci,
)
from .tables import BESIDE_FILE, read_since
from .tables import read as read_page_tables

PAGE_FIGURES = ("test_error", "train_loss", "memorization", "decomposition", "optimal_sparsity")
BESIDE_VERDICTS = "beside_verdicts.parquet"
RULE = (f"Each (benchmark, claim) has one primary statistic, fixed before the data (below, with the side the "
        "paper expects it on), computed per seed at each place the claim applies to (a noise level). At each "
        "place a two-sided t-test of its mean against 0; across the places of one (benchmark, claim), Holm's "
        f"correction, so that the chance of any false decision is at most {ALPHA:g}. A place **held** when Holm "
        "rejects 0 and the mean is on the expected side, **did not hold** when Holm rejects 0 and the mean is on "
        "the other side, and is **inconclusive** otherwise. Each place's corrected interval is at the level Holm's "
        "step tests it at (places ranked by p-value, the first at 1 - 0.05/m): Holm rejects a place when its "
        "interval excludes 0 and every place ranked before it was rejected. The claim's verdict: **held** when some place held and none "
        "did not; **did not hold**, the reverse; **mixed** when places went both ways; **inconclusive** when none "
        "was decided; **not judged** where the claim applies nowhere. The 95% intervals per place and per level "
        "are description: they are never counted into a verdict.")


def unit_fmt(claim: str):
    return pct if CLAIMS[claim].unit == "relative" else points


def judge(study: Study, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return rules.judge(tables, study.levels, {b: bm.prune.fraction for b, bm in study.benchmarks.items()})


def regime_text(study: Study, benchmark: str) -> tuple[str, bool]:
    bm = study.benchmarks.get(benchmark)
    if bm is None:
        return "?", False
    theirs, ours = paper.regime(bm.dataset, bm.model["name"], bm.train.epochs)
    if theirs is None:
        return f"{bm.train.epochs} epochs per cycle (not one of the paper's models)", False
    if ours:
        return f"{bm.train.epochs} epochs per cycle: the paper's regime", True
    return f"{bm.train.epochs} epochs per cycle: NOT the paper's regime ({theirs})", False


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
        self.primary = rules.summarize(verdicts, [name]).set_index("claim")

    def records(self, claim: str) -> pd.DataFrame:
        return self.verdicts[self.verdicts["claim"] == claim]

    def head_row(self, arm: str, noise: float, level: int):
        h = self.head[(self.head["arm"] == arm) & (self.head["noise"] == noise) & (self.head["level"] == level)]
        return h.iloc[0] if len(h) else None

    def effective(self, noise: float) -> float:
        m = self.mem[(self.mem["noise"] == noise) & (self.mem["arm"] == "dense")]
        return float(m["noise_effective_mean"].iloc[0]) if len(m) else float("nan")

    def sparsity(self, level: int) -> float:
        return 1 - (1 - self.fraction) ** level

    def levels_text(self, ks: list[int]) -> str:
        return ", ".join(level_text(k, self.sparsity(k)) for k in ks) or "none"

    # ---- text computed from the study

    def setup(self) -> list[str]:
        bm, n = self.bm, len(self.seeds)
        noise = ", ".join(f"{f:g}" + (f" ({pct(self.effective(f))} of labels changed)" if f > 0 else "")
                          for f in self.noises)
        low = rules.low_levels(self.fraction, self.study.levels)
        high = rules.high_levels(self.study.levels)
        return [f"`{self.name}`: {bm.dataset if bm else '?'}, {model_text(bm.model) if bm else '?'}; "
                f"{100 * self.fraction:g}% pruned per level; {regime_text(self.study, self.name)[0]}; {n} seed"
                f"{'s' if n != 1 else ''} ({', '.join(map(str, self.seeds))}); label noise {noise} "
                f"({self.study.noise_mode}). Low sparsity (claim 2): levels {self.levels_text(low)}; high "
                f"sparsity (claim 3): levels {self.levels_text(high)}.", ""]

    def places(self, claim: str) -> list[str]:
        """The judged places of a claim: the statistic, its 95% interval (description), the
        interval Holm's step tests it at, the p-values and the place's verdict."""
        rows, fmt = [], unit_fmt(claim)
        for _, r in self.records(claim).iterrows():
            where = f"{r['noise']:g}" if np.isfinite(r["noise"]) else "-"
            if np.isfinite(r["level"]):
                where += f", level {level_text(r['level'], r['sparsity'])}"
            corrected = (f"[{fmt(r['holm_low'])}, {fmt(r['holm_high'])}] ({100 * r['holm_level']:.2f}%)"
                         if np.isfinite(r["holm_low"]) else "n/a")
            rows.append([where, str(int(r["n_seeds"])), f"{fmt(r['mean'])} [{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]"
                         if np.isfinite(r["ci_low"]) else fmt(r["mean"]), corrected, p_text(r["p_value"]),
                         p_text(r["p_holm"]), r["verdict"], r["reason"]])
        if not rows:
            return ["Not judged: the claim applies at no noise level of this benchmark "
                    + ("(claim 1 held at none: pruning has no gain to explain)." if claim in ("4a", "4b") else "."), ""]
        return table(["noise", "seeds", "statistic, 95% interval (description)", "Holm's corrected interval",
                      "p", "p (Holm)", "verdict", "why"], rows)

    def claim_header(self, key: str) -> list[str]:
        c, p = CLAIMS[key], self.primary.loc[key]
        unit = "relative change" if c.unit == "relative" else "percentage points"
        return [f"### {key}. {c.title}", "", f"Claim: {c.statement} (Direction: {c.source}.)", "",
                f"Primary statistic ({unit}): {c.statistic}; expected {c.expected}; judged at {c.where}.", "",
                f"**Verdict: {p['verdict']}**" + (f" ({p['places']})." if p["places"] else "."), ""]

    def level_rows(self, arms: tuple[str, ...], metric: str, levels: list[int], fmt=pct) -> list[str]:
        """Per noise level and level, `dense` (level 0, the same on every row) and each arm's
        mean and 95% interval (description)."""
        rows = []
        for noise in self.noises:
            dense = self.head_row("dense", noise, 0)
            for k in levels:
                cells = [self.head_row(a, noise, k) for a in arms]
                if all(c is None for c in cells):
                    continue
                rows.append([f"{noise:g}", level_text(k, self.sparsity(k)),
                             with_ci(dense, metric, fmt) if dense is not None else "n/a",
                             *(with_ci(c, metric, fmt) if c is not None else "n/a" for c in cells)])
        name = metric.replace("_", " ")
        return table(["noise", "level (sparsity)", f"`dense` {name} (level 0)", *(f"`{a}` {name}" for a in arms)],
                     rows) if rows else []

    def claim_1(self) -> list[str]:
        rows = []
        imp = self.opt[self.opt["arm"] == "imp"]
        for noise in self.noises:
            o = imp[imp["noise"] == noise].set_index("seed")
            dense = self.head_row("dense", noise, 0)
            chosen = ", ".join(f"{int(o.loc[s, 'level'])}" if s in o.index else "-" for s in self.seeds)
            rows.append([f"{noise:g}", with_ci(dense, "test_error") if dense is not None else "n/a", chosen])
        return [*self.claim_header("1"), *self.places("1"),
                *table(["noise", "dense test error", "imp level chosen on validation (per seed)"], rows),
                "Each seed's `imp` level (dense included) is the one with the lowest validation error (the "
                "`optimal` table), as the paper chooses it; its test error is paired with the same seed's dense "
                "model.", ""]

    def claim_2(self) -> list[str]:
        low = rules.low_levels(self.fraction, self.study.levels)
        return [*self.claim_header("2a"), *self.places("2a"), *self.claim_header("2b"), *self.places("2b"),
                "Training loss per level (the final model's mean cross-entropy on the training labels; "
                "description):", "", *self.level_rows(("imp", "extended"), "train_loss", low, num)]

    def claim_3(self) -> list[str]:
        high = rules.high_levels(self.study.levels)
        out = [*self.claim_header("3a"), *self.places("3a"), *self.claim_header("3b"), *self.places("3b")]
        rows = []
        for noise in (f for f in self.noises if f > 0):
            for k in high:
                m = self.mem[(self.mem["noise"] == noise) & (self.mem["level"] == k)]
                mem = {a: m[m["arm"] == a] for a in ("imp", "extended")}
                err = {a: self.head_row(a, noise, k) for a in ("imp", "extended")}
                rows.append([f"{noise:g}", level_text(k, self.sparsity(k)),
                             *(with_ci(c.iloc[0], "memorization") if len(c) else "n/a" for c in mem.values()),
                             *(with_ci(c, "test_error") if c is not None else "n/a" for c in err.values())])
        if rows:
            out += ["Per level at the same training time (description): memorization is the fraction of noisy "
                    "training examples the final model predicts with their (wrong) training label.", "",
                    *table(["noise", "level (sparsity)", "`imp` memorization", "`extended` memorization",
                            "`imp` test error", "`extended` test error"], rows)]
        return out

    def claim_4(self) -> list[str]:
        out = [*self.claim_header("4a"), *self.places("4a"), *self.claim_header("4b"), *self.places("4b")]
        a, b = self.records("4a"), self.records("4b")
        rows = []
        for (_, ra), (_, rb) in zip(a.iterrows(), b.iterrows()):
            share = rb["gap_mean"] / ra["mean"] if ra["mean"] else float("nan")
            rows.append([f"{rb['noise']:g}", level_text(rb["level"], rb["sparsity"]),
                         f"{points(ra['mean'])} [{points(ra['ci_low'])}, {points(ra['ci_high'])}]",
                         f"{points(rb['gap_mean'])} [{points(rb['gap_low'])}, {points(rb['gap_high'])}]",
                         f"{100 * share:.0f}%" if np.isfinite(share) else "n/a"])
        if rows:
            out += ["How much of the gap is left (description): `downscaled_extended` minus `imp` in test error, "
                    "beside `downscaled` minus `imp`.", "",
                    *table(["noise", "level (sparsity)", "`downscaled` - `imp`", "`downscaled_extended` - `imp` "
                            "(the gap left)", "share of the gap left"], rows)]
        return out

    def claim_5(self) -> list[str]:
        imp = self.opt[self.opt["arm"] == "imp"]
        rows = []
        for noise in sorted(imp["noise"].unique()):
            o = imp[imp["noise"] == noise].set_index("seed")
            rows.append([f"{noise:g}", *(sparsity_text(o.loc[s, "nominal_sparsity"])
                                         + ("" if o.loc[s, "complete_chain"] else " (incomplete chain)")
                                         if s in o.index else "n/a" for s in self.seeds)])
        return [*self.claim_header("5"), *self.places("5"),
                "Validation-chosen sparsity of `imp` per seed (description):", "",
                *table(["noise", *(f"seed {s}" for s in self.seeds)], rows)]

    def quoted(self) -> list[str]:
        """The figures quoted for the paper, in their own context, beside this study's nearest."""
        noisy = [f for f in self.noises if f > 0 and np.isfinite(self.effective(f))]
        levels = list(range(1, self.study.levels + 1))
        rows, notes, found = [], [], {}
        for q in paper.QUOTED:
            level = min(levels, key=lambda k: abs(self.sparsity(k) - q.sparsity)) if q.sparsity is not None \
                else min(levels, key=lambda k: abs(self.sparsity(k) - paper.SPARSITY), default=None)
            noise = min(noisy, key=lambda f: abs(self.effective(f) - q.noise), default=None) if q.noise is not None \
                else min(self.noises, default=None)
            h = self.head_row(q.arm, noise, level) if level is not None and noise is not None else None
            word = "lower" if q.figure < 0 else "higher"
            where = (f"noise {noise:g} ({pct(self.effective(noise))} of labels changed), level "
                     f"{level_text(level, self.sparsity(level))}") if h is not None else "n/a"
            ours = with_ci(h, "train_loss_change") if h is not None else "no complete cells"
            rows.append([f"`{q.arm}`", q.context, f"{abs(q.figure) * 100:.2f}% {word} (quoted)", where, ours])
            if h is None:
                continue
            found[q.arm] = h["train_loss_change_mean"]
            gaps = []
            if q.sparsity is not None and abs(self.sparsity(level) - q.sparsity) > paper.SPARSITY_TOLERANCE:
                gaps.append(f"at {sparsity_text(self.sparsity(level))} sparsity, not the quoted "
                            f"{sparsity_text(q.sparsity)}: this study has no level nearer")
            if q.noise is not None and not (1 / paper.NOISE_FACTOR <= self.effective(noise) / q.noise
                                            <= paper.NOISE_FACTOR):
                gaps.append(f"at {pct(self.effective(noise))} of labels changed, not the quoted {pct(q.noise)}")
            ratio = h["train_loss_change_mean"] / q.figure
            same = np.sign(h["train_loss_change_mean"]) == np.sign(q.figure)
            size = (f"{ratio:.1f} times the quoted change" if same else "of the opposite sign to the quoted change")
            notes.append(f"- `{q.arm}`: this study's change is {size}" + (f"; compared {'; '.join(gaps)}" if gaps
                                                                          else "") + ".")
        if "imp" in found and "extended" in found:
            better = "imp" if found["imp"] < found["extended"] else "extended"
            notes.append(f"- Order: the quoted figures have `imp` lowering the training loss more than `extended`; "
                         f"here `{better}` lowers it more" + (", the reverse of the quoted order." if better ==
                                                              "extended" else ", as quoted."))
        return [*table(["arm", "as quoted for the paper", "quoted change", "this study: where",
                        "this study: change vs dense (paired)"], rows),
                "Relative change of the average training loss over all training examples against the same seed's "
                "dense model. The quoted figures come from third-party summaries of the paper; their exact context "
                "(benchmark, subgroup) is unverified, so they are context, not a test. Where this study differs:", "",
                *notes, ""]

    def deciding(self) -> list[str]:
        """What would decide the inconclusive places: seeds for 80% power at the spread
        measured, or what else could."""
        v = self.verdicts
        open_ = v[v["verdict"] == INCONCLUSIVE]
        lines = [f"{len(open_)} of {len(v)} judged places are inconclusive. Seeds are counted for "
                 f"{100 * POWER:.0f}% power: the smallest number of seeds at which a two-sided t-test at the level "
                 "Holm's step tests the place at would reject 0 with that probability, for an effect of the mean "
                 "and spread measured (the noncentral t)."]
        for key in CLAIMS:
            c = open_[open_["claim"] == key]
            if not len(c):
                continue
            need = c["seeds_needed"]
            finite, beyond, none = need[np.isfinite(need)], int(np.isinf(need).sum()), int(need.isna().sum())
            parts = []
            if len(finite):
                span = seeds_text(finite.min()) if finite.min() == finite.max() else \
                    f"{seeds_text(finite.min())} to {seeds_text(finite.max())}"
                parts.append(f"{span} seeds would decide {len(finite)}")
            if beyond:
                parts.append(f"{beyond} would need more than {MAX_SEEDS} seeds (an effect too small for its spread)")
            if none:
                parts.append(f"{none} {'has' if none == 1 else 'have'} no spread, or a mean of 0, to count seeds from")
            lines.append(f"- claim {key}: {len(c)} inconclusive; " + "; ".join(parts) + ".")
        return [*lines, ""]

    def section(self) -> list[str]:
        out = [f"## Benchmark `{self.name}`", "", *self.setup()]
        for body in (self.claim_1, self.claim_2, self.claim_3, self.claim_4, self.claim_5):
            out += body()
        out += ["### The paper's headline numbers", "", *self.quoted(),
                "### What would decide it", "", *self.deciding()]
        return out


# ---------------------------------------------------------------- the page

def what_changed(changes: pd.DataFrame, label: str) -> list[str]:
    """The page's "What changed" section, against earlier verdict records kept beside it."""
    judged_before = changes["before"].notna()
    new = changes.loc[~judged_before, "benchmark"].unique()
    lines = [f"## What changed since {label}", "",
             f"{int(changes['moved'].sum())} of {int(judged_before.sum())} verdicts judged both times moved"
             + (f"; {', '.join(f'`{b}`' for b in new)} {'is' if len(new) == 1 else 'are'} new" if len(new) else "")
             + ". A place (noise level, sparsity) moved when its verdict differs; why is read from its two "
             "intervals.", "",
             "| benchmark | claim | before | now | why |", "|---|---|---|---|---|"]
    for r in changes.itertuples():
        title = f"{r.claim}. {CLAIMS[r.claim].title}"
        before = "-" if pd.isna(r.before) else r.before
        lines.append(f"| `{r.benchmark}` | {title} | {before} | {r.now} | {r.why} |")
    return [*lines, ""]


def _since(tables_dir: Path, verdicts: pd.DataFrame) -> list[str]:
    """The "What changed" section, where earlier verdict records lie beside the page."""
    path = tables_dir / changes.SINCE_FILE
    if not path.is_file():
        return []
    earlier = read_since(path)
    return what_changed(changes.compare(earlier, verdicts), changes.label_of(earlier, str(path)))


def verdict_rows(study: Study, verdicts: pd.DataFrame, names: list[str]) -> list[list[str]]:
    """One row per (benchmark, claim): the claim, its rule, its verdict."""
    rows = []
    for r in rules.summarize(verdicts, names).itertuples():
        c = CLAIMS[r.claim]
        in_regime = regime_text(study, r.benchmark)[1]
        rows.append([f"`{r.benchmark}`", f"{r.claim}. {c.title}",
                     f"{c.statistic}: {c.expected} ({'relative change' if c.unit == 'relative' else 'points'}), "
                     f"at {c.where}", r.verdict + ("" if in_regime else " (not the paper's regime)"),
                     r.places or "-"])
    return rows


def readme_table(study: Study, verdicts: pd.DataFrame) -> list[str]:
    """The page's verdicts as the README copies them: one row per (benchmark, claim)."""
    names = sorted(verdicts["benchmark"].unique())
    rows = [[cells[0], cells[1], cells[3], cells[4]] for cells in verdict_rows(study, verdicts, names)]
    return table(["benchmark", "claim", "verdict", "places (Holm-corrected)"], rows)


def _beside(tables_dir: Path) -> tuple[Study, dict[str, pd.DataFrame], str] | None:
    path = tables_dir / BESIDE_FILE
    if not path.is_file():
        return None
    spec = json.loads(path.read_text())
    return (load_study(spec["study"]), read_page_tables((tables_dir / spec["tables"]).resolve()), spec["label"])


def two_regimes(study: Study, tables: dict[str, pd.DataFrame], verdicts: pd.DataFrame, other: Study,
                other_tables: dict[str, pd.DataFrame], other_verdicts: pd.DataFrame, label: str) -> list[str]:
    """This study beside another of the same benchmarks in another regime, by the same rules."""
    names = sorted(set(tables["summary"]["benchmark"]) & set(other_tables["summary"]["benchmark"]))
    out = ["## Two regimes", "",
           f"The same benchmarks, arms and rules, {label} beside this study. Every number of the left column is a "
           "cell of that study's page tables (and of its verdict records, judged here by the rules above: "
           f"`{BESIDE_VERDICTS}`).", ""]
    for b in names:
        mine, theirs = (_Benchmark(study, b, tables, verdicts), _Benchmark(other, b, other_tables, other_verdicts))
        rows = [["epochs per cycle", regime_text(other, b)[0], regime_text(study, b)[0]]]
        for noise in sorted(set(mine.noises) & set(theirs.noises)):
            pair = [t.head_row("dense", noise, 0) for t in (theirs, mine)]
            rows.append([f"`dense` test error, noise {noise:g}",
                         *(with_ci(h, "test_error") if h is not None else "n/a" for h in pair)])
            if noise > 0:
                mem = [t.mem[(t.mem["noise"] == noise) & (t.mem["arm"] == "dense")] for t in (theirs, mine)]
                rows.append([f"`dense` noisy labels memorized, noise {noise:g}",
                             *(with_ci(m.iloc[0], "memorization") if len(m) else "n/a" for m in mem)])
            chosen = []
            for t in (theirs, mine):
                o = t.opt[(t.opt["arm"] == "imp") & (t.opt["noise"] == noise)]
                chosen.append(", ".join(sparsity_text(s) for s in o.sort_values("seed")["nominal_sparsity"])
                              or "n/a")
            rows.append([f"`imp` validation-chosen sparsity per seed, noise {noise:g}", *chosen])
        s_mine = rules.summarize(verdicts, [b]).set_index("claim")
        s_theirs = rules.summarize(other_verdicts, [b]).set_index("claim")
        for key in CLAIMS:
            rows.append([f"claim {key} verdict", s_theirs.loc[key, "verdict"], s_mine.loc[key, "verdict"]])
        out += [f"### `{b}`", "", *table(["", label, f"this study (`{study.name}`)"], rows)]
    return out


def completeness(study: Study, summary: pd.DataFrame) -> list[str]:
    """A paragraph when the tables hold fewer cells than the study plans: how many, per
    benchmark, and that verdicts rest on the cells there are (none when all are there)."""
    planned = pd.Series([c.benchmark.name for c in study.cells()]).value_counts()
    have = summary["benchmark"].value_counts()
    if all(have.get(b, 0) >= n for b, n in planned.items()):
        return []
    parts = "; ".join(f"`{b}`: {have.get(b, 0)} of {n}" for b, n in sorted(planned.items()))
    return [f"**Incomplete: {int(have.sum())} of {int(planned.sum())} cells** ({parts}). A benchmark's "
            "verdicts rest on the cells it has: where seeds or levels are missing, a place has fewer seeds or "
            "none, and says so. The study is incremental: its run continues, and this page is regenerated "
            "when it ends.", ""]


def render(study: Study, page: Path, tables_dir: Path, figures_dir: Path, source: str) -> list[Path]:
    """Judge the claims on the tables in `tables_dir` (writing `verdicts.parquet` there) and
    write the page and its figures; returns what was written."""
    tables = read_page_tables(tables_dir)
    verdicts = judge(study, tables)
    with store.atomic_write(tables_dir / "verdicts.parquet") as tmp:
        verdicts.to_parquet(tmp, index=False)
    regimes: list[str] = []
    beside = _beside(tables_dir)
    if beside is not None:
        other, other_tables, label = beside
        other_verdicts = judge(other, other_tables)
        with store.atomic_write(tables_dir / BESIDE_VERDICTS) as tmp:
            other_verdicts.to_parquet(tmp, index=False)
        regimes = two_regimes(study, tables, verdicts, other, other_tables, other_verdicts, label)
    compute_row = tables["compute"].iloc[0]
    names = sorted(tables["summary"]["benchmark"].unique())
    benchmarks = [_Benchmark(study, b, tables, verdicts) for b in names]
    written = draw.draw_from(study, tables, figures_dir, PAGE_FIGURES, formats=("png",), dpi=80)
    rel = lambda p: Path(*Path(p).parts[len(page.parent.parts):]).as_posix()  # noqa: E731
    regime = "; ".join(f"`{b}`: {regime_text(study, b)[0]}" for b in names)
    lines = [
        f"# Results: {study.name}",
        "",
        f"<!-- generated by `prunegen results --study {source}`; do not edit by hand -->",
        "",
        f"Study `{source}`: {len(names)} benchmark{'s' if len(names) != 1 else ''} "
        f"({', '.join(f'`{b}`' for b in names)}); arms {', '.join(f'`{a}`' for a in study.arms)}; levels 0 to "
        f"{study.levels}; label noise {', '.join(f'{f:g}' for f in study.noise)} ({study.noise_mode}); seeds "
        f"{', '.join(str(s) for s in study.seeds)}. Each benchmark is judged on its own. Regime: {regime}.",
        "",
        *completeness(study, tables["summary"]),
        "Every number below is a cell of the tables in "
        f"[`{rel(tables_dir)}/`]({rel(tables_dir)}/) (copies of the study's merged tables, and the verdict "
        "records judged from them), except the figures quoted for the paper, which are labelled.",
        "",
        "## Verdicts",
        "",
        RULE,
        "",
        *table(["benchmark", "claim", "primary statistic: expected side (unit), where", "verdict",
                "places (Holm-corrected)"], verdict_rows(study, verdicts, names)),
        f"Verdict words: {HELD}, {NOT_HELD}, mixed, {INCONCLUSIVE}, not judged (above). A verdict outside the "
        "paper's regime (its epochs per cycle) is marked so: it is not evidence about the paper's claim.",
        "",
        *regimes,
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
