"""Snakemake's own executor-plugin conformance tests (issue 17, 6f), run the way the
official snakemake-executor-plugin-slurm runs them (its tests/tests.py subclasses
``snakemake.common.tests.TestWorkflowsLocalStorageBase``): the ``simple`` and ``groups``
workflows that ship with Snakemake, through the ``prunegen`` executor plugin, against the
real single-node SLURM of tests/slurm. Marked ``slurm``: skipped where SLURM cannot be
started, failed (not skipped) under CI=true.

Each workflow must also have reached SLURM: its jobs are read back from sacct by their
working directory, so a plugin that silently ran jobs locally would fail here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pytest
import snakemake.common.tests

from snakemake_executor_plugin_prunegen import ExecutorSettings
from tests.slurm import cluster
from tests.slurm.helpers import sacct_jobs, wait_for

# what each shipped workflow submits: SLURM jobs (array tasks), and the rules their
# --comment names (jobs ready together with one request share an array: a, d, d in one,
# "a+d[3]:..." in "simple"; the group jobs are "group-foo")
EXPECTED = {
    "simple": (5, {"a", "b", "c", "d"}),
    "groups": (4, {"group-foo", "c"}),
}


@pytest.mark.slurm
class TestWorkflows(snakemake.common.tests.TestWorkflowsLocalStorageBase):
    __test__ = True

    @pytest.fixture(autouse=True)
    def _slurm_cluster(self):
        cluster.require(accounting=True)  # skips where SLURM cannot start; fails under CI=true

    def get_executor(self) -> str:
        return "prunegen"

    def get_executor_settings(self) -> Optional[ExecutorSettings]:
        return ExecutorSettings(partition="debug")

    def run_workflow(self, test_name, tmp_path, deployment_method=frozenset()):
        super().run_workflow(test_name, tmp_path, deployment_method)
        workdir = Path(tmp_path) / test_name
        n, rules = EXPECTED[test_name]

        def this_run():  # the jobs of the newest run in this folder (one job name per run)
            jobs = sacct_jobs(workdir)
            if not jobs:
                return {}
            name = jobs[max(jobs, key=lambda j: tuple(int(x) for x in j.split("_")))]["name"]
            return {k: v for k, v in jobs.items() if v["name"] == name}
        got = wait_for(lambda: (j := this_run()) and len(j) >= n and j, 60,
                       f"sacct's records of the {test_name} workflow's jobs")
        assert len(got) == n and {r for j in got.values() for r in j["rule"].split("+")} == rules, got
        assert all(j["state"] == "COMPLETED" and j["name"].startswith("smk-") for j in got.values()), got
