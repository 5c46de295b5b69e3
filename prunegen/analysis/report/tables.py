"""The table copies beside a page: `collect` copies the merged tables a page reads from
`results/<study>/tables` next to it, with a one-row `compute` table (cells, epochs,
seconds, machines, engines) and any earlier verdict records for "What changed"; the page
then renders from those copies alone, so it regenerates byte for byte from what is
committed beside it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd

from ...records import layout, store
from ...study.grid import Study
from .. import compute
from ..verdicts import changes
from ..verdicts.rules import COLUMNS as RECORD


def read_since(path) -> pd.DataFrame:
    """Earlier verdict records (a page's `verdicts.parquet`); one error naming the file
    when it is not one."""
    try:
        v = pd.read_parquet(path)
    except (OSError, ValueError) as e:
        raise TablesError(f"{path}: not readable as verdict records ({e})") from None
    missing = [c for c in RECORD if c not in v]
    if missing:
        raise TablesError(f"{path}: not verdict records (no column {', '.join(missing)})")
    return v


PAGE_TABLES = ("summary", "headline", "memorization", "optimal", "compute")  # merged tables + the page row
BESIDE_FILE = "beside.json"  # the study a page sets beside its own: {"study": file, "tables": folder, "label": text}


class TablesError(FileNotFoundError):
    """The merged tables (or the page's copies of them) are not there."""


def collect(study: Study, tables_dir: Path, tables_from: Path | None = None, since: Path | None = None,
            since_label: str | None = None, beside: tuple[Path, Path, str] | None = None) -> None:
    """Copy the merged tables the page needs into `tables_dir`, plus the compute table, the
    earlier verdict records `since` (for the "What changed" section) with their label, and
    `beside` (another study's file, its page tables and a label: the "Two regimes" section)."""
    src = Path(tables_from) if tables_from is not None else layout.tables_dir(study.root)
    missing = [f"{src / n}.parquet" for n in PAGE_TABLES[:-1] if not (src / f"{n}.parquet").is_file()]
    if missing:
        raise TablesError(f"no merged tables: {', '.join(missing)}; run the study (snakemake) or "
                          f"`prunegen merge --study ...` first")
    earlier = None if since is None else read_since(since)  # before render overwrites it
    tables_dir.mkdir(parents=True, exist_ok=True)
    if earlier is not None:
        with store.atomic_write(tables_dir / changes.SINCE_FILE) as tmp:
            # a label given wins; re-collecting kept records keeps theirs
            earlier.assign(since=since_label or changes.label_of(earlier, str(since))).to_parquet(tmp, index=False)
    if beside is not None:
        study_file, other_tables, label = beside
        read(Path(other_tables))  # refused here, naming what is missing, rather than at render
        spec = {"study": str(study_file), "label": label,
                "tables": os.path.relpath(Path(other_tables).resolve(), tables_dir.resolve())}
        store.write_json(spec, tables_dir / BESIDE_FILE)
    for n in PAGE_TABLES[:-1]:
        with store.atomic_write(tables_dir / f"{n}.parquet") as tmp:
            shutil.copyfile(src / f"{n}.parquet", tmp)
    summary = pd.read_parquet(src / "summary.parquet")
    with store.atomic_write(tables_dir / "compute.parquet") as tmp:
        compute.page_row(study, summary).to_parquet(tmp, index=False)


def read(tables_dir: Path) -> dict[str, pd.DataFrame]:
    """The table copies beside a page, by name; TablesError names the ones missing."""
    missing = [str(tables_dir / f"{n}.parquet") for n in PAGE_TABLES if not (tables_dir / f"{n}.parquet").is_file()]
    if missing:
        raise TablesError(f"no page tables: {', '.join(missing)}; run `prunegen results` without "
                          "--from-page-tables to copy them from the study's merged tables")
    return {n: pd.read_parquet(tables_dir / f"{n}.parquet") for n in PAGE_TABLES}
