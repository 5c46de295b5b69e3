"""The page of a study that defines arms (prunegen.arm_specs): pruning methods and
controls against sparsity and training time, and the top-improved-examples (TIE) claim.

    prunegen results --study workflow/studies/methods.yaml --out docs/methods.md

Tables beside the page (computed from its `summary` copy, so the page regenerates from
what is committed):

- `methods`: per benchmark, noise, pruning arm and level (dense level 0 included): the
  arm's base and method, nominal and measured sparsity, total training epochs behind the
  model, and the test error's mean and 95% t-interval over seeds (the shape of the
  supplement's Figure 8: test error against sparsity and against epochs).
- `method_verdicts`: per benchmark, noise and pruning arm, claim 1 of the paper applied
  to the arm: test error at its validation-chosen level minus dense's, per seed (< 0).
- `tie`: per benchmark, noise, TIE pair and level: examples removed, test error of dense,
  `tie_removed` and `tie_random`, and the verdict on the supplement's claim: the paired
  per-seed difference tie_removed - tie_random (> 0: removing the top-improved examples
  hurts more than removing as many random ones).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import analysis
from ..arm_specs import TIE_BASES
from ..config import Study
from .stats import INCONCLUSIVE, Interval, outcome, overall, seeds_needed

TABLES = ("methods", "method_verdicts", "tie")
FIGURES = ("methods_sparsity", "methods_epochs", "tie")
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


def _arm_order(study: Study) -> dict[str, int]:
    return {a: i for i, a in enumerate(("dense", *study.arms))}


def methods_table(study: Study, summary: pd.DataFrame) -> pd.DataFrame:
    arms = ["dense", *pruning_arms(study)]
    s = summary[summary["arm"].isin(arms)]
    out = analysis.mean_ci(s, ["benchmark", "noise", "arm", "level", "nominal_sparsity", "total_epochs"],
                           ["test_error", "sparsity"])
    out.insert(3, "base", out["arm"].map(lambda a: base_of(study, a)))
    out.insert(4, "method", out["arm"].map(lambda a: method_of(study, a)))
    order = _arm_order(study)
    return (out.assign(_a=out["arm"].map(order)).sort_values(["benchmark", "noise", "_a", "level"])
            .drop(columns="_a").reset_index(drop=True))


def _record(claim: tuple, iv: Interval, **keys) -> dict:
    verdict, reason = outcome(iv, claim[3])
    return {**keys, "statistic": claim[2], "expected": "> 0" if claim[3] > 0 else "< 0", "n_seeds": iv.n,
            "mean": iv.mean, "ci_low": iv.low, "ci_high": iv.high, "verdict": verdict, "reason": reason,
            "seeds_needed": seeds_needed(iv) if verdict == INCONCLUSIVE else math.nan}


def method_verdicts(study: Study, optimal: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (b, noise), o in optimal.groupby(["benchmark", "noise"], sort=True):
        for arm in pruning_arms(study):
            a = o[(o["arm"] == arm) & o["complete_chain"]]
            if len(a):
                iv = Interval.of((a["test_error"] - a["dense_test_error"]).to_numpy())
                rows.append(_record(METHOD_CLAIM, iv, benchmark=b, noise=float(noise), arm=arm,
                                    levels_chosen=" ".join(str(int(k)) for k in a.sort_values("seed")["level"])))
    cols = ["benchmark", "noise", "arm", "levels_chosen", "statistic", "expected", "n_seeds", "mean", "ci_low",
            "ci_high", "verdict", "reason", "seeds_needed"]
    return pd.DataFrame(rows, columns=cols).astype({"n_seeds": "int64"})


def tie_table(study: Study, summary: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for removed, rand in tie_pairs(study):
        top = study.arm_specs[removed].options["top"]
        for (b, noise), s in summary.groupby(["benchmark", "noise"], sort=True):
            dense = s[s["arm"] == "dense"].set_index("seed")
            d = Interval.of(dense["test_error"])
            for level in sorted(s.loc[s["arm"].isin([removed, rand]), "level"].unique()):
                r = s[(s["arm"] == removed) & (s["level"] == level)].set_index("seed")
                q = s[(s["arm"] == rand) & (s["level"] == level)].set_index("seed")
                both = r.index.intersection(q.index)
                ivr, ivq = Interval.of(r["test_error"]), Interval.of(q["test_error"])
                iv = Interval.of((r.loc[both, "test_error"] - q.loc[both, "test_error"]).to_numpy())
                n_removed = (dense["train_examples"].reindex(r.index) - r["train_examples"]).dropna()
                rows.append(_record(
                    TIE_CLAIM, iv, benchmark=b, noise=float(noise), level=int(level),
                    nominal_sparsity=float(analysis.nominal_sparsity(study.benchmarks[b].prune.fraction, level))
                    if b in study.benchmarks else math.nan,
                    removed_arm=removed, random_arm=rand, top=top,
                    removed=int(n_removed.iloc[0]) if len(n_removed) else -1,
                    train_examples=int(dense["train_examples"].iloc[0]) if len(dense) else -1,
                    dense_mean=d.mean, dense_ci_low=d.low, dense_ci_high=d.high,
                    tie_removed_mean=ivr.mean, tie_removed_ci_low=ivr.low, tie_removed_ci_high=ivr.high,
                    tie_random_mean=ivq.mean, tie_random_ci_low=ivq.low, tie_random_ci_high=ivq.high))
    cols = ["benchmark", "noise", "level", "nominal_sparsity", "removed_arm", "random_arm", "top", "removed",
            "train_examples", "dense_mean", "dense_ci_low", "dense_ci_high", "tie_removed_mean",
            "tie_removed_ci_low", "tie_removed_ci_high", "tie_random_mean", "tie_random_ci_low",
            "tie_random_ci_high", "statistic", "expected", "n_seeds", "mean", "ci_low", "ci_high", "verdict",
            "reason", "seeds_needed"]
    return pd.DataFrame(rows, columns=cols).astype({"n_seeds": "int64", "level": "int64", "removed": "int64",
                                                    "train_examples": "int64"})


def tables(study: Study, t: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    return {"methods": methods_table(study, t["summary"]), "method_verdicts": method_verdicts(study, t["optimal"]),
            "tie": tie_table(study, t["summary"])}


# ---------------------------------------------------------------- the page's sections

def verdict_rows(study: Study, mt: dict[str, pd.DataFrame], benchmarks: list[str]) -> list[list[str]]:
    """The page's verdict table: one row per benchmark and claim (TIE per pair; claim 1 per arm)."""
    rows = []
    for b in benchmarks:
        t = mt["tie"][mt["tie"]["benchmark"] == b]
        for (removed, rand), g in t.groupby(["removed_arm", "random_arm"], sort=False):
            rows.append([f"`{b}`", f"TIE. {TIE_CLAIM[0]} (`{removed}` vs `{rand}`)", "> 0: " + TIE_CLAIM[2],
                         overall(list(g["verdict"]))])
        v = mt["method_verdicts"][mt["method_verdicts"]["benchmark"] == b]
        order = _arm_order(study)
        for arm, g in sorted(v.groupby("arm"), key=lambda x: order.get(x[0], 99)):
            rows.append([f"`{b}`", f"1. {METHOD_CLAIM[0]} (`{arm}`)", "< 0: " + METHOD_CLAIM[2],
                         overall(list(g["verdict"]))])
    return rows


def section(study: Study, b: str, mt: dict[str, pd.DataFrame], fmt) -> list[str]:
    """The methods and TIE sections of one benchmark (`fmt`: the page's formatters)."""
    pct, with_ci, of_record, table, level_text = fmt["pct"], fmt["with_ci"], fmt["of_record"], fmt["table"], fmt["level"]
    m = mt["methods"][mt["methods"]["benchmark"] == b]
    out = ["### Pruning methods and controls: test error against sparsity and training time", "",
           "One row per arm and level (level 0: the shared dense cell). Sparsity is nominal, "
           "1 - (1 - fraction)^level (the measured sparsity equals it: every method keeps exactly that many "
           "weights); epochs are every epoch behind the final model, the dense cycle included.", ""]
    for noise, g in m.groupby("noise", sort=True):
        rows = [[f"`{r['arm']}`", f"`{r['base']}`", r["method"], level_text(r["level"], r["nominal_sparsity"]),
                 str(int(r["total_epochs"])), with_ci(r, "test_error"), str(int(r["n_seeds"]))]
                for _, r in g.iterrows()]
        out += [f"Noise {noise:g}:", "", *table(["arm", "base", "method", "level (sparsity)", "epochs in all",
                                                  "test error", "seeds"], rows)]
    v = mt["method_verdicts"][mt["method_verdicts"]["benchmark"] == b]
    out += ["### Claim 1 for every pruning arm", "", f"Claim: {METHOD_CLAIM[1]}", ""]
    out += table(["noise", "arm", "level chosen on validation (per seed)", "arm - dense test error (paired)",
                  "verdict", "why"],
                 [[f"{r['noise']:g}", f"`{r['arm']}`", r["levels_chosen"], of_record(r), r["verdict"], r["reason"]]
                  for _, r in v.iterrows()])
    t = mt["tie"][mt["tie"]["benchmark"] == b]
    out += ["### Top-improved examples (TIE)", "", f"Claim (the paper's supplement): {TIE_CLAIM[1]}", ""]
    for (removed, rand), g in t.groupby(["removed_arm", "random_arm"], sort=False):
        source = study.arm_specs[removed].options["source"]
        top, n, total = g["top"].iloc[0], int(g["removed"].iloc[0]), int(g["train_examples"].iloc[0])
        out += [f"`{removed}` at level k leaves out the {n} of {total} training examples (top {100 * top:g}%) "
                f"whose training loss fell most from dense level 0 to `{source}` level k; `{rand}` leaves out "
                f"{n} drawn at random (seeded per level). Both are dense models, from dense's initialization, "
                f"trained one cycle. **Verdict: {overall(list(g['verdict']))}.**", ""]
        rows = [[f"{r['noise']:g}", level_text(r["level"], r["nominal_sparsity"]), str(int(r["removed"])),
                 with_ci(r, "dense"), with_ci(r, "tie_removed"), with_ci(r, "tie_random"), of_record(r),
                 r["verdict"], r["reason"]] for _, r in g.iterrows()]
        out += table(["noise", "level of the ranking (sparsity)", "removed", "dense test error",
                      f"`{removed}`", f"`{rand}`", "removed - random (paired)", "verdict", "why"], rows)
    return out


# ---------------------------------------------------------------- the page

def setup(study: Study, b: str, summary: pd.DataFrame) -> str:
    from . import page as P
    from .paper import paper_epochs
    from .stats import t_quantile

    bm = study.benchmarks[b]
    seeds = sorted(summary.loc[summary["benchmark"] == b, "seed"].unique())
    theirs = paper_epochs(bm.dataset, bm.model["name"])
    n = len(seeds)
    ci = (f"intervals are the mean +- {t_quantile(n):.2f} standard errors" if n >= 2
          else "no interval, so every verdict is inconclusive")
    return (f"`{b}`: {bm.dataset}, {P._model(bm.model)}; {100 * bm.prune.fraction:g}% of the remaining weights "
            f"pruned per level; {bm.train.epochs} epochs per training cycle"
            + (f" (the paper: {theirs})" if theirs else "") + f"; {n} seed{'s' if n != 1 else ''} "
            f"({', '.join(map(str, seeds))}): {ci}.")


def _arms_rows(study: Study) -> list[list[str]]:
    from ..arm_specs import total_cycles

    rows = []
    for arm in study.arms:
        spec = study.arm_specs.get(arm)
        base = base_of(study, arm)
        opts = ", ".join(f"{k}: `{v}`" if isinstance(v, str) else f"{k}: {v:g}"
                         for k, v in (spec.options.items() if spec else ()))
        cycles = {"dense": "1 (level 0)", "oneshot": "2", "reinit": "1", "tie_removed": "1", "tie_random": "1",
                  "downscaled": "1"}.get(base, "k+1")
        assert base == "dense" or cycles != "k+1" or total_cycles(base, 3) == 4
        rows.append([f"`{arm}`", f"`{base}`", method_of(study, arm), opts or "-", cycles])
    return rows


def render(study: Study, page: "Path", tables_dir: "Path", figures_dir: "Path", source: str) -> list:
    """The methods page: judge on the tables in `tables_dir` (writing this module's tables
    there) and write the page and its figures; returns what was written."""
    from pathlib import Path

    from .. import figures, records
    from . import page as P

    missing = [str(tables_dir / f"{n}.parquet") for n in P.TABLES if not (tables_dir / f"{n}.parquet").is_file()]
    if missing:
        raise P.TablesError(f"no page tables: {', '.join(missing)}; run `prunegen results` without "
                            "--from-page-tables to copy them from the study's merged tables")
    t = {n: pd.read_parquet(tables_dir / f"{n}.parquet") for n in P.TABLES}
    mt = tables(study, t)
    for name, df in mt.items():
        with records.atomic_write(tables_dir / f"{name}.parquet") as tmp:
            df.to_parquet(tmp, index=False)
    written = figures.draw_from(study, {**t, **mt}, figures_dir, FIGURES, formats=("png",), dpi=80)
    rel = lambda p: Path(*Path(p).parts[len(page.parent.parts):]).as_posix()  # noqa: E731
    names = sorted(t["summary"]["benchmark"].unique())
    compute = t["compute"].iloc[0]
    fmt = {"pct": P.pct, "with_ci": P.with_ci, "of_record": P.of_record, "table": P._table, "level": P._level}
    lines = [
        f"# Pruning methods and controls: {study.name}", "",
        f"<!-- generated by `prunegen results --study {source}`; do not edit by hand -->", "",
        f"Study `{source}`: {len(names)} benchmark{'s' if len(names) != 1 else ''} "
        f"({', '.join(f'`{b}`' for b in names)}); levels 0 to {study.levels}; label noise "
        f"{', '.join(f'{f:g}' for f in study.noise)} ({study.noise_mode}); seeds "
        f"{', '.join(str(s) for s in study.seeds)}. Each benchmark is judged on its own.", "",
        "Every number below is a cell of the tables in "
        f"[`{rel(tables_dir)}/`]({rel(tables_dir)}/) (copies of the study's merged tables, and the tables and "
        "verdict records computed from them).", "",
        "## Arms", "",
        *P._table(["arm", "base", "pruning method", "options", "cycles behind the level-k model"], _arms_rows(study)),
        "Bases: `imp` prunes level k-1's weights by its method and trains one cycle with the LR restarted; "
        "`oneshot` prunes dense level 0's trained weights to the level's density in one step and trains one "
        "cycle, `oneshot_extended` trains k cycles after that step (as long as `imp` in all); `reinit` trains "
        "`mask_from`'s level-k mask from a fresh initialization for one cycle; `tie_removed` and `tie_random` "
        "retrain dense without some training examples (below). Every method keeps exactly "
        "round(N (1 - fraction)^k) of the N prunable weights.", "",
        "## Verdicts", "",
        "A verdict reads the 95% Student-t interval over seeds of a paired per-seed difference: **held** when "
        "it excludes 0 on the expected side, **did not hold** when it excludes 0 on the other side, "
        "**inconclusive** when it contains 0 (or there are fewer than 2 seeds); `mixed` when the levels "
        "or noise levels it is judged at disagree, with the counts.", "",
        *P._table(["benchmark", "claim", "expects", "verdict"], verdict_rows(study, mt, names)),
        "## Compute", "",
        f"{compute['cells']} cells, {compute['epochs']} training epochs (each counted once), "
        f"{P._duration(compute['cell_seconds'])} inside the cells, {P._duration(compute['job_seconds'])} of jobs "
        f"(with process start), {P._duration(compute['wall_seconds'])} wall clock from the first job's start "
        "to the last cell's end.", "",
    ]
    for b in names:
        lines += [f"## Benchmark `{b}`", "", setup(study, b, t["summary"]), "", *section(study, b, mt, fmt), ""]
    lines += ["## Figures", "", "Intervals of errors are clipped to [0, 1].", ""]
    lines += [f"![{Path(p).stem}]({rel(p)})" for p in written] + [""]
    with records.atomic_write(page) as tmp:
        Path(tmp).write_text("\n".join(lines))
    return [page, *written]
