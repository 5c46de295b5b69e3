"""Where every cell of a study's grid stands: complete, stale, corrupt or missing, with
the engine that computed each complete cell (`prunegen status`). Reads each cell.json and
stats its record files; writes nothing."""

from __future__ import annotations

import pandas as pd

from ..records import provenance, store
from ..records.schemas import KEY_COLUMNS as KEYS
from ..study.arm_specs import arm_rank
from ..study.grid import Study

STATES = ("complete", "stale", "corrupt", "missing")


def scan(study: Study, cells: list | None = None, verify: bool = False,
         read_later: tuple[str, ...] = ()) -> pd.DataFrame:
    """One row per grid cell (or per cell of `cells`, say a slice): keys, `cell_hash`
    (current), `dir`, `state` (complete / stale / corrupt / missing), `problem` (what is
    corrupt), `files` (the sizes and checksums its cell.json records; None for a cell
    written before checksums existed), `verified` (False for such a cell) and `engine`
    (prunegen.records.provenance.label of a complete cell, else None). Reads each
    cell.json and stats its record files (sizes); `verify` checksums every record file
    too; `read_later` (store.check) are left to the caller's checksum on read. Sorted by keys."""
    rows = []
    for cell in study.cells() if cells is None else cells:
        d = cell.dir  # a few path joins: built once per cell
        st = store.check(d, cell.hash, verify, read_later)
        rows.append({**cell.key, "cell_hash": cell.hash, "dir": str(d), "state": st.state, "problem": st.problem,
                     "files": st.meta.get("files") if st.state == "complete" else None, "verified": st.verified,
                     "engine": provenance.label(st.meta) if st.state == "complete" else None})
    df = pd.DataFrame(rows, columns=[*KEYS, "cell_hash", "dir", "state", "problem", "files", "verified", "engine"])
    df = df.astype({"noise": float, "seed": "int64", "level": "int64"})
    return df.sort_values(KEYS, ignore_index=True)


def status(study: Study, grid: pd.DataFrame | None = None, verify: bool = False) -> pd.DataFrame:
    """Per benchmark and arm: how many grid cells are complete, stale (cell.json of
    another hash), corrupt (a record file that does not match its cell.json) and
    missing; `unverified`: of the complete ones, those written before checksums existed
    (read as they are: nothing to verify them against). The corrupt cells' problems are
    in `.attrs["corrupt"]`; the engines of the complete cells, with how many cells each
    computed (most first), in `.attrs["engines"]`."""
    grid = scan(study, verify=verify) if grid is None else grid
    counts = (pd.crosstab([grid["benchmark"], grid["arm"]], grid["state"])
              .reindex(columns=list(STATES), fill_value=0).reset_index())
    counts.columns.name = None
    counts.insert(2, "cells", counts[list(STATES)].sum(axis=1))
    legacy = grid[(grid["state"] == "complete") & ~grid["verified"].astype(bool)]
    unverified = legacy.groupby(["benchmark", "arm"]).size()
    counts.insert(4, "unverified", [int(unverified.get((b, a), 0)) for b, a in zip(counts["benchmark"], counts["arm"])])
    order = counts.assign(_r=counts["arm"].map(arm_rank)).sort_values(["benchmark", "_r"]).index
    out = counts.loc[order].reset_index(drop=True).astype({c: "int64" for c in ("cells", "unverified", *STATES)})
    out.attrs["corrupt"] = grid.loc[grid["state"] == "corrupt", "problem"].tolist()
    out.attrs["engines"] = provenance.tally(grid.loc[grid["state"] == "complete", "engine"])
    return out


def format_status(df: pd.DataFrame, current_engine: str | None = None) -> str:
    columns = ("cells", *STATES) + (("unverified",) if "unverified" in df else ())
    total = {"benchmark": "total", "arm": "", **{c: int(df[c].sum()) for c in columns}}
    table = pd.concat([df, pd.DataFrame([total])], ignore_index=True)
    done = total["complete"] / total["cells"] if total["cells"] else 0.0
    corrupt = "".join(f"corrupt: {p}\n" for p in df.attrs.get("corrupt", []))
    legacy = f", {total['unverified']} of them unverified: written before checksums" if total.get("unverified") else ""
    return (table.to_string(index=False) + f"\n\n{total['complete']} of {total['cells']} cells complete "
            f"({done:.0%}{legacy}), {total['stale']} stale, {total['missing']} missing, {total['corrupt']} corrupt\n"
            + format_engines(df.attrs.get("engines", []), current_engine)
            + (f"\n{corrupt}(the workflow re-runs corrupt cells and the cells after them)\n" if corrupt else ""))


def format_engines(engines: list[tuple[str, int]], current: str | None = None) -> str:
    """Which engine computed the complete cells: one line, or a warning when there are
    several (an engine change can change a cell's last bits; see prunegen.records.provenance).
    `current`: this checkout's engine, marked where cells have it."""
    # this checkout's source digest, on whatever device and precision its cells ran
    mark = lambda e: e + (", this checkout's" if current and e.split(" ")[0] == current.split(" ")[0] else "")  # noqa: E731
    if len(engines) <= 1:
        return "".join(f"engine: {mark(e)} (all {n} complete cells)\n" for e, n in engines)
    lines = "".join(f"  {mark(e)}: {n} cell{'s' if n != 1 else ''}\n" for e, n in engines)
    return (f"warning: the complete cells come from {len(engines)} engines, whose numbers can differ in the "
            f"last bits:\n{lines}(the cell hash leaves the engine out, so the workflow keeps them all; "
            "`prunegen status --engine ENGINE` lists one engine's cells, to delete and re-run)\n")
