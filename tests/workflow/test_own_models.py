"""Models from the researcher's code (issue 29): a factory in a package of the test's own,
outside prunegen, run with every built-in arm through Snakemake; a broken or missing factory
refused when the study loads, naming it; status warning on cells of two factory versions."""

import json
import os
import sys

import pandas as pd
import pytest
import yaml

from prunegen import cli
from prunegen.records import store
from prunegen.study.grid import StudyError
from prunegen.study.load import from_dict
from tests.helpers import SMOKE, snakemake

NETS = '''
from torch import nn


def tiny_cnn(input_shape, num_classes, width, depth=2):
    c, h, w = input_shape
    layers, f = [], c
    for _ in range(depth):
        layers += [nn.Conv2d(f, width, 3, padding=1), nn.ReLU()]
        f = width
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(f, num_classes))
    model.prunegen_ignore = ["{out}"]  # the output layer, never pruned (as LeNet's)
    return model


def wrong_logits(input_shape, num_classes, width):
    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0] * input_shape[1] * input_shape[2], num_classes + 1))


def wrong_input(input_shape, num_classes, width):
    return nn.Sequential(nn.Flatten(), nn.Linear(7, num_classes))


def not_a_module(input_shape, num_classes, width):
    return "a model"
'''


@pytest.fixture
def lab(tmp_path, monkeypatch):
    """A package `mylab` of the test's own, importable by the study loader's probe."""
    pkg = tmp_path / "labpkg" / "mylab"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(NETS.replace("{out}", "6"))  # depth 2: conv, relu, conv, relu, pool, flat, fc
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(pkg.parent), os.environ.get("PYTHONPATH")])))
    monkeypatch.syspath_prepend(str(pkg.parent))  # and in this process, where a test runs a cell itself
    for name in [m for m in sys.modules if m == "mylab" or m.startswith("mylab.")]:
        monkeypatch.delitem(sys.modules, name)  # another test's mylab, from its own folder
    return pkg


def _raw(tmp_path, model, arms=None):
    raw = yaml.safe_load(SMOKE.read_text())
    bm = raw["benchmarks"]["digits-mlp"]
    bm["model"] = model
    bm["train"]["epochs"] = 2
    raw |= {"study": "own-model", "results_root": str(tmp_path / "results"), "levels": 2, "noise": [0.0],
            "seeds": [0]}
    if arms:
        raw["arms"] = arms
    return raw


@pytest.mark.workflow
@pytest.mark.slow
def test_a_factory_model_runs_every_builtin_arm_through_snakemake(tmp_path, lab):
    raw = _raw(tmp_path, {"factory": "mylab.nets:tiny_cnn", "width": 16, "depth": 2},
               arms=["dense", "imp", "extended", "downscaled", "downscaled_extended", "random"])
    raw["noise"] = [0.2]  # noisy labels: the memorization tables have rows too
    raw["levels"] = 1  # each job probes the factory once (a subprocess): keep the jobs few
    study = from_dict(raw)
    bm = study.benchmarks["digits-mlp"]
    assert bm.model == {"factory": "mylab.nets:tiny_cnn", "name": "tiny_cnn", "width": 16, "options": {"depth": 2}}
    assert bm.prune.ignore == ("6",)  # the factory's prunegen_ignore
    path = tmp_path / "own-model.yaml"
    path.write_text(yaml.safe_dump(raw))
    snakemake(tmp_path, path, env=os.environ)
    root = tmp_path / "results" / "own-model"
    summary = pd.read_parquet(root / "tables" / "summary.parquet")
    got = {arm: sorted(int(v) for v in g["level"]) for arm, g in summary.groupby("arm", observed=True)}
    assert got == {"dense": [0], **{a: [1] for a in ("imp", "extended", "downscaled", "downscaled_extended", "random")}}
    assert set(summary.model) == {"tiny_cnn"}
    from prunegen.records import layout
    for table in layout.TABLES:  # every table a built-in model's study gets
        assert len(pd.read_parquet(root / "tables" / f"{table}.parquet")) > 0, table
    assert len(pd.read_parquet(next(root.glob("cells/**/arm=imp/**/level=1/examples.parquet")))) > 0
    imp1 = summary[(summary.arm == "imp") & (summary.level == 1)].iloc[0]
    assert imp1.density == pytest.approx(0.8, abs=0.01)
    down1 = summary[(summary.arm == "downscaled") & (summary.level == 1)].iloc[0]
    assert down1.width < 16 and down1.density == 1.0  # the width search ran on the factory's counts
    meta = json.loads(next(root.glob("cells/**/arm=imp/**/level=1/cell.json")).read_text())
    assert meta["factory"]["path"] == "mylab.nets:tiny_cnn" and len(meta["factory"]["source_digest"]) == 12
    assert meta["hparams"]["model"]["options"] == {"depth": 2}


def test_the_factorys_options_enter_the_hash(tmp_path, lab):
    cell = lambda depth: from_dict(_raw(tmp_path, {"factory": "mylab.nets:tiny_cnn", "width": 8, "depth": depth})).cell(  # noqa: E731
        "digits-mlp", "dense", 0, 0.0, 0).hash
    assert cell(2) != cell(3)


@pytest.mark.parametrize("model,message", [
    ({"factory": "mylab.nope:tiny_cnn", "width": 8}, r"benchmarks.digits-mlp.model.factory: cannot import "
                                                     r"'mylab.nope:tiny_cnn': ModuleNotFoundError"),
    ({"factory": "mylab.nets:missing", "width": 8}, r"benchmarks.digits-mlp.model.factory: mylab.nets has no "
                                                    r"function 'missing'"),
    ({"factory": "mylab.nets:wrong_logits", "width": 8}, r"benchmarks.digits-mlp.model.factory: "
                                                         r"'mylab.nets:wrong_logits': its model maps a batch of 2 to \(2, 11\)"),
    ({"factory": "mylab.nets:not_a_module", "width": 8}, r"returned str, not a torch.nn.Module"),
    ({"factory": "mylab.nets:tiny_cnn"}, r"benchmarks.digits-mlp.model.width: required for a factory model"),
    ({"factory": "mylab.nets:wrong_input", "width": 8}, r"its model fails on a \(2, 1, 8, 8\) batch: RuntimeError"),
])
def test_a_broken_or_missing_factory_is_refused_at_load_naming_it(tmp_path, lab, model, message):
    with pytest.raises(StudyError, match=message):
        from_dict(_raw(tmp_path, model))


def test_status_warns_when_cells_come_from_two_versions_of_the_factory(tmp_path, lab, capsys):
    from prunegen.engine.run import run

    raw = _raw(tmp_path, {"factory": "mylab.nets:tiny_cnn", "width": 4}, arms=["dense", "imp"])
    raw["levels"] = 1
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    study = from_dict(raw, path=path)
    dense, imp = study.cell("digits-mlp", "dense", 0, 0.0, 0), study.cell("digits-mlp", "imp", 1, 0.0, 0)
    run(dense), run(imp)
    args = ["status", "--study", str(path)]
    assert cli.main(args) == 0
    assert "warning" not in capsys.readouterr().out
    meta = json.loads((imp.dir / "cell.json").read_text())
    meta["factory"]["source_digest"] = "0123456789ab"  # as an edit of mylab/nets.py between the two runs
    store.write_cell_json(meta, imp.dir)
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "warning: the complete cells come from 2 engines" in out and "factory mylab.nets:tiny_cnn 0123456789ab" in out
