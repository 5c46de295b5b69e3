"""The verdict rules on constructed tables whose answers are known.

Three benchmarks built from formulas, so that every claim's outcome is known in advance:
`agrees` does what the paper says, `opposes` the opposite, and `unclear` scatters around
no effect from seed to seed. The per-seed jitter of `agrees` and `opposes` is far below
their effects, so their intervals exclude 0; `unclear`'s seeds disagree in sign, so its
intervals contain it. The tables are derived from the constructed summary with the same
functions `prunegen merge` uses.
"""

import dataclasses
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

# benchmark -> (sign of pruning's effects, sign of the downscaled arms' effects)
SIGN = {"agrees": (+1, +1), "opposes": (-1, -1), "unclear": (0, 0), "small_opposes": (+1, -1),
        "small_unclear": (+1, 0)}
SEEDS = (0, 1, 2)
NOISES = (0.0, 0.1, 0.3)
LEVELS = 4
FRACTION = 0.2
CLAIM_KEYS = ("1", "2a", "2b", "3a", "3b", "4a", "4b", "5")


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
    """A summary table from formulas whose every verdict is known: with sign +1, pruning does
    what the paper says (claims 1, 2a, 2b, 3a, 3b and 5), with -1 the opposite, with 0 its
    seeds disagree; the second sign does the same for the downscaled arms (claims 4a, 4b)."""
    rows = []
    arms = ("imp", "extended", "downscaled", "downscaled_extended", "random")
    for b, sign in signs.items():
        s, ds = sign if isinstance(sign, tuple) else (sign, sign)
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
                    j = lambda size, sg=s: _jitter(sg, seed, size)  # noqa: E731
                    imp_te = te0 - s * 0.01 + j(0.01)
                    values = {
                        # 1, 2a: below dense; 3a, 3b: below extended at the same level
                        "imp": dict(test_error=imp_te, val_error=val0 - 0.001 - 0.001 * (level == c),
                                    train_loss=loss0 * (1 - s * 0.2) + j(0.2),
                                    memorization=mem0 - s * 0.3 + j(0.05)),
                        # 2b: trains a little better than imp (agrees); 3b: at dense's test error
                        "extended": dict(test_error=te0, val_error=val0, train_loss=loss0 * (1 - s * 0.25) - j(0.2),
                                         memorization=mem0),
                        # 4a: above imp (ds +1); 4b: downscaled_extended leaves a quarter of that gap
                        "downscaled": dict(test_error=imp_te + ds * 0.02 + _jitter(ds, seed, 0.02), val_error=val0,
                                           train_loss=loss0, memorization=mem0),
                        "downscaled_extended": dict(test_error=imp_te + (0.005 if ds else _jitter(0, seed, 0.03)),
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


def judged(summary: pd.DataFrame) -> pd.DataFrame:
    return rules.judge(derived(summary), LEVELS, {b: FRACTION for b in summary["benchmark"].unique()})


@pytest.fixture(scope="module")
def verdicts():
    return judged(synthetic_summary())


def _verdicts(records, benchmark, claim):
    return set(records.loc[(records["benchmark"] == benchmark) & (records["claim"] == claim), "verdict"])


@pytest.mark.parametrize("claim", ["1", "2a", "2b", "3a", "3b", "5"])
def test_each_claim_holds_fails_and_is_inconclusive_where_the_data_say(verdicts, claim):
    assert _verdicts(verdicts, "agrees", claim) == {HELD}
    assert _verdicts(verdicts, "opposes", claim) == {NOT_HELD}
    assert _verdicts(verdicts, "unclear", claim) == {INCONCLUSIVE}


@pytest.mark.parametrize("claim", ["4a", "4b"])
def test_claim_4_is_judged_only_where_pruning_beats_dense(verdicts, claim):
    """Where imp is worse than dense (opposes), or not better (unclear), there is no gain for a
    smaller dense model to explain: claim 4 is not judged there, whatever the downscaled arms do."""
    assert _verdicts(verdicts, "agrees", claim) == {HELD}
    assert _verdicts(verdicts, "small_opposes", claim) == {NOT_HELD}
    assert _verdicts(verdicts, "small_unclear", claim) == {INCONCLUSIVE}
    assert _verdicts(verdicts, "opposes", claim) == set() and _verdicts(verdicts, "unclear", claim) == set()
    got = rules.summarize(verdicts, sorted(SIGN)).set_index(["benchmark", "claim"])["verdict"]
    assert got["opposes", claim] == got["unclear", claim] == stats.NOT_JUDGED


def test_claim_4_follows_claim_1_noise_level_by_noise_level():
    s = synthetic_summary({"b": (+1, +1)})
    worse = (s["arm"] == "imp") & (s["noise"] == 0.3)
    s.loc[worse, "test_error"] += 0.03  # at 30% noise imp is worse than dense: nothing to explain there
    r = judged(s)
    one = r[r["claim"] == "1"].set_index("noise")["verdict"]
    assert one.to_dict() == {0.0: HELD, 0.1: HELD, 0.3: NOT_HELD}
    for claim in ("4a", "4b"):
        assert sorted(r.loc[r["claim"] == claim, "noise"]) == [0.0, 0.1]
    a = r[r["claim"] == "4a"].set_index("noise")
    # at the median of the seeds' validation-chosen levels (1 at noise 0, 2 at 0.1)
    assert a["level"].to_dict() == {0.0: 1.0, 0.1: 2.0}


def test_each_benchmark_gets_one_verdict_per_claim_in_the_summary(verdicts):
    table = rules.summarize(verdicts, sorted(SIGN))
    assert len(table) == len(SIGN) * len(CLAIM_KEYS) == len(table.drop_duplicates(["benchmark", "claim"]))
    got = table.set_index(["benchmark", "claim"])["verdict"]
    for claim in ("1", "2a", "2b", "3a", "3b", "5"):
        assert (got["agrees", claim], got["opposes", claim], got["unclear", claim]) == (HELD, NOT_HELD, INCONCLUSIVE)
    assert table.set_index(["benchmark", "claim"]).loc[("agrees", "1"), "places"] == "held at 3 of 3"


def test_records_say_where_each_claim_was_judged(verdicts):
    a = verdicts[verdicts["benchmark"] == "agrees"]
    per_claim = a.groupby("claim").size().to_dict()
    low, high = rules.low_levels(FRACTION, LEVELS), rules.high_levels(LEVELS)
    assert low == [1, 2, 3] and high == [3, 4]  # 20%, 36%, 48.8% are <= 50%; the upper half of 4 levels
    assert per_claim == {"1": 3, "2a": 3, "2b": 3, "3a": 2, "3b": 2, "4a": 3, "4b": 3, "5": 1}
    assert set(a.loc[a["claim"] == "3a", "noise"]) == {0.1, 0.3}  # memorization needs noisy labels
    assert (a["n_seeds"] == len(SEEDS)).all() and (a.groupby("claim")["places"].first() == pd.Series(per_claim)).all()


def test_claim_2_averages_each_seeds_relative_change_over_the_low_levels():
    s = synthetic_summary({"b": (+1, +1)})
    high = s["arm"].isin(["imp", "extended"]) & (s["level"] == 4)
    s.loc[high, "train_loss"] *= 3 + s.loc[high, "arm"].eq("imp")  # a level above 50% sparsity: not counted
    r = judged(s).set_index(["claim", "noise"])
    cell = s.set_index(["arm", "noise", "seed", "level"])
    for noise in NOISES:
        dense = np.array([cell.loc[("dense", noise, sd, 0), "train_loss"] for sd in SEEDS])
        gain = [np.mean([(cell.loc[("imp", noise, sd, k), "train_loss"] - dense[i]) / dense[i] for k in (1, 2, 3)])
                for i, sd in enumerate(SEEDS)]
        against = [np.mean([(cell.loc[("imp", noise, sd, k), "train_loss"]
                             - cell.loc[("extended", noise, sd, k), "train_loss"]) / dense[i] for k in (1, 2, 3)])
                   for i, sd in enumerate(SEEDS)]
        assert r.loc[("2a", noise), "mean"] == pytest.approx(np.mean(gain), abs=1e-12)
        assert r.loc[("2b", noise), "mean"] == pytest.approx(np.mean(against), abs=1e-12)


def test_claim_3b_is_imp_against_extended_at_the_same_level_in_test_error():
    """The equal-training-time comparison: extended trained as long but generalizing better
    is the paper's regularization claim not holding."""
    s = synthetic_summary({"b": (+1, +1)})
    ext = (s["arm"] == "extended") & (s["level"] >= 3)
    s.loc[ext, "test_error"] -= 0.05 + 0.0002 * s.loc[ext, "seed"]  # extended now 4 points below imp
    r = judged(s)
    b3 = r[r["claim"] == "3b"]
    assert set(b3["verdict"]) == {NOT_HELD} and list(b3["mean"]) == pytest.approx([0.04, 0.04], abs=1e-3)
    assert set(r.loc[r["claim"] == "3a", "verdict"]) == {HELD}  # memorization is a separate claim


def test_claim_4b_reports_the_gap_left_and_judges_half_of_downscaleds_gap():
    s = synthetic_summary({"b": (+1, +1)})
    r = judged(s)
    b4 = r[r["claim"] == "4b"].iloc[0]
    assert b4["gap_mean"] == pytest.approx(0.005, abs=1e-9)  # downscaled_extended - imp
    assert b4["mean"] == pytest.approx(0.005 - 0.5 * 0.02, abs=1e-3) and b4["verdict"] == HELD
    dse = s["arm"] == "downscaled_extended"
    s.loc[dse, "test_error"] += 0.008 + 0.0001 * s.loc[dse, "seed"]  # 13 of downscaled's 20 points left: > half
    b4 = judged(s).query("claim == '4b'").iloc[0]
    assert b4["gap_mean"] > 0.01 and b4["verdict"] == NOT_HELD


def test_claim_1_pairs_the_validation_chosen_level_with_dense_per_seed(verdicts):
    """Validation picks a level whose test error is worse than another's: the verdict uses
    the validation choice, never the best test error."""
    s = synthetic_summary({"b": (+1, +1)})
    # Make imp's test error at the validation-chosen level worse than dense for every seed,
    # and another level far better: a best-by-test choice would say "held".
    opt = analysis_tables.optimal(s, LEVELS)
    chosen = opt[opt["arm"] == "imp"].set_index(["noise", "seed"])["level"]
    imp = s["arm"] == "imp"
    is_chosen = [chosen.get((n, sd)) == lv for n, sd, lv in zip(s["noise"], s["seed"], s["level"])]
    s.loc[imp & np.array(is_chosen), "test_error"] += 0.05
    s.loc[imp & ~np.array(is_chosen), "test_error"] -= 0.05
    one = judged(s).query("claim == '1'")
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
    """Every seed's chosen sparsity falls with noise: that is the opposite of the project's reading."""
    r = judged(synthetic_summary({"falls": (-1, -1)}))
    five = r[r["claim"] == "5"].iloc[0]
    assert five["mean"] < 0 and five["verdict"] == NOT_HELD


def test_one_seed_or_one_noise_level_is_inconclusive_not_an_error():
    r = judged(synthetic_summary({"b": (+1, +1)}, seeds=(0,)))
    assert set(r["verdict"]) == {INCONCLUSIVE} and (r["n_seeds"] == 1).all()
    r = judged(synthetic_summary({"b": (+1, +1)}, noises=(0.0,)))
    five = r[r["claim"] == "5"].iloc[0]
    assert five["verdict"] == INCONCLUSIVE and "two noise levels" in five["reason"]


def test_holm_corrects_across_the_places_of_a_claim():
    rejected, adjusted, levels = stats.holm([0.01, 0.04, 0.03])
    assert rejected == [True, False, False]  # 0.01 <= 0.05/3; then 0.03 > 0.05/2: stop
    assert adjusted == pytest.approx([0.03, 0.06, 0.06]) and levels == pytest.approx([0.05 / 3, 0.05, 0.05 / 2])
    assert stats.holm([0.01, 0.02])[0] == [True, True]  # 0.01 <= 0.025, 0.02 <= 0.05
    assert stats.holm([float("nan"), 0.001])[0] == [False, True]  # no test counts among the places


def test_places_significant_alone_are_inconclusive_after_holm():
    """Three noise levels, each 95% interval excluding 0 (p about 0.03), but not Holm's:
    the claim is inconclusive, where per-place 95% intervals would say held three times."""
    s = synthetic_summary({"b": (+1, +1)})
    dense = s["arm"] == "dense"
    # imp - dense per seed: -1, -2 and -1.5 points at every noise level: t = 5.2 on 2 degrees of freedom,
    # p = 0.035 at each place, below 0.05 but above Holm's first step (0.05 / 3)
    bump = {0: -1e-4, 1: 0.01, 2: 0.0051}
    s.loc[dense, "test_error"] += s.loc[dense, "seed"].map(bump)
    one = judged(s).query("claim == '1'")
    assert (one["ci_high"] < 0).all()  # uncorrected: every place excludes 0
    assert ((one["p_value"] > 0.05 / 3) & (one["p_value"] < 0.05)).all()
    assert set(one["verdict"]) == {INCONCLUSIVE}
    first = one.loc[one["p_value"].idxmin()]  # Holm's first step tests it at 1 - 0.05 / 3: contains 0, Holm stops
    assert first["holm_level"] == pytest.approx(1 - 0.05 / 3) and first["holm_high"] > 0


def test_outcomes_read_holms_decision_and_the_sign():
    iv = stats.Interval.of
    assert stats.outcome(iv([-0.21, -0.2, -0.19]), -1, True)[0] == HELD
    assert stats.outcome(iv([0.21, 0.2, 0.19]), -1, True)[0] == NOT_HELD
    assert stats.outcome(iv([0.21, 0.2, 0.19]), +1, True)[0] == HELD
    assert stats.outcome(iv([-0.21, -0.2, -0.19]), -1, False)[0] == INCONCLUSIVE
    assert stats.outcome(iv([-0.3]), -1, False)[0] == INCONCLUSIVE  # no test from one seed
    assert stats.outcome(iv([0.0, 0.0]), +1, False) == (INCONCLUSIVE, "every seed gives 0")
    assert stats.primary([HELD, INCONCLUSIVE]) == HELD and stats.primary([HELD, NOT_HELD]) == stats.MIXED
    assert stats.primary([NOT_HELD, INCONCLUSIVE]) == NOT_HELD and stats.primary([]) == stats.NOT_JUDGED
    assert stats.primary([INCONCLUSIVE, INCONCLUSIVE]) == INCONCLUSIVE


def test_seeds_needed_reach_80_percent_power_and_one_fewer_does_not():
    from scipy import stats as sps

    two = stats.Interval.of([-0.10, -0.01])
    n = int(stats.seeds_needed(two, 0.05))

    def power(k):  # a two-sided t-test at 0.05 of an effect of this mean and spread, from the noncentral t
        crit, shift = sps.t.ppf(0.975, k - 1), abs(two.mean) / two.std * np.sqrt(k)
        return sps.nct.sf(crit, k - 1, shift) + sps.nct.cdf(-crit, k - 1, shift)

    assert power(n) >= 0.8 > power(n - 1)
    assert stats.seeds_needed(two, 0.05 / 3) > n  # a stricter Holm step needs more seeds
    assert np.isnan(stats.seeds_needed(stats.Interval.of([0.0, 0.0]), 0.05))


def _paper_shaped_summary(study) -> pd.DataFrame:
    """Tables shaped like paper.yaml's grid (4 benchmarks, 7 noise levels, 18 levels, 3 seeds)."""
    signs = dict(zip(study.benchmarks, (+1, -1, 0, +1)))
    return synthetic_summary(signs, seeds=tuple(study.seeds), noises=tuple(study.noise), levels=study.levels)


def test_results_page_renders_on_tables_shaped_like_the_paper_grid(tmp_path):
    study = load_study(REPO / "workflow" / "studies" / "paper.yaml", {"results_root": str(tmp_path / "none")})
    # its four benchmarks of the full grid (imagenet-resnet50 runs a part of it: its grid: block)
    study = dataclasses.replace(study, benchmarks={b: bm for b, bm in study.benchmarks.items() if bm.grid is None})
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
    """Five benchmarks on one page: every number of a section is in that benchmark's rows."""
    from tests.helpers import page_numbers_in_tables

    study, tables_dir = _three_benchmark_study(tmp_path)
    text = build.build(study, tmp_path / "results.md", "study.yaml", refresh=False)[0].read_text()
    for b in SIGN:
        assert page_numbers_in_tables(text, tables_dir, b) == []
    assert "What changed" not in text  # no earlier verdicts given
    # `unclear` is inconclusive everywhere: for each claim the page says what could decide it, with a number
    deciding = text.split("## Benchmark `unclear`")[1].split("### What would decide it")[1].split("\n## ")[0]
    for claim in ("1", "2a", "2b", "3a", "3b", "5"):
        line = next(ln for ln in deciding.splitlines() if ln.startswith(f"- claim {claim}: "))
        assert re.search(r"\d+ seeds would decide|more than \d+ seeds|no spread", line), line
    assert "- claim 4a" not in deciding  # not judged there: nothing to decide
    section = text.split("## Benchmark `unclear`")[1].split("\n## ")[0]
    assert section.count("Not judged: the claim applies at no noise level") == 2


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
    for claim in ("2a", "2b", "3a", "3b", "4a", "4b", "5"):  # inconclusive on 2 seeds, held on 3: narrower intervals
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
    for claim in CLAIM_KEYS:
        r = c.loc["opposes", claim]
        assert not r.moved and r.places_moved == 0
        assert r.why == ("unchanged at every place judged" if claim not in ("4a", "4b") else "not judged either time")
    for claim in ("1", "2a", "2b", "3a", "3b", "5"):
        r = c.loc["unclear", claim]  # new: set beside how `agrees` and `opposes` are judged now
        assert pd.isna(r.before) and not r.moved
        assert r.why == "new benchmark; differs from `agrees`: held there; differs from `opposes`: did not hold there"
    same = changes.compare(_earlier(verdicts), verdicts[verdicts["benchmark"] != "opposes"])
    assert same.set_index(["benchmark", "claim"]).loc[("unclear", "5"), "why"] == "new benchmark; differs from `agrees`: held there"
    twin = verdicts[verdicts["benchmark"] == "agrees"].assign(benchmark="twin")
    c = changes.compare(_earlier(verdicts), pd.concat([verdicts, twin])).set_index(["benchmark", "claim"])
    assert c.loc[("twin", "3a"), "why"] == "new benchmark; agrees with `agrees`; differs from `opposes`: did not hold there"


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
    # agrees: all 8 claims moved (7 inconclusive -> held, 1 did not hold -> held); opposes: none
    assert "8 of 16 verdicts judged both times moved; `small_opposes`, `small_unclear`, `unclear` are new." in section
    assert "| `agrees` | 1. Pruning reaches a lower test error than dense | did not hold | held | 3 of 3 places moved" in section
    assert "| `unclear` | 5. The best sparsity rises with label noise | - | inconclusive | new benchmark" in section
    again = build.build(study, tmp_path / "results.md", "study.yaml", refresh=False)[0].read_text()
    assert again == text  # the earlier records stay beside the page
    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"claim": ["1"]}).to_parquet(bad)
    with pytest.raises(page_tables.TablesError, match=f"{bad}: not verdict records"):
        page_tables.collect(study, tables_dir, tables_dir, since=bad)
