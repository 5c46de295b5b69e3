"""A study's results from Python (a notebook): `prunegen.open(study)` returns `Results`.

    import prunegen
    r = prunegen.open("workflow/studies/demo.yaml")
    r.status()                                  # every cell of the grid and where it stands
    r.table("summary")                          # a merged table (prunegen merge wrote it)
    r.verdicts()                                # the claims judged on the merged tables
    r.examples(arm="imp", level=2, columns=["split", "loss"], where=("split", "==", "train"))
    r.figure("memorization")                    # a matplotlib Figure

Everything reads records as the workflow does: only complete cells of the study's current
hashes, every file checked against its cell.json before it is read. No torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from ..records import layout, schemas, store
from ..study.grid import KEYS, Study, StudyError
from ..study.load import load_study
from ..study.selection import cells as selected_cells
from .figures.draw import FIGURES
from .scan import scan
from .verdicts import rules


@dataclass
class Results:
    study: Study
    files_read: list[Path] = field(default_factory=list)  # the record files the last examples() read

    @classmethod
    def open(cls, study: str | Path | Study, results_root: str | Path | None = None,
             set_text: str | None = None) -> "Results":
        if isinstance(study, Study):
            return cls(study)
        overrides = {"results_root": str(results_root)} if results_root is not None else None
        return cls(load_study(study, overrides, set_text))

    def status(self, select: str | None = None) -> pd.DataFrame:
        """One row per cell (of the slice `select`, prunegen.study.selection): keys, hash,
        folder, state (complete, stale, corrupt, missing) and the engine that computed it."""
        return scan(self.study, selected_cells(self.study, select))

    def table(self, name: str) -> pd.DataFrame:
        """A merged table of the study (summary, history, headline, memorization, optimal, ...)."""
        path = layout.tables_dir(self.study.root) / f"{name}.parquet"
        if name not in layout.TABLES:
            raise StudyError(f"no table {name!r}; the study's tables are {', '.join(layout.TABLES)}")
        if not path.is_file():
            raise StudyError(f"{path}: not merged yet; run `prunegen merge --study {self.study.path}` (or the "
                             "workflow) first")
        return pd.read_parquet(path)

    def verdicts(self) -> pd.DataFrame:
        """The paper's claims judged on the merged tables (one record per place judged;
        `rules.summarize` gives one verdict per benchmark and claim)."""
        tables = {n: self.table(n) for n in ("summary", "optimal")}
        return rules.judge(tables, self.study.levels, {b: bm.prune.fraction for b, bm in self.study.benchmarks.items()})

    def examples(self, columns: list[str] | None = None, where: tuple | None = None,
                 **keys) -> pd.DataFrame:
        """Per-example records straight from the cells: only the complete cells whose keys
        match `keys` (benchmark, arm, noise, seed, level: a value or a list) are opened, each
        checked against its cell.json first; `where` = (column, op, value) filters rows as
        pyarrow reads them. The keys come back as columns."""
        unknown = sorted(set(keys) - set(KEYS))
        if unknown:
            raise StudyError(f"examples: no key {unknown[0]!r}; keys are {', '.join(KEYS)}")
        wanted = {k: {v} if not isinstance(v, (list, tuple, set)) else set(v) for k, v in keys.items()}
        cells = [c for c in self.study.cells() if all(c.key[k] in vs for k, vs in wanted.items())]
        files = []
        for c in cells:
            state = store.check(c.dir, c.hash)
            if state.state != "complete":
                continue
            store.read_verified(c.dir, layout.EXAMPLES_FILE, state.meta)  # checksummed before it is trusted
            files.append(c.dir / layout.EXAMPLES_FILE)
        self.files_read = files
        schema = pa.schema([*schemas.KEY_SCHEMA, *schemas.EXAMPLES])
        if not files:
            return schema.empty_table().to_pandas()
        dataset = ds.dataset([str(f) for f in files], format="parquet", schema=schema,
                             partitioning=ds.partitioning(schemas.KEY_SCHEMA, flavor="hive"),
                             partition_base_dir=str(self.study.root / "cells"))
        expr = None
        if where is not None:
            column, op, value = where
            f = ds.field(column)
            expr = {"==": f == value, "!=": f != value, "<": f < value, "<=": f <= value, ">": f > value,
                    ">=": f >= value, "in": f.isin(list(value))}[op]
        return dataset.to_table(columns=columns and [*[k for k in KEYS if k not in columns], *columns],
                                filter=expr).to_pandas()

    def figure(self, name: str):
        """One of the study's figures (prunegen.analysis.figures.draw.FIGURES) as a matplotlib Figure."""
        if name not in FIGURES:
            raise StudyError(f"no figure {name!r}; figures are {', '.join(FIGURES)}")
        tables = {n: self.table(n) for n in ("summary", "headline", "memorization", "optimal")}
        return FIGURES[name](self.study, tables)
