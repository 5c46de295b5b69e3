"""What several test files share: the repository's paths, the smoke study, running a
cell with every cell it reads, running Snakemake, corrupting a record, and reading the
numbers a page prints. Imported by tests (never from another test file or conftest)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "workflow" / "studies" / "smoke.yaml"

# Record files of a cell, as the integrity tests corrupt them.
FILES = ("model.pt", "mask.pt", "history.parquet", "examples.parquet", "summary.parquet", "cell.json")


def run_chain(study, arm: str, level: int, noise: float, seed: int = 0, benchmark: str = "digits-mlp",
              cache: "CellCache | None" = None):
    """Run every cell `arm` level `level` needs, in order, then the cell itself (through
    `cache` when given: a cell trained before in this test run is copied, not retrained)."""
    from prunegen.engine.run import run
    from prunegen.study import chains

    cell = study.cell(benchmark, arm, level, noise, seed)
    for parent in chains.parents(cell):
        run_chain(study, parent.arm, parent.level, noise, seed, benchmark, cache)
    return cache.run(cell) if cache is not None else run(cell)


class CellCache:
    """Cells trained once per test run, keyed by their hash: the first `run` of a cell
    trains it and keeps a copy; every later `run` of a cell of the same hash (in any
    results root) copies that folder, mtimes and all, so its cell.json still verifies.
    For tests that read trained cells; a test of training itself calls `run` directly."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.trained: list[str] = []  # hashes trained here (the rest were copies)

    def run(self, cell) -> Path:
        from prunegen.engine.run import run

        kept = self.root / cell.hash
        if kept.is_dir() and not (cell.dir / "cell.json").exists():
            shutil.copytree(kept, cell.dir, dirs_exist_ok=True)  # copy2: mtimes kept
            return cell.dir
        out = run(cell)
        if not kept.is_dir():
            shutil.copytree(out, kept.with_suffix(".part"), ignore=shutil.ignore_patterns(".lock*"))
            kept.with_suffix(".part").rename(kept)
            self.trained.append(cell.hash)
        return out


def snakemake(workdir: Path, study, *args, config: tuple[str, ...] = (), check: bool = True,
              **kw) -> subprocess.CompletedProcess:
    """Run the workflow on `study` (and the other `config` key=value entries) in `workdir`
    (2 cores); raise with its output on failure."""
    # `args` before --config, whose values run to the end: a target there would be taken for one
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", *args, "--config", f"study={study}", *config]
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and out.returncode != 0:
        raise AssertionError(f"snakemake failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}")
    return out


def corrupt(path: Path, how: str) -> None:
    """Truncate a file to half, or garble 8 bytes in its middle (same size)."""
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:  # garbled: same size, bytes in the middle changed
        mid = len(data) // 2
        path.write_bytes(data[:mid] + bytes(b ^ 0xFF for b in data[mid:mid + 8]) + data[mid + 8:])


def numbers_not_in_tables(text: str, tables_dir: Path, names=None, benchmark: str | None = None,
                          quoted: set[str] = frozenset()) -> list[str]:
    """The numbers a page prints (or one benchmark's section of it) that no table beside it
    holds (of `names`; default every Parquet file there), formatted as the page formats
    them; `quoted` are allowed anyway (figures quoted for the paper)."""
    import pandas as pd

    from prunegen.analysis.report import markdown

    if benchmark is not None:
        text = text.split(f"## Benchmark `{benchmark}`")[1].split("\n## ")[0]
    paths = [tables_dir / f"{n}.parquet" for n in names] if names is not None else sorted(tables_dir.glob("*.parquet"))
    known = set()
    for path in paths:
        df = pd.read_parquet(path)
        if benchmark is not None and "benchmark" in df:
            df = df[df["benchmark"] == benchmark]
        values = df.select_dtypes("number").to_numpy(float).ravel()
        known |= {markdown.pct(v) for v in values} | {markdown.num(v) for v in values} | \
            {markdown.points(v) for v in values}
    return [n for n in markdown.numbers(text) if n not in known and n not in quoted]


def page_numbers_in_tables(text: str, tables_dir: Path, benchmark: str | None = None) -> list[str]:
    """A results page's numbers that none of its tables (and verdict records) hold, the
    figures quoted for the paper aside."""
    from prunegen.analysis.report.tables import PAGE_TABLES
    from prunegen.analysis.verdicts import paper

    quoted = {f"{abs(q.figure) * 100:.2f}%" for q in paper.QUOTED}  # the figures, and their context
    quoted |= {n for q in paper.QUOTED for n in re.findall(r"\d+\.\d{2}%", q.context)}
    quoted |= {f"{100 * q.noise:.2f}%" for q in paper.QUOTED if q.noise is not None}
    return numbers_not_in_tables(text, tables_dir, (*PAGE_TABLES, "verdicts"), benchmark, quoted)


# Pinned: these change only when SCHEMA_VERSION or a resolved hyperparameter changes.
# If a pin fails, every existing result would be silently re-run or mismatched: bump
# SCHEMA_VERSION deliberately and update the pins in the same commit.
PINNED = {
    ("dense", 0, 0.0, 0): "6f4c92cf335d9241",
    ("imp", 2, 0.2, 0): "3be61180f743e2a8",
    ("downscaled_extended", 1, 0.0, 0): "de1f6dce24bccdbe",
}
PINNED_STUDY = """
study: pinned
benchmarks:
  digits-mlp:
    dataset: digits
    model: {name: mlp, hidden: [64, 32]}
    train: {epochs: 3, batch_size: 64, lr: 0.05}
    prune: {fraction: 0.2}
arms: [dense, imp, downscaled_extended]
levels: 2
noise: [0.0, 0.2]
seeds: [0]
"""


def write_image_folders(root: Path, *, classes: int = 3, train: int = 24, val: int = 6, size=(20, 24),
                        seed: int = 0) -> Path:
    """An image-folder dataset of PNGs (root/train/class<c>/, root/val/class<c>/): noise with one
    colour channel raised per class, so a small model learns it."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("val", val)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                a = rng.integers(0, 90, (*size, 3)).astype(np.uint8)
                a[:, :, c % 3] += 150
                Image.fromarray(a).save(folder / f"img{i:03d}.png")
    return root
