"""`snakemake --config set=...`: the overrides reach every job (a cell job loads the same
study), change exactly the cells they touch, are written beside the results, and a bad one is
refused before any job runs, naming its key."""

import json
import re

import pytest
import yaml

from prunegen import cli
from tests.helpers import SMOKE, snakemake

pytestmark = [pytest.mark.workflow, pytest.mark.slow]
SLICE = "select=arm=imp level=1 noise=0.0"  # dense and imp level 1: two cells


def test_set_overrides_reach_the_jobs_change_only_what_they_touch_and_are_kept(tmp_path, capsys):
    two = "benchmarks.digits-mlp.train.epochs=2"
    snakemake(tmp_path, SMOKE, config=(SLICE, f"set={two}", "results_root=results"))
    cells = tmp_path / "results" / "smoke" / "cells" / "benchmark=digits-mlp"
    for arm, level in (("dense", 0), ("imp", 1)):
        meta = json.loads((cells / f"arm={arm}/noise=0.0/seed=0/level={level}/cell.json").read_text())
        assert meta["hparams"]["train"]["epochs"] == 2  # the job loaded the study with the override
    resolved = tmp_path / "results" / "smoke" / "study.yaml"
    assert yaml.safe_load(resolved.read_text())["benchmarks"]["digits-mlp"]["train"]["epochs"] == 2
    # the resolved study reproduces the run: everything it ran is complete under it
    assert cli.main(["status", "--study", str(resolved), "--results-root", str(tmp_path / "results"),
                     "--select", "arm=imp level=1 noise=0.0"]) == 0
    assert "2 of 2 cells complete" in capsys.readouterr().out
    # imp reads the pruning variant, dense does not: only imp runs again
    out = snakemake(tmp_path, SMOKE, "-n", config=(SLICE, f"set={two} benchmarks.digits-mlp.prune.variant=finetune",
                                                   "results_root=results"))
    jobs = out.stdout + out.stderr
    assert set(re.findall(r"wildcards: benchmark=\S+, arm=(\w+),", jobs)) == {"imp"}
    assert cli.main(["status", "--study", str(SMOKE), "--results-root", str(tmp_path / "results"), "--select",
                     "arm=imp level=1 noise=0.0", "--set", f"{two} benchmarks.digits-mlp.prune.variant=finetune"]) == 0
    table = capsys.readouterr().out
    assert "1 of 2 cells complete" in table and "1 stale" in table


def test_a_bad_override_stops_the_run_naming_its_key(tmp_path):
    out = snakemake(tmp_path, SMOKE, "-n", config=("set=benchmarks.digits-mlp.train.epochz=2",), check=False)
    assert out.returncode != 0 and "'epochz' was unexpected" in out.stdout + out.stderr
    assert not (tmp_path / "results").exists()
