
import pytest
import yaml

from prunegen.study.grid import StudyError
from prunegen.study.load import from_dict, load_study
from tests.helpers import PINNED, PINNED_STUDY, SMOKE


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


ALL_ARMS = ["dense", "imp", "extended", "downscaled", "downscaled_extended", "random"]


def hashes(r, arms=ALL_ARMS) -> dict:
    study = from_dict(r)
    return {arm: study.cell("digits-mlp", arm, 0 if arm == "dense" else 2, 0.2, 0).hash for arm in arms}


def with_prune(**prune):
    r = raw()
    r["benchmarks"]["digits-mlp"]["prune"].update(prune)
    return r


# field -> a new value, and the arms whose hash it changes (from the smoke study's lrr defaults)
READS = [
    ({"fraction": 0.3}, {"imp", "random", "downscaled", "downscaled_extended"}),  # widths change too
    ({"variant": "finetune"}, {"imp", "random"}),
    ({"rewind_epoch": 2}, set()),  # nothing rewinds under lrr
    ({"finetune_lr": 0.01}, set()),  # nothing fine-tunes under lrr
    ({"rewind_schedule": False}, set()),
    ({"ignore": []}, set(ALL_ARMS)),  # the mask's layers, and the width's prunable count
]


@pytest.mark.parametrize("change, readers", READS, ids=[next(iter(c)) for c, _ in READS])
def test_a_cells_hash_covers_exactly_the_prune_fields_its_arm_reads(change, readers):
    before, after = hashes(raw()), hashes(with_prune(**change))
    assert {arm for arm in ALL_ARMS if before[arm] != after[arm]} == readers


def test_the_rewind_point_is_read_by_dense_and_the_rewinding_cells_only():
    rewind = hashes(with_prune(variant="weight_rewind"))
    later = hashes(with_prune(variant="weight_rewind", rewind_epoch=2))
    assert {a for a in ALL_ARMS if rewind[a] != later[a]} == {"dense", "imp", "random"}
    # without an arm that rewinds, dense does not read it
    r = with_prune(variant="weight_rewind")
    r["arms"] = ["dense", "extended"]
    quiet = with_prune(variant="weight_rewind", rewind_epoch=2)
    quiet["arms"] = ["dense", "extended"]
    assert hashes(r, ["dense", "extended"]) == hashes(quiet, ["dense", "extended"]) == hashes(raw(), ["dense", "extended"])
    # the schedule rewind is weight_rewind's own: those cells hash it, and it changes their meaning
    no_schedule = hashes(with_prune(variant="weight_rewind", rewind_schedule=False))
    assert {a for a in ALL_ARMS if rewind[a] != no_schedule[a]} == {"imp", "random"}
    with pytest.raises(StudyError, match="prune.rewind_epoch: 3 leaves none of the 3 epochs"):
        from_dict(with_prune(variant="weight_rewind", rewind_epoch=3))
    finetune = hashes(with_prune(variant="finetune"))
    assert hashes(with_prune(variant="finetune", finetune_lr=0.01))["imp"] != finetune["imp"]


def test_a_downscaled_hash_reads_the_fraction_only_through_the_width():
    from prunegen.study import shapes

    spec, shape, ignore = {"name": "mlp", "hidden": [64, 32]}, (1, 8, 8), ("output",)
    width = {f: [shapes.downscaled_width(spec, shape, 10, ignore, f, k)[0] for k in (1, 2)] for f in (0.2, 0.21, 0.25)}
    assert width[0.21] == width[0.2] != width[0.25]  # 0.21 lands on 0.2's widths, 0.25 does not
    base = hashes(raw())
    assert hashes(with_prune(fraction=0.21))["downscaled"] == base["downscaled"]
    assert hashes(with_prune(fraction=0.25))["downscaled"] != base["downscaled"]
    for f in (0.21, 0.25, 0.3, 0.5, 0.55):  # the canonical fraction has the same width
        for k in (1, 2, 5):
            c = shapes.canonical_fraction(spec, shape, 10, ignore, f, k, 0.2)
            assert shapes.downscaled_width(spec, shape, 10, ignore, c, k) == shapes.downscaled_width(spec, shape, 10, ignore, f, k)
    assert shapes.canonical_fraction(spec, shape, 10, ignore, 0.5, 3, 0.2) == 0.5  # a simple fraction stays itself


def test_cifar_models_spell_out_their_batchnorm_init_and_mlps_have_none():
    r = raw()
    r["benchmarks"]["digits-mlp"]["model"]["bn_init"] = "ones"
    with pytest.raises(StudyError, match="bn_init applies only to models with BatchNorm"):
        from_dict(r)
    assert "bn_init" not in from_dict(raw()).benchmarks["digits-mlp"].model  # MLP hashes as before
    r = raw()
    r["benchmarks"]["digits-mlp"]["model"] = {"name": "resnet20"}
    uniform = from_dict(r)
    assert uniform.benchmarks["digits-mlp"].model == {"name": "resnet20", "width": 16, "bn_init": "uniform"}
    r["benchmarks"]["digits-mlp"]["model"]["bn_init"] = "ones"
    assert from_dict(r).cell("digits-mlp", "dense", 0, 0.0, 0).hash != uniform.cell("digits-mlp", "dense", 0, 0.0, 0).hash


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


@pytest.mark.parametrize("batch_size,words", [
    (1, ["1 examples cannot be shared by the 2 ranks"]),
    (1256, ["last global batch of an epoch has 1 of the 1257 training examples", "2 ranks"]),
])
def test_a_data_parallel_batch_that_leaves_a_rank_no_examples_is_refused(batch_size, words):
    """digits trains on 1257 examples: with 2 ranks, a batch of 1, or one whose epoch ends in a
    batch of 1, would leave a rank an empty share; 64 (last batch 41) is fine."""
    raw = _mutate(("benchmarks", "digits-mlp", "resources", "tasks"), 2)
    from_dict(raw, source="bad.yaml")
    raw["benchmarks"]["digits-mlp"]["train"]["batch_size"] = batch_size
    with pytest.raises(StudyError) as e:
        from_dict(raw, source="bad.yaml")
    assert str(e.value).startswith("bad.yaml: benchmarks.digits-mlp.train.batch_size: ")
    for w in words:
        assert w in str(e.value)


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


