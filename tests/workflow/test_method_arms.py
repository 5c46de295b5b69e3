"""Study-defined arms, one per pruning method, run for real through Snakemake's CLI on
workflow/studies/methods-smoke.yaml, their records read back."""

import pyarrow.parquet as pq
import pytest
import torch
import yaml

from prunegen.analysis import tables as derived
from prunegen.analysis.report import build
from prunegen.analysis.report import methods_page as methods_report
from prunegen.analysis.verdicts import stats
from prunegen.engine import start
from prunegen.engine.pruning.magnitude import layer_quotas
from prunegen.records import layout, schemas, store
from prunegen.study.load import load_study
from tests.helpers import REPO, numbers_not_in_tables, snakemake

pytestmark = [pytest.mark.workflow, pytest.mark.slow]
METHODS_SMOKE = REPO / "workflow" / "studies" / "methods-smoke.yaml"
DEFINED = ["imp_magnitude", "imp_layerwise", "imp_random_global", "imp_snip", "imp_grasp", "imp_synflow"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("methods")
    snakemake(workdir, METHODS_SMOKE)
    study = load_study(METHODS_SMOKE, {"results_root": str(workdir / "results")})
    return workdir, study


def cell(study, arm, level):
    return study.cell("digits-mlp", arm, level, 0.2, 0)


def test_the_smoke_study_defines_one_arm_per_method():
    study = load_study(METHODS_SMOKE)
    assert sorted(study.arm_specs[a].method["name"] for a in DEFINED) == sorted(
        ["magnitude", "magnitude_layerwise", "random_global", "snip", "grasp", "synflow"])


def assert_documented_records(c):
    """Complete, with the history, examples and summary Parquet files of the documented schemas."""
    assert store.is_complete(c.dir, c.hash)
    for name, schema in (("history", schemas.HISTORY), ("examples", schemas.EXAMPLES),
                         ("summary", schemas.SUMMARY)):
        assert pq.read_schema(c.dir / f"{name}.parquet").names == schema.names


@pytest.mark.parametrize("arm", DEFINED)
def test_every_defined_arm_writes_the_documented_records_and_keeps_exactly_keep(run, arm):
    _, study = run
    for level in (1, 2):
        c = cell(study, arm, level)
        assert_documented_records(c)
        summary = pq.read_table(c.dir / "summary.parquet").to_pylist()[0]
        mask = torch.load(c.dir / "mask.pt", weights_only=True)
        total = sum(m.numel() for m in mask.values())
        # counted from the weights' zeros by the cell (sparsity_report), and from the saved mask
        assert summary["prunable_nonzero"] == start.keep_count(total, 0.2, level) == sum(int(m.sum()) for m in mask.values())
        assert summary["cycles"] == level + 1
        parent = torch.load(cell(study, arm, level - 1).dir / "mask.pt", weights_only=True)
        assert all(not bool((mask[n] & ~parent[n]).any()) for n in mask)  # nothing removed comes back


def test_the_magnitude_method_arm_is_imp_bit_for_bit(run):
    _, study = run
    for f in ("model.pt", "mask.pt"):
        a = torch.load(cell(study, "imp", 2).dir / f, weights_only=True)
        b = torch.load(cell(study, "imp_magnitude", 2).dir / f, weights_only=True)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_methods_give_masks_of_their_own(run):
    _, study = run
    masks = {a: torch.load(cell(study, a, 1).dir / "mask.pt", weights_only=True) for a in DEFINED}
    flat = {a: torch.cat([m.flatten() for m in ms.values()]) for a, ms in masks.items()}
    others = [a for a in DEFINED if a != "imp_magnitude"]
    assert all(not torch.equal(flat[a], flat["imp_magnitude"]) for a in others)


def test_layerwise_keeps_the_per_layer_quota_of_its_parents_survivors(run):
    _, study = run
    for level in (1, 2):
        mask = torch.load(cell(study, "imp_layerwise", level).dir / "mask.pt", weights_only=True)
        parent = torch.load(cell(study, "imp_layerwise", level - 1).dir / "mask.pt", weights_only=True)
        keep = start.keep_count(sum(m.numel() for m in mask.values()), 0.2, level)
        assert {n: int(m.sum()) for n, m in mask.items()} == layer_quotas(parent, keep)


def test_a_defined_arms_merged_history_is_its_whole_chain(run):
    workdir, study = run
    history = pq.read_table(study.root / "tables" / "history.parquet").to_pandas()
    curve = derived.chain_history(history, "digits-mlp", "imp_snip", 2, 0.2, 0, study.chain_arms)
    own = pq.read_table(cell(study, "imp_snip", 2).dir / "history.parquet").to_pandas()
    assert list(curve["cycle"]) == list(own["cycle"]) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert list(curve["train_loss"]) == list(own["train_loss"])


def test_a_study_naming_an_unknown_method_fails_the_dry_run_naming_it(tmp_path):
    raw = yaml.safe_load(METHODS_SMOKE.read_text())
    raw["arms"].append({"name": "imp_lottery", "base": "imp", "method": "lottery"})
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    out = snakemake(tmp_path, bad, "-n", check=False)
    assert out.returncode != 0
    assert "unknown pruning method 'lottery'" in out.stdout + out.stderr
    assert not (tmp_path / "results").exists()


# ---------------------------------------------------------------- controls and TIE (issue 19, items 2-3)

CONTROLS = ["oneshot", "oneshot_extended", "oneshot_snip", "reinit", "tie_removed", "tie_random"]


def load(c, name):
    return torch.load(c.dir / name, weights_only=True)


def train_examples(c):
    ex = pq.read_table(c.dir / "examples.parquet").to_pandas()
    return ex[ex["split"] == "train"]


@pytest.mark.parametrize("arm", CONTROLS)
def test_every_control_arm_writes_the_documented_records(run, arm):

    _, study = run
    for level in (1, 2):
        c = cell(study, arm, level)
        assert_documented_records(c)
        meta = store.read_cell_json(c.dir)
        if c.base.startswith("tie"):  # the removed examples are a checksummed record of the cell
            assert pq.read_schema(c.dir / layout.REMOVED_FILE).names == schemas.REMOVED.names
            assert layout.REMOVED_FILE in meta["files"]
        else:
            assert layout.REMOVED_FILE not in meta["files"] and not (c.dir / layout.REMOVED_FILE).exists()


def test_oneshot_prunes_the_trained_dense_model_to_d_k_in_one_step(run):
    _, study = run
    dense = cell(study, "dense", 0)
    dense_state = load(dense, "model.pt")
    for level in (1, 2):
        for arm, cycles in (("oneshot", [1]), ("oneshot_extended", list(range(1, level + 1)))):
            c = cell(study, arm, level)
            mask = load(c, "mask.pt")
            total = sum(m.numel() for m in mask.values())
            keep = start.keep_count(total, 0.2, level)
            # global magnitude over dense level 0's trained weights, recomputed here
            scores = torch.cat([dense_state[n].abs().flatten() for n in mask])
            threshold = scores.sort(descending=True).values[keep - 1]
            assert sum(int(m.sum()) for m in mask.values()) == keep
            assert all(bool((dense_state[n].abs()[m] >= threshold).all()) for n, m in mask.items())
            summary = pq.read_table(c.dir / "summary.parquet").to_pylist()[0]
            assert summary["prunable_nonzero"] == keep
            assert summary["cycles"] == 1 + len(cycles)  # the dense cycle and its own
            history = pq.read_table(c.dir / "history.parquet").to_pandas()
            assert sorted(history["cycle"].unique()) == cycles
    # at level 1 one-shot and imp are the same prune of the same weights, then the same cycle
    for f in ("model.pt", "mask.pt"):
        a, b = load(cell(study, "imp", 1), f), load(cell(study, "oneshot", 1), f)
        assert all(torch.equal(a[k], b[k]) for k in a)
    # at level 2 one step is not two: the masks differ
    a, b = load(cell(study, "imp", 2), "mask.pt"), load(cell(study, "oneshot", 2), "mask.pt")
    assert not all(torch.equal(a[k], b[k]) for k in a)
    # a method other than magnitude: its own mask
    a, b = load(cell(study, "oneshot", 2), "mask.pt"), load(cell(study, "oneshot_snip", 2), "mask.pt")
    assert not all(torch.equal(a[k], b[k]) for k in a)


def test_reinit_trains_imps_level_k_mask_from_a_fresh_initialization(run):
    from prunegen.engine import controls
    from prunegen.engine.data import load_dataset

    _, study = run
    ds = load_dataset("digits", study.data_root)
    for level in (1, 2):
        c = cell(study, "reinit", level)
        mask, imp_mask = load(c, "mask.pt"), load(cell(study, "imp", level), "mask.pt")
        assert mask.keys() == imp_mask.keys() and all(torch.equal(mask[n], imp_mask[n]) for n in mask)
        state = load(c, "model.pt")
        assert all(not bool(state[n][~m].any()) for n, m in mask.items())  # zero off the mask
        summary = pq.read_table(c.dir / "summary.parquet").to_pylist()[0]
        assert summary["cycles"] == 1
    fresh = controls.reinit_model(c, ds.input_shape, ds.num_classes).state_dict()
    original = start.init_model(c, ds.input_shape, ds.num_classes).state_dict()
    assert all(not torch.equal(fresh[k], original[k]) for k in fresh if k.endswith("weight"))


def test_tie_removed_leaves_out_exactly_the_top_of_the_improvement_ranking(run):

    _, study = run
    dense = train_examples(cell(study, "dense", 0))
    n = len(dense)
    top = study.arm_specs["tie_removed"].options["top"]
    expected_n = round(top * n)
    for level in (1, 2):
        c = cell(study, "tie_removed", level)
        removed = pq.read_table(c.dir / layout.REMOVED_FILE).to_pandas()
        assert len(removed) == expected_n == n - len(train_examples(c))
        # recomputed from the examples tables: loss of dense level 0 minus imp level k's, per example
        imp = train_examples(cell(study, "imp", level))
        both = dense.merge(imp, on="index", suffixes=("_dense", "_imp"))
        both["improvement"] = both["loss_dense"].astype(float) - both["loss_imp"].astype(float)
        ranked = both.sort_values(["improvement", "index"], ascending=[False, True])
        assert list(removed["index"]) == list(ranked["index"].iloc[:expected_n])
        assert removed["improvement"].to_numpy() == pytest.approx(ranked["improvement"].iloc[:expected_n].to_numpy())
        assert list(removed["rank"]) == list(range(expected_n))
        # it trained on every other training example, and on none of these
        assert set(train_examples(c)["index"]) == set(dense["index"]) - set(removed["index"])
        summary = pq.read_table(c.dir / "summary.parquet").to_pylist()[0]
        assert summary["train_examples"] == n - expected_n and summary["cycles"] == 1


def test_tie_random_leaves_out_a_seeded_random_set_of_the_same_size(run):
    from prunegen.engine.seeds import generator

    _, study = run
    dense = train_examples(cell(study, "dense", 0))
    index = dense["index"].to_numpy()  # the training split's order (sorted dataset indices)
    sets = {}
    for level in (1, 2):
        c = cell(study, "tie_random", level)
        removed = pq.read_table(c.dir / layout.REMOVED_FILE).to_pandas()
        same_size = len(pq.read_table(cell(study, "tie_removed", level).dir / layout.REMOVED_FILE))
        assert len(removed) == same_size == round(0.1 * len(index))
        drawn = torch.randperm(len(index), generator=generator(0, "tie-random", level))[:same_size].numpy()
        assert list(removed["index"]) == list(index[drawn])
        assert set(train_examples(c)["index"]) == set(index) - set(removed["index"])
        sets[level] = set(removed["index"])
    assert sets[1] != sets[2]  # a draw of its own per level
    assert sets[1] != set(pq.read_table(cell(study, "tie_removed", 1).dir / layout.REMOVED_FILE)["index"].to_pylist())


# ---------------------------------------------------------------- the methods page (item 4)



@pytest.fixture(scope="module")
def methods_page(run, tmp_path_factory):

    _, study = run
    out = tmp_path_factory.mktemp("page")
    paths = build.build(study, out / "methods.md", "workflow/studies/methods-smoke.yaml")
    return study, paths


def test_the_methods_page_prints_only_numbers_of_its_tables_and_every_arm(methods_page):
    import pandas as pd


    study, paths = methods_page
    text = paths[0].read_text()
    tables = paths[0].parent / "results" / study.name / "tables"
    assert [p.name for p in paths[1:]] == [f"{n}.png" for n in methods_report.FIGURES]
    assert len(numbers_not_in_tables("", tables)) == 0 and numbers_not_in_tables(text, tables) == []
    m = pd.read_parquet(tables / "methods.parquet")
    assert set(m["arm"]) == {"dense", "imp", *DEFINED, "oneshot", "oneshot_extended", "oneshot_snip", "reinit"}
    assert m.loc[m["arm"] == "oneshot_extended", "total_epochs"].tolist() == [6, 9]  # against training time
    for arm in study.arms:
        assert f"| `{arm}` |" in text
    assert "| `digits-mlp` | TIE. " in text


def test_the_tie_verdict_is_the_paired_per_seed_difference_of_the_summary(methods_page):
    import pandas as pd


    study, paths = methods_page
    tables = paths[0].parent / "results" / study.name / "tables"
    tie, summary = pd.read_parquet(tables / "tie.parquet"), pd.read_parquet(tables / "summary.parquet")
    assert list(tie["level"]) == [1, 2] and (tie["removed"] == round(0.1 * tie["train_examples"])).all()
    ivs = []
    for r in tie.itertuples():
        te = lambda arm: summary[(summary["arm"] == arm) & (summary["level"] == r.level)].set_index("seed")[  # noqa: E731
            "test_error"]
        ivs.append(stats.Interval.of((te("tie_removed") - te("tie_random")).dropna()))
        assert r.mean == pytest.approx(ivs[-1].mean)
        assert r.expected == "> 0"  # removing the top-improved examples is expected to hurt more
        assert r.tie_removed_mean == pytest.approx(te("tie_removed").mean())
    rejected, _, _ = stats.holm([iv.p_value for iv in ivs])  # Holm across the pair's levels
    assert list(tie["verdict"]) == [stats.outcome(iv, +1, rej)[0] for iv, rej in zip(ivs, rejected)]


def test_the_methods_page_regenerates_byte_for_byte_from_its_own_tables(methods_page, tmp_path):
    import shutil


    study, paths = methods_page
    before = {p.name: p.read_bytes() for p in paths}
    shutil.copytree(paths[0].parent / "results", tmp_path / "results")
    again = build.build(study, tmp_path / "methods.md", "workflow/studies/methods-smoke.yaml", refresh=False)
    assert {p.name: p.read_bytes() for p in again} == before
