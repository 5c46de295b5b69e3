"""One rank of a data-parallel cell, watched: `python rank_probe.py OUT ARGV...` runs
`prunegen ARGV` (run-cell for rank 0, `rank` for the others) in this process, with
torch's env:// variables set by the test, and checks after EVERY optimizer step that the
masked weights and their gradients are exactly zero. Writes OUT/rank<r>.json."""

import json
import os
import sys
from pathlib import Path

import torch

from prunegen import cli
from prunegen.engine import pruning, sgd

out = Path(sys.argv[1])
seen = {"steps": 0, "masked_weight_max": 0.0, "masked_grad_max": 0.0, "masked": 0}
bound = []
mask_grads, step = pruning.mask_grads, sgd.SGD.step


def watched_mask_grads(b):
    bound[:] = b
    mask_grads(b)


def watched_step(self):
    step(self)
    seen["steps"] += 1
    for p, m in bound:
        off = m == 0
        seen["masked"] = int(off.sum())
        seen["masked_weight_max"] = max(seen["masked_weight_max"], float(p.detach()[off].abs().max()))
        seen["masked_grad_max"] = max(seen["masked_grad_max"], float(p.grad[off].abs().max()))


pruning.mask_grads = watched_mask_grads
sgd.SGD.step = watched_step
torch.set_num_threads(1)
rc = cli.main(sys.argv[2:])
(out / f"rank{os.environ['RANK']}.json").write_text(json.dumps({**seen, "rc": rc}))
sys.exit(rc)
