"""What a study found: the paper's claims judged against its merged tables, and the page
that reports them.

    tables (analysis.merge) -> rules.judge -> verdict records -> page.render -> Markdown

- `stats`: paired per-seed differences, their Student-t interval, and the three outcomes.
- `paper`: what the paper states: each claim and the direction it expects, its epochs per
  cycle, the figures quoted for it.
- `rules`: pure functions from the tables to verdict records, one benchmark at a time.
- `page`: copies the tables beside a results page and renders it (and its figures).
"""

from .stats import HELD, INCONCLUSIVE, NOT_HELD

__all__ = ["HELD", "INCONCLUSIVE", "NOT_HELD"]
