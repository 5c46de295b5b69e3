"""docs/methods.md, the page of workflow/studies/methods.yaml (real MNIST): committed with
its tables, it regenerates byte for byte from them, and every number on it is in them."""

import shutil

import pandas as pd

from prunegen.analysis.report import build, markdown
from prunegen.analysis.verdicts import methods, stats
from prunegen.study.load import load_study
from tests.helpers import REPO, numbers_not_in_tables

DOC = REPO / "docs" / "methods.md"
TABLES = REPO / "docs" / "results" / "methods" / "tables"


def test_the_committed_methods_page_is_what_its_committed_tables_give(tmp_path):
    study = load_study(REPO / "workflow" / "studies" / "methods.yaml", {"results_root": str(tmp_path / "none")})
    shutil.copytree(TABLES, tmp_path / "results" / "methods" / "tables")
    paths = build.build(study, tmp_path / "methods.md", "workflow/studies/methods.yaml", refresh=False)
    assert paths[0].read_text() == DOC.read_text()
    for p in paths[1:]:
        assert p.read_bytes() == (REPO / "docs" / p.relative_to(tmp_path)).read_bytes(), p.name
    for name in methods.METHOD_TABLES:  # the derived tables too
        assert (tmp_path / "results" / "methods" / "tables" / f"{name}.parquet").read_bytes() == \
            (TABLES / f"{name}.parquet").read_bytes(), name
    text = DOC.read_text()
    assert len(markdown.numbers(text)) > 50 and numbers_not_in_tables(text, TABLES) == []
    compute = pd.read_parquet(TABLES / "compute.parquet").iloc[0]
    assert compute["cells"] == len(study.cells())  # the whole grid, real output
    assert f"{compute['cells']} cells, {compute['epochs']} training epochs" in text


def test_the_committed_tie_verdicts_follow_from_the_committed_summary():
    tie, summary = pd.read_parquet(TABLES / "tie.parquet"), pd.read_parquet(TABLES / "summary.parquet")
    assert len(tie) == 4 and (tie["removed"] == 5500).all() and (tie["train_examples"] == 55000).all()
    ivs = []
    for r in tie.itertuples():
        te = {a: summary[(summary["arm"] == a) & (summary["level"] == r.level)].set_index("seed")["test_error"]
              for a in ("tie_removed", "tie_random")}
        assert len(te["tie_removed"]) == len(te["tie_random"]) == 5
        ivs.append(stats.Interval.of(te["tie_removed"] - te["tie_random"]))
        assert (r.mean, r.ci_low, r.ci_high) == (ivs[-1].mean, ivs[-1].low, ivs[-1].high)
    rejected, adjusted, _ = stats.holm([iv.p_value for iv in ivs])  # one family: the pair's 4 levels
    for r, iv, rej, p_holm in zip(tie.itertuples(), ivs, rejected, adjusted):
        assert r.verdict == stats.outcome(iv, +1, rej)[0] and r.p_holm == p_holm
        assert f"| {r.verdict} |" in DOC.read_text()
