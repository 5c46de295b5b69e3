"""Arms a study defines itself: a name, the base it is made like and, for a pruning
base, the pruning method it uses in place of global magnitude pruning.

    arms: [dense, imp, {name: imp_snip, base: imp, method: snip},
           {name: imp_synflow, base: imp, method: {name: synflow, rounds: 100}},
           {name: oneshot, base: oneshot}, {name: reinit, base: reinit},
           {name: tie_removed, base: tie_removed, top: 0.1}, {name: tie_random, base: tie_random, top: 0.1}]

Bases (level k; T = train.epochs, one cycle; d_k = (1 - prune.fraction)^k):

| base               | model at level k                                   | cycles in the cell | in all |
| imp                | level k-1's weights, pruned by `method`           | [k]                | k+1    |
| oneshot            | dense level 0's trained weights pruned to d_k in  | [1]                | 2      |
|                    | one step by `method` (default magnitude)          |                    |        |
| oneshot_extended   | the same, then trained as long as imp in all      | [1..k]             | k+1    |
| reinit             | `mask_from` (default imp) level k's mask on a     | [0]                | 1      |
|                    | fresh initialization (its own seeded stream)      |                    |        |
| tie_removed        | dense, trained without the top `top` fraction of  | [0]                | 1      |
|                    | training examples by loss improvement from dense  |                    |        |
|                    | level 0 to `source` (default imp) level k         |                    |        |
| tie_random         | dense, trained without round(top x N) training     | [0]                | 1      |
|                    | examples drawn at random (seeded per level)       |                    |        |

(prunegen.controls builds the oneshot and reinit models, prunegen.tie the TIE sets.) A
defined arm is an arm like any other (its own folder `arm=<name>`); its level 0 is the
shared dense cell. Built-in arms are unchanged, and so are their cell hashes: only a
defined arm's hash carries its base, method and options.

Torch-free: a study loads without importing torch, so the method names and the
defaults of their options are kept here; a test checks they match
prunegen.pruning.registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# method -> its options and their defaults (all enter the cell hash)
METHOD_OPTIONS: dict[str, dict] = {
    "magnitude": {},
    "magnitude_layerwise": {},
    "random_global": {},
    "snip": {"batches": 1},                        # training batches of train.batch_size examples
    "grasp": {"batches": 1, "temperature": 200.0},  # the GraSP paper's T
    "synflow": {"rounds": 100},                    # the SynFlow paper's 100 rounds
}
METHOD_BASES = ("imp", "oneshot", "oneshot_extended")  # bases whose pruning step a method names
TIE_BASES = ("tie_removed", "tie_random")
BASES = (*METHOD_BASES, "reinit", *TIE_BASES)
# base -> its options and their defaults (all enter the cell hash); a reference names an arm
BASE_OPTIONS: dict[str, dict] = {
    "imp": {}, "oneshot": {}, "oneshot_extended": {},
    "reinit": {"mask_from": "imp"},                 # the imp-like arm whose level-k mask it takes
    "tie_removed": {"top": 0.1, "source": "imp"},   # top fraction removed; the imp-like arm ranked against
    "tie_random": {"top": 0.1},
}
REFERENCES = ("mask_from", "source")  # options that name an imp-like arm of the study
DEFAULT_METHOD = {"name": "magnitude"}


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


def parents(spec: ArmSpec, level: int) -> list[tuple[str, int]]:
    """(arm, level) of the cells a cell of a non-imp defined arm reads."""
    if spec.base in ("oneshot", "oneshot_extended"):
        return [("dense", 0)]
    if spec.base == "reinit":
        return [(spec.options["mask_from"], level)]
    if spec.base == "tie_removed":
        return [("dense", 0), (spec.options["source"], level)]
    return []  # tie_random: needs only the count, which it computes itself


def cycles_in_cell(base: str, level: int) -> int:
    """Cycles one cell of this base trains itself (the chain's earlier cycles not counted)."""
    if base == "downscaled_extended":
        return level + 1
    if base == "oneshot_extended":
        return max(level, 1)
    return 1


def total_cycles(base: str, level: int) -> int:
    """Cycles behind the final model of a cell of this base (as its summary's `cycles`)."""
    if base in ("imp", "extended", "random", "downscaled_extended", "oneshot_extended"):
        return level + 1
    if base == "oneshot":
        return 2
    return 1


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
        if base not in BASES:
            raise ValueError(f"{where}: arm {name!r}: base {base!r} cannot take a pruning method "
                             f"nor define a control; bases are {list(BASES)}")
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
    if base in METHOD_BASES:
        if "method" not in entry and base == "imp":
            raise ValueError(f"{where}: base 'imp' needs a pruning method")
        return resolve_method(entry.get("method", DEFAULT_METHOD["name"]), f"{where}.method")
    if "method" in entry:
        raise ValueError(f"{where}: base {base!r} prunes nothing and takes no method")
    return None


def _options(entry: dict, base: str, where: str) -> dict:
    defaults = BASE_OPTIONS[base]
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
