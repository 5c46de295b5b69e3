"""Paired per-seed statistics, Holm's correction, and the outcomes of a verdict.

A claim compares two things measured on the same seeds (same data order, noise draw and
initialization): its statistic is their per-seed difference. At each place a claim is
judged at (a noise level), a two-sided one-sample t-test of that difference against 0
gives a p-value; Holm's step-down procedure across the places of one (benchmark, claim)
keeps the chance of any false decision at most ALPHA. A place:

- held: Holm rejects 0 there and the mean lies on the side the paper expects;
- did not hold: Holm rejects 0 and the mean lies on the other side;
- inconclusive: Holm does not reject 0 (or fewer than two seeds: no test).

Holm rejects the place ranked i (0-based, by p-value) when every place ranked before it
was rejected and its p-value is below ALPHA / (m - i), that is when its (1 - ALPHA / (m - i))
Student-t interval excludes 0: the interval each place's record carries as its corrected
interval. Holm stops at the first place it cannot reject, so a place ranked after it stays
inconclusive even where its own interval excludes 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

HELD, NOT_HELD, INCONCLUSIVE = "held", "did not hold", "inconclusive"
MIXED, NOT_JUDGED = "mixed", "not judged"
ALPHA = 0.05  # family-wise, per (benchmark, claim)
LEVEL = 1 - ALPHA  # the descriptive intervals
POWER = 0.8  # "seeds that would decide" are computed for this power
MAX_SEEDS = 1000  # beyond this, "more seeds" is no answer: say so instead of a number


def t_quantile(n: int, level: float = LEVEL) -> float:
    """The two-sided `level` Student-t quantile for `n` values (NaN below two)."""
    from scipy import stats  # scipy only when a verdict is judged (importing it takes a second)

    return float(stats.t.ppf(0.5 + level / 2, n - 1)) if n >= 2 else float("nan")


@dataclass(frozen=True)
class Interval:
    n: int
    mean: float
    low: float
    high: float
    std: float

    @classmethod
    def of(cls, values, level: float = LEVEL) -> "Interval":
        x = np.asarray(values, dtype=float)
        x = x[np.isfinite(x)]
        n = len(x)
        if n == 0:
            return cls(0, math.nan, math.nan, math.nan, math.nan)
        mean = float(x.mean())
        if n < 2:
            return cls(1, mean, math.nan, math.nan, math.nan)
        std = float(x.std(ddof=1))
        half = t_quantile(n, level) * std / math.sqrt(n)
        return cls(n, mean, mean - half, mean + half, std)

    def bounds(self, level: float) -> tuple[float, float]:
        """The Student-t interval of the mean at `level` (NaN with fewer than two values)."""
        if self.n < 2 or not np.isfinite(self.std):
            return math.nan, math.nan
        half = t_quantile(self.n, level) * self.std / math.sqrt(self.n)
        return self.mean - half, self.mean + half

    @property
    def p_value(self) -> float:
        """Two-sided p-value of a one-sample t-test of the mean against 0 (NaN without a test)."""
        from scipy import stats  # as t_quantile

        if self.n < 2 or not np.isfinite(self.std):
            return math.nan
        if self.std == 0:
            return 1.0 if self.mean == 0 else 0.0
        t = self.mean / (self.std / math.sqrt(self.n))
        return float(2 * stats.t.sf(abs(t), self.n - 1))


def holm(p_values: list[float], alpha: float = ALPHA) -> tuple[list[bool], list[float], list[float]]:
    """Holm's step-down procedure: (rejected, adjusted p-values, the level each place is
    tested at, alpha / (m - its rank)). A NaN p-value (no test) is never rejected and
    counts in m (it is a place the claim was judged at)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: (math.isnan(p_values[i]), p_values[i]))
    rejected, adjusted, levels = [False] * m, [math.nan] * m, [math.nan] * m
    running, stopped = 0.0, False
    for rank, i in enumerate(order):
        levels[i] = alpha / (m - rank)
        p = p_values[i]
        if math.isnan(p):
            stopped = True
            continue
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
        if not stopped and p <= levels[i]:
            rejected[i] = True
        else:
            stopped = True
    return rejected, adjusted, levels


def outcome(iv: Interval, expect: int, rejected: bool) -> tuple[str, str]:
    """(verdict, reason) of one place, for a statistic the paper expects below 0
    (`expect=-1`) or above 0 (`expect=+1`), given Holm's decision there."""
    if iv.n < 2:
        return INCONCLUSIVE, f"{iv.n} seed{'s' if iv.n != 1 else ''}: no test"
    if not rejected:
        return INCONCLUSIVE, "every seed gives 0" if iv.std == 0 and iv.mean == 0 else "Holm does not reject 0"
    if np.sign(iv.mean) == expect:
        return HELD, "Holm rejects 0; the mean is on the expected side"
    return NOT_HELD, "Holm rejects 0; the mean is on the opposite side"


def seeds_needed(iv: Interval, alpha: float, power: float = POWER) -> float:
    """Seeds at which a two-sided t-test at level `alpha` would reject 0 with probability
    `power`, for an effect of the measured mean and spread (the noncentral t). NaN where
    that cannot be said (no spread measured, or a mean of 0); inf past MAX_SEEDS."""
    if iv.n < 2 or not np.isfinite(iv.std) or iv.std == 0 or iv.mean == 0:
        return math.nan
    from scipy import stats  # as t_quantile

    n = np.arange(max(iv.n, 2), MAX_SEEDS + 1)
    crit = stats.t.ppf(1 - alpha / 2, n - 1)
    shift = abs(iv.mean) / iv.std * np.sqrt(n)
    reach = stats.nct.sf(crit, n - 1, shift) + stats.nct.cdf(-crit, n - 1, shift)
    ok = reach >= power
    return float(n[ok][0]) if ok.any() else math.inf


def primary(verdicts: list[str]) -> str:
    """One (benchmark, claim)'s verdict from its places' (each already Holm-corrected):
    held when some place held and none did not; did not hold, the reverse; mixed when
    places went both ways; inconclusive when none was decided; not judged without places."""
    if not verdicts:
        return NOT_JUDGED
    held, not_held = HELD in verdicts, NOT_HELD in verdicts
    if held and not_held:
        return MIXED
    return HELD if held else NOT_HELD if not_held else INCONCLUSIVE
