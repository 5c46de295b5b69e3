"""Analysis on a real (tiny) study: every cell of the smoke grid with two seeds, merged
into tables, checked against values recomputed by hand from the cells' own records,
then drawn; status on a damaged copy."""

import io
import json
import re
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from scipy import stats

from prunegen import cli
from prunegen.analysis import compute, merge, scan
from prunegen.analysis import tables as derived
from prunegen.analysis.figures import claims, draw, style
from prunegen.analysis.report import build, claims_page, markdown
from prunegen.analysis.verdicts import rules
from prunegen.analysis.verdicts.paper import CLAIMS
from prunegen.records import layout, provenance, schemas, store
from prunegen.study.arm_specs import CHAIN_ARMS
from prunegen.study.load import load_study
from tests.helpers import SMOKE, page_numbers_in_tables

EPOCHS = 2
TABLES = ("summary", "history", "subgroups", "headline", "memorization", "optimal")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The smoke grid (every arm, levels 0..2, noise 0 and 0.2) with seeds 0 and 1, all run."""
    import torch

    from prunegen.engine.run import run

    root = tmp_path_factory.mktemp("analysis")
    raw = yaml.safe_load(SMOKE.read_text())
    raw["seeds"] = [0, 1]
    raw["benchmarks"]["digits-mlp"]["train"]["epochs"] = EPOCHS
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    study = load_study(path, {"results_root": str(root / "results")})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only contend
    try:
        for cell in sorted(study.cells(), key=lambda c: (c.level, c.arm == "random")):  # parents first
            run(cell)
    finally:
        torch.set_num_threads(threads)
    return study


@pytest.fixture(scope="module")
def tables(study):
    paths = merge.merge(study)
    return {name: pd.read_parquet(p) for name, p in paths.items()}


def row(df, **key):
    mask = np.logical_and.reduce([df[k] == v for k, v in key.items()])
    assert mask.sum() == 1, key
    return df[mask].iloc[0]


def test_summary_has_one_row_per_grid_cell_that_agrees_with_the_study(study, tables):
    s = tables["summary"]
    cells = study.cells()
    assert len(s) == len(cells) == 44
    assert set(map(tuple, s[schemas.KEY_COLUMNS].itertuples(index=False))) == {
        (c.benchmark.name, c.arm, c.noise, c.seed, c.level) for c in cells}
    assert list(s.columns[:5]) == schemas.KEY_COLUMNS and "nominal_sparsity" in s
    assert s[schemas.KEY_COLUMNS].equals(s.sort_values(schemas.KEY_COLUMNS)[schemas.KEY_COLUMNS].reset_index(drop=True))
    for c in cells:
        r = row(s, benchmark=c.benchmark.name, arm=c.arm, noise=c.noise, seed=c.seed, level=c.level)
        assert r.cell_hash == c.hash
        assert r.nominal_sparsity == pytest.approx(1 - 0.8 ** c.level)
        trained = c.level + 1 if c.arm in (*CHAIN_ARMS, "downscaled_extended") else 1
        assert r.total_epochs == trained * EPOCHS
        if c.arm in ("imp", "random"):  # measured sparsity of pruned arms follows the nominal one
            assert r.sparsity == pytest.approx(r.nominal_sparsity, abs=0.01)


def test_history_holds_each_trained_epoch_once_and_rebuilds_every_chain(study, tables):
    h = tables["history"]
    per_cell = h.groupby(schemas.KEY_COLUMNS).size()
    for c in study.cells():
        own = (c.level + 1 if c.arm == "downscaled_extended" else 1) * EPOCHS
        assert per_cell[(c.benchmark.name, c.arm, c.noise, c.seed, c.level)] == own
    for arm in ("imp", "extended", "random", "downscaled_extended"):
        cell = study.cell("digits-mlp", arm, 2, 0.2, 1)
        curve = derived.chain_history(h, "digits-mlp", arm, 2, 0.2, 1)
        own = pq.read_table(cell.dir / "history.parquet").to_pandas()
        pd.testing.assert_frame_equal(curve[own.columns], own)


def test_headline_relative_change_is_the_mean_of_per_seed_changes(tables):
    s, head = tables["summary"], tables["headline"]
    change = []
    for seed in (0, 1):
        imp = row(s, arm="imp", level=2, noise=0.2, seed=seed)
        dense = row(s, arm="dense", level=0, noise=0.2, seed=seed)
        change.append((imp.train_loss - dense.train_loss) / dense.train_loss)
    h = row(head, arm="imp", level=2, noise=0.2)
    assert h.n_seeds == 2
    assert h.train_loss_change_mean == pytest.approx(np.mean(change), rel=1e-12)
    half = stats.t.ppf(0.975, 1) * np.std(change, ddof=1) / np.sqrt(2)
    assert h.train_loss_change_ci_high - h.train_loss_change_mean == pytest.approx(half, rel=1e-9)
    assert h.train_loss_change_mean != 0  # pruning changed something
    d = row(head, arm="dense", level=0, noise=0.2)
    assert d.test_error_change_mean == 0 and d.nominal_sparsity == 0
    assert np.isnan(row(head, arm="imp", level=1, noise=0.0).memorization_mean)  # no noisy labels


def test_subgroups_match_means_recomputed_from_examples(study, tables):
    sub = tables["subgroups"]
    cell = study.cell("digits-mlp", "imp", 1, 0.2, 1)
    ex = pq.read_table(cell.dir / "examples.parquet").to_pandas()
    train = ex[ex.split == "train"]
    key = dict(arm="imp", level=1, noise=0.2, seed=1)
    for name, part in (("all", train), ("clean", train[~train.is_noisy]), ("noisy", train[train.is_noisy])):
        r = row(sub, subgroup=name, **key)
        assert r.examples == len(part) > 0
        assert r.train_loss == pytest.approx(part.loss.astype(float).mean(), rel=1e-9)
        assert r.train_error == pytest.approx(1 - part.correct_observed.mean(), rel=1e-12)
    s = row(tables["summary"], **key)
    assert row(sub, subgroup="noisy", **key).train_loss == pytest.approx(s.train_loss_noisy, rel=1e-9)

    quantiles = sub.subgroup.str.startswith("dense_loss_q")
    bins = sub[quantiles & (sub.arm == "dense") & (sub.noise == 0.2) & (sub.seed == 1)]
    assert list(bins.subgroup) == [f"dense_loss_q{i}" for i in range(1, 6)]
    assert bins.examples.sum() == len(train) and bins.examples.max() - bins.examples.min() <= 1
    assert bins.train_loss.is_monotonic_increasing  # the dense model's own loss orders its bins
    assert bins.noisy_fraction.iloc[-1] > bins.noisy_fraction.iloc[0]  # noisy labels are the hard ones
    q = sub[quantiles & (sub.arm == "imp") & (sub.level == 1) & (sub.noise == 0.2) & (sub.seed == 1)]
    assert (q.examples * q.train_loss).sum() / q.examples.sum() == pytest.approx(s.train_loss, rel=1e-9)
    assert "noisy" not in set(sub[sub.noise == 0].subgroup)


def test_memorization_table_averages_the_summary_over_seeds(tables):
    s, mem = tables["summary"], tables["memorization"]
    assert set(mem.noise) == {0.2} and len(mem) == 11  # dense + 5 arms x 2 levels
    r = row(mem, arm="random", level=2, noise=0.2)
    values = s[(s.arm == "random") & (s.level == 2) & (s.noise == 0.2)].memorization
    assert r.memorization_mean == pytest.approx(values.mean()) and r.n_seeds == 2


def test_optimal_picks_the_level_with_the_lowest_validation_error(tables):
    s, opt = tables["summary"], tables["optimal"]
    assert len(opt) == 5 * 2 * 2  # arms x noise x seeds
    for r in opt.itertuples():
        cand = s[((s.arm == r.arm) | (s.arm == "dense")) & (s.noise == r.noise) & (s.seed == r.seed)]
        best = cand[cand.val_error == cand.val_error.min()].level.min()  # ties: fewest pruning rounds
        assert r.level == best and r.levels_found == 3 and r.complete_chain
        assert r.test_error == row(cand, level=best).test_error
        assert r.nominal_sparsity == pytest.approx(1 - 0.8 ** best)
        assert r.dense_test_error == row(cand, level=0).test_error


def test_merge_rewrites_identically_and_csv_equals_parquet(study, tables):
    out = study.root / "tables"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert {f"{t}.{e}" for t in TABLES for e in ("parquet", "csv")} <= set(before)
    assert not [n for n in before if n.startswith(".")]  # no temporary files left behind
    merge.merge(study)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    for name in TABLES:
        parquet = pd.read_parquet(out / f"{name}.parquet")
        csv = pd.read_csv(out / f"{name}.csv", dtype={"cell_hash": str})  # hex that may look numeric
        assert len(parquet) > 0 and list(csv.columns) == list(parquet.columns)
        pd.testing.assert_frame_equal(csv, parquet, check_dtype=False, rtol=1e-15, atol=0)


def test_status_counts_complete_missing_and_stale_cells(study, tmp_path, capsys):
    shutil.copytree(study.root / "cells", tmp_path / study.name / "cells")
    copy = load_study(study.path, {"results_root": str(tmp_path)})
    status = scan.status(copy)
    assert (status.complete == status.cells).all() and status.cells.sum() == 44

    shutil.rmtree(copy.cell("digits-mlp", "random", 2, 0.0, 1).dir)
    meta_path = copy.cell("digits-mlp", "extended", 1, 0.2, 0).dir / "cell.json"
    meta = json.loads(meta_path.read_text())
    meta["cell_hash"] = "0" * 16  # another configuration's cell, written as cell.py writes one
    store.write_cell_json(meta, meta_path.parent)
    stray = copy.root / "cells" / "benchmark=other-grid" / "arm=imp" / "noise=0.5" / "seed=0" / "level=1"
    shutil.copytree(copy.cell("digits-mlp", "imp", 1, 0.2, 0).dir, stray)  # not in this grid

    status = scan.status(copy).set_index("arm")
    assert status.loc["random", ["cells", "complete", "stale", "missing"]].tolist() == [8, 7, 0, 1]
    assert status.loc["extended", ["cells", "complete", "stale", "missing"]].tolist() == [8, 7, 1, 0]
    assert status.loc["imp", "complete"] == 8 and status.cells.sum() == 44
    text = scan.format_status(status.reset_index())
    assert "42 of 44 cells complete" in text and "1 stale, 1 missing" in text

    tree = lambda: {(p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*")}  # noqa: E731
    before = tree()
    assert cli.main(["status", "--study", str(copy.path), "--results-root", str(tmp_path)]) == 0
    assert "42 of 44 cells complete" in capsys.readouterr().out
    assert tree() == before  # status writes nothing

    merged = pd.read_parquet(merge.merge(copy)["summary"])  # neither stale nor stray cells
    assert len(merged) == 42 and set(merged.benchmark) == {"digits-mlp"}
    assert style.save(claims.plot_completeness(copy), tmp_path, "completeness")[0].stat().st_size > 0


def test_status_and_page_warn_when_the_complete_cells_come_from_two_engines(study, tables, tmp_path, capsys):

    shutil.copytree(study.root / "cells", tmp_path / study.name / "cells")
    copy = load_study(study.path, {"results_root": str(tmp_path)})
    args = ["status", "--study", str(copy.path), "--results-root", str(tmp_path)]
    here = provenance.current(torch.__version__)
    assert cli.main(args) == 0
    assert f"engine: {here}, this checkout's (all 44 complete cells)" in capsys.readouterr().out

    older = [copy.cell("digits-mlp", "imp", 1, 0.2, 0).dir, copy.cell("digits-mlp", "dense", 0, 0.0, 1).dir]
    for d in older:  # as the engine before a change to the training loop would have written them
        meta = json.loads((d / "cell.json").read_text())
        assert meta["engine"] == provenance.describe_engine(torch.__version__)
        meta["engine"] = {"source": "0123456789ab", "torch": meta["engine"]["torch"]}
        store.write_cell_json(meta, d)
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "44 of 44 cells complete" in out  # the hash leaves the engine out: nothing is stale
    assert "warning: the complete cells come from 2 engines" in out
    assert f"  {here}, this checkout's: 42 cells\n" in out and "  0123456789ab (torch " in out and ": 2 cells\n" in out

    assert cli.main([*args, "--engine", "0123456789ab"]) == 0
    assert sorted(capsys.readouterr().out.split()) == sorted(map(str, older))
    assert cli.main([*args, "--engine", here.split()[0]]) == 0
    assert len(capsys.readouterr().out.split()) == 42


    row = compute.page_row(copy, tables["summary"]).iloc[0]  # the results page's compute section
    assert row["n_engines"] == 2
    assert compute.engines_sentence(row) == (" **Warning: these cells come from 2 engines** "
                                             "(prunegen/records/provenance.py), whose numbers can differ in the "
                                             f"last bits: {here} (42 cells); 0123456789ab (torch {torch.__version__}) "
                                             "(2 cells).")


def test_status_and_page_warn_when_the_complete_cells_mix_devices_or_precisions(study, tables, tmp_path, capsys):
    """One engine source, two devices: cells trained on a GPU in bf16 are not the CPU's fp32
    cells, and status and the page say so as they do for two engines."""
    shutil.copytree(study.root / "cells", tmp_path / study.name / "cells")
    copy = load_study(study.path, {"results_root": str(tmp_path)})
    gpu = copy.cell("digits-mlp", "imp", 1, 0.2, 0).dir
    meta = json.loads((gpu / "cell.json").read_text())
    assert (meta["engine"]["device"], meta["engine"]["precision"], meta["engine"]["deterministic"]) == ("cpu", "fp32", True)
    meta["engine"] |= {"device": "cuda", "precision": "bf16-autocast"}
    store.write_cell_json(meta, gpu)
    assert cli.main(["status", "--study", str(copy.path), "--results-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "warning: the complete cells come from 2 engines" in out
    source = provenance.current(torch.__version__).split()[0]
    assert f"  {source} (torch {torch.__version__}, cuda, bf16-autocast), this checkout's: 1 cell\n" in out
    assert f"  {source} (torch {torch.__version__}, cpu, fp32), this checkout's: 43 cells\n" in out
    assert compute.page_row(copy, tables["summary"]).iloc[0]["n_engines"] == 2


def test_figures_are_written_as_png_and_pdf(study, tables):
    paths = draw.draw(study)
    assert sorted(p.name for p in paths) == sorted(f"{n}.{e}" for n in layout.FIGURES for e in ("png", "pdf"))
    for p in paths:
        head = p.read_bytes()[:8]
        assert p.parent == study.root / "figures"
        assert head.startswith(b"\x89PNG" if p.suffix == ".png" else b"%PDF")
        assert p.stat().st_size > 10_000


def test_figures_render_without_some_arms_and_noise_levels(study, tables):
    import matplotlib.pyplot as plt

    keep = lambda df: df[df.arm.isin(["dense", "imp"]) & (df.noise == 0.0)]  # noqa: E731
    t = {n: keep(tables[n]) for n in ("summary", "headline", "memorization", "optimal")}
    for name in layout.FIGURES:
        fig = draw.FIGURES[name](study, t)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=40)
        plt.close(fig)
        assert buf.getvalue().startswith(b"\x89PNG")


def test_a_dense_only_study_with_no_levels_merges_and_draws(tmp_path):
    from prunegen.engine.run import run

    raw = yaml.safe_load(SMOKE.read_text())
    raw.update({"levels": 0, "arms": ["dense"], "noise": [0.2], "results_root": str(tmp_path)})
    path = tmp_path / "dense.yaml"
    path.write_text(yaml.safe_dump(raw))
    study = load_study(path)
    for cell in study.cells():
        run(cell)
    merge.merge(study)
    written = draw.draw(study)
    assert {p.name for p in written} >= {f"{name}.png" for name in layout.FIGURES}
    assert all(p.stat().st_size > 0 for p in written)


# ---------------------------------------------------------------- the results page

def _page(study, tables, out):

    paths = build.build(study, out / "results.md", "study.yaml", tables_from=study.root / "tables")
    return paths, out / "results.md"




def test_results_page_prints_only_numbers_found_in_the_tables(study, tables, tmp_path):

    _, path = _page(study, tables, tmp_path)
    text = path.read_text()
    assert len(markdown.numbers(text)) > 40
    assert page_numbers_in_tables(text, path.parent / "results" / study.name / "tables") == []
    head = tables["headline"]
    for noise in (0.0, 0.2):  # the dense reference of claim 1, mean and interval, as the tables have it
        dense = row(head, noise=noise, arm="dense", level=0)
        assert f"| {noise:g} | {markdown.with_ci(dense, 'test_error')} |" in text
    assert f"{len(tables['summary'])} cells" in text
    # the machines, from each cell's own record: these ran in this process, one thread each

    m = json.loads(next(study.root.glob("cells/**/cell.json")).read_text())["machine"]
    assert m["torch_threads"] == 1
    n = len(tables["summary"])
    assert f"Machines (from each cell's record): {provenance.machine_label(m)} ({n} cells on 1 host)." in text

    assert f" Engine: {provenance.current(torch.__version__)} ({n} cells)." in text and "Warning" not in text
    verdicts = claims_page.judge(study, tables)
    rows = claims_page.verdict_rows(study, verdicts, ["digits-mlp"])
    assert len(rows) == len(CLAIMS)  # one per claim, each on the page as the rule gives it
    for cells in rows:
        assert "| " + " | ".join(cells) + " |" in text
    assert all(cells[3].endswith("(not the paper's regime)") for cells in rows)  # digits: not the paper's model
    assert "2 seeds (0, 1)" in text


def test_the_all_subgroup_is_the_summary_training_loss(tables):
    """The page quotes the `all` subgroup's training-loss change from the headline table:
    they are the same numbers."""
    sub = tables["subgroup_headline"]
    sub = sub[sub["subgroup"] == "all"].set_index(["noise", "level", "arm"])
    head = tables["headline"].set_index(["noise", "level", "arm"])
    for key in sub.index:
        for col in ("train_loss_change_mean", "train_loss_change_ci_high"):
            a, b = sub.loc[key, col], head.loc[key, col]
            assert (np.isnan(a) and np.isnan(b)) or a == pytest.approx(b, rel=1e-9, abs=1e-12), (key, col)


def test_figures_keep_bounded_intervals_in_range_and_draw_each_seed(study, tables, tmp_path):

    with style.recording() as drawn:
        draw.draw_from(study, tables, tmp_path, claims_page.PAGE_FIGURES, formats=("png",), dpi=40)
    raw = derived.mean_ci(tables["summary"], ["noise", "level", "arm"], ["memorization", "test_error"])
    assert (raw["memorization_ci_low"] < 0).any()  # two seeds: the raw t-interval leaves [0, 1]
    intervals = [r for r in drawn if r["kind"] == "interval"]
    for r in intervals:
        lo, hi = style.BOUNDS[r["metric"]]
        assert (r["low"][np.isfinite(r["low"])] >= lo).all() and (r["high"][np.isfinite(r["high"])] <= hi).all()
    seeds = [r for r in drawn if r["kind"] == "seeds" and r["metric"] == "test_error"]
    assert sum(len(r["values"]) for r in seeds) >= len(tables["summary"])  # every cell's own value


def test_a_page_on_part_of_its_study_says_how_much_is_there(study, tables):
    summary = tables["summary"]
    assert claims_page.completeness(study, summary) == []  # all 44 cells: nothing to say
    part = summary[~((summary["arm"] == "imp") & (summary["seed"] == 1))]
    text = " ".join(claims_page.completeness(study, part))
    missing = len(summary) - len(part)
    assert missing > 0 and f"**Incomplete: {len(part)} of {len(summary)} cells** (`digits-mlp`: {len(part)} of " \
        f"{len(summary)})" in text


def test_results_page_regenerates_byte_for_byte_from_its_own_tables(study, tables, tmp_path):

    paths, path = _page(study, tables, tmp_path)
    assert [p.name for p in paths[1:]] == [f"{n}.png" for n in claims_page.PAGE_FIGURES]
    before = {p: p.read_bytes() for p in paths}
    shutil.rmtree(study.root / "tables")  # the page's own copies are enough
    try:
        again = build.build(study, path, "study.yaml", refresh=False)
    finally:
        merge.merge(study)
    assert again == paths
    assert {p: p.read_bytes() for p in again} == before


def test_results_without_tables_is_one_error_naming_the_file(study, tmp_path, capsys):
    code = cli.main(["results", "--study", str(SMOKE), "--results-root", str(tmp_path / "none"),
                     "--out", str(tmp_path / "page.md")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1
    assert str(tmp_path / "none" / "smoke" / "tables" / "summary.parquet") in err
    assert not (tmp_path / "page.md").exists()


STUDY_OF_THE_PAGE = ("lenet40", "workflow/studies/lenet40.yaml")  # (study name, file) behind docs/results.md


def test_the_committed_results_page_is_what_its_committed_tables_give(tmp_path):
    """docs/results.md regenerates byte for byte from its committed tables, every number on
    it is in those tables, and every (benchmark, claim) has one verdict, the one its section states."""
    from tests.helpers import REPO

    name, source = STUDY_OF_THE_PAGE
    doc, tables = REPO / "docs" / "results.md", REPO / "docs" / "results" / name / "tables"
    study = load_study(REPO / source, {"results_root": str(tmp_path / "none")})
    shutil.copytree(REPO / "docs" / "results", tmp_path / "results")  # the page's tables, and any set beside them
    paths = build.build(study, tmp_path / "results.md", source, refresh=False)
    assert paths[0].read_text() == doc.read_text()
    for p in paths[1:]:
        assert p.read_bytes() == (REPO / "docs" / p.relative_to(tmp_path)).read_bytes(), p.name
    judged = tmp_path / "results" / name / "tables" / "verdicts.parquet"
    assert judged.read_bytes() == (tables / "verdicts.parquet").read_bytes()
    text = doc.read_text()
    assert page_numbers_in_tables(text.split("## Two regimes")[0] + text.split("## Compute")[1], tables) == []
    benchmarks = sorted(study.benchmarks)
    assert len(benchmarks) == 2  # MNIST and Fashion-MNIST, each judged on its own rows
    for b in benchmarks:
        assert page_numbers_in_tables(text, tables, b) == []
    summary = pd.read_parquet(tables / "summary.parquet")
    assert (summary.groupby("benchmark")["seed"].nunique() >= 5).all()
    verdicts = pd.read_parquet(tables / "verdicts.parquet")
    primary = rules.summarize(verdicts, benchmarks).set_index(["benchmark", "claim"])
    assert len(primary) == len(benchmarks) * len(CLAIMS)
    for b in benchmarks:
        section = text.split(f"## Benchmark `{b}`")[1].split("\n## ")[0]
        for claim in CLAIMS:  # one verdict per claim, stated in its section as in the table
            assert f"### {claim}. {CLAIMS[claim].title}" in section
            assert f"**Verdict: {primary.loc[(b, claim), 'verdict']}**" in section
        deciding = section.split("### What would decide it")[1]
        for claim in verdicts.loc[(verdicts["benchmark"] == b) & (verdicts["verdict"] == "inconclusive"), "claim"].unique():
            assert re.search(rf"- claim {claim}: \d+ inconclusive; .*\d", deciding), (b, claim)
    head = pd.read_parquet(tables / "headline.parquet")
    for b in benchmarks:  # claim 1's dense reference, in that benchmark's own section
        section = text.split(f"## Benchmark `{b}`")[1].split("\n## ")[0]
        for noise in study.noise:
            dense = row(head, benchmark=b, noise=noise, arm="dense", level=0)
            assert f"| {noise:g} | {markdown.with_ci(dense, 'test_error')} |" in section
    compute = pd.read_parquet(tables / "compute.parquet").iloc[0]
    assert compute["cells"] == len(summary)
    assert f"{compute['cells']} cells, {compute['epochs']} training epochs" in text
    # a page on part of its study says so, with the counts, before any verdict
    incomplete = f"**Incomplete: {len(summary)} of {len(study.cells())} cells**"
    assert (incomplete in text.split("## Verdicts")[0]) == (len(summary) < len(study.cells()))


def test_the_readme_verdict_table_has_one_row_per_benchmark_and_claim_as_the_page():
    from tests.helpers import REPO

    name, source = STUDY_OF_THE_PAGE
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- verdicts: copied from docs/results.md")[1].split("-->", 1)[1].strip().split("\n\n")[0]
    rows = [ln for ln in block.splitlines() if ln.startswith("| `")]
    verdicts = pd.read_parquet(REPO / "docs" / "results" / name / "tables" / "verdicts.parquet")
    keys = [tuple(c.strip() for c in ln.strip("|").split(" | ")[:2]) for ln in rows]
    expected = [(f"`{b}`", f"{c}. {CLAIMS[c].title}") for b in sorted(verdicts["benchmark"].unique()) for c in CLAIMS]
    assert keys == expected  # exactly one row per (benchmark, claim), in order, and nothing else
    study = load_study(REPO / source, {"results_root": "/nonexistent"})
    assert block.splitlines() == claims_page.readme_table(study, verdicts)[:-1]  # the page's verdicts, as they are
    page = (REPO / "docs" / "results.md").read_text()
    for ln in rows:  # and the page's own verdict table says the same
        b, claim, verdict, places = (c.strip() for c in ln.strip("|").split(" | "))
        assert any(p.startswith(f"| {b} | {claim} | ") and p.endswith(f"| {verdict} | {places} |")
                   for p in page.splitlines()), (b, claim)
