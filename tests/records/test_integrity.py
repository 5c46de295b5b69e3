"""Corrupt records are caught (status, merge, a child's run-cell) and one process at a time writes a cell."""

import json
import logging
import os
import shutil
import socket

import pytest

from prunegen import cli
from prunegen.analysis import merge, scan
from prunegen.records import layout, lock, store
from prunegen.study.load import load_study
from tests.helpers import FILES, SMOKE, corrupt, run_chain


@pytest.fixture(scope="module")
def done(tmp_path_factory, cell_cache):
    """dense L0 and imp L1 (noise 0.0) complete."""
    root = tmp_path_factory.mktemp("results")
    study = load_study(SMOKE, {"results_root": str(root)})
    run_chain(study, "imp", 1, 0.0, cache=cell_cache)
    return study




@pytest.mark.parametrize("how", ["truncated", "garbled"])
@pytest.mark.parametrize("name", FILES)
def test_a_corrupt_record_is_named_by_status_merge_and_a_childs_run_cell(done, tmp_path, name, how, caplog, capsys):
    shutil.copytree(done.root / "cells", tmp_path / done.name / "cells")
    study = load_study(SMOKE, {"results_root": str(tmp_path)})
    cell = study.cell("digits-mlp", "imp", 1, 0.0, 0)
    path = cell.dir / name
    corrupt(path, how)

    status = scan.status(study).set_index("arm")
    assert status.loc["imp", "corrupt"] == 1 and status.loc["dense", "complete"] == 2 - 1  # dense: one per noise
    assert any(str(path) in p for p in status.attrs["corrupt"])

    with caplog.at_level(logging.WARNING, logger="prunegen"):
        merged = merge.merge(study)
    import pandas as pd
    summary = pd.read_parquet(merged["summary"])
    assert list(summary.arm) == ["dense"]
    assert any(str(path) in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)

    rc = cli.main(["run-cell", "--study", str(SMOKE), "--results-root", str(tmp_path), "--benchmark", "digits-mlp",
                   "--arm", "imp", "--level", "2", "--noise", "0.0", "--seed", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and str(path) in err and "delete" in err


@pytest.mark.parametrize("name", ["model.pt", "history.parquet"])
def test_a_garbled_file_with_its_mtime_restored_is_caught_when_read_or_verified(done, tmp_path, name, capsys,
                                                                              caplog):
    shutil.copytree(done.root / "cells", tmp_path / done.name / "cells")
    study = load_study(SMOKE, {"results_root": str(tmp_path)})
    cell = study.cell("digits-mlp", "imp", 1, 0.0, 0)
    path, st = cell.dir / name, (cell.dir / name).stat()
    if name.endswith(".parquet"):  # garbled where it still parses (the footer's writer name): only a checksum sees it
        data = path.read_bytes()
        assert b"parquet-cpp-arrow" in data
        path.write_bytes(data.replace(b"parquet-cpp-arrow", b"parquet-cpp-ARROW"))
    else:
        corrupt(path, "garbled")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert scan.status(study).set_index("arm").loc["imp", "corrupt"] == 0  # the cheap check cannot see it
    assert scan.status(study, verify=True).set_index("arm").loc["imp", "corrupt"] == 1
    with caplog.at_level(logging.WARNING, logger="prunegen"):  # the merge checksums the files it reads
        import pandas as pd
        summary = pd.read_parquet(merge.merge(study)["summary"])
    read = name.endswith(".parquet")
    assert sorted(summary.arm) == (["dense"] if read else ["dense", "imp"])
    assert any(str(path) in r.getMessage() for r in caplog.records) == read
    rc = cli.main(["run-cell", "--study", str(SMOKE), "--results-root", str(tmp_path), "--benchmark", "digits-mlp",
                   "--arm", "imp", "--level", "2", "--noise", "0.0", "--seed", "0"])
    assert rc == 2 and str(path) in capsys.readouterr().err


def test_a_live_lock_names_its_holder_and_a_dead_or_silent_one_is_broken(tmp_path, monkeypatch):
    folder = tmp_path / "cell"
    folder.mkdir()
    holder = {"host": "node17", "pid": 4242, "slurm_job_id": "991", "since": "then"}
    (folder / layout.LOCK_FILE).write_text(json.dumps(holder))
    with pytest.raises(lock.CellLockedError, match="host node17 pid 4242 SLURM job 991"):
        lock.CellLock(folder).acquire()
    os.utime(folder / layout.LOCK_FILE, (0, 0))  # its heartbeat stopped long ago: the node's job died
    with lock.CellLock(folder):
        assert json.loads((folder / layout.LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (folder / layout.LOCK_FILE).exists()

    dead = {"host": socket.gethostname(), "pid": 2 ** 22 + 12345, "slurm_job_id": None, "since": "then"}
    (folder / layout.LOCK_FILE).write_text(json.dumps(dead))  # a SIGKILLed process on this host
    with lock.CellLock(folder):
        pass
    with lock.CellLock(folder):  # a live holder in this very process blocks a second one
        with pytest.raises(lock.CellLockedError, match=f"pid {os.getpid()}"):
            lock.CellLock(folder).acquire()


def legacy(cell_dir):
    """Rewrite cell.json as prunegen wrote it before record checksums existed."""
    meta = json.loads((cell_dir / "cell.json").read_text())
    del meta["files"], meta["cell_json_sha256"]
    store.write_json(meta, cell_dir / "cell.json")


def test_a_cell_written_before_checksums_is_complete_unverified_and_read_by_merge_and_children(done, tmp_path,
                                                                                             capsys):
    shutil.copytree(done.root / "cells", tmp_path / done.name / "cells")
    study = load_study(SMOKE, {"results_root": str(tmp_path)})
    for arm, level in (("dense", 0), ("imp", 1)):
        legacy(study.cell("digits-mlp", arm, level, 0.0, 0).dir)
    for verify in (False, True):
        status = scan.status(study, verify=verify).set_index("arm")
        assert status.loc["imp", ["complete", "unverified", "corrupt"]].tolist() == [1, 1, 0]
        assert status.loc["dense", ["complete", "unverified"]].tolist() == [1, 1]
    assert "2 of them unverified: written before checksums" in scan.format_status(status.reset_index())

    import pandas as pd
    summary = pd.read_parquet(merge.merge(study)["summary"])
    assert sorted(summary.arm) == ["dense", "imp"]

    args = ["--study", str(SMOKE), "--results-root", str(tmp_path), "--benchmark", "digits-mlp", "--noise", "0.0",
            "--seed", "0"]
    imp1 = study.cell("digits-mlp", "imp", 1, 0.0, 0).dir
    before = (imp1 / "model.pt").stat().st_mtime_ns
    assert cli.main(["run-cell", *args, "--arm", "imp", "--level", "1"]) == 0  # complete: not run again
    assert (imp1 / "model.pt").stat().st_mtime_ns == before
    assert cli.main(["run-cell", *args, "--arm", "imp", "--level", "2"]) == 0  # reads its legacy parent
    assert scan.status(study).set_index("arm").loc["imp", ["complete", "unverified"]].tolist() == [2, 1]

    # no checksum to compare with, yet a truncated legacy file gets one clear error naming it
    shutil.rmtree(study.cell("digits-mlp", "imp", 2, 0.0, 0).dir)
    (imp1 / "model.pt").write_bytes((imp1 / "model.pt").read_bytes()[:100])
    capsys.readouterr()
    assert cli.main(["run-cell", *args, "--arm", "imp", "--level", "2"]) == 2
    assert str(imp1 / "model.pt") in capsys.readouterr().err


@pytest.mark.parametrize("name", ["history.parquet", "examples.parquet", "summary.parquet"])
def test_a_missing_parquet_file_leaves_its_cell_out_of_the_merge(done, tmp_path, name, caplog):
    """The merge checksums its Parquet files as it reads them (its scan does not stat them)."""
    shutil.copytree(done.root / "cells", tmp_path / done.name / "cells")
    study = load_study(SMOKE, {"results_root": str(tmp_path)})
    path = study.cell("digits-mlp", "imp", 1, 0.0, 0).dir / name
    path.unlink()
    with caplog.at_level(logging.WARNING, logger="prunegen"):
        merged = merge.merge(study)
    import pandas as pd
    assert all(set(pd.read_parquet(merged[t]).arm) == {"dense"} for t in ("summary", "history", "subgroups"))
    assert any(f"{path}: missing" in r.getMessage() for r in caplog.records)
