import os

import pytest

from tests.helpers import SMOKE, CellCache


@pytest.fixture(scope="session", autouse=True)
def _folder_indexes(tmp_path_factory):
    """Image-folder indexes (prunegen.engine.folder_index) in the test run's own folder, not the
    home directory's cache; in os.environ, so cells started as processes or jobs use it too."""
    os.environ.setdefault("PRUNEGEN_INDEX_DIR", str(tmp_path_factory.mktemp("folder-indexes")))


@pytest.fixture
def smoke_study(tmp_path):
    """The smoke study with its results in a temporary folder."""
    from prunegen.study.load import load_study

    return load_study(SMOKE, {"results_root": str(tmp_path / "results")})


@pytest.fixture(scope="session")
def cell_cache(tmp_path_factory) -> CellCache:
    """Smoke cells trained once per test run (tests.helpers.CellCache)."""
    return CellCache(tmp_path_factory.mktemp("cell-cache"))


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
