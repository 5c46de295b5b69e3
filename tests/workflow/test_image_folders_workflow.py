"""A study on an image-folder dataset (issue 28, Done when 1): PNGs the test writes, streamed from
disk by DataLoader workers, through a real Snakemake run of every built-in arm; its records,
tables and verdicts as for an in-memory dataset."""

import subprocess
import sys

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from tests.helpers import SMOKE, snakemake, write_image_folders

ARMS = ["dense", "imp", "extended", "downscaled", "downscaled_extended", "random"]


@pytest.mark.workflow
@pytest.mark.slow
def test_a_study_on_image_folders_runs_every_arm_through_snakemake_to_its_verdicts(tmp_path):
    write_image_folders(tmp_path / "shapes", train=20, val=5)
    raw = yaml.safe_load(SMOKE.read_text())
    bm = raw["benchmarks"].pop("digits-mlp")
    bm.update(dataset="shapes", data={"val_size": 10}, model={"name": "resnet20", "width": 4})
    bm["train"] |= {"epochs": 1, "batch_size": 16}
    raw |= {"study": "folders", "data_root": str(tmp_path), "results_root": str(tmp_path / "results"),
            "benchmarks": {"shapes-resnet20": bm}, "arms": ARMS, "levels": 1, "noise": [0.25], "seeds": [0],
            "datasets": {"shapes": {"folders": "shapes", "shape": [3, 16, 16], "classes": 3, "mean": [110.0] * 3,
                                    "std": [70.0] * 3, "augment": True}}}
    study = tmp_path / "folders.yaml"
    study.write_text(yaml.safe_dump(raw))
    snakemake(tmp_path, study)
    root = tmp_path / "results" / "folders"
    summary = pq.read_table(root / "tables" / "summary.parquet").to_pandas()
    got = {arm: sorted(int(v) for v in g["level"]) for arm, g in summary.groupby("arm", observed=True)}
    assert got == {"dense": [0], **{a: [1] for a in ARMS[1:]}}
    assert set(summary.dataset) == {"shapes"} and (summary.noisy_examples == 12).all()  # round(0.25 x 50)
    assert summary.memorization.between(0, 1).all() and summary.train_loss_noisy.notna().all()
    ex = pd.read_parquet(next(root.glob("cells/**/arm=imp/**/level=1/examples.parquet")))
    assert ex.split.value_counts().to_dict() == {"train": 50, "test": 15, "val": 10}
    page = tmp_path / "page" / "results.md"
    run = subprocess.run([sys.executable, "-m", "prunegen.cli", "results", "--study", str(study), "--results-root",
                          str(tmp_path / "results"), "--out", str(page)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    verdicts = pd.read_parquet(page.parent / "results" / "folders" / "tables" / "verdicts.parquet")
    assert set(verdicts.benchmark) == {"shapes-resnet20"} and len(verdicts) >= 5
    assert "## Benchmark `shapes-resnet20`" in page.read_text()
