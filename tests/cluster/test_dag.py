from types import SimpleNamespace

import pytest

from prunegen.analysis.figures import draw
from prunegen.cluster import dag
from prunegen.records import layout
from prunegen.study.grid import StudyError
from tests.helpers import SMOKE


def w(**kw):
    base = {"benchmark": "digits-mlp", "arm": "imp", "noise": "0.2", "seed": "0", "level": "2"}
    return SimpleNamespace(**{**base, **kw})


def test_chain_parents_are_the_previous_level_and_random_reads_imp():
    study = dag.load(SMOKE)
    assert dag.parent_inputs(study, w()) == [str(study.cell("digits-mlp", "imp", 1, 0.2, 0).dir / "cell.json")]
    random = dag.parent_inputs(study, w(arm="random"))
    assert random == [str(study.cell("digits-mlp", "random", 1, 0.2, 0).dir / "cell.json"),
                      str(study.cell("digits-mlp", "imp", 2, 0.2, 0).dir / "cell.json")]
    assert dag.parent_inputs(study, w(arm="imp", level="1")) == [
        str(study.cell("digits-mlp", "dense", 0, 0.2, 0).dir / "cell.json")]
    assert dag.parent_inputs(study, w(arm="downscaled")) == []  # from scratch at its width
    # its first cycle is downscaled L2's (prunegen.prefixes): it continues that cell
    assert dag.parent_inputs(study, w(arm="downscaled_extended")) == [
        str(study.cell("digits-mlp", "downscaled", 2, 0.2, 0).dir / "cell.json")]


def test_resources_come_from_the_study_and_scale_with_cycles():
    study = dag.load(SMOKE)
    r = dag.resources(study, w())
    assert r == {"gpus": 0, "cpus": 1, "mem_mb": 1000, "runtime_min": 5, "nodes": 1, "tasks": 1}
    assert dag.resources(study, w(arm="downscaled_extended"))["runtime_min"] == 10  # 3 cycles, 1 shared


@pytest.mark.parametrize("bad", [w(noise="0.20"), w(arm="imp", level="0")])
def test_wildcards_that_do_not_round_trip_are_refused(bad):
    with pytest.raises(StudyError):
        dag.cell(dag.load(SMOKE), bad)


def test_outputs_cover_every_record_and_the_marker():
    outs = dag.cell_outputs("results/x")
    assert sorted(p.rsplit("/", 1)[1] for p in outs.values()) == sorted(
        ["cell.json", "examples.parquet", "history.parquet", "mask.pt", "model.pt", "summary.parquet"])


def test_the_workflow_expects_exactly_the_tables_and_figures_the_analysis_writes():
    # both sides read them from the records' layout, and the analysis can draw every one
    assert set(dag.TABLES) == set(layout.TABLES) and set(dag.FIGURES) == set(layout.FIGURES)
    assert set(layout.FIGURES) <= set(draw.FIGURES)
