"""The verdict rules on constructed tables whose answers are known.

Three benchmarks built from formulas, so that every claim's outcome is known in advance:
`agrees` does what the paper says, `opposes` the opposite, and `unclear` scatters around
no effect from seed to seed. The per-seed jitter of `agrees` and `opposes` is far below
their effects, so their intervals exclude 0; `unclear`'s seeds disagree in sign, so its
intervals contain it. The tables are derived from the constructed summary with the same
functions `prunegen merge` uses.
"""

import math
import re

import numpy as np
import pandas as pd
import pytest

from prunegen.analysis import compute
from prunegen.analysis import tables as analysis_tables
from prunegen.analysis.figures import style
from prunegen.analysis.report import build, claims_page
from prunegen.analysis.report import tables as page_tables
from prunegen.analysis.verdicts import changes, rules, stats
from prunegen.analysis.verdicts.stats import HELD, INCONCLUSIVE, NOT_HELD
from prunegen.records import schemas
from prunegen.study.load import load_study
from tests.helpers import REPO

SIGN = {"agrees": +1, "opposes": -1, "unclear": 0}
SEEDS = (0, 1, 2)
NOISES = (0.0, 0.1, 0.3)
LEVELS = 4
FRACTION = 0.2


def _jitter(sign: int, seed: int, size: float) -> float:
    """Seed-to-seed noise: tiny where the effect is real, sign-flipping where there is none."""
    return (seed - 1) * (1e-4 if sign else size)


def _chosen(sign: int, noise_rank: int, seed: int) -> int:
    """The imp level validation should choose: rising with noise (agrees), falling
    (opposes), rising for one seed, falling for another, flat for the third (unclear)."""
    rising, falling = 1 + noise_rank, LEVELS - noise_rank
    if sign > 0:
        return rising
    if sign < 0:
        return falling
    return (rising, falling, 2)[seed]


def synthetic_summary(signs=SIGN, seeds=SEEDS, noises=NOISES, levels=LEVELS, fraction=FRACTION) -> pd.DataFrame:
    rows = []
    arms = ("imp", "extended", "downscaled", "downscaled_extended", "random")
    for b, s in signs.items():
        for rank, noise in enumerate(noises):
            for seed in seeds:
                te0, val0, loss0 = 0.10 + 0.05 * noise, 0.11 + 0.05 * noise, 0.5 + noise
                mem0 = 0.6 if noise > 0 else math.nan
                base = dict(benchmark=b, noise=noise, seed=seed, noise_effective=0.9 * noise, cycles=1,
                            wall_seconds=1.0, train_loss_clean=loss0, train_loss_noisy=loss0)
                rows.append({**base, "arm": "dense", "level": 0, "test_error": te0, "val_error": val0,
                             "train_loss": loss0, "memorization": mem0})
                c = _chosen(s, rank, seed)
                for level in range(1, levels + 1):
                    j = lambda size: _jitter(s, seed, size)  # noqa: E731
                    imp_te = te0 - s * 0.01 + j(0.01)
                    values = {
                        "imp": dict(test_error=imp_te, val_error=val0 - 0.001 - 0.001 * (level == c),
                                    train_loss=loss0 * (1 - s * 0.2) + j(0.2),
                                    memorization=mem0 - s * 0.3 + j(0.05)),
                        "extended": dict(test_error=te0, val_error=val0, train_loss=loss0 * (1 - s * 0.2) + j(0.2),
                                         memorization=mem0),
                        # 4a: downscaled above imp; 4b: downscaled_extended closer to imp
                        "downscaled": dict(test_error=imp_te + s * 0.02 + j(0.02), val_error=val0,
                                           train_loss=loss0, memorization=mem0),
                        "downscaled_extended": dict(test_error=imp_te + (0.005 if s > 0 else -0.04 if s < 0
                                                                         else j(0.01)),
                                                    val_error=val0, train_loss=loss0, memorization=mem0),
                        # valid values whose 3-seed t-interval overshoots [0, 1] at both ends
                        "random": dict(test_error=(0.0, 0.01, 0.99)[seed], val_error=val0, train_loss=loss0,
                                       memorization=(0.0, 0.02, 0.98)[seed] if noise > 0 else math.nan),
                    }
                    for arm in arms:
                        rows.append({**base, "arm": arm, "level": level, "cycles": level + 1, **values[arm]})
    df = pd.DataFrame(rows)
    df["nominal_sparsity"] = analysis_tables.nominal_sparsity(fraction, df["level"])
    return df.sort_values(schemas.KEY_COLUMNS, ignore_index=True)


def derived(summary: pd.DataFrame, levels: int = LEVELS) -> dict[str, pd.DataFrame]:
    return {"summary": summary, "headline": analysis_tables.headline(summary),
            "memorization": analysis_tables.memorization(summary), "optimal": analysis_tables.optimal(summary, levels)}


@pytest.fixture(scope="module")
def verdicts():
    t = derived(synthetic_summary())
    return rules.judge(t, LEVELS, {b: FRACTION for b in SIGN})


def _verdicts(records, benchmark, claim):
    return set(records.loc[(records["benchmark"] == benchmark) & (records["claim"] == claim), "verdict"])


@pytest.mark.parametrize("claim", ["1", "2", "3", "4a", "4b", "5"])
def test_each_claim_holds_fails_and_is_inconclusive_where_the_data_say(verdicts, claim):
    assert _verdicts(verdicts, "agrees", claim) == {HELD}
    assert _verdicts(verdicts, "opposes", claim) == {NOT_HELD}
    assert _verdicts(verdicts, "unclear", claim) == {INCONCLUSIVE}


def test_each_benchmark_gets_its_own_verdict_in_the_summary(verdicts):
    table = rules.summarize(verdicts, sorted(SIGN))
    assert len(table) == 3 * 6
    got = table.set_index(["benchmark", "claim"])["verdict"]
    for claim in ("1", "2", "3", "4a", "4b", "5"):
        assert (got["agrees", claim], got["opposes", claim], got["unclear", claim]) == (HELD, NOT_HELD, INCONCLUSIVE)


def test_records_say_where_each_claim_was_judged(verdicts):
    a = verdicts[verdicts["benchmark"] == "agrees"]
    per_claim = a.groupby("claim").size().to_dict()
    low, high = rules.low_levels(FRACTION, LEVELS), rules.high_levels(LEVELS)
    assert low == [1, 2, 3] and high == [3, 4]  # 20%, 36%, 48.8% are <= 50%; the upper half of 4 levels
    assert per_claim == {"1": len(NOISES), "2": 2 * len(low) * len(NOISES), "3": len(high) * 2,
                         "4a": LEVELS * len(NOISES), "4b": LEVELS * len(NOISES), "5": 1}
    assert set(a.loc[a["claim"] == "3", "noise"]) == {0.1, 0.3}  # memorization needs noisy labels
    assert (a["n_seeds"] == len(SEEDS)).all()


def test_claim_1_pairs_the_validation_chosen_level_with_dense_per_seed(verdicts):
    """Validation picks a level whose test error is worse than another's: the verdict uses
    the validation choice, never the best test error."""
    s = synthetic_summary({"b": +1})
    # Make imp's test error at the validation-chosen level worse than dense for every seed,
    # and another level far better: a best-by-test choice would say "held".
    opt = analysis_tables.optimal(s, LEVELS)
    chosen = opt[opt["arm"] == "imp"].set_index(["noise", "seed"])["level"]
    imp = s["arm"] == "imp"
    is_chosen = [chosen.get((n, sd)) == lv for n, sd, lv in zip(s["noise"], s["seed"], s["level"])]
    s.loc[imp & np.array(is_chosen), "test_error"] += 0.05
    s.loc[imp & ~np.array(is_chosen), "test_error"] -= 0.05
    r = rules.judge(derived(s), LEVELS, {"b": FRACTION})
    one = r[r["claim"] == "1"]
    assert set(one["verdict"]) == {NOT_HELD}
    dense = s[s["arm"] == "dense"].set_index(["noise", "seed"])["test_error"]
    te = s.set_index(["arm", "noise", "seed", "level"])["test_error"]
    for noise in NOISES:
        diffs = [te["imp", noise, sd, chosen[noise, sd]] - dense[noise, sd] for sd in SEEDS]
        row = one[one["noise"] == noise].iloc[0]
        assert row["mean"] == pytest.approx(np.mean(diffs), abs=1e-12)
        half = stats.t_quantile(3) * np.std(diffs, ddof=1) / np.sqrt(3)
        assert row["ci_high"] - row["mean"] == pytest.approx(half, rel=1e-9)


def test_claim_5_expects_the_chosen_sparsity_to_rise_with_noise():
    """Every seed's chosen sparsity falls with noise: that is the opposite of the paper."""
    r = rules.judge(derived(synthetic_summary({"falls": -1})), LEVELS, {"falls": FRACTION})
    five = r[r["claim"] == "5"].iloc[0]
    assert five["mean"] < 0 and five["verdict"] == NOT_HELD


def test_one_seed_or_one_noise_level_is_inconclusive_not_an_error():
    r = rules.judge(derived(synthetic_summary({"b": +1}, seeds=(0,))), LEVELS, {"b": FRACTION})
    assert set(r["verdict"]) == {INCONCLUSIVE} and (r["n_seeds"] == 1).all()
    r = rules.judge(derived(synthetic_summary({"b": +1}, noises=(0.0,))), LEVELS, {"b": FRACTION})
    five = r[r["claim"] == "5"].iloc[0]
    assert five["verdict"] == INCONCLUSIVE and "two noise levels" in five["reason"]


def test_the_three_outcomes_read_the_interval():
    iv = stats.Interval.of
    assert stats.outcome(iv([-0.21, -0.2, -0.19]), -1)[0] == HELD
    assert stats.outcome(iv([0.21, 0.2, 0.19]), -1)[0] == NOT_HELD
    assert stats.outcome(iv([0.21, 0.2, 0.19]), +1)[0] == HELD
    assert stats.outcome(iv([-0.3, -0.2, -0.1]), -1)[0] == INCONCLUSIVE  # mean -0.2, but 4.3 standard errors
    assert stats.outcome(iv([-0.3]), -1)[0] == INCONCLUSIVE  # no interval from one seed
    assert stats.outcome(iv([0.0, 0.0]), +1) == (INCONCLUSIVE, "every seed gives 0")
    two = iv([-0.10, -0.01])  # with two seeds the interval is the mean +- 12.7 standard errors
    assert two.high - two.mean == pytest.approx(12.706 * np.std([-0.10, -0.01], ddof=1) / np.sqrt(2), rel=1e-4)
    assert stats.outcome(two, -1)[0] == INCONCLUSIVE
    n = stats.seeds_needed(two)
    assert n > 2
    # At that many seeds, with the same mean and spread, the interval excludes 0; one fewer, it does not.
    for k, expected in ((int(n), True), (int(n) - 1, False)):
        half = stats.t_quantile(k) * two.std / np.sqrt(k)
        assert (half < abs(two.mean)) == expected
    assert stats.overall([HELD, NOT_HELD]) == "mixed (held in 1 of 2, did not hold in 1 of 2)"


def _paper_shaped_summary(study) -> pd.DataFrame:
    """Tables shaped like paper.yaml's grid (4 benchmarks, 7 noise levels, 18 levels, 3 seeds)."""
    signs = dict(zip(study.benchmarks, (+1, -1, 0, +1)))
    return synthetic_summary(signs, seeds=tuple(study.seeds), noises=tuple(study.noise), levels=study.levels)


def test_results_page_renders_on_tables_shaped_like_the_paper_grid(tmp_path):
    study = load_study(REPO / "workflow" / "studies" / "paper.yaml", {"results_root": str(tmp_path / "none")})
    s = _paper_shaped_summary(study)
    assert len(s) == 7644 == len(study.cells())
    tables = derived(s, study.levels)
    tables_dir = tmp_path / "results" / "paper" / "tables"
    tables_dir.mkdir(parents=True)
    for name, df in tables.items():
        df.to_parquet(tables_dir / f"{name}.parquet")
    compute.page_row(study, s.assign(wall_seconds=1.0)).to_parquet(tables_dir / "compute.parquet")
    with style.recording() as drawn:
        paths = build.build(study, tmp_path / "results.md", "workflow/studies/paper.yaml", refresh=False)
    text = paths[0].read_text()
    for b in study.benchmarks:
        assert text.count(f"## Benchmark `{b}`") == 1
    assert "7644 cells" in text
    verdicts = pd.read_parquet(tables_dir / "verdicts.parquet")
    assert set(verdicts["benchmark"]) == set(study.benchmarks)
    _assert_bounded(drawn)


def _assert_bounded(drawn) -> None:
    intervals = [r for r in drawn if r["kind"] == "interval"]
    assert {r["metric"] for r in intervals} >= {"test_error", "memorization", "train_loss", "nominal_sparsity"}
    assert sum(len(r["values"]) for r in drawn if r["kind"] == "seeds") > 0  # each seed drawn too
    for r in intervals:
        low_bound, high_bound = style.BOUNDS[r["metric"]]
        low, high = r["low"][np.isfinite(r["low"])], r["high"][np.isfinite(r["high"])]
        assert (low >= low_bound).all() and (high <= high_bound).all(), r["metric"]


def _three_benchmark_study(tmp_path):
    """A study file naming the constructed benchmarks, and their tables where `results` reads them."""
    raw = __import__("yaml").safe_load((REPO / "workflow" / "studies" / "smoke.yaml").read_text())
    first = raw["benchmarks"].pop("digits-mlp")
    raw["benchmarks"] = {b: first for b in SIGN}
    raw.update(levels=LEVELS, noise=list(NOISES), seeds=list(SEEDS))
    (tmp_path / "study.yaml").write_text(__import__("yaml").safe_dump(raw))
    study = load_study(tmp_path / "study.yaml", {"results_root": str(tmp_path / "none")})
    s = synthetic_summary()
    tables_dir = tmp_path / "results" / "smoke" / "tables"
    tables_dir.mkdir(parents=True)
    for name, df in derived(s).items():
        df.to_parquet(tables_dir / f"{name}.parquet")
    compute.page_row(study, s).to_parquet(tables_dir / "compute.parquet")
    return study, tables_dir


def test_each_benchmark_section_prints_only_its_own_rows(tmp_path):
    """Three benchmarks on one page: every number of a section is in that benchmark's rows."""
    from tests.helpers import page_numbers_in_tables

    study, tables_dir = _three_benchmark_study(tmp_path)
    text = build.build(study, tmp_path / "results.md", "study.yaml", refresh=False)[0].read_text()
    for b in SIGN:
        assert page_numbers_in_tables(text, tables_dir, b) == []
    assert "What changed" not in text  # no earlier verdicts given
    # `unclear` is inconclusive everywhere: for each claim the page says what could decide it, with a number
    deciding = text.split("## Benchmark `unclear`")[1].split("### What would decide it")[1].split("\n## ")[0]
    for claim in ("1", "2", "3", "4a", "4b", "5"):
        line = next(ln for ln in deciding.splitlines() if ln.startswith(f"- claim {claim}: "))
        assert re.search(r"\d+ seeds would decide|more than \d+ seeds|steps of \d+%|cycles of \d+ epochs", line), line


def _earlier(now: pd.DataFrame) -> pd.DataFrame:
    """Earlier verdicts with known differences: `agrees` judged on 2 seeds with intervals 10
    times wider (every place inconclusive) except claim 1, whose means had the other sign
    (did not hold); `opposes` judged exactly as now; `unclear` not judged at all."""
    agrees = now[now["benchmark"] == "agrees"].copy()
    half = (agrees["ci_high"] - agrees["ci_low"]) / 2
    wide = np.where(half > 0, 10 * half, 2 * agrees["mean"].abs())  # claim 5's seeds agree exactly: no spread
    agrees = agrees.assign(n_seeds=2, ci_low=agrees["mean"] - wide, ci_high=agrees["mean"] + wide,
                           verdict=INCONCLUSIVE)
    one = agrees["claim"] == "1"
    agrees.loc[one, ["mean", "ci_low", "ci_high"]] = -agrees.loc[one, ["mean", "ci_high", "ci_low"]].to_numpy()
    agrees.loc[one, "ci_low"] = agrees.loc[one, "mean"] - half[one]  # a tight interval on the other side
    agrees.loc[one, "ci_high"] = agrees.loc[one, "mean"] + half[one]
    agrees.loc[one, "verdict"] = NOT_HELD
    return pd.concat([agrees, now[now["benchmark"] == "opposes"]], ignore_index=True)


def test_what_changed_says_which_verdicts_moved_and_why(verdicts):

    c = changes.compare(_earlier(verdicts), verdicts).set_index(["benchmark", "claim"])
    places = verdicts.groupby(["benchmark", "claim"]).size()
    for claim in ("2", "3", "4a", "4b", "5"):  # inconclusive on 2 seeds, held on 3: narrower intervals
        r = c.loc["agrees", claim]
        assert (r.before, r.now, r.moved) == (INCONCLUSIVE, HELD, True)
        assert (r.places_moved, r.narrower, r.sign_changed, r.wider) == (places["agrees", claim], places["agrees", claim], 0, 0)
        assert r.seeds_before == 2 and r.seeds_now == 3
        assert f"inconclusive -> held at {int(r.places_moved)}" in r.why
        if claim != "5":  # claim 5's interval now has no width: no ratio to give
            assert r.width_ratio == pytest.approx(10) and "10.0 times narrower" in r.why
        else:
            assert np.isnan(r.width_ratio) and "times narrower" not in r.why
    r = c.loc["agrees", "1"]  # did not hold before, held now: the means changed sign
    assert (r.before, r.now, r.places_moved, r.sign_changed, r.narrower) == (NOT_HELD, HELD, 3, 3, 0)
    assert "did not hold -> held at 3" in r.why and "mean changed sign" in r.why
    for claim in ("1", "2", "3", "4a", "4b", "5"):
        r = c.loc["opposes", claim]
        assert not r.moved and r.places_moved == 0 and r.why == "unchanged at every place judged"
        r = c.loc["unclear", claim]  # new: set beside how `agrees` and `opposes` are judged now
        assert pd.isna(r.before) and not r.moved
        assert r.why == "new benchmark; differs from `agrees`: held there; differs from `opposes`: did not hold there"
    same = changes.compare(_earlier(verdicts), verdicts[verdicts["benchmark"] != "opposes"])
    assert same.set_index(["benchmark", "claim"]).loc[("unclear", "5"), "why"] == "new benchmark; differs from `agrees`: held there"
    twin = verdicts[verdicts["benchmark"] == "agrees"].assign(benchmark="twin")
    c = changes.compare(_earlier(verdicts), pd.concat([verdicts, twin])).set_index(["benchmark", "claim"])
    assert c.loc[("twin", "3"), "why"] == "new benchmark; agrees with `agrees`; differs from `opposes`: did not hold there"


def test_the_page_shows_what_changed_and_regenerates_from_the_records_kept_beside_it(tmp_path, verdicts):
    study, tables_dir = _three_benchmark_study(tmp_path)
    old = tmp_path / "old_verdicts.parquet"
    _earlier(verdicts).to_parquet(old)
    built = build.build(study, tmp_path / "results.md", "study.yaml", refresh=False)
    text = built[0].read_text()
    assert "What changed" not in text
    page_tables.collect(study, tables_dir, tmp_path / "results" / "smoke" / "tables", since=old, since_label="the 2-seed page")
    text = claims_page.render(study, tmp_path / "results.md", tables_dir, tables_dir.parent / "figures", "study.yaml")[0].read_text()
    section = text.split("## What changed since the 2-seed page")[1].split("\n## ")[0]
    assert "6 of 12 verdicts judged both times moved; `unclear` is new." in section
    assert "| `agrees` | 1. Pruning reaches a lower test error than dense | did not hold | held | 3 of 3 places moved" in section
    assert "| `unclear` | 5. The best sparsity rises with label noise | - | inconclusive | new benchmark" in section
    again = build.build(study, tmp_path / "results.md", "study.yaml", refresh=False)[0].read_text()
    assert again == text  # the earlier records stay beside the page
    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"claim": ["1"]}).to_parquet(bad)
    with pytest.raises(page_tables.TablesError, match=f"{bad}: not verdict records"):
        page_tables.collect(study, tables_dir, tables_dir, since=bad)
