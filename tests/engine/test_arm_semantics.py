"""The arm table (docs/design.md, prunegen.study.arm_specs), pinned on real digits cells: what each optimizer step of each
cell starts from and the LR it uses, observed by a spy on the optimizer (prunegen.sgd.SGD).

Each test fails when the behaviour it names breaks (planted and watched, see the note of
issue 16): a chain level that does not start from its parent's final weights, an LR that
is not the schedule (warmup included) or not the history's `lr` column, momentum carried
from one cycle to the next, a weight_rewind that does not restore the rewind epoch's
weights and schedule position, a finetune that does not train at its constant LR.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import pyarrow.parquet as pq
import pytest
import torch
import yaml

from prunegen import cli
from prunegen.analysis import scan
from prunegen.engine import sgd
from prunegen.engine.run import run
from prunegen.engine.start import keep_count
from prunegen.records import layout, store
from prunegen.study import chains, shapes
from prunegen.study.load import load_study

EPOCHS, BATCH, LR, WARMUP = 4, 256, 0.05, 1.5
TRAIN_EXAMPLES = 1797 - 360 - 180  # digits minus its test and validation splits
STEPS = math.ceil(TRAIN_EXAMPLES / BATCH)  # optimizer steps per epoch

STUDY = {
    "study": "semantics", "device": "cpu",
    "benchmarks": {"digits-mlp": {
        "dataset": "digits", "model": {"name": "mlp", "hidden": [24, 12]}, "data": {"val_size": 180},
        "train": {"epochs": EPOCHS, "batch_size": BATCH, "lr": LR, "momentum": 0.9, "weight_decay": 1.0e-4,
                  "schedule": {"kind": "step", "milestones": [0.5], "gamma": 0.1, "warmup_epochs": WARMUP}},
        "prune": {"fraction": 0.5}}},
    "arms": ["dense", "imp", "extended", "random", "downscaled", "downscaled_extended"],
    "levels": 2, "noise": [0.0], "seeds": [0],
}


def expected_lr(step: int) -> float:
    """The schedule at optimizer step `step` of a cycle, written out: a linear warmup over
    WARMUP epochs, then LR x0.1 from half the cycle on."""
    warmup_steps = WARMUP * STEPS
    if step < warmup_steps:
        return LR * min(1.0, (step + 1) / warmup_steps)
    return LR * (0.1 if step / STEPS >= EPOCHS / 2 else 1.0)


@dataclass
class Step:
    lr: float
    momentum_held: bool          # the optimizer held momentum buffers before this step
    nth: int                     # this step's number within its optimizer (1 = a fresh optimizer)
    params: list[torch.Tensor]   # the parameters this step starts from


class Spy:
    """Records every optimizer step while cells run, per cell."""

    def __init__(self, mp: pytest.MonkeyPatch):
        self.steps: list[Step] = []
        original = sgd.SGD.step

        def step(opt):
            opt._spy_steps = getattr(opt, "_spy_steps", 0) + 1
            self.steps.append(Step(opt.param_groups[0]["lr"], bool(opt.state), opt._spy_steps,
                                   [p.detach().clone() for p in opt.params]))
            original(opt)

        mp.setattr(sgd.SGD, "step", step)

    def run(self, cell) -> list[Step]:
        self.steps = []
        run(cell)
        return self.steps


@dataclass
class Grid:
    study: object
    steps: dict  # (arm, level) -> the steps of that cell


def _run_grid(tmp_path_factory, overrides: dict, cells: list[tuple[str, int]]) -> Grid:
    raw = yaml.safe_load(yaml.safe_dump(STUDY))
    raw["benchmarks"]["digits-mlp"]["prune"].update(overrides)
    root = tmp_path_factory.mktemp("semantics")
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    study = load_study(path, {"results_root": str(root / "results")})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only contend
    try:
        with pytest.MonkeyPatch.context() as mp:
            spy = Spy(mp)
            steps = {(arm, level): spy.run(study.cell("digits-mlp", arm, level, 0.0, 0)) for arm, level in cells}
    finally:
        torch.set_num_threads(threads)
    return Grid(study, steps)


CHAIN = [("dense", 0), ("imp", 1), ("imp", 2), ("extended", 1), ("extended", 2), ("random", 1), ("random", 2),
         ("downscaled", 1), ("downscaled", 2), ("downscaled_extended", 1), ("downscaled_extended", 2)]


@pytest.fixture(scope="module")
def lrr(tmp_path_factory):
    return _run_grid(tmp_path_factory, {}, CHAIN)


@pytest.fixture(scope="module")
def rewind(tmp_path_factory):
    return _run_grid(tmp_path_factory, {"variant": "weight_rewind", "rewind_epoch": 1},
                     [("dense", 0), ("imp", 1), ("imp", 2), ("random", 1)])


def cell_of(grid: Grid, arm: str, level: int):
    return grid.study.cell("digits-mlp", arm, level, 0.0, 0)


def load(cell, name: str) -> dict:
    return torch.load(cell.dir / name, weights_only=True)


def history(cell):
    return pq.read_table(cell.dir / "history.parquet").to_pandas()


def assert_starts_from(step: Step, weights: dict, mask: dict) -> None:
    """The parameters of `step` are `weights` with the weights `mask` removes at zero."""
    names = list(weights)  # an MLP's state dict is its parameters, in order
    assert len(names) == len(step.params)
    for name, p in zip(names, step.params):
        want = weights[name] * mask[name] if name in mask else weights[name]
        assert torch.equal(p, want), f"{name} does not start from the expected weights"


@pytest.mark.parametrize("arm", ["imp", "extended", "random"])
def test_every_chain_level_starts_from_its_parents_final_weights(lrr, arm):
    for level in (1, 2):
        cell = cell_of(lrr, arm, level)
        parent = chains.parents(cell)[0]  # level k-1 of the same arm (level 0: the shared dense cell)
        assert (parent.arm, parent.level) == ((arm if level > 1 else "dense"), level - 1)
        mask, parent_mask = load(cell, "mask.pt"), load(parent, "mask.pt")
        assert_starts_from(lrr.steps[arm, level][0], load(parent, "model.pt"), mask)
        # a level only removes weights, and imp and random remove prune.fraction of the rest
        assert all(not (mask[n] & ~parent_mask[n]).any() for n in mask)
        kept = sum(int(m.sum()) for m in mask.values())
        total = sum(m.numel() for m in mask.values())
        assert kept == (total if arm == "extended" else keep_count(total, 0.5, level))


def test_random_keeps_imps_per_layer_counts_within_its_own_chain(lrr):
    for level in (1, 2):
        rnd, imp = load(cell_of(lrr, "random", level), "mask.pt"), load(cell_of(lrr, "imp", level), "mask.pt")
        assert {n: int(m.sum()) for n, m in rnd.items()} == {n: int(m.sum()) for n, m in imp.items()}
        assert any(not torch.equal(rnd[n], imp[n]) for n in rnd)  # another draw than imp's mask
    # level 2 draws within random level 1's survivors, from its weights (not imp's)
    first = lrr.steps["random", 2][0]
    assert_starts_from(first, load(cell_of(lrr, "random", 1), "model.pt"), load(cell_of(lrr, "random", 2), "mask.pt"))


@pytest.mark.parametrize("arm, level", [("dense", 0), ("imp", 2), ("extended", 1), ("downscaled_extended", 2)])
def test_the_lr_of_every_step_is_the_schedule_and_the_history_lr_column(lrr, arm, level):
    # cycles its job trains: downscaled_extended's first is downscaled's (prunegen.prefixes)
    cycles = chains.cycles_to_train(cell_of(lrr, arm, level))
    assert cycles == (level if arm == "downscaled_extended" else 1)
    steps = lrr.steps[arm, level]
    assert len(steps) == cycles * EPOCHS * STEPS
    for i, step in enumerate(steps):  # every cycle restarts the schedule
        assert step.lr == pytest.approx(expected_lr(i % (EPOCHS * STEPS)), rel=1e-12), f"step {i}"
    h = history(cell_of(lrr, arm, level))
    own = h[h.cycle >= h.cycle.max() - cycles + 1]  # a chain cell's history starts with its parents'
    assert len(own) == cycles * EPOCHS
    for row in own.itertuples():  # `lr`: the LR of the epoch's first step
        assert row.lr == pytest.approx(expected_lr((row.epoch - 1) * STEPS), rel=1e-12)
    assert h.lr.tolist() == pytest.approx([expected_lr((e - 1) * STEPS) for e in h.epoch], rel=1e-12)


def test_warmup_is_applied_at_the_start_of_every_cycle(lrr):
    warmup_steps = math.ceil(WARMUP * STEPS)
    for key in [("dense", 0), ("imp", 1), ("random", 2), ("downscaled_extended", 2)]:
        steps = lrr.steps[key]
        for start in range(0, len(steps), EPOCHS * STEPS):
            lrs = [s.lr for s in steps[start:start + warmup_steps + 1]]
            assert lrs[0] == pytest.approx(LR / (WARMUP * STEPS)), key  # the first step: 1/warmup of the peak
            assert all(a < b for a, b in zip(lrs[:-2], lrs[1:-1])), key  # rising, step by step
            assert lrs[-2] <= LR and lrs[-1] == LR, key  # the peak once warmed up


@pytest.mark.parametrize("arm, level", [("imp", 1), ("extended", 2), ("random", 2), ("downscaled_extended", 2)])
def test_every_cycle_starts_with_a_fresh_optimizer(lrr, arm, level):
    steps = lrr.steps[arm, level]
    starts = list(range(0, len(steps), EPOCHS * STEPS))
    assert len(starts) == (level if arm == "downscaled_extended" else 1)  # L2: 2 cycles on downscaled L2's
    for start in starts:
        assert steps[start].nth == 1 and not steps[start].momentum_held, f"cycle starting at step {start}"
        assert steps[start + 1].momentum_held  # momentum is in use within the cycle


def test_weight_rewind_restores_the_rewind_epochs_weights_and_schedule_position(rewind):
    dense = cell_of(rewind, "dense", 0)
    saved = load(dense, "rewind.pt")
    # rewind.pt holds the dense weights after epoch 1: what its epoch-2 first step starts from
    assert_starts_from(rewind.steps["dense", 0][1 * STEPS], saved, {})
    for arm, level in [("imp", 1), ("imp", 2), ("random", 1)]:
        cell = cell_of(rewind, arm, level)
        steps = rewind.steps[arm, level]
        assert_starts_from(steps[0], saved, load(cell, "mask.pt"))
        assert steps[0].nth == 1 and not steps[0].momentum_held
        # the schedule resumes at epoch 1 and the cycle trains its remaining epochs
        assert len(steps) == (EPOCHS - 1) * STEPS
        for i, step in enumerate(steps):
            assert step.lr == pytest.approx(expected_lr(STEPS + i), rel=1e-12), f"{arm} {level} step {i}"
        h = history(cell)
        own = h[h.cycle == level]
        assert own.epoch.tolist() == list(range(2, EPOCHS + 1))
        assert own.lr.tolist() == pytest.approx([expected_lr((e - 1) * STEPS) for e in own.epoch], rel=1e-12)
        s = pq.read_table(cell.dir / "summary.parquet").to_pylist()[0]
        assert s["total_epochs"] == EPOCHS + level * (EPOCHS - 1)
    # the mask still comes from the chain: imp level 2 prunes level 1's final weights
    parent_mask = load(cell_of(rewind, "imp", 1), "mask.pt")
    final = load(cell_of(rewind, "imp", 1), "model.pt")
    mask = load(cell_of(rewind, "imp", 2), "mask.pt")
    kept_magnitude = min(float(final[n][mask[n]].abs().min()) for n in mask if mask[n].any())
    removed_magnitude = max(float(final[n][parent_mask[n] & ~mask[n]].abs().max()) for n in mask
                            if (parent_mask[n] & ~mask[n]).any())
    assert removed_magnitude <= kept_magnitude


@pytest.mark.parametrize("how", ["truncated", "garbled", "garbled, mtime restored"])
def test_a_corrupt_rewind_point_is_named_by_status_and_by_the_cell_that_rewinds_to_it(rewind, tmp_path, how, capsys):
    import shutil

    shutil.copytree(rewind.study.root / "cells", tmp_path / rewind.study.name / "cells")
    study = load_study(rewind.study.path, {"results_root": str(tmp_path)})
    path = study.cell("digits-mlp", "dense", 0, 0.0, 0).dir / "rewind.pt"
    data, stat = path.read_bytes(), path.stat()
    mid = len(data) // 2  # truncated, or 8 bytes in the middle flipped at the same size
    path.write_bytes(data[:mid] if how == "truncated" else data[:mid] + bytes(b ^ 0xFF for b in data[mid:mid + 8])
                     + data[mid + 8:])
    if how == "garbled, mtime restored":  # what the cheap size-and-mtime check of the parents cannot see:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # only the checksum on reading it can

    grid = scan.scan(study, verify=True).set_index(["arm", "level"])
    assert grid.loc[("dense", 0), "state"] == "corrupt" and str(path) in grid.loc[("dense", 0), "problem"]

    # imp level 2's own parent (imp level 1) is intact: only the rewind point is not
    shutil.rmtree(study.cell("digits-mlp", "imp", 2, 0.0, 0).dir)
    rc = cli.main(["run-cell", "--study", str(study.path), "--results-root", str(tmp_path), "--benchmark",
                   "digits-mlp", "--arm", "imp", "--level", "2", "--noise", "0.0", "--seed", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and str(path) in err and "delete" in err
    assert not (study.cell("digits-mlp", "imp", 2, 0.0, 0).dir / layout.COMPLETE_MARKER).exists()


def test_weight_rewind_without_the_schedule_trains_whole_cycles(tmp_path_factory):
    grid = _run_grid(tmp_path_factory, {"variant": "weight_rewind", "rewind_epoch": 1, "rewind_schedule": False},
                     [("dense", 0), ("imp", 1)])
    steps = grid.steps["imp", 1]
    assert_starts_from(steps[0], load(cell_of(grid, "dense", 0), "rewind.pt"), load(cell_of(grid, "imp", 1), "mask.pt"))
    assert [s.lr for s in steps] == pytest.approx([expected_lr(i) for i in range(EPOCHS * STEPS)], rel=1e-12)


def test_finetune_trains_every_pruning_cycle_at_its_constant_lr(tmp_path_factory):
    grid = _run_grid(tmp_path_factory, {"variant": "finetune", "finetune_lr": 0.003},
                     [("dense", 0), ("imp", 1), ("imp", 2)])
    assert [s.lr for s in grid.steps["dense", 0]] == pytest.approx([expected_lr(i) for i in range(EPOCHS * STEPS)])
    for level in (1, 2):
        cell = cell_of(grid, "imp", level)
        steps = grid.steps["imp", level]
        assert len(steps) == EPOCHS * STEPS and {s.lr for s in steps} == {0.003}
        assert_starts_from(steps[0], load(chains.parents(cell)[0], "model.pt"), load(cell, "mask.pt"))
        h = history(cell)
        assert (h[h.cycle == level].lr == 0.003).all() and (h[h.cycle == 0].lr == h[h.cycle == 0].epoch.map(
            lambda e: expected_lr((e - 1) * STEPS))).all()


def test_changing_the_prune_fraction_keeps_the_cells_that_do_not_read_it(lrr, tmp_path, capsys):
    """dense and extended never read prune.fraction; downscaled cells read it through their
    width: 0.5 -> 0.52 keeps level 1's width (13) and narrows level 2's (7 -> 6)."""
    raw = yaml.safe_load(lrr.study.path.read_text())
    raw["benchmarks"]["digits-mlp"]["prune"]["fraction"] = 0.52
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    changed = load_study(path, {"results_root": str(lrr.study.results_root)})
    states = scan.scan(changed).set_index(["arm", "level"])["state"].to_dict()
    assert states == {("dense", 0): "complete",
                      ("extended", 1): "complete", ("extended", 2): "complete",
                      ("downscaled", 1): "complete", ("downscaled", 2): "stale",
                      ("downscaled_extended", 1): "complete", ("downscaled_extended", 2): "stale",
                      ("imp", 1): "stale", ("imp", 2): "stale", ("random", 1): "stale", ("random", 2): "stale"}
    bm = changed.benchmarks["digits-mlp"]
    for level, width in ((1, 13), (2, 6)):
        assert shapes.downscaled_width(bm.model, (1, 8, 8), 10, bm.prune.ignore, 0.52, level)[0] == width
    assert cli.main(["status", "--study", str(path), "--results-root", str(lrr.study.results_root)]) == 0
    assert "5 of 11 cells complete" in capsys.readouterr().out
    # a complete cell is one that the new study would have written: the same records
    d = changed.cell("digits-mlp", "downscaled", 1, 0.0, 0)
    assert store.is_complete(d.dir, d.hash, verify=True)
