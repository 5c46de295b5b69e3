"""benchmarks/gpu.sh in its CPU form (issue 27): every phase runs, each under its own
timeout, and leaves its line in phases.jsonl and its JSON as it ends, so the script is known
to work before a GPU is lent."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.slow
PHASES = ["env", "tests", "train", "determinism", "pack"]


def test_every_phase_of_the_gpu_check_runs_in_its_cpu_form(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    run = subprocess.run(["bash", str(REPO / "benchmarks/gpu.sh"), "--cpu"], env=env, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    lines = [json.loads(line) for line in (tmp_path / "phases.jsonl").read_text().splitlines()]
    assert [p["phase"] for p in lines] == PHASES
    for p in lines:
        assert p["rc"] == 0 and not p["timed_out"] and p["summary"], p  # each says what it found
    assert "passed" in lines[1]["summary"][-1] and "failed" not in lines[1]["summary"][-1]
    for name in ("train-cpu.json", "determinism-cpu.json", "pack.json"):
        assert json.loads((tmp_path / name).read_text()), name
    det = json.loads((tmp_path / "determinism-cpu.json").read_text())["cases"]["lenet300-mnist"]
    assert det["deterministic_runs_identical"] is True


def test_a_phase_past_its_timeout_is_recorded_and_the_next_still_runs(tmp_path):
    """The phase function, driven alone: a phase cut off by its timeout writes its line
    (timed_out) and the script goes on."""
    script = (REPO / "benchmarks/gpu.sh").read_text()
    head = script[:script.index('if [ "$device" = cuda ]; then')]
    body = head + 'phase slow 1 "." sleep 5\nphase quick 10 "." echo done\nexit $status\n'
    (tmp_path / "g.sh").write_text(body.replace('cd "$(dirname "$0")/.."', f'cd "{REPO}"'))
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    run = subprocess.run(["bash", str(tmp_path / "g.sh")], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    lines = [json.loads(line) for line in (tmp_path / "phases.jsonl").read_text().splitlines()]
    assert [(p["phase"], p["rc"], p["timed_out"]) for p in lines] == [("slow", 124, True), ("quick", 0, False)]
    assert lines[1]["summary"] == ["done"]
