import pytest

try:
    from tests.slurm import cluster
except ImportError:  # run from another root
    import cluster  # type: ignore[no-redef]


@pytest.fixture(autouse=True)
def _cancel_leftover_jobs(tmp_path):
    """After every SLURM test, cancel the jobs it left in the queue (those running in its
    tmp_path): a test that fails before its own clean-up (say, before its Ctrl-C) would
    otherwise leave them holding the node, and every later test would wait behind them."""
    yield
    left = cluster.cancel_jobs_under(tmp_path)
    if left:
        print(f"\ncancelled {len(left)} job(s) this test left in the queue: {' '.join(left)}")
