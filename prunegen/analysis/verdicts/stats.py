"""Paired per-seed statistics and the three outcomes of a verdict.

A claim compares two things measured on the same seeds (same data order, noise draw and
initialization): its statistic is their per-seed difference, and the verdict reads the
95% Student-t interval of that difference over seeds:

- held: the interval lies wholly on the side the paper expects (0 excluded);
- did not hold: it lies wholly on the other side;
- inconclusive: it contains 0, or there are fewer than two seeds (no interval).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

HELD, NOT_HELD, INCONCLUSIVE = "held", "did not hold", "inconclusive"
LEVEL = 0.95
MAX_SEEDS = 1000  # beyond this, "more seeds" is no answer: say so instead of a number


def t_quantile(n: int) -> float:
    """The two-sided 95% Student-t quantile for `n` values (NaN below two)."""
    from scipy import stats  # scipy only when a verdict is judged (importing it takes a second)

    return float(stats.t.ppf(0.5 + LEVEL / 2, n - 1)) if n >= 2 else float("nan")


@dataclass(frozen=True)
class Interval:
    n: int
    mean: float
    low: float
    high: float
    std: float

    @classmethod
    def of(cls, values) -> "Interval":
        x = np.asarray(values, dtype=float)
        x = x[np.isfinite(x)]
        n = len(x)
        if n == 0:
            return cls(0, math.nan, math.nan, math.nan, math.nan)
        mean = float(x.mean())
        if n < 2:
            return cls(1, mean, math.nan, math.nan, math.nan)
        std = float(x.std(ddof=1))
        half = t_quantile(n) * std / math.sqrt(n)
        return cls(n, mean, mean - half, mean + half, std)


def outcome(iv: Interval, expect: int) -> tuple[str, str]:
    """(verdict, reason) for a statistic the paper expects below 0 (`expect=-1`) or above 0
    (`expect=+1`)."""
    if iv.n < 2:
        return INCONCLUSIVE, f"{iv.n} seed{'s' if iv.n != 1 else ''}: no interval"
    lo, hi = expect * iv.low, expect * iv.high  # > 0: on the expected side
    if min(lo, hi) > 0:
        return HELD, "interval excludes 0, on the expected side"
    if max(lo, hi) < 0:
        return NOT_HELD, "interval excludes 0, on the opposite side"
    if iv.std == 0:
        return INCONCLUSIVE, "every seed gives 0"
    return INCONCLUSIVE, "interval contains 0"


def seeds_needed(iv: Interval) -> float:
    """Seeds at which an interval of the same spread around the same mean would exclude 0:
    the smallest n with t(n) * std / sqrt(n) < |mean|. NaN where that cannot be said (no
    spread measured, or a mean of 0); inf past MAX_SEEDS."""
    if iv.n < 2 or not np.isfinite(iv.std) or iv.std == 0 or iv.mean == 0:
        return math.nan
    from scipy import stats  # scipy only when a verdict is judged (importing it takes a second)

    n = np.arange(max(iv.n, 2), MAX_SEEDS + 1)
    ok = stats.t.ppf(0.5 + LEVEL / 2, n - 1) * iv.std / np.sqrt(n) < abs(iv.mean)
    return float(n[ok][0]) if ok.any() else math.inf


def overall(verdicts: list[str]) -> str:
    """One word for a claim judged in several places (noise levels, levels)."""
    if not verdicts:
        return INCONCLUSIVE
    if all(v == verdicts[0] for v in verdicts):
        return verdicts[0]
    counts = {v: verdicts.count(v) for v in (HELD, INCONCLUSIVE, NOT_HELD) if v in verdicts}
    return "mixed (" + ", ".join(f"{v} in {k} of {len(verdicts)}" for v, k in counts.items()) + ")"
