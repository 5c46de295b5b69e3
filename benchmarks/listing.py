"""Listing an image-folder dataset (issue 28's ImageNet): what a cell pays to know its files,
with the index (prunegen.engine.folder_index) against without it.

    .venv/bin/python benchmarks/listing.py [--classes 1000] [--per-class 1281] [--val 50]

Builds ImageNet's layout with empty files (`--classes` x `--per-class` training images, `--val`
per class for val/) under benchmarks/out/listing-tree/ (kept between runs; folder times set an
hour back, so the index is not "racy"), then times, in this process:
- torchvision's make_dataset over both splits: what every cell did before the index;
- the first `folder_index.listing` (lists, writes the index);
- the next ones (read the index, stat every folder): what every later cell and rank pays.
The ratio is make_dataset's time over the indexed read's, the median of `--repeat`. On a
cluster's shared file system a directory entry costs far more than here, and the index
replaces 1.28 M of them with about 2,000 folder stats. JSON in benchmarks/out/listing.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from prunegen.engine import folder_index

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"


def make_tree(root: Path, classes: int, per_class: int, val: int) -> Path:
    stamp = root / f".built-{classes}-{per_class}-{val}"
    if stamp.is_file():
        return root
    for split, n in (("train", per_class), ("val", val)):
        for c in range(classes):
            d = root / split / f"n{c:08d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (d / f"n{c:08d}_{i:06d}.JPEG").touch()
    old = time.time() - 3600
    for here, dirs, _ in os.walk(root):
        for d in dirs:
            os.utime(Path(here) / d, (old, old))
    stamp.touch()
    return root


def timed(f) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = f()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--per-class", type=int, default=1281)
    ap.add_argument("--val", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    root = make_tree(OUT / "listing-tree", args.classes, args.per_class, args.val)
    classes, class_to_idx = find_classes(str(root / "train"))
    with tempfile.TemporaryDirectory() as index:
        os.environ[folder_index.ENV] = index

        def torchvision():
            return [make_dataset(str(root / s), class_to_idx, extensions=IMG_EXTENSIONS) for s in ("train", "val")]

        def indexed():
            return folder_index.listing(root, classes, IMG_EXTENSIONS)

        plain = [timed(torchvision)[0] for _ in range(args.repeat)]
        first, got = timed(indexed)
        reads = [timed(indexed)[0] for _ in range(args.repeat)]
        want = torchvision()
        assert [len(got[s][0]) for s in ("train", "val")] == [len(w) for w in want]
        assert got["train"][0][-1].decode() == want[0][-1][0]  # (the same list, end to end)
        size = os.path.getsize(folder_index.index_path(root))
    out = {
        "machine": platform.node(), "python": platform.python_version(),
        "classes": args.classes, "per_class": args.per_class, "val_per_class": args.val,
        "files": args.classes * (args.per_class + args.val), "folders_stat": 2 + 2 * args.classes,
        "make_dataset_s": statistics.median(plain), "first_listing_s": first,
        "indexed_read_s": statistics.median(reads), "index_bytes": size,
    }
    out["ratio_make_dataset_over_indexed"] = out["make_dataset_s"] / out["indexed_read_s"]
    OUT.mkdir(exist_ok=True)
    (OUT / "listing.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
