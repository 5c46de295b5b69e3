"""prunegen plan and slices of a study (prunegen.selection): counts checked against
Snakemake's own dry run, hours against a hand computation, errors naming the term."""

import json
import re
import subprocess
import sys

import pytest

from prunegen.analysis.scan import scan, status
from prunegen.cluster import plan
from prunegen.study import chains, selection
from prunegen.study.grid import StudyError
from prunegen.study.load import load_study
from tests.helpers import REPO, SMOKE, run_chain

PAPER = REPO / "workflow" / "studies" / "paper.yaml"
WILDCARDS = re.compile(r"wildcards: benchmark=(\S+), arm=(\S+), noise=(\S+), seed=(\d+), level=(\d+)")


def dry_run(workdir, study, select=None):
    """(cell keys, other rule names, total job count) of `snakemake -n`."""
    config = [f"study={study}", f"results_root={workdir / 'results'}"] + ([f"select={select}"] if select else [])
    out = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
                          str(workdir), "--cores", "1", "-n", "--config", *config], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    cells = {(b, a, float(n), int(s), int(lv)) for b, a, n, s, lv in WILDCARDS.findall(text)}
    total = int(re.search(r"^total\s+(\d+)", text, re.M).group(1))
    return cells, set(re.findall(r"^rule (\w+):", text, re.M)) - {"cell"}, total


def keys(per_job):
    todo = per_job[per_job["runs"]]
    return {(r.benchmark, r.arm, float(r.noise), int(r.seed), int(r.level)) for r in todo.itertuples()}


@pytest.mark.parametrize("select", [None, "arm=random level=2 noise=0.2", "arm=downscaled_extended,dense seed=0"])
def test_plan_jobs_are_the_dry_runs_job_list(tmp_path, select):
    study = load_study(SMOKE, {"results_root": str(tmp_path / "results")})
    p = plan.plan(study, select)
    cells, rules, total = dry_run(tmp_path, SMOKE, select)
    assert keys(plan.jobs(study, select)) == cells
    assert p["jobs"] == len(cells) and p["jobs"] + p["other_jobs"] == total
    assert rules == {"merge", "figures", "all"}


def test_a_slice_runs_the_matching_cells_and_the_parents_they_need(tmp_path):
    cells, _, _ = dry_run(tmp_path, SMOKE, "arm=random level=2 noise=0.2")
    study = load_study(SMOKE, {"results_root": str(tmp_path / "results")})
    assert {tuple(c.key.values()) for c in selection.cells(study, "arm=random level=2 noise=0.2")} == {
        (b, a, f, s, lv) for b, a, f, s, lv in cells}  # the closure is the slice's own, not only Snakemake's
    # random L2 reads random L1 and imp L2 (its densities); both chains start at dense L0
    assert cells == {("digits-mlp", "dense", 0.2, 0, 0), ("digits-mlp", "imp", 0.2, 0, 1),
                     ("digits-mlp", "imp", 0.2, 0, 2), ("digits-mlp", "random", 0.2, 0, 1),
                     ("digits-mlp", "random", 0.2, 0, 2)}
    cells, _, _ = dry_run(tmp_path, SMOKE, "arm=downscaled noise=0.0,0.2 level=2")
    assert cells == {("digits-mlp", "downscaled", f, 0, 2) for f in (0.0, 0.2)}  # trains from scratch


def test_hours_match_a_hand_computation_from_runtime_min(smoke_study):
    p = plan.plan(smoke_study)
    # per (noise, seed): dense 1 cycle + imp, extended, downscaled, random 1 per level (2 levels)
    # + downscaled_extended 2 + 3 cycles = 14 unshared; shared, downscaled_extended continues
    # downscaled at its level (the two widths differ): 1 + 2, so 12; two noise levels;
    # runtime_min 5 per cycle
    assert p["cells"] == p["jobs"] == 22 and p["cycles_unshared"] == 28 and p["cycles"] == 24
    assert p["epochs"] == 24 * 3 and p["device_hours"] == pytest.approx(24 * 5 / 60)
    assert p["longest_job_h"] == pytest.approx(2 * 5 / 60)
    row = {r["arm"]: r for r in p["table"]}["downscaled_extended"]
    assert (row["cells"], row["cycles_unshared"], row["cycles"], row["epochs"]) == (4, 10, 6, 18)
    assert row["device_hours"] == pytest.approx(6 * 5 / 60) and p["sources"]["runtime_min"] == 22


def test_completed_cells_measured_times_come_first_and_leave_the_job_list(smoke_study, cell_cache):
    run_chain(smoke_study, "imp", 1, 0.2, cache=cell_cache)  # dense L0 and imp L1, real records
    per_job = plan.jobs(smoke_study)
    done = per_job[~per_job["runs"]]
    assert sorted(done["arm"]) == ["dense", "imp"]
    meta = {a: json.loads((smoke_study.cell("digits-mlp", a, lv, 0.2, 0).dir / "cell.json").read_text())
            for a, lv in (("dense", 0), ("imp", 1))}
    per_epoch = {a: m["wall_seconds"] / 3 for a, m in meta.items()}  # one cycle of 3 epochs each
    row = per_job.set_index(["arm", "noise", "level"])
    assert row.loc[("imp", 0.2, 2), "epoch_s"] == pytest.approx(per_epoch["imp"])  # same (benchmark, arm)
    assert row.loc[("dense", 0.0, 0), "epoch_s"] == pytest.approx(per_epoch["dense"])  # same (b, arm, level)
    median = sorted(per_epoch.values())[0] / 2 + sorted(per_epoch.values())[1] / 2
    ext = row.loc[("downscaled_extended", 0.0, 2)]  # no measured cell of its arm: the benchmark's median
    assert ext["source"] == "measured" and ext["epoch_s"] == pytest.approx(median)
    assert ext["hours"] == pytest.approx(2 * 3 * median / 3600)  # 3 cycles, the first one downscaled L2's
    p = plan.plan(smoke_study)
    assert p["jobs"] == 20 and p["sources"] == {"measured": 20, "calibrated": 0, "runtime_min": 0}


def test_a_calibration_file_is_the_second_choice(smoke_study):
    from prunegen.cluster.calibrate import calibrate

    cal = calibrate(smoke_study, steps=20)
    epoch_s = cal["benchmarks"]["digits-mlp"]["epoch_seconds"]
    assert epoch_s > 0
    p = plan.plan(smoke_study)
    assert p["sources"]["calibrated"] == 22 and p["device_hours"] == pytest.approx(24 * 3 * epoch_s / 3600)
    plan.calibration_path(smoke_study).write_text("{not json")
    with pytest.raises(StudyError, match="calibration.json"):
        plan.plan(smoke_study)


def test_partition_limit_flags_jobs_that_would_not_fit(smoke_study):
    assert plan.parse_time_limit("2-00:00:00") == 2880 and plan.parse_time_limit("1:30:00") == 90
    assert plan.parse_time_limit("12") == 12 and plan.parse_time_limit("1-6") == 1800
    p = plan.plan(smoke_study, partition_limit="9")  # downscaled_extended L2 asks 10 min (2 cycles x 5)
    assert sorted(b["label"] for b in p["over_limit"]) == [
        f"digits-mlp downscaled_extended L2 noise={f} seed=0" for f in ("0.0", "0.2")]
    assert plan.plan(smoke_study, partition_limit="10")["over_limit"] == []
    # a fast device: the estimate fits in 9 min, the requested 10 min still does not (never starts)
    plan.calibration_path(smoke_study).parent.mkdir(parents=True)
    plan.calibration_path(smoke_study).write_text(json.dumps({"benchmarks": {"digits-mlp": {"epoch_seconds": 1.0}}}))
    assert len(plan.plan(smoke_study, partition_limit="9")["over_limit"]) == 2
    with pytest.raises(StudyError, match="--partition-limit"):
        plan.parse_time_limit("two hours")


def test_plan_on_the_paper_grid_prints_its_7655_cells_and_imagenets_gpu_hours():
    out = subprocess.run([sys.executable, "-m", "prunegen.cli", "plan", "--study", str(PAPER), "--results-root",
                          "/nonexistent-results"], capture_output=True, text=True, check=True).stdout
    # 7,644 cells of the four small benchmarks' full grid + ImageNet's part of it: dense and imp
    # levels 1..10, noise 0, seed 0 (its grid: block)
    assert "7,655 cells, 7,655 jobs to run" in out
    for bench in ("mnist-lenet300", "cifar10-resnet20", "cifar10-vgg16", "cifar100-resnet32"):
        assert re.search(rf"{bench}\s+downscaled_extended\s+378\s+378\s+3,969\s+[\d,]+\s", out), bench
    # 10 imp cycles of 4 h (runtime_min 240) on 8 GPUs each
    assert re.search(r"imagenet-resnet50\s+imp\s+10\s+10\s+10\s+10\s+900\s+160\.00\s+40\.00\s+320\.00\s", out)
    p = json.loads(subprocess.run([sys.executable, "-m", "prunegen.cli", "plan", "--study", str(PAPER), "--json",
                                   "--results-root", "/nonexistent-results"],
                                  capture_output=True, text=True, check=True).stdout)
    study = load_study(PAPER)
    small = [b for b in study.benchmarks if b != "imagenet-resnet50"]
    # 262 cycles per (benchmark, noise, seed) unshared: 1 + 4 x 18 + (2 + ... + 19) = 73 + 189; ImageNet 11
    assert p["cycles_unshared"] == 4 * 7 * 3 * 262 + 11
    # shared: the cycles each downscaled_extended job trains (tests/test_prefixes.py checks them by hand)
    trained = {b: sum(chains.cycles_to_train(study.cell(b, "downscaled_extended", k, 0.0, 0)) for k in range(1, 19))
               for b in small}
    assert p["cycles"] == sum(7 * 3 * (73 + t) for t in trained.values()) + 11
    runtime = {b: study.benchmarks[b].resources.runtime_min for b in small}
    small_hours = sum(7 * 3 * (73 + trained[b]) * m / 60 for b, m in runtime.items())
    assert p["device_hours"] == pytest.approx(small_hours + 11 * 4)
    assert p["gpu_hours"] == pytest.approx(small_hours * 1 + 11 * 4 * 8)  # the small ones hold 1 GPU each


def test_status_counts_only_the_slice(smoke_study):
    cells = selection.cells(smoke_study, "arm=imp noise=0.2")
    counts = status(smoke_study, scan(smoke_study, cells))
    assert dict(zip(counts["arm"], counts["cells"])) == {"dense": 1, "imp": 2}


@pytest.mark.parametrize("text, message", [
    ("noise=0.3", "no noise 0.3; it has 0.0, 0.2"),
    ("bench=digits-mlp", "unknown key 'bench'"),
    ("arm=imp arm=random", "given twice"),
    ("level=1-7", "no level 3, 4, 5, 6, 7"),
    ("seed=x", "'x' is not an integer"),
    ("arm", "not key=value"),
    ("arm=imp level=0", "matches no cell"),
])
def test_a_bad_selection_names_its_term(smoke_study, text, message):
    with pytest.raises(StudyError, match=re.escape(message)):
        selection.cells(smoke_study, text)


def test_a_complete_cell_whose_parent_runs_runs_again_as_in_the_dry_run(tmp_path, cell_cache):
    import shutil

    study = load_study(SMOKE, {"results_root": str(tmp_path / "results")})
    run_chain(study, "imp", 1, 0.2, cache=cell_cache)
    shutil.rmtree(study.cell("digits-mlp", "dense", 0, 0.2, 0).dir)
    per_job = plan.jobs(study, "noise=0.2 arm=imp level=1")
    assert per_job.set_index("arm")["runs"].to_dict() == {"dense": True, "imp": True}
    cells, _, _ = dry_run(tmp_path, SMOKE, "noise=0.2 arm=imp level=1")
    assert keys(per_job) == cells
