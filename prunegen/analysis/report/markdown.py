"""Numbers, intervals and tables as the pages print them (Markdown)."""

from __future__ import annotations

import re

import numpy as np

from ..verdicts.stats import MAX_SEEDS


def pct(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.2f}%"


def num(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.4f}"


def points(x: float) -> str:
    """A difference of two rates (test errors, memorization, sparsities) in percentage points."""
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:+.2f} pt"


def p_text(p: float) -> str:
    return "n/a" if p is None or not np.isfinite(p) else "< 1e-4" if p < 1e-4 else f"{p:.4f}"


def interval(mean: float, low: float, high: float, fmt=pct) -> str:
    ci = f" [{fmt(low)}, {fmt(high)}]" if np.isfinite(low) and np.isfinite(high) else ""
    return f"{fmt(mean)}{ci}"


def with_ci(row, metric: str, fmt=pct) -> str:
    """`mean [low, high]` of a headline/memorization row, as the page prints it."""
    return interval(row[f"{metric}_mean"], row[f"{metric}_ci_low"], row[f"{metric}_ci_high"], fmt)


def of_record(r, fmt=pct) -> str:
    """A verdict record's statistic: `mean [low, high]`."""
    return interval(r["mean"], r["ci_low"], r["ci_high"], fmt)


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(r) + " |" for r in rows), ""]


def sparsity_text(s: float) -> str:
    return f"{100 * s:.1f}%"


def level_text(level: float, sparsity: float) -> str:
    return f"{int(level)} ({sparsity_text(sparsity)})"


def model_text(model: dict) -> str:
    extra = model.get("hidden") or model.get("width")
    return f"{model['name']} {extra}" if extra else model["name"]


def duration(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "n/a"
    h, m = divmod(int(round(seconds / 60)), 60)
    return f"{h} h {m:02d} min" if h else f"{m} min"


def seeds_text(x: float) -> str:
    return "n/a" if np.isnan(x) else f"> {MAX_SEEDS}" if np.isinf(x) else str(int(x))


def numbers(page_text: str) -> list[str]:
    """Percentages, percentage points and 4-decimal values on a page (for the tests: each
    must be in the tables, formatted by pct, points or num)."""
    return re.findall(r"[-+]?\d+\.\d{2} pt|-?\d+\.\d{2}%|-?\d+\.\d{4}(?!\d)", page_text)
