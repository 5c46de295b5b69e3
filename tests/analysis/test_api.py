"""prunegen.open: the README's example, run against real demo cells, and what it reads."""

import re
import sys

import pandas as pd
import pytest

import prunegen
from prunegen.analysis.merge import merge
from prunegen.study.grid import StudyError
from prunegen.study.load import load_study
from tests.helpers import REPO, run_chain

DEMO = REPO / "workflow" / "studies" / "demo.yaml"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Demo cells: imp levels 1 and 2 at noise 0.1 (and dense) for seeds 0 and 1, dense at noise 0, merged."""
    root = tmp_path_factory.mktemp("demo")
    study = load_study(DEMO, {"results_root": str(root)})
    for seed in (0, 1):
        run_chain(study, "imp", 2, 0.1, seed, benchmark="digits-mlp")
    run_chain(study, "dense", 0, 0.0, 0, benchmark="digits-mlp")
    merge(study)
    return root


def readme_example() -> str:
    text = (REPO / "README.md").read_text().split("## Results from Python")[1]
    return re.search(r"```python\n(.*?)```", text, re.S).group(1)


def test_the_readme_example_runs_and_reads_only_the_cells_it_asks_for(demo, capsys):
    code = readme_example()
    assert 'prunegen.open("workflow/studies/demo.yaml")' in code
    scope: dict = {}
    exec(code.replace('prunegen.open("workflow/studies/demo.yaml")',
                      f'prunegen.open("{DEMO}", results_root="{demo}")'), scope)
    r, status, train = scope["r"], scope["status"], scope["train"]
    assert (status["state"] == "complete").sum() == 7 and len(status) == len(r.study.cells())
    # the filtered per-example read opened the matching cells' files only: imp level 2, noise 0.1, 2 seeds
    assert sorted(p.parent.relative_to(demo / "demo" / "cells").as_posix() for p in r.files_read) == [
        f"benchmark=digits-mlp/arm=imp/noise=0.1/seed={s}/level=2" for s in (0, 1)]
    assert set(train["split"]) == {"train"} and set(train["seed"]) == {0, 1} and set(train["level"]) == {2}
    assert len(train) == 2 * 1257 and train["is_noisy"].sum() == 2 * round(0.1 * 1257)
    assert len(scope["verdicts"]) > 0 and scope["fig"].axes


def test_the_api_imports_no_torch_and_refuses_what_is_not_there(demo, tmp_path):
    import subprocess

    code = ("import sys, prunegen; r = prunegen.open(sys.argv[1], results_root=sys.argv[2]); "
            "t = r.examples(arm='dense', noise=0.0); print(len(t), len(r.files_read), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(DEMO), str(demo)], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout.split()
    assert out == [str(1257 + 180 + 360), "1", "False"]
    r = prunegen.open(DEMO, results_root=tmp_path)
    with pytest.raises(StudyError, match="summary.parquet: not merged yet"):
        r.table("summary")
    with pytest.raises(StudyError, match="no key 'arms'"):
        r.examples(arms="imp")
    assert isinstance(r.examples(arm="imp"), pd.DataFrame) and r.files_read == []
