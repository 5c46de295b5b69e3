"""Sharded evaluation, watched: `python eval_probe.py OUT STUDY` on each rank (torch's
env:// variables set by the test). For each benchmark of STUDY: the model's BatchNorm
statistics are made to differ by rank (a train-mode forward on the rank's own examples, as
the last step of a data-parallel epoch leaves them), then rank 0 evaluates every split
alone (the reference) and all ranks evaluate it sharded. Writes OUT/eval<r>.json: whether
the buffers differed before, and (rank 0) whether the sharded numbers equal the reference
bit for bit."""

import hashlib
import json
import os
import sys
from pathlib import Path

import torch

from prunegen.engine import ranks, training
from prunegen.engine.data import load_dataset
from prunegen.engine.models import build_model
from prunegen.engine.splits import make_splits
from prunegen.study.load import load_study

out, study = Path(sys.argv[1]), load_study(sys.argv[2])
torch.set_num_threads(1)
r = ranks.join()
seen: dict = {}
for name, bm in study.benchmarks.items():
    ds = load_dataset(bm.dataset, study.data_root, source=bm.source)
    splits = make_splits(ds, val_size=bm.data.val_size, noise=0.0, noise_mode="other_class", seed=0,
                         augment=False, device="cpu")
    torch.manual_seed(0)
    model = build_model(bm.model, input_shape=ds.input_shape, num_classes=ds.num_classes)
    _, x = next(training._eval_batches(splits.train, 8 + 4 * r.rank))  # each rank its own batch
    model.train()(training._inputs(x, splits, False))  # running statistics of this rank's batch
    digest = hashlib.sha256(b"".join(b.numpy().tobytes() for b in model.buffers())).hexdigest()
    digests = r.gather(digest)
    row = {"buffers_differed": None if digests is None else len(set(digests)) == r.world}
    bs = bm.train.eval_batch_size
    for split in (splits.train, splits.val, splits.test):
        ref = training.evaluate(model, split, splits, bs) if r.main else None  # rank 0's model alone
        loss, pred = training.evaluate(model, split, splits, bs, ranks=r)
        if r.main:
            row[split.name] = {"n": len(loss), "batches": -(-len(split) // bs),
                               "equal": torch.equal(loss, ref[0]) and torch.equal(pred, ref[1])}
        else:
            row[split.name] = {"got": loss is None and pred is None}
    seen[name] = row
ranks.leave()
(out / f"eval{os.environ['RANK']}.json").write_text(json.dumps(seen))
