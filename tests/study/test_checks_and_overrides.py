"""What only the data could refute, refused when a study loads (sizes and shapes are known
without the data), and `key.path=value` overrides: validated like the file, naming the key."""

import subprocess
import sys

import pytest
import yaml

from prunegen import cli
from prunegen.study.grid import StudyError
from prunegen.study.load import apply_set, from_dict, load_study
from tests.helpers import REPO, SMOKE


def raw():
    return yaml.safe_load(SMOKE.read_text())


def test_a_validation_split_as_large_as_the_training_set_is_refused_naming_the_field():
    r = raw()
    r["benchmarks"]["digits-mlp"]["data"]["val_size"] = 1437  # digits has 1,437 training examples
    with pytest.raises(StudyError, match=r"benchmarks\.digits-mlp\.data\.val_size: 1437 leaves no training"):
        from_dict(r)
    r["benchmarks"]["digits-mlp"]["data"]["val_size"] = 1436
    from_dict(r)  # one left: allowed


def test_a_model_that_cannot_take_the_inputs_and_a_tie_top_that_removes_everything_are_refused():
    r = raw()
    r["benchmarks"]["digits-mlp"]["model"] = {"name": "vgg11"}  # 4 max-pools on 8x8 digits
    with pytest.raises(StudyError, match=r"benchmarks\.digits-mlp\.model: vgg11 .* at least 16x16 pixels, not 8x8"):
        from_dict(r)
    r = raw()
    r["arms"] = ["dense", "imp", {"name": "tie", "base": "tie_random", "top": 0.9999}]
    with pytest.raises(StudyError, match=r"arms \(tie\)\.top: 0\.9999 removes all 1257 training examples"):
        from_dict(r)


def test_status_and_a_dry_run_refuse_a_study_the_data_refutes_naming_the_field(tmp_path, capsys):
    r = raw()
    r["benchmarks"]["digits-mlp"]["data"]["val_size"] = 100000
    path = tmp_path / "big_val.yaml"
    path.write_text(yaml.safe_dump(r))
    assert cli.main(["status", "--study", str(path), "--results-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "benchmarks.digits-mlp.data.val_size: 100000" in err
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--snakefile", str(REPO / "Snakefile"),
                          "--directory", str(tmp_path), "--cores", "1", "--config", f"study={path}"],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "benchmarks.digits-mlp.data.val_size: 100000" in out.stdout + out.stderr


def test_overrides_change_what_they_name_and_nothing_else():
    base = load_study(SMOKE)
    s = load_study(SMOKE, set_text="benchmarks.digits-mlp.train.epochs=5 seeds=[0,1] noise_mode=any_class")
    assert s.benchmarks["digits-mlp"].train.epochs == 5 and s.seeds == (0, 1) and s.noise_mode == "any_class"
    assert s.benchmarks["digits-mlp"].train.lr == base.benchmarks["digits-mlp"].train.lr
    assert s.raw["seeds"] == [0, 1] and base.raw["seeds"] == [0]  # the resolved study keeps them
    # an override that no cell of an arm reads leaves that arm's hashes as they were
    f = load_study(SMOKE, set_text="benchmarks.digits-mlp.prune.variant=finetune")
    for arm, same in (("dense", True), ("extended", True), ("downscaled", True), ("imp", False), ("random", False)):
        level = 0 if arm == "dense" else 2
        assert (f.cell("digits-mlp", arm, level, 0.2, 0).hash == base.cell("digits-mlp", arm, level, 0.2, 0).hash) == same


@pytest.mark.parametrize("text, message", [
    ("benchmarks.digits-mlp.train.epochz=5", r"benchmarks\.digits-mlp\.train: .*'epochz' was unexpected"),
    ("benchmarks.digits-mlpx.train.epochs=5", r"set: benchmarks\.digits-mlpx\.train\.epochs: the study has no "
                                              r"benchmark 'digits-mlpx'; it has digits-mlp"),
    ("seeds=[0,-1]", r"seeds\[1\]: -1 is less than the minimum of 0"),
    ("levels", r"set: 'levels' is not key\.path=value"),
    ("benchmarks.digits-mlp.train.epochs=0", r"benchmarks\.digits-mlp\.train\.epochs: 0 is less than the minimum"),
])
def test_a_bad_override_is_refused_naming_the_key(text, message):
    with pytest.raises(StudyError, match=message):
        load_study(SMOKE, set_text=text)


def test_a_benchmark_name_with_dots_and_a_quoted_value():
    r = raw()
    r["benchmarks"] = {"digits.v2": r["benchmarks"]["digits-mlp"]}
    out = apply_set(r, "benchmarks.digits.v2.train.lr=0.02 'study=a-b'")
    assert out["benchmarks"]["digits.v2"]["train"]["lr"] == 0.02 and out["study"] == "a-b"
    assert r["benchmarks"]["digits.v2"]["train"]["lr"] == 0.05  # the original is left as it was
