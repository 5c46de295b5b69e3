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
