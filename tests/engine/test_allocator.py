"""prunegen.engine.allocator: a cell job keeps the memory it frees (glibc)."""

import subprocess
import sys

from tests.helpers import SMOKE

# 640 blocks of 64 KiB (40 MiB) written and freed, five times over; the minor page faults
# of the last four rounds. Blocks this size always come from the heap, and glibc's
# default hands its freed top back to the OS once more than 128 KiB lies free there, so
# every round faults its pages in again.
ROUNDS = """
import resource, sys
from prunegen import cli
from prunegen.engine import allocator
if sys.argv[1] == "keep":
    assert allocator.keep_freed_memory()
def round_():
    blocks = [bytes([1]) * (64 << 10) for _ in range(640)]
    del blocks
round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    round_()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_a_process_that_keeps_freed_memory_does_not_fault_it_back_in():
    default, keep = _faults("default"), _faults("keep")
    assert default > 4 * 40 * 256 // 2  # 4 rounds x 40 MiB of 4 KiB pages, at least half of them
    assert keep < default // 50


def test_run_cell_sets_it_before_the_cell_runs(monkeypatch):
    from prunegen import cli
    from prunegen.engine import allocator, run

    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append("allocator"))
    monkeypatch.setattr(run, "run_cell", lambda *args, **kw: calls.append("cell") or "path")
    cli.main(["run-cell", "--study", str(SMOKE), "--benchmark", "digits-mlp", "--arm", "dense", "--level", "0",
              "--noise", "0", "--seed", "0"])
    assert calls == ["allocator", "cell"]
