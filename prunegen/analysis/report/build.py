"""`prunegen results`: copy the study's tables beside the page, then render the page the
study calls for (the claims page, or the methods page for a study that defines arms)."""

from __future__ import annotations

from pathlib import Path

from ...study.grid import Study
from . import claims_page, methods_page
from .tables import collect


def build(study: Study, page: str | Path, source: str, tables_from: Path | None = None,
          refresh: bool = True, since: Path | None = None, since_label: str | None = None,
          beside: tuple[Path, Path, str] | None = None) -> list[Path]:
    """`collect` (unless refresh is False: render from the copies already beside the page) then render."""
    page = Path(page)
    tables_dir = page.parent / "results" / study.name / "tables"
    figures_dir = page.parent / "results" / study.name / "figures"
    if refresh:
        collect(study, tables_dir, tables_from, since, since_label, beside)
    render = methods_page.render if study.arm_specs else claims_page.render
    return render(study, page, tables_dir, figures_dir, source)
