"""What moved between two judgements of a study: an earlier page's verdict records
against today's, claim by claim and benchmark by benchmark, with the reason.

A place (claim, noise, level, arm) judged both times moved when its verdict differs. Why
it moved is read from the two intervals: *narrower* when the mean kept its sign and the
interval shrank, or there was none (more seeds, the same effect); *mean changed sign* when
it did not keep its sign; *wider* otherwise (the interval grew). A benchmark the earlier page did not have is compared with the
benchmarks it did, as they are judged now: it agrees with them or it does not.

`prunegen results --since OLD/verdicts.parquet` copies the earlier records beside the
page as `since_verdicts.parquet` (with the label given), so the page still regenerates
from what is committed beside it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .rules import summarize
from .stats import t_quantile

SINCE_FILE = "since_verdicts.parquet"
PLACE = ["claim", "noise", "level", "arm"]
COLUMNS = ["benchmark", "claim", "before", "now", "moved", "places", "places_moved", "narrower", "sign_changed",
           "wider", "seeds_before", "seeds_now", "width_ratio", "why"]


def _half(v: pd.DataFrame, suffix: str = "") -> pd.Series:
    """Half-widths of the intervals (NaN where there is none: one seed)."""
    return (v[f"ci_high{suffix}"] - v[f"ci_low{suffix}"]) / 2


def label_of(earlier: pd.DataFrame, default: str) -> str:
    """The label earlier records were kept under (`collect` stores it), else `default`."""
    return str(earlier["since"].iloc[0]) if "since" in earlier and len(earlier) else default


def _keyed(v: pd.DataFrame) -> pd.DataFrame:
    return v.assign(level=v["level"].fillna(-1), noise=v["noise"].fillna(-1)).set_index(PLACE)


def _seeds(n: float) -> str:
    return f"{int(n)} seed{'s' if n != 1 else ''}"


def compare(before: pd.DataFrame, now: pd.DataFrame) -> pd.DataFrame:
    """One row per (benchmark, claim) judged now: the earlier and current overall verdicts,
    how many places moved and why."""
    b_names, n_names = sorted(before["benchmark"].unique()), sorted(now["benchmark"].unique())
    old = summarize(before, b_names).set_index(["benchmark", "claim"])["verdict"] if len(before) else pd.Series()
    new = summarize(now, n_names).set_index(["benchmark", "claim"])["verdict"]
    rows = []
    for (benchmark, claim), verdict in new.items():
        n = now[(now["benchmark"] == benchmark) & (now["claim"] == claim)]
        row = {"benchmark": benchmark, "claim": claim, "now": verdict, "places": len(n),
               "seeds_now": float(n["n_seeds"].median())}
        if benchmark not in b_names:  # set beside today's verdicts of the benchmarks judged before
            others = {b: new[b, claim] for b in b_names if (b, claim) in new}
            same = [f"`{b}`" for b, v in others.items() if v == verdict]
            differ = [f"differs from `{b}`: {v} there" for b, v in others.items() if v != verdict]
            why = "; ".join(["new benchmark", *([f"agrees with {', '.join(same)}"] if same else []), *differ])
            rows.append({**row, "before": None, "moved": False, "why": why})
            continue
        o = before[(before["benchmark"] == benchmark) & (before["claim"] == claim)]
        both = _keyed(o).merge(_keyed(n), left_index=True, right_index=True, suffixes=("_before", ""))
        both = both.assign(half_before=_half(both, "_before"), half=_half(both))
        moved = both[both["verdict_before"] != both["verdict"]]
        sign_kept = np.sign(moved["mean_before"]) == np.sign(moved["mean"])
        narrower = sign_kept & ((moved["half"] < moved["half_before"])
                                | (moved["half_before"].isna() & moved["half"].notna()))
        changed = ~sign_kept
        ok = np.isfinite(both["half_before"]) & np.isfinite(both["half"]) & (both["half"] > 0)
        ratio = float((both["half_before"][ok] / both["half"][ok]).median()) if ok.any() else float("nan")
        seeds_before = float(o["n_seeds"].median())
        row.update(before=old.get((benchmark, claim)), places_moved=len(moved), narrower=int(narrower.sum()),
                   sign_changed=int(changed.sum()), wider=int(len(moved) - narrower.sum() - changed.sum()),
                   seeds_before=seeds_before, width_ratio=ratio)
        row["moved"] = row["before"] != verdict or len(moved) > 0
        row["why"] = "not judged either time" if not len(o) and not len(n) else _why(row, moved)
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def _why(row: dict, moved: pd.DataFrame) -> str:
    if not row["places_moved"]:
        return "unchanged at every place judged"
    t0, t1 = t_quantile(int(row["seeds_before"])), t_quantile(int(row["seeds_now"]))
    parts = [f"{row['places_moved']} of {row['places']} places moved"]
    steps = moved.groupby(["verdict_before", "verdict"]).size()
    parts.append(", ".join(f"{a} -> {b} at {k}" for (a, b), k in steps.items()))
    causes = []
    if row["narrower"]:
        causes.append(f"{row['narrower']} as the interval narrowed with the mean on the same side")
    if row["sign_changed"]:
        causes.append(f"{row['sign_changed']} where the mean changed sign")
    if row["wider"]:
        causes.append(f"{row['wider']} where the interval widened")
    text = "; ".join(parts) + ": " + ", ".join(causes)
    if np.isfinite(row["width_ratio"]) and row["seeds_now"] != row["seeds_before"] and np.isfinite(t0 + t1):
        text += (f" (intervals a median {row['width_ratio']:.1f} times narrower: {_seeds(row['seeds_before'])} "
                 f"to {_seeds(row['seeds_now'])}, t quantile {t0:.2f} to {t1:.2f})")
    return text


