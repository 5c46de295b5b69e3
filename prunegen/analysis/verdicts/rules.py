"""The paper's claims as pure functions from a study's merged tables to verdict records.

Every claim is judged on each benchmark alone, and wherever it applies within it (each
noise level, each low or high sparsity level), on paired per-seed differences read from
the `summary` and `optimal` tables (one row per cell, and per seed's validation-chosen
level). One record per judged place:

    claim, benchmark, noise, level, sparsity, arm, statistic, expected,
    n_seeds, mean, ci_low, ci_high, verdict, reason, seeds_needed

`judge(tables)` returns them all as one DataFrame, `summarize` one verdict per
(benchmark, claim).

"Low" sparsity is every level at most 50% sparse (at least level 1), "high" the upper
half of the levels: documented defaults, stated on the page.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .paper import CLAIMS
from .stats import Interval, outcome, overall, seeds_needed

LOW_SPARSITY = 0.5
COLUMNS = ["claim", "benchmark", "noise", "level", "sparsity", "arm", "statistic", "expected", "n_seeds",
           "mean", "ci_low", "ci_high", "verdict", "reason", "seeds_needed"]


def low_levels(fraction: float, levels: int) -> list[int]:
    """Levels at most LOW_SPARSITY sparse (at least level 1 when there is one)."""
    low = [k for k in range(1, levels + 1) if 1 - (1 - fraction) ** k <= LOW_SPARSITY + 1e-12]
    return low or list(range(1, min(levels, 1) + 1))


def high_levels(levels: int) -> list[int]:
    """The upper half of the levels."""
    return list(range(levels // 2 + 1, levels + 1))


def _record(claim: str, benchmark: str, noise: float, level: float, sparsity: float, arm: str,
            diffs, extra_reason: str = "") -> dict:
    c = CLAIMS[claim]
    iv = Interval.of(diffs)
    verdict, reason = outcome(iv, c.expect)
    return {"claim": claim, "benchmark": benchmark, "noise": float(noise), "level": float(level),
            "sparsity": float(sparsity), "arm": arm, "statistic": c.statistic, "expected": c.expected,
            "n_seeds": iv.n, "mean": iv.mean, "ci_low": iv.low, "ci_high": iv.high, "verdict": verdict,
            "reason": reason + extra_reason, "seeds_needed": seeds_needed(iv) if verdict == "inconclusive"
            else math.nan}


class _Cells:
    """One benchmark's summary rows, looked up by (arm, noise, level) -> per-seed Series."""

    def __init__(self, summary: pd.DataFrame):
        self.by = {k: g.set_index("seed") for k, g in summary.groupby(["arm", "noise", "level"])}
        self.sparsity = summary.groupby("level")["nominal_sparsity"].first().to_dict()

    def get(self, arm: str, noise: float, level: int, metric: str) -> pd.Series | None:
        g = self.by.get((arm, noise, level))
        return None if g is None else g[metric]

    def dense(self, noise: float, metric: str) -> pd.Series | None:
        return self.get("dense", noise, 0, metric)


def _joined(**named: pd.Series | None) -> pd.DataFrame | None:
    """The seeds every one of them has, side by side (a column per name)."""
    if any(v is None for v in named.values()):
        return None
    both = pd.concat(named, axis=1, join="inner").dropna()
    return both if len(both) else None


def claim_test_error(b: str, opt: pd.DataFrame) -> list[dict]:
    out = []
    imp = opt[opt["arm"] == "imp"]
    for noise, o in imp.groupby("noise"):
        full = o[o["complete_chain"]]
        left = len(o) - len(full)
        note = f"; {left} seed(s) left out: their imp chain is incomplete" if left else ""
        out.append(_record("1", b, noise, math.nan, math.nan, "imp",
                           (full["test_error"] - full["dense_test_error"]).to_numpy(), note))
    return out


def claim_train_loss(b: str, cells: _Cells, noises: list[float], low: list[int]) -> list[dict]:
    out = []
    for noise in noises:
        dense = cells.dense(noise, "train_loss")
        for level in low:
            for arm in ("imp", "extended"):
                p = _joined(arm=cells.get(arm, noise, level, "train_loss"), dense=dense)
                if p is not None:
                    change = (p["arm"] - p["dense"]) / p["dense"]
                    out.append(_record("2", b, noise, level, cells.sparsity[level], arm,
                                       change.replace([np.inf, -np.inf], np.nan)))
    return out


def claim_memorization(b: str, cells: _Cells, noises: list[float], high: list[int]) -> list[dict]:
    out = []
    for noise in (f for f in noises if f > 0):
        for level in high:
            p = _joined(imp=cells.get("imp", noise, level, "memorization"),
                        extended=cells.get("extended", noise, level, "memorization"))
            if p is not None:
                out.append(_record("3", b, noise, level, cells.sparsity[level], "imp", p["imp"] - p["extended"]))
    return out


def claim_downscaled(b: str, cells: _Cells, noises: list[float], levels: list[int]) -> list[dict]:
    out = []
    for noise in noises:
        for level in levels:
            te = {arm: cells.get(arm, noise, level, "test_error")
                  for arm in ("imp", "downscaled", "downscaled_extended")}
            p = _joined(imp=te["imp"], ds=te["downscaled"])
            if p is not None:
                out.append(_record("4a", b, noise, level, cells.sparsity[level], "downscaled", p["ds"] - p["imp"]))
            p = _joined(imp=te["imp"], ds=te["downscaled"], dse=te["downscaled_extended"])
            if p is not None:
                gap = (p["dse"] - p["imp"]).abs() - (p["ds"] - p["imp"]).abs()
                out.append(_record("4b", b, noise, level, cells.sparsity[level], "downscaled_extended", gap))
    return out


def claim_optimal(b: str, opt: pd.DataFrame) -> list[dict]:
    imp = opt[(opt["arm"] == "imp") & opt["complete_chain"]]
    noises = sorted(imp["noise"].unique())
    if len(noises) < 2:
        return [_record("5", b, math.nan, math.nan, math.nan, "imp", [],
                        "; needs two noise levels with complete imp chains")]
    per_seed = imp.pivot(index="seed", columns="noise", values="nominal_sparsity")
    moved = (per_seed[noises[-1]] - per_seed[noises[0]]).dropna()
    return [_record("5", b, noises[-1], math.nan, math.nan, "imp", moved.to_numpy(),
                    f"; noise {noises[0]:g} -> {noises[-1]:g}")]


def judge(tables: dict[str, pd.DataFrame], levels: int, fractions: dict[str, float]) -> pd.DataFrame:
    """Every claim on every benchmark of the tables: the verdict records, in claim order
    within each benchmark (benchmarks sorted)."""
    summary, opt = tables["summary"], tables["optimal"]
    rows: list[dict] = []
    for b in sorted(summary["benchmark"].unique()):
        s = summary[summary["benchmark"] == b]
        cells, noises = _Cells(s), sorted(s["noise"].unique())
        fraction = fractions.get(b, 0.2)
        o = opt[opt["benchmark"] == b]
        rows += claim_test_error(b, o)
        rows += claim_train_loss(b, cells, noises, low_levels(fraction, levels))
        rows += claim_memorization(b, cells, noises, high_levels(levels))
        rows += claim_downscaled(b, cells, noises, list(range(1, levels + 1)))
        rows += claim_optimal(b, o)
    return pd.DataFrame(rows, columns=COLUMNS).astype({"n_seeds": "int64"})


def summarize(records: pd.DataFrame, benchmarks: list[str]) -> pd.DataFrame:
    """One verdict per (benchmark, claim): the single outcome where all places agree,
    else `mixed (...)` with the counts; inconclusive where nothing could be judged."""
    rows = []
    for b in benchmarks:
        r = records[records["benchmark"] == b]
        for key, claim in CLAIMS.items():
            v = r.loc[r["claim"] == key, "verdict"].tolist()
            rows.append({"benchmark": b, "claim": key, "title": claim.title, "verdict": overall(v),
                         "judged": len(v)})
    return pd.DataFrame(rows)
