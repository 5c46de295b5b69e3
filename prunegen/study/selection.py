"""A slice of a study: the cells that match a selection, and the parents they need.

    benchmark=cifar10-resnet20 noise=0,0.125        (Snakemake: --config select="...")
    arm=imp,random level=1-4 seed=0                  (prunegen plan / status: --select "...")

Terms are separated by spaces; each is `key=value[,value...]` over the cell keys
(benchmark, arm, noise, seed, level), and a cell matches when it matches every term.
Integer keys (seed, level) take ranges `lo-hi` too. Level 0 is the shared dense cell,
so `arm=dense` and `level=0` select the same cells. Every value must be one the study
has: a typo fails with one message naming the term, never an empty slice.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import chains
from .grid import KEYS, Cell, Study, StudyError, format_noise


@dataclass(frozen=True)
class Selection:
    text: str
    allowed: dict  # key -> frozenset of typed values; a key absent here matches anything

    def matches(self, cell: Cell) -> bool:
        key = cell.key
        return all(key[k] in values for k, values in self.allowed.items())


def _ints(term: str, text: str) -> set[int]:
    out: set[int] = set()
    for part in text.split(","):
        lo, sep, hi = part.partition("-")
        try:
            lo_i = int(lo)
            hi_i = int(hi) if sep else lo_i
        except ValueError:
            raise StudyError(f"select: {term!r}: {part!r} is not an integer or a range lo-hi") from None
        if hi_i < lo_i:
            raise StudyError(f"select: {term!r}: range {part!r} is empty")
        out.update(range(lo_i, hi_i + 1))
    return out


def _values(study: Study, term: str, key: str, text: str) -> frozenset:
    """The typed values of one term, each checked against what the study has."""
    if key == "benchmark":
        values, known = set(text.split(",")), set(study.benchmarks)
    elif key == "arm":
        values, known = set(text.split(",")), {"dense", *study.arms}
    elif key == "noise":
        try:
            values = {float(v) for v in text.split(",")}
        except ValueError:
            raise StudyError(f"select: {term!r}: noise values must be numbers") from None
        known = set(study.noise)
    elif key == "seed":
        values, known = _ints(term, text), set(study.seeds)
    else:
        values, known = _ints(term, text), set(range(study.levels + 1))
    unknown = values - known
    if unknown:
        spell = format_noise if key == "noise" else str
        raise StudyError(f"select: {term!r}: the study has no {key} "
                         f"{', '.join(sorted(spell(v) for v in unknown))}; it has "
                         f"{', '.join(spell(v) for v in sorted(known))}")
    return frozenset(values)


def parse(study: Study, text: str) -> Selection:
    """The selection `text` means for `study`; StudyError names a bad term."""
    allowed: dict = {}
    for term in str(text).split():
        key, sep, value = term.partition("=")
        if not sep or not value:
            raise StudyError(f"select: {term!r} is not key=value[,value...]")
        if key not in KEYS:
            raise StudyError(f"select: {term!r}: unknown key {key!r}; keys are {', '.join(KEYS)}")
        if key in allowed:
            raise StudyError(f"select: {key!r} is given twice")
        allowed[key] = _values(study, term, key, value)
    if not allowed:
        raise StudyError(f"select: {text!r} has no key=value term")
    return Selection(str(text), allowed)


def cells(study: Study, select: str | Selection | None = None) -> list[Cell]:
    """The cells of the study's grid that `select` matches, plus every cell they read
    (transitively), in the grid's order; the whole grid when `select` is None or empty."""
    grid = study.cells()
    if select is None or (isinstance(select, str) and not select.strip()):
        return grid
    sel = select if isinstance(select, Selection) else parse(study, select)
    needed: dict[str, Cell] = {}
    todo = [c for c in grid if sel.matches(c)]
    if not todo:
        raise StudyError(f"select: {sel.text!r} matches no cell of study {study.name!r} "
                         "(level 0 is arm dense; other arms have levels 1..L)")
    while todo:
        c = todo.pop()
        if c.relpath not in needed:
            needed[c.relpath] = c
            todo += chains.parents(c)
    in_grid = [c for c in grid if c.relpath in needed]
    # a parent outside the grid (say imp, for a study whose arms list random alone) is still a job
    seen = {c.relpath for c in in_grid}
    return in_grid + [c for c in needed.values() if c.relpath not in seen]
