"""Draw and save figures by name: `FIGURES` is the one registry of every figure a page or
the workflow draws (`prunegen figures` draws `records.layout.FIGURES`, the study's own)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...records import layout
from ...study.grid import Study
from ..merge import merge
from . import claims, methods
from .style import record, save

FIGURES = {
    "test_error": claims.plot_test_error,
    "train_loss": claims.plot_train_loss,
    "memorization": claims.plot_memorization,
    "decomposition": claims.plot_decomposition,
    "optimal_sparsity": claims.plot_optimal_sparsity,
    "completeness": claims.plot_completeness,
    "methods_sparsity": methods.plot_methods_sparsity,  # the methods page's (the supplement's Figure 8)
    "methods_epochs": methods.plot_methods_epochs,
    "tie": methods.plot_tie,
}


def draw(study: Study, tables_dir: str | Path | None = None, out_dir: str | Path | None = None) -> list[Path]:
    """Draw every figure from the study's tables (merging first if there are none)."""
    tables_dir = Path(tables_dir) if tables_dir is not None else layout.tables_dir(study.root)
    out = Path(out_dir) if out_dir is not None else layout.figures_dir(study.root)
    out.mkdir(parents=True, exist_ok=True)
    names = ("summary", "headline", "memorization", "optimal")
    if not all((tables_dir / f"{n}.parquet").exists() for n in names):
        merge(study, tables_dir)
    tables = {n: pd.read_parquet(tables_dir / f"{n}.parquet") for n in names}
    return draw_from(study, tables, out, layout.FIGURES)


def draw_from(study: Study, tables: dict[str, pd.DataFrame], out_dir: Path, names=layout.FIGURES,
              formats: tuple[str, ...] = ("png", "pdf"), dpi: int = 150) -> list[Path]:
    """Draw the figures `names` from tables already read (summary, headline, memorization, optimal)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        record(kind="figure", name=name)
        paths += save(FIGURES[name](study, tables), out_dir, name, formats, dpi)
    return paths
