import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "workflow" / "studies" / "smoke.yaml"


@pytest.fixture
def smoke_study(tmp_path):
    """The smoke study with its results in a temporary folder."""
    from prunegen.config import load_study

    return load_study(SMOKE, {"results_root": str(tmp_path / "results")})


def run_chain(study, arm: str, level: int, noise: float, seed: int = 0):
    """Run every cell `arm` level `level` needs, in order, then the cell itself."""
    from prunegen.cell import run

    cell = study.cell("digits-mlp", arm, level, noise, seed)
    for parent in cell.parents():
        run_chain(study, parent.arm, parent.level, noise, seed)
    return run(cell)


@pytest.fixture
def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@pytest.fixture(autouse=True)
def _cancel_leftover_slurm_jobs(request):
    """After every real-SLURM test, cancel the jobs it left queued in its tmp_path: a test
    that fails before its own clean-up (say, before its Ctrl-C) would otherwise leave them
    holding the node's CPUs, and every later SLURM test would wait behind them."""
    if request.node.get_closest_marker("slurm") is None or "tmp_path" not in request.fixturenames:
        yield
        return
    folder = request.getfixturevalue("tmp_path")
    yield
    from tests.slurm import cluster

    left = cluster.cancel_jobs_under(folder)
    if left:
        print(f"\ncancelled {len(left)} job(s) this test left in the queue: {' '.join(left)}")
