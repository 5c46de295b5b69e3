"""The SLURM side without SLURM: what a request asks sbatch for, the shared watcher's
judgements fed SLURM's own words (a fake runner), the submitter's back-off, a job's
requeue rule, the executor plugin's discovery, what it asks of SLURM for a Snakemake job
(snakemake_executor_plugin_prunegen.requests), and a dry run on a machine with no SLURM."""

from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from prunegen.cluster.slurm import job as slurm_job
from prunegen.cluster.slurm import request as slurm_request
from prunegen.cluster.slurm import status as slurm_status
from prunegen.cluster.slurm import submit as slurm_submit
from tests.slurm.helpers import PROFILE, PY, SLURM_BINARIES, SMOKE, SNAKEFILE, SNAKEMAKE, job_stats


def test_request_maps_resources_to_submitit_parameters():
    r = slurm_request.Request(cpus=4, mem_mb=12000, runtime_min=90, gpus=1, gpu_model="a100", partition="gpu",
                      account="lab", constraint="ib", qos="high", extra="--exclusive --mail-type=FAIL -x n13",
                      job_name="smk-cell")
    p = r.submitit_parameters()
    assert p["cpus_per_task"] == 4 and p["mem"] == "12000M" and p["time"] == 90
    assert p["gpus_per_node"] == "a100:1" and p["partition"] == "gpu" and p["account"] == "lab"
    assert p["constraint"] == "ib" and p["qos"] == "high" and p["job_name"] == "smk-cell"
    assert p["additional_parameters"] == {"exclusive": True, "mail-type": "FAIL", "exclude": "n13"}
    assert slurm_request.Request(gpus=2).submitit_parameters()["gpus_per_node"] == 2
    assert "gpus_per_node" not in slurm_request.Request().submitit_parameters()
    # the sbatch script submitit would write (no SLURM needed for that)
    from submitit.slurm.slurm import _make_sbatch_string

    script = _make_sbatch_string(command="true", folder="/f", **p)
    for line in ("--cpus-per-task=4", "--mem=12000M", "--time=90", "--gpus-per-node=a100:1", "--partition=gpu",
                 "--account=lab", "--constraint=ib", "--qos=high", "--exclusive", "--exclude=n13"):
        assert f"#SBATCH {line}" in script, (line, script)


def fake_slurm(table: dict[str, object], calls: list):
    """A runner answering like SLURM from ``table``: command name -> (rc, stdout, stderr)
    or a callable(args) giving that."""
    def run(args):
        calls.append(args)
        answer = table[args[0]]
        rc, out, err = answer(args) if callable(answer) else answer
        return subprocess.CompletedProcess(args, rc, out, err)
    return run


def test_watcher_one_sacct_call_for_all_jobs():
    """One sacct call for all jobs; plus, when some are pending, one squeue call for them
    (the controller's live pending reason: sacct's is slurmdbd's copy, often stale)."""
    calls: list = []
    sacct_out = "7_0|COMPLETED|0:0|None\n7_1|RUNNING|0:0|None\n7_[2-39%40]|PENDING|0:0|Priority\n8|CANCELLED by 0|0:15|None\n"
    squeue_out = "".join(f"7_{i}|PENDING|Priority\n" for i in range(2, 40))
    w = slurm_status.StatusWatcher(runner=fake_slurm({"sacct": (0, sacct_out, ""), "squeue": (0, squeue_out, "")}, calls))
    ids = [f"7_{i}" for i in range(40)] + ["8"]
    st = w.poll(ids)
    assert [c[0] for c in calls] == ["sacct", "squeue"] and calls[0][-1] == "7,8" and calls[1][-1] == "7"
    assert st["7_2"].reason == "Priority"
    calls.clear()
    w.poll(["7_1", "8"])
    assert [c[0] for c in calls] == ["sacct"]  # nothing pending: sacct alone
    calls.clear()
    assert st["7_0"].outcome == "success" and st["7_1"].outcome == "active"
    assert all(st[f"7_{i}"].state == "PENDING" for i in range(2, 40))
    assert st["8"].outcome == "failed" and st["8"].state == "CANCELLED"


def test_watcher_without_accounting_never_waits(tmp_path):
    """sacct fails -> one squeue call; jobs squeue no longer lists -> scontrol; jobs
    SLURM forgot -> submitit's result pickle; and sacct is not tried again."""
    calls: list = []
    ok, err = tmp_path / "5_0_result.pkl", tmp_path / "5_1_result.pkl"
    ok.write_bytes(pickle.dumps(("success", 0)))
    err.write_bytes(pickle.dumps(("error", "Traceback...\nSlurmError: boom")))

    def scontrol(args):
        if args[-1] == "5":
            return 1, "", "slurm_load_jobs error: Invalid job id specified"
        return 0, "JobId=9 JobName=x JobState=CANCELLED Reason=None Dependency=(null)\n", ""

    table = {
        "sacct": (1, "", "sacct: error: Slurm accounting storage is disabled"),
        "squeue": (0, "5_2|RUNNING|None\n5_3|PENDING|Resources\n", ""),
        "scontrol": scontrol,
    }
    w = slurm_status.StatusWatcher(runner=fake_slurm(table, calls))
    for i in range(4):
        w.register(f"5_{i}", tmp_path / f"5_{i}_result.pkl")
    st = w.poll(["5_0", "5_1", "5_2", "5_3", "9"])
    assert [c[0] for c in calls] == ["sacct", "squeue", "scontrol", "scontrol"]
    assert st["5_0"].outcome == "success" and st["5_0"].source == "result-pickle"
    assert st["5_1"].outcome == "failed" and "boom" in st["5_1"].reason
    assert st["5_2"].outcome == "active" and st["5_3"].outcome == "active"
    assert st["9"].outcome == "failed" and st["9"].source == "scontrol"
    calls.clear()
    w.poll(["5_2", "5_3"])
    assert [c[0] for c in calls] == ["squeue"]  # one query per poll from now on


def test_plugin_is_discovered():
    p = subprocess.run([*SNAKEMAKE, "--help"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert re.search(r"--executor \{[^}]*\bprunegen\b", p.stdout), "executor 'prunegen' not listed"
    assert "--prunegen-partition" in p.stdout


def test_dry_run_without_slurm(tmp_path):
    """Done 6: `snakemake -n --profile profiles/slurm` on a machine with no SLURM at all."""
    bindir = tmp_path / "bin-no-slurm"
    bindir.mkdir()
    for d in os.environ["PATH"].split(":"):
        if not d or not Path(d).is_dir() or Path(d).resolve() == Path(PY).parent.resolve():
            continue
        for exe in Path(d).iterdir():
            if exe.name not in SLURM_BINARIES and not (bindir / exe.name).exists():
                try:
                    (bindir / exe.name).symlink_to(exe)
                except OSError:
                    pass
    path = f"{Path(PY).parent}:{bindir}"
    assert not any(shutil.which(b, path=path) for b in SLURM_BINARIES)
    env = dict(os.environ, PATH=path)
    p = subprocess.run([*SNAKEMAKE, "-n", "--profile", str(PROFILE), "--snakefile", str(SNAKEFILE),
                        "-d", str(tmp_path), "--config", f"study={SMOKE}", f"results_root={tmp_path}/results"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = p.stdout + p.stderr
    assert job_stats(out) == {"cell": 22, "merge": 1, "figures": 1, "all": 1}
    assert out.count("rule cell:") == 22
    assert "This was a dry-run" in out



class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def sacct_says(rows: list[str], live: dict[str, str] | None = None):
    """A runner answering sacct with ``rows`` (SLURM's -P output: JobID|State|ExitCode|Reason)
    and squeue with the same jobs, each pending one with its ``live`` reason (default: the
    one sacct gives), recording the calls."""
    calls = []

    def run(args):
        calls.append(args[0])
        if args[0] == "sacct":
            return subprocess.CompletedProcess(args, 0, "".join(r + "\n" for r in rows), "")
        if args[0] == "squeue":
            out = ""
            for r in rows:
                jid, state, _, reason = r.split("|")
                out += f"{jid}|{state}|{(live or {}).get(jid, reason)}\n"
            return subprocess.CompletedProcess(args, 0, out, "")
        return subprocess.CompletedProcess(args, 0, "", "")
    return run, calls


@pytest.mark.parametrize("state", ["PREEMPTED", "NODE_FAIL"])
def test_preempted_or_node_fail_is_active_until_the_requeue_grace_ends(state):
    clock = FakeClock()
    run, _ = sacct_says([f"40|{state}|0:0|None"])
    w = slurm_status.StatusWatcher(runner=run, clock=clock, requeue_grace_s=300)
    st = w.poll(["40"])["40"]
    assert st.outcome == "active" and "requeues" in st.reason, st
    clock.t += 299
    assert w.poll(["40"])["40"].outcome == "active"
    clock.t += 2
    st = w.poll(["40"])["40"]
    assert st.outcome == "failed" and "did not requeue" in st.reason, st


def test_a_requeued_job_restarts_the_grace():
    clock = FakeClock()
    rows = ["41|PREEMPTED|0:0|None"]
    run, _ = sacct_says(rows)
    w = slurm_status.StatusWatcher(runner=run, clock=clock, requeue_grace_s=300)
    assert w.poll(["41"])["41"].outcome == "active"
    rows[0] = "41|PENDING|0:0|BeginTime"  # requeued: a new record
    clock.t += 200
    assert w.poll(["41"])["41"].outcome == "active"
    rows[0] = "41|PREEMPTED|0:0|None"  # preempted again, later: a fresh grace
    clock.t += 200
    assert w.poll(["41"])["41"].outcome == "active"


def test_unschedulable_pending_fails_after_confirmation_and_asks_for_cancel():
    clock = FakeClock()
    run, _ = sacct_says(["50|PENDING|0:0|PartitionConfig", "51|PENDING|0:0|Priority",
                         "52_[0-3]|PENDING|0:0|QOSMaxWallDurationPerJobLimit"])
    w = slurm_status.StatusWatcher(runner=run, clock=clock, unschedulable_confirm_s=15)
    first = w.poll(["50", "51", "52_0", "52_3"])
    assert all(s.outcome == "active" for s in first.values()), first  # one pass: not yet
    clock.t += 16
    st = w.poll(["50", "51", "52_0", "52_3"])
    assert st["50"].outcome == "failed" and st["50"].cancel and "PartitionConfig" in st["50"].reason
    assert st["52_3"].cancel and "QOSMaxWallDurationPerJobLimit" in st["52_3"].reason
    clock.t += 3600
    assert w.poll(["51"])["51"].outcome == "active"  # Priority clears: it just waits


def test_pending_reason_is_the_controllers_not_slurmdbds():
    """sacct's Reason of a pending job is slurmdbd's copy (state_reason_prev_db, written with
    the record): it can read None for the whole wait while squeue says PartitionConfig (the
    hang of test 6c in CI), or keep a reason that has since cleared. The watcher judges the
    controller's live reason: one squeue call per poll, only when some job is pending."""
    clock = FakeClock()
    rows = ["70|PENDING|0:0|None", "71|PENDING|0:0|QOSMaxWallDurationPerJobLimit", "72|RUNNING|0:0|None"]
    live = {"70": "PartitionConfig", "71": "Priority"}
    run, calls = sacct_says(rows, live)
    w = slurm_status.StatusWatcher(runner=run, clock=clock, unschedulable_confirm_s=15)
    first = w.poll(["70", "71", "72"])
    assert calls == ["sacct", "squeue"], calls
    assert first["70"].reason == "PartitionConfig" and first["70"].outcome == "active", first
    clock.t += 16
    st = w.poll(["70", "71", "72"])
    assert st["70"].cancel and "PartitionConfig" in st["70"].reason, st["70"]  # sacct said None
    assert st["71"].outcome == "active" and not st["71"].cancel, st["71"]  # stale: it waits for Priority
    calls.clear()
    w.poll(["72"])
    assert calls == ["sacct"]  # nothing pending: no squeue call

    # squeue fails: the pending reason is sacct's, the best there is
    def failing(args):
        if args[0] == "squeue":
            return subprocess.CompletedProcess(args, 1, "", "squeue: error: Socket timed out")
        return run(args)
    w = slurm_status.StatusWatcher(runner=failing, clock=clock, unschedulable_confirm_s=15)
    assert w.poll(["71"])["71"].reason == "QOSMaxWallDurationPerJobLimit"


def test_sacct_failure_is_retried_then_squeue_then_sacct_again():
    clock = FakeClock()
    calls, sleeps, answers = [], [], []

    def run(args):
        calls.append(args[0])
        if args[0] == "sacct":
            ok = answers.pop(0) if answers else True
            return subprocess.CompletedProcess(args, 0 if ok else 1, "60|RUNNING|0:0|None\n" if ok else "",
                                               "" if ok else "sacct: error: Problem talking to the database")
        return subprocess.CompletedProcess(args, 0, "60|RUNNING|None\n", "")

    w = slurm_status.StatusWatcher(runner=run, clock=clock, sleep=sleeps.append, sacct_retry_after_s=300)
    answers[:] = [False, True]
    assert w.poll(["60"])["60"].source == "sacct"
    assert calls == ["sacct", "sacct"] and sleeps == [1.0]  # one failure: retried within the poll
    calls.clear()
    answers[:] = [False, False, False]
    assert w.poll(["60"])["60"].source == "squeue"
    assert calls == ["sacct", "sacct", "sacct", "squeue"]
    calls.clear()
    clock.t += 100
    w.poll(["60"])
    assert calls == ["squeue"]  # within the back-off: squeue only
    calls.clear()
    clock.t += 201
    assert w.poll(["60"])["60"].source == "sacct" and calls == ["sacct"]  # tried again, and it works


def test_poll_schedule_numbers():
    p = slurm_status.PollSchedule(base_s=10, ceiling_s=60)
    got = [round(p.unchanged(), 2) for _ in range(6)]
    assert got == [15.0, 22.5, 33.75, 50.62, 60.0, 60.0]
    assert p.changed() == 10.0


def test_signal_delay_is_at_most_a_quarter_of_the_time_limit(tmp_path, monkeypatch):
    """USR2 120 s before a 2-minute limit is USR2 at the start: the job would be stopped at
    once (a small job of test 6c was, and failed for lack of progress). A quarter of the
    limit at most (SLURM may signal up to 30 s early besides)."""
    assert slurm_request.signal_delay_for(2, 120) == 30 and slurm_request.signal_delay_for(1, 120) == 15
    assert slurm_request.signal_delay_for(60, 120) == 120 and slurm_request.signal_delay_for(None, 90) == 90
    # submitit's executor looks for `srun` on PATH when it is built (nothing here runs it):
    # on a machine with no SLURM, a stand-in lets the parameters be read
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    ex = slurm_submit.make_executor(tmp_path, slurm_request.Request(runtime_min=2), signal_delay_s=120)
    assert ex.parameters["signal_delay_s"] == 30


def test_slurm_minutes():
    assert slurm_request.parse_slurm_minutes("00:01:00") == 1
    assert slurm_request.parse_slurm_minutes("2-00:00:00") == 2880
    assert slurm_request.parse_slurm_minutes("1-12") == 2160
    assert slurm_request.parse_slurm_minutes("45") == 45
    assert slurm_request.parse_slurm_minutes("1:30") == 2  # 1 min 30 s, rounded up
    assert slurm_request.parse_slurm_minutes("UNLIMITED") is None


class RefusingExecutor:
    """Stands in for submitit's executor in the back-off logic only (the real sbatch path is
    exercised against the cluster below): refuses any batch above ``limit`` jobs with
    SLURM's QOS message, and the first ``down`` calls with the controller-down message."""

    def __init__(self, limit: int, down: int = 0):
        self.limit, self.down, self.sizes, self.next_id = limit, down, [], 100

    def submit_batch(self, jobs):
        self.sizes.append(len(jobs))
        if self.down:
            self.down -= 1
            raise RuntimeError("sbatch: error: Batch job submission failed: Unable to contact slurm controller")
        if len(jobs) > self.limit:
            raise RuntimeError("sbatch: error: QOSMaxSubmitJobPerUserLimit\nsbatch: error: Batch job "
                               "submission failed: Job violates accounting/QOS policy")
        self.next_id += 1
        return [slurm_submit.Submitted(f"{self.next_id}_{i}", Path("o"), Path("e"), Path("r")) for i in range(len(jobs))]


def test_submit_backoff_halves_for_a_submit_limit_and_waits_for_a_controller(monkeypatch):
    fake = RefusingExecutor(limit=3, down=2)
    monkeypatch.setattr(slurm_submit, "submit", lambda ex, jobs: ex.submit_batch(jobs))
    sleeps = []
    jobs = [slurm_job.ShellJob(f"true {i}", "/") for i in range(10)]
    got = slurm_submit.submit_with_backoff(fake, jobs, sleep=sleeps.append, first_wait_s=2, max_wait_s=60)
    assert sleeps == [2, 4]  # controller down twice: waited, doubling
    assert fake.sizes[:3] == [10, 10, 10] and 10 not in fake.sizes[3:]  # then the limit: halved
    assert [j for j, _ in got.submitted] == jobs and not got.failed
    assert max(fake.sizes[3:]) <= 5
    final = slurm_submit.submit_with_backoff(RefusingExecutor(limit=0), jobs[:2], sleep=sleeps.append, budget_s=5)
    assert len(final.failed) == 2 and "QOSMaxSubmitJobPerUserLimit" in final.failed[0][1]
    assert slurm_submit.rejection_kind("sbatch: error: invalid partition specified: x") == "final"



def test_time_out_requeues_only_a_run_that_made_progress(tmp_path):
    """After a time-out the job is requeued while its cell progresses (a file in its folder
    changed during the run); a run with no progress is not requeued (it never would finish)."""
    cell = tmp_path / "cell"
    cell.mkdir()
    job = slurm_job.ShellJob("true", tmp_path, label="c", progress_dirs=[cell], time_limit_min=100)
    job._started = time.monotonic() - 4801  # ran 80% of its 100-minute limit: submitit's "timed out"
    job._signature = slurm_job.progress_signature(job.progress_dirs)
    assert job.timed_out()
    # nothing written: requeued once more (SLURM may have signalled before the first epoch)...
    assert job.checkpoint() is not None and job.idle_timeouts == 1
    assert job.checkpoint() is None  # ...but a second run in a row without progress is not
    (cell / "checkpoint.pt").write_bytes(b"epoch 3")
    assert job.checkpoint() is not None and job.idle_timeouts == 0  # an epoch checkpoint appeared: requeue
    assert job.checkpoint() is not None  # (the counter starts again)
    job._started = time.monotonic() - 5  # preempted early, nothing written: requeue anyway
    job._signature = slurm_job.progress_signature(job.progress_dirs)
    assert not job.timed_out() and job.checkpoint() is not None

