"""A file system left clean (issue 30 item 4): what a run removes of the jobs and cells that
succeeded, what it packs, and what it never touches. The run on the real cluster, and the
file counts of a 1,000-cell run, are in tests/slurm/test_bad_days.py and docs/cluster.md."""

import pickle
import tarfile

from prunegen.cluster.slurm import cleanup


def submitit_job(folder, job_id, ok=True, array=None):
    for name in ("submitted.pkl", "0_log.out", "0_log.err"):
        (folder / f"{job_id}_{name}").write_text("x")
    with open(folder / f"{job_id}_0_result.pkl", "wb") as f:
        pickle.dump(("success", 0) if ok else ("error", "Traceback ..."), f)
    if array is not None:
        (folder / f"{array}_submission.sh").write_text("#!/bin/bash")
    else:
        (folder / f"{job_id}_submission.sh").write_text("#!/bin/bash")


def test_a_jobs_files_and_its_arrays_script_once_no_task_is_left(tmp_path):
    submitit_job(tmp_path, "12_0", array="12")
    submitit_job(tmp_path, "12_1", array="12")
    submitit_job(tmp_path, "12_10", array="12")
    first = {p.name for p in cleanup.job_files(tmp_path, "12_1")}
    assert first == {"12_1_submitted.pkl", "12_1_0_log.out", "12_1_0_log.err", "12_1_0_result.pkl"}  # not 12_10's
    for job in ("12_0", "12_1"):
        for p in cleanup.job_files(tmp_path, job):
            p.unlink()
    last = {p.name for p in cleanup.job_files(tmp_path, "12_10")}
    assert "12_submission.sh" in last and len(last) == 5
    assert cleanup.succeeded(tmp_path, "12_10") and not cleanup.succeeded(tmp_path, "99")


def test_a_run_cleans_what_succeeded_packs_its_logs_and_keeps_a_failure(tmp_path):
    run = tmp_path / ".snakemake/submitit/20260101T000000-abc"
    run.mkdir(parents=True)
    submitit_job(run, "7")
    submitit_job(run, "8", ok=False)
    (run / ".submission_file_a1.sh").symlink_to(run / "7_submission.sh")  # as submitit leaves them
    (run / ".submission_file_b2.sh").symlink_to(run / "8_submission.sh")
    logs = tmp_path / "results/s/logs/cells/benchmark=b/arm=dense"
    logs.mkdir(parents=True)
    good, bad = logs / "ok.log", logs / "failed.log"
    good.write_text("epoch 1 ... done\n")
    bad.write_text("Traceback ...\n")
    queue = run / "queue/abc/done"
    queue.mkdir(parents=True)
    (queue / "t1.json").write_text("{}")
    cleanup.write_list(run, ["7"], [str(good)], [str(queue / "t1.json")])
    removed = cleanup.clean(run)
    assert removed == {"submitit": 5, "logs": 1, "queue": 1}
    assert sorted(p.name for p in run.glob("8_*")) == ["8_0_log.err", "8_0_log.out", "8_0_result.pkl",
                                                       "8_submission.sh", "8_submitted.pkl"]  # the failure's, all kept
    assert not list(run.glob("7_*")) and not good.exists() and bad.exists()
    assert [p.name for p in run.glob(".submission_file_*")] == [".submission_file_b2.sh"]  # the failure's link
    archive = tmp_path / "results/s/logs/cells" / f"done-{run.name}.tar.gz"
    with tarfile.open(archive) as tar:
        assert tar.getnames() == ["benchmark=b/arm=dense/ok.log"]
        assert tar.extractfile("benchmark=b/arm=dense/ok.log").read() == b"epoch 1 ... done\n"
    assert cleanup.clean(run) == {}  # done once


def test_files_kept_n_days_go_with_the_first_run_after_them(tmp_path):
    root = tmp_path / "submitit"
    old, new = root / "old", root / "new"
    for run in (old, new):
        run.mkdir(parents=True)
        submitit_job(run, "1")
        cleanup.write_list(run, ["1"], [], [])
    now = (root / "new" / cleanup.LIST).stat().st_mtime
    import json
    meta = json.loads((old / cleanup.LIST).read_text())
    (old / cleanup.LIST).write_text(json.dumps({**meta, "written": now - 3 * 86400}))
    assert cleanup.sweep(root, keep_days=7, now=now) == {}  # 3 days old: kept
    assert cleanup.sweep(root, keep_days=2, now=now, current=new) == {"submitit": 5, "logs": 0, "queue": 0}
    assert not list(old.glob("1_*")) and len(list(new.glob("1_*"))) == 5
