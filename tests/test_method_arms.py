"""Study-defined arms, one per pruning method, run for real through Snakemake's CLI on
workflow/studies/methods-smoke.yaml, their records read back."""

import pyarrow.parquet as pq
import pytest
import torch
import yaml

from prunegen import analysis, arms, records
from prunegen.config import load_study
from prunegen.pruning.magnitude import layer_quotas

from conftest import REPO
from test_workflow import snakemake

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


@pytest.mark.parametrize("arm", DEFINED)
def test_every_defined_arm_writes_the_documented_records_and_keeps_exactly_keep(run, arm):
    _, study = run
    for level in (1, 2):
        c = cell(study, arm, level)
        assert records.is_complete(c.dir, c.hash)
        for name, schema in (("history", records.HISTORY), ("examples", records.EXAMPLES),
                             ("summary", records.SUMMARY)):
            assert pq.read_schema(c.dir / f"{name}.parquet").names == schema.names
        summary = pq.read_table(c.dir / "summary.parquet").to_pylist()[0]
        mask = torch.load(c.dir / "mask.pt", weights_only=True)
        total = sum(m.numel() for m in mask.values())
        # counted from the weights' zeros by the cell (sparsity_report), and from the saved mask
        assert summary["prunable_nonzero"] == arms.keep_count(total, 0.2, level) == sum(int(m.sum()) for m in mask.values())
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
        keep = arms.keep_count(sum(m.numel() for m in mask.values()), 0.2, level)
        assert {n: int(m.sum()) for n, m in mask.items()} == layer_quotas(parent, keep)


def test_a_defined_arms_merged_history_is_its_whole_chain(run):
    workdir, study = run
    history = pq.read_table(study.root / "tables" / "history.parquet").to_pandas()
    curve = analysis.chain_history(history, "digits-mlp", "imp_snip", 2, 0.2, 0, study.chain_arms)
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
