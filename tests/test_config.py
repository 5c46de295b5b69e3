import copy

import pytest
import yaml

from prunegen.config import StudyError, from_dict, load_study

from conftest import SMOKE


def raw():
    return yaml.safe_load(SMOKE.read_text())


def test_smoke_study_resolves_every_default():
    study = load_study(SMOKE)
    bm = study.benchmarks["digits-mlp"]
    assert bm.prune.ignore == ("output",)  # the mlp's default: its output layer is never pruned
    assert bm.train.nesterov is False and bm.train.eval_batch_size == 1024
    assert bm.data.augment is False and bm.data.val_size == 180
    assert study.noise_mode == "other_class"


def test_grid_has_one_dense_cell_and_every_level_of_every_other_arm():
    study = load_study(SMOKE)
    cells = study.cells()
    per_replicate = 1 + 5 * study.levels
    assert len(cells) == per_replicate * len(study.noise) * len(study.seeds)
    assert len({c.relpath for c in cells}) == len(cells)


# Pinned: these change only when SCHEMA_VERSION or a resolved hyperparameter changes.
# If this fails, every existing result would be silently re-run or mismatched: bump
# SCHEMA_VERSION deliberately and update the pins in the same commit.
PINNED = {
    ("dense", 0, 0.0, 0): "6f4c92cf335d9241",
    ("imp", 2, 0.2, 0): "3be61180f743e2a8",
    ("downscaled_extended", 1, 0.0, 0): "de1f6dce24bccdbe",
}


PINNED_STUDY = """
study: pinned
benchmarks:
  digits-mlp:
    dataset: digits
    model: {name: mlp, hidden: [64, 32]}
    train: {epochs: 3, batch_size: 64, lr: 0.05}
    prune: {fraction: 0.2}
arms: [dense, imp, downscaled_extended]
levels: 2
noise: [0.0, 0.2]
seeds: [0]
"""


@pytest.mark.parametrize("key", list(PINNED))
def test_cell_hashes_are_pinned(key):
    arm, level, noise, seed = key
    study = from_dict(yaml.safe_load(PINNED_STUDY))
    assert study.cell("digits-mlp", arm, level, noise, seed).hash == PINNED[key]


def test_hash_covers_hyperparameters_and_ignores_resources():
    base = load_study(SMOKE).cell("digits-mlp", "imp", 1, 0.0, 0).hash
    r = raw()
    r["benchmarks"]["digits-mlp"]["resources"]["mem_mb"] = 9999
    assert from_dict(r).cell("digits-mlp", "imp", 1, 0.0, 0).hash == base
    r["benchmarks"]["digits-mlp"]["train"]["lr"] = 0.07
    assert from_dict(r).cell("digits-mlp", "imp", 1, 0.0, 0).hash != base
    # A default spelled out explicitly is the same configuration.
    r = raw()
    r["benchmarks"]["digits-mlp"]["train"]["nesterov"] = False
    assert from_dict(r).cell("digits-mlp", "imp", 1, 0.0, 0).hash == base


def test_dense_hash_ignores_the_prune_fraction_but_imp_does_not():
    r = raw()
    dense = from_dict(r).cell("digits-mlp", "dense", 0, 0.0, 0).hash
    imp = from_dict(r).cell("digits-mlp", "imp", 1, 0.0, 0).hash
    r["benchmarks"]["digits-mlp"]["prune"]["fraction"] = 0.3
    assert from_dict(r).cell("digits-mlp", "dense", 0, 0.0, 0).hash == dense
    assert from_dict(r).cell("digits-mlp", "imp", 1, 0.0, 0).hash != imp


def test_level_zero_of_every_arm_is_the_dense_cell():
    study = load_study(SMOKE)
    assert study.cell("digits-mlp", "imp", 0, 0.0, 0).relpath == study.cell("digits-mlp", "dense", 0, 0.0, 0).relpath


def _mutate(path, value):
    r = raw()
    node = r
    for p in path[:-1]:
        node = node[p]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return r


DELETE = object()
BAD = [
    (("benchmarks", "digits-mlp", "dataset"), "imagenet", ["benchmarks.digits-mlp.dataset", "imagenet"]),
    (("benchmarks", "digits-mlp", "model", "name"), "resnet99", ["model.name", "resnet99"]),
    (("arms",), ["dense", "pruned"], ["arms[1]", "pruned"]),
    (("noise",), [0.0, 1.0], ["noise[1]", "1.0"]),
    (("noise",), [-0.1], ["noise[0]", "-0.1"]),
    (("levels",), -1, ["levels", "-1"]),
    (("benchmarks", "digits-mlp", "train", "lrr"), 0.1, ["benchmarks.digits-mlp.train", "lrr"]),
    (("benchmarks", "digits-mlp", "train", "lr"), "fast", ["benchmarks.digits-mlp.train.lr", "fast"]),
    (("seeds",), DELETE, ["seeds"]),
]


@pytest.mark.parametrize("path,value,words", BAD, ids=[".".join(b[0]) for b in BAD])
def test_bad_study_is_refused_with_one_message_naming_the_field(path, value, words):
    with pytest.raises(StudyError) as e:
        from_dict(_mutate(path, value), source="bad.yaml")
    message = str(e.value)
    assert message.startswith("bad.yaml: ")
    assert "\n" not in message
    for w in words:
        assert w in message


@pytest.mark.parametrize("args,word", [
    (("cifar-nope", "imp", 1, 0.0, 0), "cifar-nope"),
    (("digits-mlp", "pruned", 1, 0.0, 0), "pruned"),
    (("digits-mlp", "imp", -1, 0.0, 0), "-1"),
    (("digits-mlp", "imp", 1, 1.5, 0), "1.5"),
    (("digits-mlp", "dense", 3, 0.0, 0), "dense"),
])
def test_bad_cell_request_is_refused(args, word):
    with pytest.raises(StudyError, match=word):
        load_study(SMOKE).cell(*args)


def test_missing_and_malformed_study_files(tmp_path):
    with pytest.raises(StudyError, match="not found"):
        load_study(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("study: [unclosed")
    with pytest.raises(StudyError, match="bad.yaml"):
        load_study(bad)


@pytest.mark.parametrize("name", ["mlp", "resnet20", "resnet32", "resnet56", "vgg11", "vgg16"])
def test_config_mirrors_the_models_ignored_layers(name):
    # config keeps its own copy so loading a study never imports torch; they must agree
    from prunegen import models
    from prunegen.config import default_ignore, resolve_model

    spec = resolve_model({"name": name})
    assert list(default_ignore(spec)) == models.default_ignore(spec)
