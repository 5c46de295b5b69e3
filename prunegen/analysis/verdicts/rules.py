"""The paper's claims as rules fixed before the data: pure functions from a study's merged
tables to verdict records.

Each (benchmark, claim) has one primary statistic (prunegen.analysis.verdicts.paper says
what it is and which side the paper expects), computed per seed at each place the claim
applies to (a noise level), and one primary verdict: Holm's correction across those places
(prunegen.analysis.verdicts.stats). One record per judged place:

    claim, benchmark, noise, level, sparsity, arm, statistic, expected, n_seeds, mean,
    ci_low, ci_high (95%, descriptive), p_value, p_holm, holm_level, holm_low, holm_high
    (the interval Holm's step tests it at), verdict, reason, seeds_needed, places,
    gap_mean, gap_low, gap_high (claim 4b: the test-error gap left, descriptive)

Where a claim applies:

- 1, 2a, 2b: every noise level; 3a, 3b: every noise level above 0;
- 4a, 4b: the noise levels where claim 1 held (pruning has a gain to explain there), at
  the median of the seeds' validation-chosen `imp` levels (the lower one of two medians);
- 5: once, from the lowest to the highest noise level.

"Low" sparsity is every level at most LOW_SPARSITY sparse (at least level 1), "high" the
upper half of the levels; claims 2 and 3 average their per-seed statistic over those
levels (one statistic per seed and noise level). `judge` returns every record,
`summarize` one verdict per (benchmark, claim).
"""

from __future__ import annotations

import math

import pandas as pd

from .paper import CLAIMS
from .stats import INCONCLUSIVE, Interval, holm, outcome, primary, seeds_needed

LOW_SPARSITY = 0.5
GAP_SHARE = 0.5  # claim 4b: downscaled_extended must leave less than this share of downscaled's gap
COLUMNS = ["claim", "benchmark", "noise", "level", "sparsity", "arm", "statistic", "expected", "n_seeds", "mean",
           "ci_low", "ci_high", "p_value", "p_holm", "holm_level", "holm_low", "holm_high", "verdict", "reason",
           "seeds_needed", "places", "gap_mean", "gap_low", "gap_high"]


def low_levels(fraction: float, levels: int) -> list[int]:
    """Levels at most LOW_SPARSITY sparse (at least level 1 when there is one)."""
    low = [k for k in range(1, levels + 1) if 1 - (1 - fraction) ** k <= LOW_SPARSITY + 1e-12]
    return low or list(range(1, min(levels, 1) + 1))


def high_levels(levels: int) -> list[int]:
    """The upper half of the levels."""
    return list(range(levels // 2 + 1, levels + 1))


class _Cells:
    """One benchmark's summary rows, looked up by (arm, noise, level) -> per-seed Series."""

    def __init__(self, summary: pd.DataFrame):
        self.by = {k: g.set_index("seed") for k, g in summary.groupby(["arm", "noise", "level"])}
        self.sparsity = summary.groupby("level")["nominal_sparsity"].first().to_dict()

    def get(self, arm: str, noise: float, level: int, metric: str) -> pd.Series | None:
        g = self.by.get((arm, noise, level))
        return None if g is None else g[metric]


def _joined(**named: pd.Series | None) -> pd.DataFrame | None:
    """The seeds every one of them has, side by side (a column per name)."""
    if any(v is None for v in named.values()):
        return None
    both = pd.concat(named, axis=1, join="inner").dropna()
    return both if len(both) else None


def _mean_over_levels(parts: list[pd.Series]) -> pd.Series | None:
    """Per seed, the mean over levels of a per-level statistic (the seeds every level has)."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    both = pd.concat(parts, axis=1, join="inner").dropna()
    return both.mean(axis=1) if len(both) else None


def _place(claim: str, noise: float, values, level: float = math.nan, sparsity: float = math.nan,
           note: str = "", gap=None) -> dict:
    """A place before Holm: its statistic's interval and p-value."""
    iv = Interval.of([] if values is None else values)
    gap_iv = Interval.of(gap) if gap is not None else None
    return {"claim": claim, "noise": float(noise), "level": float(level), "sparsity": float(sparsity), "iv": iv,
            "note": note, "gap": gap_iv}


def _judged(claim: str, benchmark: str, places: list[dict]) -> list[dict]:
    """Holm across the places of one (benchmark, claim), then one record per place."""
    c = CLAIMS[claim]
    rejected, adjusted, levels = holm([p["iv"].p_value for p in places])
    out = []
    for p, rej, p_holm, level in zip(places, rejected, adjusted, levels):
        iv = p["iv"]
        low, high = iv.bounds(1 - level)  # the interval Holm's step tests this place at
        verdict, reason = outcome(iv, c.expect, rej)
        gap = p["gap"]
        out.append({
            "claim": claim, "benchmark": benchmark, "noise": p["noise"], "level": p["level"],
            "sparsity": p["sparsity"], "arm": c.arm, "statistic": c.statistic, "expected": c.expected,
            "n_seeds": iv.n, "mean": iv.mean, "ci_low": iv.low, "ci_high": iv.high, "p_value": iv.p_value,
            "p_holm": p_holm, "holm_level": 1 - level, "holm_low": low, "holm_high": high,
            "verdict": verdict, "reason": reason + p["note"],
            "seeds_needed": seeds_needed(iv, level) if verdict == INCONCLUSIVE else math.nan, "places": len(places),
            "gap_mean": gap.mean if gap else math.nan, "gap_low": gap.low if gap else math.nan,
            "gap_high": gap.high if gap else math.nan})
    return out


# ---------------------------------------------------------------- the claims

def _chosen(opt: pd.DataFrame, noise: float) -> pd.DataFrame:
    """imp's validation-chosen level per seed at one noise level (complete chains only)."""
    o = opt[(opt["arm"] == "imp") & (opt["noise"] == noise)]
    return o[o["complete_chain"]].set_index("seed")


def claim_1(opt: pd.DataFrame, noises: list[float]) -> list[dict]:
    out = []
    for noise in noises:
        o = _chosen(opt, noise)
        left = int(((opt["arm"] == "imp") & (opt["noise"] == noise) & ~opt["complete_chain"]).sum())
        note = f"; {left} seed(s) left out: their imp chain is incomplete" if left else ""
        out.append(_place("1", noise, (o["test_error"] - o["dense_test_error"]).to_numpy(), note=note))
    return out


def claim_2(cells: _Cells, noises: list[float], low: list[int]) -> tuple[list[dict], list[dict]]:
    a, b = [], []
    for noise in noises:
        dense = cells.get("dense", noise, 0, "train_loss")
        gains, against = [], []
        for level in low:
            p = _joined(imp=cells.get("imp", noise, level, "train_loss"),
                        ext=cells.get("extended", noise, level, "train_loss"), dense=dense)
            if p is not None:
                gains.append((p["imp"] - p["dense"]) / p["dense"])
                against.append((p["imp"] - p["ext"]) / p["dense"])
        levels = f"levels {low[0]}-{low[-1]}" if len(low) > 1 else f"level {low[0]}"
        a.append(_place("2a", noise, _mean_over_levels(gains), note=f"; mean over {levels}"))
        b.append(_place("2b", noise, _mean_over_levels(against), note=f"; mean over {levels}"))
    return a, b


def claim_3(cells: _Cells, noises: list[float], high: list[int]) -> tuple[list[dict], list[dict]]:
    a, b = [], []
    levels = f"levels {high[0]}-{high[-1]}" if len(high) > 1 else f"level {high[0]}" if high else "no level"
    for noise in (f for f in noises if f > 0):
        mem, err = [], []
        for level in high:
            p = _joined(imp=cells.get("imp", noise, level, "memorization"),
                        ext=cells.get("extended", noise, level, "memorization"))
            if p is not None:
                mem.append(p["imp"] - p["ext"])
            p = _joined(imp=cells.get("imp", noise, level, "test_error"),
                        ext=cells.get("extended", noise, level, "test_error"))
            if p is not None:
                err.append(p["imp"] - p["ext"])
        a.append(_place("3a", noise, _mean_over_levels(mem), note=f"; mean over {levels}"))
        b.append(_place("3b", noise, _mean_over_levels(err), note=f"; mean over {levels}"))
    return a, b


def claim_4(cells: _Cells, opt: pd.DataFrame, gains: list[dict]) -> tuple[list[dict], list[dict]]:
    """At each noise level where claim 1 held: the median chosen imp level's downscaled arms."""
    a, b = [], []
    for g in gains:
        noise = g["noise"]
        levels = sorted(_chosen(opt, noise)["level"].astype(int))
        level = levels[(len(levels) - 1) // 2] if levels else 0
        if level == 0:  # the seeds' median choice is dense itself: no pruned level to compare at
            continue
        te = {arm: cells.get(arm, noise, level, "test_error") for arm in ("imp", "downscaled", "downscaled_extended")}
        p = _joined(imp=te["imp"], ds=te["downscaled"], dse=te["downscaled_extended"])
        sparsity = cells.sparsity.get(level, math.nan)
        note = f"; at level {level}, the median of the seeds' validation-chosen imp levels"
        if p is None:
            a.append(_place("4a", noise, None, level, sparsity, note))
            b.append(_place("4b", noise, None, level, sparsity, note))
            continue
        a.append(_place("4a", noise, p["ds"] - p["imp"], level, sparsity, note))
        b.append(_place("4b", noise, (p["dse"] - p["imp"]) - GAP_SHARE * (p["ds"] - p["imp"]), level, sparsity, note,
                        gap=p["dse"] - p["imp"]))
    return a, b


def claim_5(opt: pd.DataFrame) -> list[dict]:
    imp = opt[(opt["arm"] == "imp") & opt["complete_chain"]]
    noises = sorted(imp["noise"].unique())
    if len(noises) < 2:
        return [_place("5", math.nan, None, note="; needs two noise levels with complete imp chains")]
    per_seed = imp.pivot(index="seed", columns="noise", values="nominal_sparsity")
    moved = (per_seed[noises[-1]] - per_seed[noises[0]]).dropna()
    return [_place("5", noises[-1], moved.to_numpy(), note=f"; noise {noises[0]:g} -> {noises[-1]:g}")]


def judge_benchmark(b: str, summary: pd.DataFrame, opt: pd.DataFrame, levels: int, fraction: float) -> list[dict]:
    """Every claim on one benchmark: Holm within each claim's places."""
    cells, noises = _Cells(summary), sorted(summary["noise"].unique())
    rows = _judged("1", b, claim_1(opt, noises))
    a, bb = claim_2(cells, noises, low_levels(fraction, levels))
    rows += _judged("2a", b, a) + _judged("2b", b, bb)
    a, bb = claim_3(cells, noises, high_levels(levels))
    rows += _judged("3a", b, a) + _judged("3b", b, bb)
    gains = [{"noise": r["noise"]} for r in rows if r["claim"] == "1" and r["verdict"] == "held"]
    a, bb = claim_4(cells, opt, gains)
    rows += _judged("4a", b, a) + _judged("4b", b, bb)
    rows += _judged("5", b, claim_5(opt))
    return rows


def judge(tables: dict[str, pd.DataFrame], levels: int, fractions: dict[str, float]) -> pd.DataFrame:
    """Every claim on every benchmark of the tables: the verdict records, in claim order
    within each benchmark (benchmarks sorted)."""
    summary, opt = tables["summary"], tables["optimal"]
    rows: list[dict] = []
    for b in sorted(summary["benchmark"].unique()):
        rows += judge_benchmark(b, summary[summary["benchmark"] == b], opt[opt["benchmark"] == b], levels,
                                fractions.get(b, 0.2))
    return pd.DataFrame(rows, columns=COLUMNS).astype({"n_seeds": "int64", "places": "int64"})


def summarize(records: pd.DataFrame, benchmarks: list[str]) -> pd.DataFrame:
    """One primary verdict per (benchmark, claim) (stats.primary), with how many places it
    was judged at and how they went."""
    rows = []
    for b in benchmarks:
        r = records[records["benchmark"] == b]
        for key, claim in CLAIMS.items():
            v = r.loc[r["claim"] == key, "verdict"].tolist()
            counts = ", ".join(f"{w} at {v.count(w)}" for w in dict.fromkeys(v)) + (f" of {len(v)}" if v else "")
            rows.append({"benchmark": b, "claim": key, "title": claim.title, "verdict": primary(v),
                         "judged": len(v), "places": counts})
    return pd.DataFrame(rows)
