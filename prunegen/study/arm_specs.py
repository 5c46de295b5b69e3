"""The arms of a study: the built-in ones, the bases an arm can be made like, and the arms
a study defines on them (a name, a base and, for a pruning base, the method that replaces
global magnitude pruning).

    arms: [dense, imp, {name: imp_snip, base: imp, method: snip},
           {name: imp_synflow, base: imp, method: {name: synflow, rounds: 100}},
           {name: oneshot, base: oneshot}, {name: reinit, base: reinit},
           {name: tie_removed, base: tie_removed, top: 0.1}, {name: tie_random, base: tie_random, top: 0.1}]

`BASES` is the one registry of bases: what each is, its options, and the cycles behind a
cell of it (level k; T = train.epochs, one cycle; d_k = (1 - prune.fraction)^k):

| base                | model at level k                                         | cycles in the cell | in all |
| dense               | full width, from the seed's initialization (level 0)    | 1                  | 1      |
| imp                 | level k-1's weights, pruned by `method`                 | 1 (cycle k)        | k+1    |
| extended            | level k-1's weights, no mask                            | 1 (cycle k)        | k+1    |
| random              | level k-1's weights, a random mask with imp k's         | 1 (cycle k)        | k+1    |
|                     | per-layer counts                                        |                    |        |
| downscaled          | dense at the width whose weight count matches d_k       | 1                  | 1      |
| downscaled_extended | that width, trained k+1 cycles (LR restarted each)      | k+1                | k+1    |
| oneshot             | dense level 0's trained weights pruned to d_k in one    | 1 (cycle 1)        | 2      |
|                     | step by `method` (default magnitude)                    |                    |        |
| oneshot_extended    | the same, then trained as long as imp in all            | k (cycles 1..k)    | k+1    |
| reinit              | `mask_from` (default imp) level k's mask on a fresh     | 1 (cycle 0)        | 1      |
|                     | initialization (its own seeded stream)                  |                    |        |
| tie_removed         | dense, trained without the top `top` fraction of        | 1 (cycle 0)        | 1      |
|                     | training examples by loss improvement from dense level  |                    |        |
|                     | 0 to `source` (default imp) level k                     |                    |        |
| tie_random          | dense, trained without round(top x N) training examples | 1 (cycle 0)        | 1      |
|                     | drawn at random (seeded per level)                      |                    |        |

Which cells a cell reads is prunegen.study.chains; how its model is built,
prunegen.engine.arms and prunegen.engine.controls (the TIE example sets:
prunegen.engine.tie). A defined arm is an arm like any other (its own folder
`arm=<name>`); its level 0 is the shared dense cell. Built-in arms are unchanged, and so
are their cell hashes: only a defined arm's hash carries its base, method and options.

Torch-free: a study loads without importing torch, so the method names and the defaults
of their options are kept here; a test checks they match prunegen.engine.pruning.registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

# The built-in arms, in the vocabulary's order (tables and figures list arms in it).
ARMS = ("dense", "imp", "extended", "downscaled", "downscaled_extended", "random")
CHAIN_ARMS = ("imp", "extended", "random")  # level k continues level k-1
VARIANT_ARMS = ("imp", "random")  # the arms whose training the pruning variant shapes
DOWNSCALED_ARMS = ("downscaled", "downscaled_extended")  # dense at a width matching d_k


@dataclass(frozen=True)
class Base:
    """What a cell made like `name` is, as far as the study can say without torch."""

    name: str
    in_cell: Callable[[int], int]  # level -> cycles one cell trains itself (its chain's not counted)
    in_all: Callable[[int], int]   # level -> cycles behind its final model (its summary's `cycles`)
    options: dict = field(default_factory=dict)  # a defined arm's options and their defaults (hashed)
    method: bool = False     # its pruning step is the method its arm names
    definable: bool = False  # a study may define an arm on it


def _one(level: int) -> int:
    return 1


def _chain(level: int) -> int:
    return level + 1


BASES: dict[str, Base] = {b.name: b for b in (
    Base("dense", _one, _one),
    Base("imp", _one, _chain, method=True, definable=True),
    Base("extended", _one, _chain),
    Base("downscaled", _one, _one),
    Base("downscaled_extended", _chain, _chain),
    Base("random", _one, _chain),
    Base("oneshot", _one, lambda level: 2, method=True, definable=True),
    Base("oneshot_extended", lambda level: max(level, 1), _chain, method=True, definable=True),
    Base("reinit", _one, _one, {"mask_from": "imp"}, definable=True),  # the imp-like arm whose level-k mask it takes
    # top: fraction of training examples removed; source: the imp-like arm ranked against
    Base("tie_removed", _one, _one, {"top": 0.1, "source": "imp"}, definable=True),
    Base("tie_random", _one, _one, {"top": 0.1}, definable=True),
)}
DEFINABLE = tuple(b for b, spec in BASES.items() if spec.definable)  # bases a study can define an arm on
TIE_BASES = ("tie_removed", "tie_random")  # dense retrained without some training examples

# method -> its options and their defaults (all enter the cell hash)
METHOD_OPTIONS: dict[str, dict] = {
    "magnitude": {},
    "magnitude_layerwise": {},
    "random_global": {},
    "snip": {"batches": 1},                        # training batches of train.batch_size examples
    "grasp": {"batches": 1, "temperature": 200.0},  # the GraSP paper's T
    "synflow": {"rounds": 100},                    # the SynFlow paper's 100 rounds
}
REFERENCES = ("mask_from", "source")  # options that name an imp-like arm of the study
DEFAULT_METHOD = {"name": "magnitude"}


def cycles_in_cell(base: str, level: int) -> int:
    """Cycles one cell of this base trains itself (the chain's earlier cycles not counted)."""
    return BASES[base].in_cell(level)


def total_cycles(base: str, level: int) -> int:
    """Cycles behind the final model of a cell of this base (as its summary's `cycles`)."""
    return BASES[base].in_all(level)


def arm_rank(arm: str) -> int:
    """Where an arm sorts: the built-in arms in vocabulary order, then every other."""
    return ARMS.index(arm) if arm in ARMS else len(ARMS)


@dataclass(frozen=True)
class ArmSpec:
    name: str
    base: str
    method: dict | None  # {"name": ..., **options}, every option spelled out; None: the base prunes nothing
    options: dict = field(default_factory=dict)  # the base's options, defaults filled in

    def hparams(self) -> dict:
        if self.base == "imp":  # as it was before the other bases: imp-based arms keep their hashes
            return {"base": self.base, "method": dict(self.method)}
        out = {"base": self.base, **self.options}
        if self.method is not None:
            out["method"] = dict(self.method)
        return out


def resolve_method(raw, where: str) -> dict:
    """A method as a study names it (a name, or {name: ..., option: value}) with every
    option's default filled in; raises ValueError naming an unknown method or option."""
    spec = {"name": raw} if isinstance(raw, str) else dict(raw)
    name = spec.pop("name", None)
    if name not in METHOD_OPTIONS:
        raise ValueError(f"{where}: unknown pruning method {name!r}; methods are {sorted(METHOD_OPTIONS)}")
    defaults = METHOD_OPTIONS[name]
    unknown = sorted(set(spec) - set(defaults))
    if unknown:
        raise ValueError(f"{where}: pruning method {name!r} has no option {unknown[0]!r}; "
                         f"its options are {sorted(defaults) or 'none'}")
    out = {"name": name}
    for key, default in defaults.items():
        value = spec.get(key, default)
        if isinstance(default, int) and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise ValueError(f"{where}: {name}.{key} must be a positive integer, got {value!r}")
        if isinstance(default, float) and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                               and value > 0):
            raise ValueError(f"{where}: {name}.{key} must be a positive number, got {value!r}")
        out[key] = float(value) if isinstance(default, float) else value
    return out


def parse(raw_arms: list, builtin: tuple[str, ...]) -> tuple[tuple[str, ...], dict[str, ArmSpec]]:
    """The study's arm names in order, and the specs of the arms it defines."""
    names, specs = [], {}
    for i, entry in enumerate(raw_arms):
        where = f"arms[{i}]"
        if isinstance(entry, str):
            if entry not in builtin:
                raise ValueError(f"{where}: unknown arm {entry!r}; built-in arms are {list(builtin)}, "
                                 "or define one as {name: ..., base: imp, method: ...}")
            names.append(entry)
            continue
        name, base = entry["name"], entry["base"]
        if name in builtin or name in names:
            raise ValueError(f"{where}: arm name {name!r} is already taken"
                             + (" by a built-in arm" if name in builtin else ""))
        if base not in DEFINABLE:
            raise ValueError(f"{where}: arm {name!r}: base {base!r} cannot take a pruning method "
                             f"nor define a control; bases are {list(DEFINABLE)}")
        specs[name] = ArmSpec(name, base, _method(entry, base, f"{where} ({name})"),
                              _options(entry, base, f"{where} ({name})"))
        names.append(name)
    for i, entry in enumerate(raw_arms):  # references, once every arm is known
        spec = specs.get(entry["name"]) if isinstance(entry, dict) else None
        for key in REFERENCES:
            ref = spec.options.get(key) if spec else None
            if ref is None:
                continue
            ok = ref == "imp" or (ref in specs and specs[ref].base == "imp")
            if not ok or ref not in names:
                raise ValueError(f"arms[{i}] ({spec.name}).{key}: {ref!r} is not an imp-like arm of this study "
                                 f"(imp, or an arm defined with base: imp); the study's arms are {names}")
    return tuple(names), specs


def _method(entry: dict, base: str, where: str) -> dict | None:
    if BASES[base].method:
        if "method" not in entry and base == "imp":
            raise ValueError(f"{where}: base 'imp' needs a pruning method")
        return resolve_method(entry.get("method", DEFAULT_METHOD["name"]), f"{where}.method")
    if "method" in entry:
        raise ValueError(f"{where}: base {base!r} prunes nothing and takes no method")
    return None


def _options(entry: dict, base: str, where: str) -> dict:
    defaults = BASES[base].options
    given = {k: v for k, v in entry.items() if k not in ("name", "base", "method")}
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"{where}: base {base!r} has no option {unknown[0]!r}; "
                         f"its options are {sorted(defaults) or 'none'}")
    out = {**defaults, **given}
    if "top" in out and not (isinstance(out["top"], (int, float)) and not isinstance(out["top"], bool)
                             and 0 < out["top"] < 1):
        raise ValueError(f"{where}.top must be a fraction in (0, 1), got {out['top']!r}")
    if "top" in out:
        out["top"] = float(out["top"])
    return out
