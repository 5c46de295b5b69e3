"""Every complete cell's records -> the study's tables (`prunegen merge`).

Tables (`results/<study>/tables/<name>.parquet` and `.csv`, written atomically):

- `summary`: one row per complete cell: keys, every summary column, `nominal_sparsity`.
- `history`: one row per (cell, epoch) that the cell trained itself: a chain cell's file
  repeats its parent's epochs, the table holds each epoch once (`chain_history` puts a
  chain cell's whole curve back together).
- `subgroups`: per cell and subgroup of training examples (all, clean, noisy, and five
  quantile bins of the dense level-0 model's per-example training loss): mean training
  loss and error, and their relative change against dense level 0 of the same seed.
- `headline`: per benchmark, noise, level and arm: mean and 95% t-interval over seeds of
  test error, training loss (all / clean / noisy) and memorization, and of their relative
  change against dense level 0 (computed per seed, then averaged).
- `memorization`: per benchmark, arm, noise > 0 and level: fraction of noisy training
  examples fitted to their noisy label, mean and 95% t-interval over seeds.
- `optimal`: per benchmark, arm, noise and seed: the level with the lowest validation
  error (how the paper chooses the sparsity), its sparsity and test error, and dense's.
- `subgroup_headline`: `subgroups` averaged over seeds (mean and 95% t-interval).
- `compute`: per complete cell, what its job cost (prunegen.analysis.compute: Snakemake's
  benchmark file, and GPU samples where a GPU ran it); `compute.html` summarizes it
  per benchmark and arm for the Snakemake report.

The derived tables are pure functions of `summary` (prunegen.analysis.tables); this
module reads the cells (checksums verified as read: a corrupt cell is left out, with one
warning naming its file) and writes the tables atomically, as Parquet and CSV.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..records import layout, schemas, store
from ..records.schemas import KEY_COLUMNS as KEYS
from ..study.arm_specs import CHAIN_ARMS
from ..study.grid import Study
from . import compute
from .scan import scan
from .tables import (
    QUANTILE_BINS,
    SEED_GROUP,
    SUBGROUPS,
    headline,
    memorization,
    optimal,
    relative_change,
    sparsity_of,
    subgroup_headline,
)

log = logging.getLogger("prunegen")



# ---------------------------------------------------------------- grid and status


# ---------------------------------------------------------------- writing

def _write(table: pa.Table | pd.DataFrame, out_dir: Path, name: str) -> list[Path]:
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    pq_path, csv_path = out_dir / f"{name}.parquet", out_dir / f"{name}.csv"
    for path, write in ((pq_path, pq.write_table), (csv_path, pacsv.write_csv)):
        with store.atomic_write(path) as tmp:
            write(table, tmp)
    return [pq_path, csv_path]


def _stream(chunks, schema: pa.Schema, out_dir: Path, name: str) -> list[Path]:
    """Write an iterator of tables to Parquet (one row group per chunk) and CSV, in two
    threads while the next chunk is read, so only a few chunks are ever in memory."""
    pq_path, csv_path = out_dir / f"{name}.parquet", out_dir / f"{name}.csv"
    with (store.atomic_write(pq_path) as tmp_pq, store.atomic_write(csv_path) as tmp_csv,
          pq.ParquetWriter(tmp_pq, schema) as pw, pacsv.CSVWriter(tmp_csv, schema) as cw,
          ThreadPoolExecutor(2) as pool):
        pending = []
        for chunk in chunks:
            for f in pending:
                f.result()
            pending = [pool.submit(pw.write_table, chunk), pool.submit(cw.write_table, chunk)]
        for f in pending:
            f.result()
    return [pq_path, csv_path]


def _read_parquet(path: str, columns: list[str] | None = None, expected: dict | None = None) -> pa.Table:
    """A small Parquet file read whole into memory first: several times cheaper than
    Arrow's random-access reader (and than `pq.read_table`) on a file of a few KB.
    With `expected` (its cell.json entry), the bytes are checked against its size and
    checksum first: CorruptRecordError names the file."""
    with open(path, "rb") as f:
        data = f.read()
    if expected is not None:
        problem = store.mismatch(Path(path), expected, data)
        if problem:
            raise store.CorruptRecordError(problem)
    try:
        return pq.ParquetFile(pa.BufferReader(data)).read(columns=columns, use_threads=False)
    except (pa.ArrowException, OSError) as e:  # no checksum to compare with: still one clear error
        raise store.CorruptRecordError(f"{path}: not a readable Parquet file ({e})") from None


class Corrupt:
    """Cells found corrupt while the merge reads them: left out, each with one warning."""

    def __init__(self) -> None:
        self.dirs: dict[str, str] = {}

    def add(self, d: str, problem: str) -> None:
        if d not in self.dirs:
            self.dirs[d] = problem
            log.warning("corrupt record %s: its cell is left out of the tables", problem)

    def drop(self, df: pd.DataFrame) -> pd.DataFrame:
        return df[~df["dir"].isin(self.dirs)].reset_index(drop=True) if self.dirs else df


def _expected(files: dict | None, name: str) -> dict | None:
    return None if files is None else files.get(name)


def _read_cells(cells: pd.DataFrame, kind: str, pool: ThreadPoolExecutor, own_epochs: tuple[str, ...] = (),
                cells_per_chunk: int = 500, corrupt: Corrupt | None = None) -> pa.Table:
    """`<kind>.parquet` of each cell (rows of `cells`: keys + dir [+ files]), keys
    prepended as typed columns; a thread per file (opening thousands of small files is
    the cost). `own_epochs` (history): the chain arms, whose cells keep only the cycle
    they trained themselves. A file that does not match its checksum is left out (and
    noted in `corrupt`)."""
    corrupt = corrupt if corrupt is not None else Corrupt()
    files = cells["files"] if "files" in cells else pd.Series([None] * len(cells), index=cells.index)

    def one(d: str, f: dict | None) -> pa.Table | None:
        try:
            return _read_parquet(f"{d}/{kind}.parquet", expected=_expected(f, f"{kind}.parquet"))
        except FileNotFoundError:  # its cell.json says it was written
            corrupt.add(d, f"{d}/{kind}.parquet: missing")
        except store.CorruptRecordError as e:
            corrupt.add(d, str(e))
        return None

    schema = getattr(schemas, kind.upper())
    counts, parts = [], []
    # Concatenated 500 files at a time: thousands of one-row tables held at once cost
    # hundreds of MB in allocator overhead (10,000 summaries: ~450 MB against ~40 MB of data).
    for i in range(0, len(cells), cells_per_chunk):
        tables = list(pool.map(one, cells["dir"].iloc[i:i + cells_per_chunk], files.iloc[i:i + cells_per_chunk]))
        counts += [0 if t is None else t.num_rows for t in tables]
        tables = [t if t.schema.equals(schema) else t.select(schema.names).cast(schema)
                  for t in tables if t is not None]
        if tables:
            parts.append(pa.concat_tables(tables).combine_chunks())
    counts = np.array(counts, dtype=np.int64)
    body = pa.concat_tables(parts or [schema.empty_table()]).combine_chunks()
    rows = np.repeat(np.arange(len(cells)), counts)
    if own_epochs:
        chain = cells["arm"].isin(own_epochs).to_numpy()[rows]
        keep = ~chain | (body["cycle"].to_numpy() == cells["level"].to_numpy()[rows])
        body, rows = body.filter(pa.array(keep)), rows[keep]
    keys = pa.Table.from_pandas(cells[KEYS], schema=schemas.KEY_SCHEMA, preserve_index=False).take(rows)
    return pa.Table.from_arrays([*keys.columns, *body.columns], schema=pa.schema([*schemas.KEY_SCHEMA, *schema]))


def _history_chunks(done: pd.DataFrame, pool: ThreadPoolExecutor, corrupt: Corrupt,
                    chain_arms: tuple[str, ...] = CHAIN_ARMS, cells_per_chunk: int = 500):
    """The cells' history rows, 500 cells at a time, each epoch once: a chain
    cell (imp, extended, random) at level k keeps only its own cycle k, since its file
    repeats its parent's rows (see `chain_history`)."""
    for i in range(0, len(done), cells_per_chunk):
        yield _read_cells(done.iloc[i:i + cells_per_chunk], "history", pool, own_epochs=chain_arms,
                          corrupt=corrupt)


# ---------------------------------------------------------------- statistics


# ---------------------------------------------------------------- subgroups

_EXAMPLE_COLUMNS = ["split", "index", "is_noisy", "loss", "correct_observed", "correct_true"]


def _train_examples(path: str, expected: dict | None = None) -> dict[str, np.ndarray]:
    t = _read_parquet(path, _EXAMPLE_COLUMNS, expected)
    t = t.filter(pc.equal(t["split"], "train"))
    return {c: t[c].to_numpy(zero_copy_only=False) for c in _EXAMPLE_COLUMNS[1:]}


def loss_bins(dense_examples: str, bins: int = QUANTILE_BINS, expected: dict | None = None) -> np.ndarray | None:
    """Index -> quantile bin (0 = lowest loss) of the dense model's per-example training
    loss, as a lookup array (-1 for indices that are not training examples); bins hold
    equal counts, ties broken by example index. None without training examples."""
    ex = _train_examples(dense_examples, expected)
    if len(ex["index"]) == 0:
        return None
    order = np.lexsort((ex["index"], ex["loss"]))
    lookup = np.full(int(ex["index"].max()) + 1, -1, dtype=np.int64)
    lookup[ex["index"][order]] = np.arange(len(order)) * bins // len(order)
    return lookup


def _cell_subgroups(path: str, lookup: np.ndarray | None, expected: dict | None = None) -> list[dict] | str:
    """The cell's subgroup rows; the problem (a string) if its file is corrupt."""
    try:
        ex = _train_examples(path, expected)
    except FileNotFoundError:  # its cell.json says it was written
        return f"{path}: missing"
    except store.CorruptRecordError as e:
        return str(e)
    loss = ex["loss"].astype(np.float64)
    noisy = ex["is_noisy"].astype(bool)
    wrong, wrong_true = ~ex["correct_observed"].astype(bool), ~ex["correct_true"].astype(bool)
    b = np.full(len(noisy), -1)
    if lookup is not None:  # the same training examples as dense (same seed): its loss bins
        idx = ex["index"]
        b[idx < len(lookup)] = lookup[idx[idx < len(lookup)]]
    # Counts per (bin, noisy, wrong, wrong_true) in one pass: every fraction below is a
    # count over a count, exactly what the mean of the boolean subset gives.
    counts = np.bincount((b + 1) * 8 + noisy * 4 + wrong * 2 + wrong_true,
                         minlength=(QUANTILE_BINS + 1) * 8).reshape(QUANTILE_BINS + 1, 2, 2, 2)
    whole = counts.sum(0)
    clean_c, noisy_c = whole.copy(), whole.copy()
    clean_c[1], noisy_c[0] = 0, 0
    groups = [("all", None, whole), ("clean", ~noisy, clean_c), ("noisy", noisy, noisy_c)]
    if lookup is not None:
        groups += [(f"dense_loss_q{i + 1}", b == i, counts[i + 1]) for i in range(QUANTILE_BINS)]
    rows = []
    for name, m, c in groups:  # c: counts of this group by (noisy, wrong, wrong_true)
        n = int(c.sum())
        if n:
            rows.append({"subgroup": name, "examples": n, "noisy_fraction": int(c[1].sum()) / n,
                         "train_loss": float((loss if m is None else loss[m]).mean()),
                         "train_error": int(c[:, 1].sum()) / n, "train_error_true": int(c[:, :, 1].sum()) / n})
    return rows


def subgroups(study: Study, done: pd.DataFrame, workers: int | None = None,
              corrupt: Corrupt | None = None) -> pd.DataFrame:
    """Stream every complete cell's examples.parquet, one (benchmark, noise, seed) at a
    time and a few cells at once, into per-subgroup means (checksums verified as read)."""
    workers = workers or min(4, os.cpu_count() or 1)
    corrupt = corrupt if corrupt is not None else Corrupt()
    if "files" not in done:
        done = done.assign(files=None)
    rows: list[dict] = []
    name = "examples.parquet"
    with ThreadPoolExecutor(workers) as pool:
        for _, group in done.groupby(SEED_GROUP, sort=True):
            dense = group[group["arm"] == "dense"]
            lookup = None
            if len(dense):
                d, files = dense["dir"].iloc[0], dense["files"].iloc[0]
                try:
                    lookup = loss_bins(f"{d}/{name}", expected=_expected(files, name))
                except FileNotFoundError:
                    corrupt.add(d, f"{d}/{name}: missing")
                except store.CorruptRecordError as e:
                    corrupt.add(d, str(e))
            group = corrupt.drop(group)
            jobs = [(f"{d}/{name}", _expected(f, name)) for d, f in zip(group["dir"], group["files"])]
            results = pool.map(lambda job: _cell_subgroups(job[0], lookup, job[1]), jobs)
            for key, d, result in zip(group[KEYS].to_dict("records"), group["dir"], results):
                if isinstance(result, str):
                    corrupt.add(d, result)
                else:
                    rows += [{**key, **r} for r in result]
    cols = [*KEYS, "subgroup", "examples", "noisy_fraction", "train_loss", "train_error", "train_error_true"]
    df = pd.DataFrame(rows, columns=cols).astype({"noise": float, "seed": "int64", "level": "int64"})
    df.insert(len(KEYS), "nominal_sparsity", sparsity_of(study, df))
    df = relative_change(df, [*SEED_GROUP, "subgroup"], ["train_loss", "train_error"])
    df["_s"] = df["subgroup"].map({s: i for i, s in enumerate(SUBGROUPS)})
    return df.sort_values([*KEYS, "_s"]).drop(columns="_s").reset_index(drop=True)


# ---------------------------------------------------------------- merge

def merge(study: Study, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Merge the complete cells of the study's grid into tables; returns name -> Parquet
    path (the CSV twin sits beside it). Cells of other grids and stale cells are ignored;
    corrupt cells (found by the scan's size check, or by the checksum of every file the
    merge reads) are left out, each with a warning naming its file."""
    t0 = time.perf_counter()
    out = Path(out_dir) if out_dir is not None else layout.tables_dir(study.root)
    out.mkdir(parents=True, exist_ok=True)
    # The Parquet files are checksummed as they are read: the scan stats only model.pt and mask.pt
    grid = scan(study, read_later=tuple(f"{kind}.parquet" for kind in ("summary", "history", "examples")))
    corrupt = Corrupt()
    for d, problem in zip(grid["dir"][grid["state"] == "corrupt"], grid["problem"][grid["state"] == "corrupt"]):
        corrupt.add(d, problem)
    done = grid[grid["state"] == "complete"].reset_index(drop=True)
    written: dict[str, Path] = {}
    clock = {"scan": time.perf_counter() - t0}

    # Examples first (the largest files, read once): a corrupt one leaves its cell out of
    # the summary and history as well.
    sub = subgroups(study, done, corrupt=corrupt)
    done = corrupt.drop(done)
    clock["subgroups"] = time.perf_counter() - t0 - sum(clock.values())
    summary_schema = pa.schema([*schemas.KEY_SCHEMA, *schemas.SUMMARY, ("nominal_sparsity", pa.float64())])
    with ThreadPoolExecutor(max(2, min(8, os.cpu_count() or 1))) as pool:  # many small files
        summary = _read_cells(done, "summary", pool, corrupt=corrupt).to_pandas()
        summary = summary.merge(done[[*KEYS, "cell_hash"]], on=[*KEYS, "cell_hash"])  # this run's records only
        summary["nominal_sparsity"] = sparsity_of(study, summary)
        summary = summary.sort_values(KEYS, ignore_index=True)[summary_schema.names]
        done = done.merge(summary[KEYS], on=KEYS)  # cells whose summary is really there
        clock["summary"] = time.perf_counter() - t0 - sum(clock.values())
        history_schema = pa.schema([*schemas.KEY_SCHEMA, *schemas.HISTORY])
        written["history"] = _stream(_history_chunks(done, pool, corrupt, study.chain_arms), history_schema,
                                     out, "history")[0]
    clock["history"] = time.perf_counter() - t0 - sum(clock.values())
    kept = corrupt.drop(done)[KEYS]  # less the cells whose history turned out corrupt
    summary = summary.merge(kept, on=KEYS)
    sub = sub.merge(kept, on=KEYS)[sub.columns]
    written["summary"] = _write(pa.Table.from_pandas(summary, summary_schema, preserve_index=False),
                                out, "summary")[0]
    tables = {"subgroups": sub, "headline": headline(summary), "memorization": memorization(summary),
              "optimal": optimal(summary, study.levels), "subgroup_headline": subgroup_headline(sub),
              "compute": compute.table(study, done)}
    for name, df in tables.items():
        written[name] = _write(df, out, name)[0]
    # the report's summary of the compute table: a side output, not a table (merge returns tables)
    compute.write_html(compute.summary(tables["compute"]), out / "compute.html", study)
    clock["derived"] = time.perf_counter() - t0 - sum(clock.values())
    log.info("merged %d of %d cells into %s in %.1fs (%s); %d stale, %d missing, %d corrupt", len(kept), len(grid),
             out, sum(clock.values()), ", ".join(f"{k} {v:.1f}s" for k, v in clock.items()),
             int((grid["state"] == "stale").sum()), int((grid["state"] == "missing").sum()), len(corrupt.dirs))
    return {name: written[name] for name in layout.TABLES}
