"""Derived tables, pure functions of the merged `summary` (and `subgroups`) table: means
and 95% Student-t intervals over seeds, relative changes against the same seed's dense
model, the validation-chosen level per seed, and the order arms are listed in.

Level 0 of every arm is the shared dense cell (arm `dense`). "Sparsity" in the tables
is the nominal sparsity of the level, `1 - (1 - prune_fraction)^level`: downscaled arms
are dense models of the matching size, so their own measured sparsity is 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..records.schemas import KEY_COLUMNS as KEYS
from ..study.arm_specs import CHAIN_ARMS, arm_rank
from ..study.grid import Study

SEED_GROUP = ["benchmark", "noise", "seed"]  # what a relative change is paired on


METRICS = ["test_error", "train_loss", "train_loss_clean", "train_loss_noisy", "memorization"]


QUANTILE_BINS = 5


SUBGROUPS = ("all", "clean", "noisy", *(f"dense_loss_q{i + 1}" for i in range(QUANTILE_BINS)))


def nominal_sparsity(prune_fraction: float | np.ndarray, level: int | np.ndarray):
    return 1 - (1 - np.asarray(prune_fraction, dtype=float)) ** np.asarray(level, dtype=float)


def sparsity_of(study: Study, df: pd.DataFrame) -> np.ndarray:
    fraction = df["benchmark"].map({b: bm.prune.fraction for b, bm in study.benchmarks.items()})
    return nominal_sparsity(fraction.to_numpy(dtype=float), df["level"].to_numpy())


def chain_history(history: pd.DataFrame, benchmark: str, arm: str, level: int, noise: float,
                  seed: int, chain_arms: tuple[str, ...] = CHAIN_ARMS) -> pd.DataFrame:
    """The whole training curve behind one cell, from the merged `history` table: for a
    chain arm, dense level 0's cycle and the arm's levels 1..k; otherwise the cell's rows.
    Equals that cell's own history.parquet (plus keys)."""
    h = history[(history["benchmark"] == benchmark) & (history["noise"] == noise) & (history["seed"] == seed)]
    if arm in chain_arms:  # a study's own chain arms: pass study.chain_arms
        h = h[((h["arm"] == "dense") & (h["level"] == 0)) | ((h["arm"] == arm) & h["level"].between(1, level))]
    else:
        h = h[(h["arm"] == arm) & (h["level"] == level)]
    return h.sort_values(["level", "cycle", "epoch"]).reset_index(drop=True)


def mean_ci(df: pd.DataFrame, by: list[str], columns: list[str], n_name: str = "n_seeds") -> pd.DataFrame:
    """Per group: `<c>_mean`, `<c>_ci_low`, `<c>_ci_high` (95% Student-t interval over
    the group's rows, NaN with fewer than two) for every column, and the row count."""
    from scipy import stats  # scipy only when intervals are computed: `prunegen status` needs none

    g = df.groupby(by, sort=True, dropna=False)
    mean, std, n = g[columns].mean(), g[columns].std(ddof=1), g[columns].count()
    half = stats.t.ppf(0.975, (n - 1).where(n > 1)) * std / np.sqrt(n)
    out = pd.DataFrame(index=mean.index)
    out[n_name] = g.size()
    for c in columns:
        out[f"{c}_mean"], out[f"{c}_ci_low"], out[f"{c}_ci_high"] = mean[c], mean[c] - half[c], mean[c] + half[c]
    return out.reset_index()


def relative_change(df: pd.DataFrame, on: list[str], columns: list[str]) -> pd.DataFrame:
    """`<c>_change` = (x - x_dense) / x_dense, paired with the dense level-0 row that
    shares `on` (same benchmark, noise, seed, ...); NaN where dense is missing or 0."""
    dense = df[df["arm"] == "dense"][on + columns].rename(columns={c: f"_{c}_dense" for c in columns})
    df = df.merge(dense, on=on, how="left", validate="many_to_one")
    for c in columns:
        change = (df[c] - df[f"_{c}_dense"]) / df[f"_{c}_dense"]
        df[f"{c}_change"] = change.replace([np.inf, -np.inf], np.nan)
    return df.drop(columns=[f"_{c}_dense" for c in columns])


def in_arm_order(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Sort by `by`, with `arm` in the study's vocabulary order (dense first)."""
    key = [("_arm" if c == "arm" else c) for c in by]
    return df.assign(_arm=df["arm"].map(arm_rank)).sort_values(key).drop(columns="_arm").reset_index(drop=True)


def headline(summary: pd.DataFrame) -> pd.DataFrame:
    df = relative_change(summary, SEED_GROUP, METRICS)
    cols = [*METRICS, *(f"{m}_change" for m in METRICS)]
    out = mean_ci(df, ["benchmark", "noise", "level", "arm", "nominal_sparsity"], cols)
    return in_arm_order(out, ["benchmark", "noise", "level", "arm"])


def memorization(summary: pd.DataFrame) -> pd.DataFrame:
    noisy = summary[summary["noise"] > 0]
    out = mean_ci(noisy, ["benchmark", "arm", "noise", "level", "nominal_sparsity"],
                  ["memorization", "noise_effective"])
    return in_arm_order(out, ["benchmark", "arm", "noise", "level"])


def optimal(summary: pd.DataFrame, levels: int) -> pd.DataFrame:
    """Per (benchmark, arm, noise, seed): the level (0 = dense included) with the lowest
    validation error, ties to the lowest level; `levels_found` says how many of the
    arm's levels 0..L were complete."""
    dense = summary[summary["arm"] == "dense"]
    cols = [*KEYS, "nominal_sparsity", "val_error", "test_error"]
    parts = []
    for arm in summary.loc[summary["arm"] != "dense", "arm"].unique():
        own = summary[summary["arm"] == arm]
        cand = pd.concat([dense.assign(arm=arm).merge(own[SEED_GROUP].drop_duplicates(), on=SEED_GROUP), own])[cols]
        found = cand.groupby(SEED_GROUP).size().rename("levels_found")
        best = cand.sort_values([*SEED_GROUP, "val_error", "level"]).groupby(SEED_GROUP).head(1)
        parts.append(best.merge(found, on=SEED_GROUP))
    if not parts:
        return pd.DataFrame(columns=[*KEYS, "nominal_sparsity", "val_error", "test_error", "levels_found",
                                     "complete_chain", "dense_val_error", "dense_test_error",
                                     "test_error_change"])
    out = pd.concat(parts)
    out["complete_chain"] = out["levels_found"] == levels + 1
    ref = dense[[*SEED_GROUP, "val_error", "test_error"]].rename(
        columns={"val_error": "dense_val_error", "test_error": "dense_test_error"})
    out = out.merge(ref, on=SEED_GROUP, how="left")
    out["test_error_change"] = ((out["test_error"] - out["dense_test_error"]) / out["dense_test_error"]
                                ).replace([np.inf, -np.inf], np.nan)
    return in_arm_order(out, ["benchmark", "arm", "noise", "seed"])


def subgroup_headline(sub: pd.DataFrame) -> pd.DataFrame:
    out = mean_ci(sub, ["benchmark", "noise", "subgroup", "level", "arm", "nominal_sparsity"],
                  ["train_loss", "train_error", "train_loss_change", "train_error_change", "noisy_fraction"])
    out["_s"] = out["subgroup"].map({s: i for i, s in enumerate(SUBGROUPS)})
    return in_arm_order(out, ["benchmark", "noise", "_s", "level", "arm"]).drop(columns="_s")
