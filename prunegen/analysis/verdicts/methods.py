"""The judging of a study that defines arms (prunegen.study.arm_specs): pruning methods and
controls against sparsity and training time, and the top-improved-examples (TIE) claim;
the page is prunegen.analysis.report.methods_page.

Tables beside the page (computed from its `summary` copy, so the page regenerates from
what is committed):

- `methods`: per benchmark, noise, pruning arm and level (dense level 0 included): the
  arm's base and method, nominal and measured sparsity, total training epochs behind the
  model, and the test error's mean and 95% t-interval over seeds (the shape of the
  supplement's Figure 8: test error against sparsity and against epochs).
- `method_verdicts`: per benchmark, noise and pruning arm, claim 1 of the paper applied
  to the arm: test error at its validation-chosen level minus dense's, per seed (< 0),
  Holm's correction across the arm's noise levels.
- `tie`: per benchmark, noise, TIE pair and level: examples removed, test error of dense,
  `tie_removed` and `tie_random`, and the verdict on the supplement's claim: the paired
  per-seed difference tie_removed - tie_random (> 0: removing the top-improved examples
  hurts more than removing as many random ones), Holm's correction across the pair's
  (noise, level) places.
"""

from __future__ import annotations

import math

import pandas as pd

from ...study.arm_specs import TIE_BASES
from ...study.grid import Study
from ..tables import mean_ci, nominal_sparsity
from .stats import INCONCLUSIVE, Interval, holm, outcome, seeds_needed

METHOD_TABLES = ("methods", "method_verdicts", "tie")
TIE_CLAIM = ("Removing the top-improved examples hurts more than removing random ones",
             "Dense retrained without the top `top` fraction of training examples by loss improvement under "
             "pruning (`tie_removed`) has a higher test error than dense retrained without as many random "
             "examples (`tie_random`).",
             "test error of `tie_removed` minus `tie_random`'s at the same level, per seed", +1)
METHOD_CLAIM = ("Pruning reaches a lower test error than dense",
                "The arm at the level chosen on validation error has a lower test error than `dense` "
                "(the paper's claim 1, for every pruning method and control).",
                "test error at the arm's validation-chosen level minus `dense`'s, per seed", -1)


def base_of(study: Study, arm: str) -> str:
    spec = study.arm_specs.get(arm)
    return spec.base if spec else arm


def method_of(study: Study, arm: str) -> str:
    spec = study.arm_specs.get(arm)
    if spec is None:
        return {"imp": "magnitude", "random": "random (imp's per-layer counts)"}.get(arm, "none")
    if spec.method is None:
        return f"mask of `{spec.options['mask_from']}`" if spec.base == "reinit" else "none"
    opts = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in spec.method.items()
                     if k != "name")
    return spec.method["name"] + (f" ({opts})" if opts else "")


def pruning_arms(study: Study) -> list[str]:
    """The study's arms that prune (everything but dense, the downscaled and TIE arms)."""
    return [a for a in study.arms if a not in ("dense", "downscaled", "downscaled_extended", "extended")
            and base_of(study, a) not in TIE_BASES]


def tie_pairs(study: Study) -> list[tuple[str, str]]:
    """(tie_removed arm, tie_random arm) of the same `top`."""
    removed = [a for a in study.arms if base_of(study, a) == "tie_removed"]
    rand = [a for a in study.arms if base_of(study, a) == "tie_random"]
    out = []
    for a in removed:
        top = study.arm_specs[a].options["top"]
        match = [r for r in rand if study.arm_specs[r].options["top"] == top]
        if match:
            out.append((a, match[0]))
    return out


def arm_order(study: Study) -> dict[str, int]:
    return {a: i for i, a in enumerate(("dense", *study.arms))}


def methods_table(study: Study, summary: pd.DataFrame) -> pd.DataFrame:
    arms = ["dense", *pruning_arms(study)]
    s = summary[summary["arm"].isin(arms)]
    out = mean_ci(s, ["benchmark", "noise", "arm", "level", "nominal_sparsity", "total_epochs"],
                           ["test_error", "sparsity"])
    out.insert(3, "base", out["arm"].map(lambda a: base_of(study, a)))
    out.insert(4, "method", out["arm"].map(lambda a: method_of(study, a)))
    order = arm_order(study)
    return (out.assign(_a=out["arm"].map(order)).sort_values(["benchmark", "noise", "_a", "level"])
            .drop(columns="_a").reset_index(drop=True))


def _family(claim: tuple, places: list[tuple[dict, Interval]]) -> list[dict]:
    """Records of one family of places (Holm across them): the keys of each, its statistic's
    interval, p-values, the interval Holm's step tests it at, and its verdict."""
    rejected, adjusted, levels = holm([iv.p_value for _, iv in places])
    rows = []
    for (keys, iv), rej, p_holm, level in zip(places, rejected, adjusted, levels):
        verdict, reason = outcome(iv, claim[3], rej)
        low, high = iv.bounds(1 - level)
        rows.append({**keys, "statistic": claim[2], "expected": "> 0" if claim[3] > 0 else "< 0", "n_seeds": iv.n,
                     "mean": iv.mean, "ci_low": iv.low, "ci_high": iv.high, "p_value": iv.p_value,
                     "p_holm": p_holm, "holm_low": low, "holm_high": high, "verdict": verdict, "reason": reason,
                     "seeds_needed": seeds_needed(iv, level) if verdict == INCONCLUSIVE else math.nan})
    return rows


RECORD = ["statistic", "expected", "n_seeds", "mean", "ci_low", "ci_high", "p_value", "p_holm", "holm_low",
          "holm_high", "verdict", "reason", "seeds_needed"]


def method_verdicts(study: Study, optimal: pd.DataFrame) -> pd.DataFrame:
    """Claim 1 for every pruning arm: per (benchmark, arm), Holm across its noise levels."""
    rows = []
    for b, ob in optimal.groupby("benchmark", sort=True):
        for arm in pruning_arms(study):
            places = []
            for noise, o in ob.groupby("noise", sort=True):
                a = o[(o["arm"] == arm) & o["complete_chain"]]
                if len(a):
                    keys = {"benchmark": b, "noise": float(noise), "arm": arm,
                            "levels_chosen": " ".join(str(int(k)) for k in a.sort_values("seed")["level"])}
                    places.append((keys, Interval.of((a["test_error"] - a["dense_test_error"]).to_numpy())))
            rows += _family(METHOD_CLAIM, places)
    cols = ["benchmark", "noise", "arm", "levels_chosen", *RECORD]
    out = pd.DataFrame(rows, columns=cols).astype({"n_seeds": "int64"})
    order = arm_order(study)
    return (out.assign(_a=out["arm"].map(order)).sort_values(["benchmark", "noise", "_a"]).drop(columns="_a")
            .reset_index(drop=True))


def tie_table(study: Study, summary: pd.DataFrame) -> pd.DataFrame:
    """The TIE claim: per (benchmark, pair), Holm across its (noise, level) places."""
    rows = []
    for removed, rand in tie_pairs(study):
        top = study.arm_specs[removed].options["top"]
        for b, sb in summary.groupby("benchmark", sort=True):
            places = []
            for noise, s in sb.groupby("noise", sort=True):
                dense = s[s["arm"] == "dense"].set_index("seed")
                d = Interval.of(dense["test_error"])
                for level in sorted(s.loc[s["arm"].isin([removed, rand]), "level"].unique()):
                    r = s[(s["arm"] == removed) & (s["level"] == level)].set_index("seed")
                    q = s[(s["arm"] == rand) & (s["level"] == level)].set_index("seed")
                    both = r.index.intersection(q.index)
                    ivr, ivq = Interval.of(r["test_error"]), Interval.of(q["test_error"])
                    n_removed = (dense["train_examples"].reindex(r.index) - r["train_examples"]).dropna()
                    keys = dict(
                        benchmark=b, noise=float(noise), level=int(level),
                        nominal_sparsity=float(nominal_sparsity(study.benchmarks[b].prune.fraction, level))
                        if b in study.benchmarks else math.nan,
                        removed_arm=removed, random_arm=rand, top=top,
                        removed=int(n_removed.iloc[0]) if len(n_removed) else -1,
                        train_examples=int(dense["train_examples"].iloc[0]) if len(dense) else -1,
                        dense_mean=d.mean, dense_ci_low=d.low, dense_ci_high=d.high,
                        tie_removed_mean=ivr.mean, tie_removed_ci_low=ivr.low, tie_removed_ci_high=ivr.high,
                        tie_random_mean=ivq.mean, tie_random_ci_low=ivq.low, tie_random_ci_high=ivq.high)
                    places.append((keys, Interval.of((r.loc[both, "test_error"] - q.loc[both, "test_error"]).to_numpy())))
            rows += _family(TIE_CLAIM, places)
    cols = ["benchmark", "noise", "level", "nominal_sparsity", "removed_arm", "random_arm", "top", "removed",
            "train_examples", "dense_mean", "dense_ci_low", "dense_ci_high", "tie_removed_mean",
            "tie_removed_ci_low", "tie_removed_ci_high", "tie_random_mean", "tie_random_ci_low",
            "tie_random_ci_high", *RECORD]
    return pd.DataFrame(rows, columns=cols).astype({"n_seeds": "int64", "level": "int64", "removed": "int64",
                                                    "train_examples": "int64"})


def tables(study: Study, t: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    return {"methods": methods_table(study, t["summary"]), "method_verdicts": method_verdicts(study, t["optimal"]),
            "tie": tie_table(study, t["summary"])}


# ---------------------------------------------------------------- the page's sections


# ---------------------------------------------------------------- the page


