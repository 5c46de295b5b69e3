"""Arms a study defines itself: a name, the built-in arm it is made like (its base)
and the pruning method it uses in place of the base's global magnitude pruning.

    arms: [dense, imp, {name: imp_snip, base: imp, method: snip},
           {name: imp_synflow, base: imp, method: {name: synflow, rounds: 100}}]

A defined arm is an arm like any other (its own folder `arm=<name>`, its own chain);
its level 0 is the shared dense cell. Built-in arms are unchanged, and so are their
cell hashes: only a defined arm's hash carries its base and method.

Torch-free: a study loads without importing torch, so the method names and the
defaults of their options are kept here; a test checks they match
prunegen.pruning.registry.
"""

from __future__ import annotations

from dataclasses import dataclass

# method -> its options and their defaults (all enter the cell hash)
METHOD_OPTIONS: dict[str, dict] = {
    "magnitude": {},
    "magnitude_layerwise": {},
    "random_global": {},
    "snip": {"batches": 1},                        # training batches of train.batch_size examples
    "grasp": {"batches": 1, "temperature": 200.0},  # the GraSP paper's T
    "synflow": {"rounds": 100},                    # the SynFlow paper's 100 rounds
}
BASES = ("imp",)  # built-in arms whose pruning step a method may replace


@dataclass(frozen=True)
class ArmSpec:
    name: str
    base: str
    method: dict  # {"name": ..., **options}, every option spelled out

    def hparams(self) -> dict:
        return {"base": self.base, "method": dict(self.method)}


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
            raise ValueError(f"{where}: arm {name!r}: base {base!r} cannot take a pruning method; bases are {list(BASES)}")
        specs[name] = ArmSpec(name, base, resolve_method(entry["method"], f"{where} ({name}).method"))
        names.append(name)
    return tuple(names), specs
