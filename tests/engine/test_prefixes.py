"""Shared training prefixes (prunegen.prefixes): the downscaled arms' records with sharing
are bit-identical to the unshared computation, the DAG has the prefix edges, and the plan
counts the cycles saved."""

from pathlib import Path

import pandas as pd
import torch

from prunegen.cluster.plan import plan
from prunegen.engine import checkpoints
from prunegen.engine.run import run
from prunegen.records import store
from prunegen.study import chains
from prunegen.study.load import load_study

REPO = Path(__file__).resolve().parents[2]
TIMING = ("seconds", "wall_seconds")

STUDY = """\
study: prefixes
device: cpu
share_prefixes: {share}
benchmarks:
  digits-tiny:
    dataset: digits
    model: {{name: mlp, hidden: [8, 4]}}
    data: {{val_size: 180}}
    train: {{epochs: 2, batch_size: 64, lr: 0.05, momentum: 0.9, weight_decay: 1.0e-4}}
    prune: {{fraction: 0.2}}
    resources: {{gpus: 0, cpus: 1, mem_mb: 1000, runtime_min: 5}}
arms: [dense, downscaled, downscaled_extended]
levels: 6
noise: [0.0]
seeds: [0]
"""


def _study(tmp_path, share: bool):
    path = tmp_path / f"share-{share}.yaml"
    path.write_text(STUDY.format(share=str(share).lower()))
    return load_study(path, {"results_root": str(tmp_path / f"results-{share}")})


def _run_all(study):
    done = set()

    def go(c):
        for p in chains.parents(c):
            go(p)
        if c.relpath not in done:
            run(c)
            done.add(c.relpath)

    for c in study.cells():
        go(c)


def test_widths_and_prefix_edges(tmp_path):
    s = _study(tmp_path, True)
    dse = [s.cell("digits-tiny", "downscaled_extended", k, 0.0, 0) for k in range(1, 7)]
    assert [chains.width(c) for c in dse] == [6, 5, 4, 3, 3, 2]  # levels 4 and 5 share width 3
    parents = [[(p.arm, p.level) for p in chains.parents(c)] for c in dse]
    assert parents == [[("downscaled", 1)], [("downscaled", 2)], [("downscaled", 3)], [("downscaled", 4)],
                       [("downscaled_extended", 4)], [("downscaled", 6)]]
    assert [chains.cycles_to_train(c) for c in dse] == [1, 2, 3, 4, 1, 6]  # k+1, less the prefix's
    unshared = _study(tmp_path, False)
    assert all(chains.parents(c) == [] for c in unshared.cells() if c.arm.startswith("downscaled"))
    assert [c.hash for c in s.cells()] == [c.hash for c in unshared.cells()]  # where, never what


def test_shared_records_are_bit_identical_to_the_unshared_computation(tmp_path):
    shared, unshared = _study(tmp_path, True), _study(tmp_path, False)
    _run_all(shared)
    _run_all(unshared)
    for a, b in zip(shared.cells(), unshared.cells()):
        if not a.arm.startswith("downscaled"):
            continue
        sa, sb = checkpoints.load_torch(a.dir, "model.pt"), checkpoints.load_torch(b.dir, "model.pt")
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), a.label
        for name in ("history", "examples", "summary"):
            ta, tb = (pd.read_parquet(c.dir / f"{name}.parquet") for c in (a, b))
            ta, tb = (t.drop(columns=[c for c in TIMING if c in t]) for t in (ta, tb))
            pd.testing.assert_frame_equal(ta, tb, check_exact=True, obj=f"{a.label} {name}")
    meta = store.read_cell_json(shared.cell("digits-tiny", "downscaled_extended", 5, 0.0, 0).dir)
    p = shared.cell("digits-tiny", "downscaled_extended", 4, 0.0, 0)
    assert meta["continued_from"] == {"cell": p.relpath, "cell_hash": p.hash}
    assert meta["cycles_trained"] == [5]  # one cycle on top of level 4's five
    assert store.read_cell_json(unshared.cell("digits-tiny", "downscaled_extended", 5, 0.0, 0).dir
                                  )["continued_from"] is None


def test_plan_reports_cycles_with_and_without_sharing_on_the_paper_grid():
    p = plan(load_study(REPO / "workflow" / "studies" / "paper.yaml"))
    resnet = {r["arm"]: r for r in p["table"] if r["benchmark"] == "cifar10-resnet20"}
    s = load_study(REPO / "workflow" / "studies" / "paper.yaml")
    widths = [chains.width(s.cell("cifar10-resnet20", "downscaled_extended", k, 0.0, 0)) for k in range(1, 19)]
    assert widths == [14, 13, 11, 10, 9, 8, 7, 7, 6, 5, 5, 4, 4, 3, 3, 3, 2, 2]  # as the issue measured
    per_chain_set = sum(range(2, 20))  # 189 cycles per (noise, seed) without sharing
    runs = [len([w for w in widths if w == v]) for v in dict.fromkeys(widths)]  # same-width levels, in order
    # by hand: a run of r levels starting at level k trains k cycles at its first level (k+1,
    # less downscaled L_k's one) and one cycle at each further level (on top of the previous)
    shared = 0
    k = 1
    for r in runs:
        shared += k + r - 1
        k += r
    sets = 3 * 7  # noise x seeds of paper.yaml
    assert resnet["downscaled_extended"]["cycles_unshared"] == per_chain_set * sets
    assert resnet["downscaled_extended"]["cycles"] == shared * sets
    assert p["cycles_unshared"] == 22_008 + 11 and p["cycles"] < p["cycles_unshared"]  # + ImageNet's dense and 10 imp
    print(f"\npaper.yaml cycles: {p['cycles_unshared']:,} unshared, {p['cycles']:,} shared")


def test_a_study_without_downscaled_trains_from_scratch_except_same_width_levels(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(STUDY.format(share="true").replace("arms: [dense, downscaled, downscaled_extended]",
                                                      "arms: [dense, downscaled_extended]"))
    s = load_study(path, {"results_root": str(tmp_path / "r")})
    parents = [[(p.arm, p.level) for p in chains.parents(s.cell("digits-tiny", "downscaled_extended", k, 0.0, 0))]
               for k in range(1, 7)]
    assert parents == [[], [], [], [], [("downscaled_extended", 4)], []]
