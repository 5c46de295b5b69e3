"""The page of a study that defines arms (prunegen.study.arm_specs): pruning methods and
controls against sparsity and training time, and the top-improved-examples (TIE) claim,
judged by prunegen.analysis.verdicts.methods.

    prunegen results --study workflow/studies/methods.yaml --out docs/methods.md
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...records import store
from ...study.arm_specs import total_cycles
from ...study.grid import Study
from ..figures import draw
from ..verdicts.methods import (
    METHOD_CLAIM,
    TIE_CLAIM,
    arm_order,
    base_of,
    method_of,
    tables,
)
from ..verdicts.paper import paper_epochs
from ..verdicts.stats import ALPHA, primary, t_quantile
from .markdown import duration, level_text, model_text, of_record, p_text, points, table, with_ci
from .tables import read as read_page_tables

FIGURES = ("methods_sparsity", "methods_epochs", "tie")  # beside the claims pages' own


def verdict_rows(study: Study, mt: dict[str, pd.DataFrame], benchmarks: list[str]) -> list[list[str]]:
    """The page's verdict table: one row per benchmark and claim (TIE per pair; claim 1 per arm)."""
    rows = []
    for b in benchmarks:
        t = mt["tie"][mt["tie"]["benchmark"] == b]
        for (removed, rand), g in t.groupby(["removed_arm", "random_arm"], sort=False):
            rows.append([f"`{b}`", f"TIE. {TIE_CLAIM[0]} (`{removed}` vs `{rand}`)", "> 0: " + TIE_CLAIM[2],
                         primary(list(g["verdict"]))])
        v = mt["method_verdicts"][mt["method_verdicts"]["benchmark"] == b]
        order = arm_order(study)
        for arm, g in sorted(v.groupby("arm"), key=lambda x: order.get(x[0], 99)):
            rows.append([f"`{b}`", f"1. {METHOD_CLAIM[0]} (`{arm}`)", "< 0: " + METHOD_CLAIM[2],
                         primary(list(g["verdict"]))])
    return rows


def section(study: Study, b: str, mt: dict[str, pd.DataFrame]) -> list[str]:
    """The methods and TIE sections of one benchmark."""
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
                  "p (Holm)", "verdict", "why"],
                 [[f"{r['noise']:g}", f"`{r['arm']}`", r["levels_chosen"], of_record(r, points), p_text(r["p_holm"]),
                   r["verdict"], r["reason"]] for _, r in v.iterrows()])
    t = mt["tie"][mt["tie"]["benchmark"] == b]
    out += ["### Top-improved examples (TIE)", "", f"Claim (the paper's supplement): {TIE_CLAIM[1]}", ""]
    for (removed, rand), g in t.groupby(["removed_arm", "random_arm"], sort=False):
        source = study.arm_specs[removed].options["source"]
        top, n, total = g["top"].iloc[0], int(g["removed"].iloc[0]), int(g["train_examples"].iloc[0])
        out += [f"`{removed}` at level k leaves out the {n} of {total} training examples (top {100 * top:g}%) "
                f"whose training loss fell most from dense level 0 to `{source}` level k; `{rand}` leaves out "
                f"{n} drawn at random (seeded per level). Both are dense models, from dense's initialization, "
                f"trained one cycle. **Verdict: {primary(list(g['verdict']))}.**", ""]
        rows = [[f"{r['noise']:g}", level_text(r["level"], r["nominal_sparsity"]), str(int(r["removed"])),
                 with_ci(r, "dense"), with_ci(r, "tie_removed"), with_ci(r, "tie_random"), of_record(r, points),
                 p_text(r["p_holm"]), r["verdict"], r["reason"]] for _, r in g.iterrows()]
        out += table(["noise", "level of the ranking (sparsity)", "removed", "dense test error",
                      f"`{removed}`", f"`{rand}`", "removed - random (paired)", "p (Holm)", "verdict", "why"], rows)
    return out


def setup(study: Study, b: str, summary: pd.DataFrame) -> str:
    bm = study.benchmarks[b]
    seeds = sorted(summary.loc[summary["benchmark"] == b, "seed"].unique())
    theirs = paper_epochs(bm.dataset, bm.model["name"])
    n = len(seeds)
    ci = (f"intervals are the mean +- {t_quantile(n):.2f} standard errors" if n >= 2
          else "no interval, so every verdict is inconclusive")
    return (f"`{b}`: {bm.dataset}, {model_text(bm.model)}; {100 * bm.prune.fraction:g}% of the remaining weights "
            f"pruned per level; {bm.train.epochs} epochs per training cycle"
            + (f" (the paper: {theirs})" if theirs else "") + f"; {n} seed{'s' if n != 1 else ''} "
            f"({', '.join(map(str, seeds))}): {ci}.")


def _arms_rows(study: Study) -> list[list[str]]:
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


def render(study: Study, page: Path, tables_dir: Path, figures_dir: Path, source: str) -> list[Path]:
    """The methods page: judge on the tables in `tables_dir` (writing this module's tables
    there) and write the page and its figures; returns what was written."""
    t = read_page_tables(tables_dir)
    mt = tables(study, t)
    for name, df in mt.items():
        with store.atomic_write(tables_dir / f"{name}.parquet") as tmp:
            df.to_parquet(tmp, index=False)
    written = draw.draw_from(study, {**t, **mt}, figures_dir, FIGURES, formats=("png",), dpi=80)
    rel = lambda p: Path(*Path(p).parts[len(page.parent.parts):]).as_posix()  # noqa: E731
    names = sorted(t["summary"]["benchmark"].unique())
    compute = t["compute"].iloc[0]
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
        *table(["arm", "base", "pruning method", "options", "cycles behind the level-k model"], _arms_rows(study)),
        "Bases: `imp` prunes level k-1's weights by its method and trains one cycle with the LR restarted; "
        "`oneshot` prunes dense level 0's trained weights to the level's density in one step and trains one "
        "cycle, `oneshot_extended` trains k cycles after that step (as long as `imp` in all); `reinit` trains "
        "`mask_from`'s level-k mask from a fresh initialization for one cycle; `tie_removed` and `tie_random` "
        "retrain dense without some training examples (below). Every method keeps exactly "
        "round(N (1 - fraction)^k) of the N prunable weights.", "",
        "SNIP and GraSP score on a copy of the model in train mode, as their authors' code does (BatchNorm, "
        "where a model has it, normalises with the scoring batches' own statistics); the scores change nothing "
        "of the model. GraSP takes a Hessian-vector product through plain autograd (the CPU MLP's fused kernel, "
        "which has one derivative only, is switched off for it), with its gradient flow through every weight "
        "(the layers never pruned included, as its authors' code), and from a partly pruned mask the weights "
        "already pruned pass no gradient: its scores are those of the network that is left.", "",
        "## Verdicts", "",
        "A verdict reads a paired per-seed difference at each place (a noise level; for TIE, a noise level and "
        "a level): a two-sided t-test of its mean against 0 at each place, with Holm's correction across the "
        f"places of one claim (at most {ALPHA:g} chance of any false decision). A place **held** when Holm "
        "rejects 0 and the mean is on the expected side, **did not hold** when Holm rejects 0 on the other side, "
        "and is **inconclusive** otherwise; the claim **held** when some place held and none did not, **did not "
        "hold** the reverse, **mixed** when places went both ways, **inconclusive** when none was decided. "
        "95% intervals are description.", "",
        *table(["benchmark", "claim", "expects", "verdict"], verdict_rows(study, mt, names)),
        "## Compute", "",
        f"{compute['cells']} cells, {compute['epochs']} training epochs (each counted once), "
        f"{duration(compute['cell_seconds'])} inside the cells, {duration(compute['job_seconds'])} of jobs "
        f"(with process start), {duration(compute['wall_seconds'])} wall clock from the first job's start "
        "to the last cell's end.", "",
    ]
    for b in names:
        lines += [f"## Benchmark `{b}`", "", setup(study, b, t["summary"]), "", *section(study, b, mt), ""]
    lines += ["## Figures", "", "Intervals of errors are clipped to [0, 1].", ""]
    lines += [f"![{Path(p).stem}]({rel(p)})" for p in written] + [""]
    with store.atomic_write(page) as tmp:
        Path(tmp).write_text("\n".join(lines))
    return [page, *written]
