"""Arms a study defines (name, base, pruning method): parsed, hashed and refused."""

import pytest
import yaml

from prunegen.study import chains
from prunegen.study.grid import StudyError
from prunegen.study.load import from_dict
from tests.helpers import PINNED, PINNED_STUDY, REPO


def study(arms, **extra):
    raw = yaml.safe_load(PINNED_STUDY)
    raw["arms"] = arms
    raw.update(extra)
    return from_dict(raw)


SNIP = {"name": "imp_snip", "base": "imp", "method": "snip"}


def test_a_defined_arm_is_an_imp_chain_with_its_method_and_defaults_filled_in():
    s = study(["dense", "imp", SNIP, {"name": "imp_sf", "base": "imp", "method": {"name": "synflow", "rounds": 10}}])
    assert s.arms == ("dense", "imp", "imp_snip", "imp_sf")
    cell = s.cell("digits-mlp", "imp_snip", 2, 0.2, 0)
    assert (cell.base, cell.method) == ("imp", {"name": "snip", "batches": 1})
    assert [p.relpath for p in chains.parents(cell)] == [s.cell("digits-mlp", "imp_snip", 1, 0.2, 0).relpath]
    assert chains.parents(chains.parents(cell)[0])[0].arm == "dense"  # level 0 is the shared dense cell
    assert s.cell("digits-mlp", "imp_sf", 1, 0.0, 0).method == {"name": "synflow", "rounds": 10}
    assert s.chain_arms[-2:] == ("imp_snip", "imp_sf")
    assert {c.arm for c in s.cells()} == {"dense", "imp", "imp_snip", "imp_sf"}
    assert len(s.cells()) == 2 * (1 + 3 * 2)


def test_defining_arms_leaves_the_builtin_cells_hashes_as_pinned():
    s = study(["dense", "imp", "downscaled_extended", SNIP])
    for (arm, level, noise, seed), pinned in PINNED.items():
        assert s.cell("digits-mlp", arm, level, noise, seed).hash == pinned


def test_a_defined_arms_hash_covers_its_method_and_options():
    mag = {"name": "imp_mag", "base": "imp", "method": "magnitude"}
    s = study(["imp", SNIP, mag, {"name": "imp_snip4", "base": "imp", "method": {"name": "snip", "batches": 4}}])
    hashes = {a: s.cell("digits-mlp", a, 1, 0.0, 0).hash for a in ("imp", "imp_snip", "imp_mag", "imp_snip4")}
    assert len(set(hashes.values())) == 4
    renamed = study(["imp", {**SNIP, "method": "grasp"}])
    assert renamed.cell("digits-mlp", "imp_snip", 1, 0.0, 0).hash != hashes["imp_snip"]


@pytest.mark.parametrize("arms, message", [
    ([{"name": "x", "base": "imp", "method": "snipp"}], r"arms\[0\] \(x\)\.method: unknown pruning method 'snipp'"),
    ([{"name": "x", "base": "imp", "method": {"name": "lottery"}}], r"unknown pruning method 'lottery'"),
    ([{"name": "x", "base": "imp", "method": {"name": "synflow", "round": 3}}], r"'synflow' has no option 'round'"),
    ([{"name": "x", "base": "imp", "method": {"name": "synflow", "rounds": 0}}], r"synflow\.rounds must be a positive"),
    ([{"name": "x", "base": "extended", "method": "snip"}], r"base 'extended' cannot take a pruning method"),
    ([{"name": "imp", "base": "imp", "method": "snip"}], r"arm name 'imp' is already taken by a built-in arm"),
    (["imp", SNIP, {**SNIP, "method": "grasp"}], r"arms\[2\]: arm name 'imp_snip' is already taken"),
    ([{"name": "Bad-Name", "base": "imp", "method": "snip"}], r"arms\[0\]"),
    (["impp"], r"arms\[0\]: unknown arm 'impp'; built-in arms are \['dense'"),
])
def test_a_bad_defined_arm_is_refused_with_one_message_naming_it(arms, message):
    with pytest.raises(StudyError, match=message) as e:
        study(arms)
    assert "\n" not in str(e.value)


def test_an_unknown_method_error_lists_the_methods():
    with pytest.raises(StudyError, match="methods are \\['grasp', 'magnitude', 'magnitude_layerwise', "
                                         "'random_global', 'snip', 'synflow'\\]"):
        study([{"name": "x", "base": "imp", "method": "nope"}])


def test_loading_a_study_with_defined_arms_imports_no_torch():
    import subprocess
    import sys
    code = ("import sys, yaml; from tests.helpers import PINNED_STUDY; from prunegen.study.load import from_dict; "
            "raw = yaml.safe_load(PINNED_STUDY); raw['arms'] = ['imp', {'name': 'a', 'base': 'imp', 'method': 'snip'}]; "
            "s = from_dict(raw); s.cell('digits-mlp', 'a', 1, 0.0, 0).hash; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# ---------------------------------------------------------------- control and TIE bases

CONTROLS = [{"name": "oneshot", "base": "oneshot"}, {"name": "os_ext", "base": "oneshot_extended", "method": "snip"},
            {"name": "reinit", "base": "reinit"}, {"name": "tie_removed", "base": "tie_removed", "top": 0.05},
            {"name": "tie_random", "base": "tie_random", "top": 0.05}]


def test_control_bases_read_the_cells_their_table_says_and_fill_in_defaults():
    s = study(["dense", "imp", SNIP, *CONTROLS, {"name": "reinit_snip", "base": "reinit", "mask_from": "imp_snip"}])
    c = lambda arm, k: s.cell("digits-mlp", arm, k, 0.2, 0)  # noqa: E731
    rel = lambda cell: [p.relpath for p in chains.parents(cell)]  # noqa: E731
    assert c("oneshot", 3).method == {"name": "magnitude"} and rel(c("oneshot", 3)) == [c("dense", 0).relpath]
    assert c("os_ext", 2).method == {"name": "snip", "batches": 1}
    assert rel(c("reinit", 2)) == [c("imp", 2).relpath] and rel(c("reinit_snip", 2)) == [c("imp_snip", 2).relpath]
    assert rel(c("tie_removed", 2)) == [c("dense", 0).relpath, c("imp", 2).relpath]
    assert rel(c("tie_random", 2)) == []
    assert s.arm_specs["tie_removed"].options == {"top": 0.05, "source": "imp"}
    assert s.arm_specs["reinit"].method is None
    assert "oneshot" not in s.chain_arms and "tie_removed" not in s.chain_arms
    hashes = {a: c(a, 1).hash for a in ("imp", "oneshot", "os_ext", "reinit", "reinit_snip", "tie_removed",
                                        "tie_random")}
    assert len(set(hashes.values())) == len(hashes)
    other_top = study(["imp", {"name": "tie_removed", "base": "tie_removed", "top": 0.2}])
    assert other_top.cell("digits-mlp", "tie_removed", 1, 0.2, 0).hash != hashes["tie_removed"]


def test_control_bases_leave_the_builtin_cells_hashes_as_pinned():
    s = study(["dense", "imp", "downscaled_extended", *CONTROLS])
    for (arm, level, noise, seed), pinned in PINNED.items():
        assert s.cell("digits-mlp", arm, level, noise, seed).hash == pinned


@pytest.mark.parametrize("arms, message", [
    (["imp", {"name": "x", "base": "reinit", "method": "snip"}], r"arms\[1\] \(x\): base 'reinit' prunes nothing"),
    (["imp", {"name": "x", "base": "tie_removed", "top": 1.5}], r"\(x\)\.top must be a fraction in \(0, 1\)"),
    (["imp", {"name": "x", "base": "tie_random", "source": "imp"}], r"base 'tie_random' has no option 'source'"),
    (["dense", {"name": "x", "base": "reinit"}], r"\(x\)\.mask_from: 'imp' is not an imp-like arm of this study"),
    (["imp", {"name": "x", "base": "tie_removed", "source": "oneshot"}, {"name": "oneshot", "base": "oneshot"}],
     r"\(x\)\.source: 'oneshot' is not an imp-like arm"),
    (["imp", {"name": "x", "base": "imp"}], r"\(x\): base 'imp' needs a pruning method"),
    (["imp", {"name": "x", "base": "oneshot", "method": "lottery"}], r"\(x\)\.method: unknown pruning method 'lottery'"),
])
def test_a_bad_control_arm_is_refused_with_one_message_naming_it(arms, message):
    with pytest.raises(StudyError, match=message) as e:
        study(arms)
    assert "\n" not in str(e.value)
