"""What a study found: the paper's claims judged against its merged tables, as pure
functions from tables to verdict records (the pages that print them: prunegen.analysis.report).

    tables (prunegen.analysis.merge) -> rules.judge -> verdict records

- `stats`: paired per-seed differences, their Student-t interval, and the three outcomes.
- `paper`: what the paper states: each claim and the direction it expects, its epochs per
  cycle, the figures quoted for it.
- `rules`: the claims, one benchmark at a time.
- `methods`: pruning methods, controls and the TIE claim, for a study that defines arms.
- `changes`: what moved between two judgements of a study.
"""
