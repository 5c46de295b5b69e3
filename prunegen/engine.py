"""Which engine computed a cell: torch's version and a digest of prunegen's own source for
everything a cell run imports. cell.json records it; `prunegen status` and the results
page say when a study's cells come from more than one.

Why not in the cell hash: the hash names what a cell *is* (its resolved hyperparameters),
and a refactor of the training loop must not throw away thousands of GPU-hours of cells
that are still right. But an engine change can change a cell's floating-point bits (the
oneDNN products of fa27abc moved MNIST test errors by a median 0.07 points), so a study
that mixes engines is told so, with the cells of each, and the researcher decides whether
to re-run the older ones.
"""

from __future__ import annotations

import functools
import hashlib
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent

# The modules a cell run never imports: the workflow's and the reporting side. Everything
# else is the engine, so a new module counts as engine until it is listed here (a test
# checks this list against what `prunegen.cell` imports).
NOT_ENGINE = frozenset({
    "allocator", "analysis", "calibrate", "cli", "compute", "dag", "figures", "figures_methods",
    "plan", "selection", "slurm", "watch",
    "verdicts/__init__", "verdicts/changes", "verdicts/methods", "verdicts/page", "verdicts/paper",
    "verdicts/rules", "verdicts/stats",
})


def engine_files(package: Path = PACKAGE) -> list[Path]:
    """The engine's source files, sorted: every module of the package not in NOT_ENGINE,
    and the study schema (its defaults resolve the hyperparameters)."""
    files = [p for p in package.rglob("*.py") if p.relative_to(package).with_suffix("").as_posix() not in NOT_ENGINE]
    return sorted([*files, package / "study.schema.yaml"])


@functools.lru_cache(maxsize=1)
def source_digest(package: Path = PACKAGE) -> str:
    """sha256 over the engine files' paths and bytes: 12 hex digits, as git shows a commit."""
    h = hashlib.sha256()
    for path in engine_files(package):
        h.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def describe() -> dict:
    import torch

    return {"source": source_digest(), "torch": torch.__version__}


def current() -> str:
    """This checkout's engine, labelled as a cell of it would be."""
    return label({"engine": describe()})


def label(meta: dict) -> str:
    """One line per engine for `prunegen status` and the page, from a cell.json. A cell
    written before engines were recorded is named by its git revision and torch version,
    which is all it has."""
    e = meta.get("engine")
    if e:
        return f"{e['source']} (torch {e['torch']})"
    rev = (meta.get("git_revision") or "")[:7] or "unknown revision"
    return f"not recorded (git {rev}, torch {meta.get('versions', {}).get('torch', '?')})"


def tally(labels: Iterable[str]) -> list[tuple[str, int]]:
    """(label, cells) per engine, most cells first (then by label): how `prunegen status`
    and the results page list them."""
    return sorted(Counter(labels).items(), key=lambda en: (-en[1], en[0]))
