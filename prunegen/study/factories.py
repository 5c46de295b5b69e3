"""A study's model from the researcher's code (`model: {factory: "pkg.mod:fn", width: w, ...}`):
its spec as the hash sees it, and what the study must know of it without importing torch
(weights per layer at every width, the layers it leaves unpruned), learnt once per process
from `prunegen.engine.factories` run in a subprocess, which also checks the contract."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys


def resolve(raw: dict, where: str) -> dict:
    """{factory, name (the function's), width, options}: the options are every other key."""
    if "width" not in raw:
        raise ValueError(f"{where}.width: required for a factory model (its full width; downscaled cells "
                         "take smaller ones)")
    options = {k: v for k, v in raw.items() if k not in ("factory", "width", "name")}
    return {"factory": raw["factory"], "name": raw["factory"].rpartition(":")[2], "width": int(raw["width"]),
            "options": options}


def probe(spec: dict, input_shape, num_classes: int, where: str = "model") -> dict:
    """{counts: {width: {layer: weights}}, ignore: [...], source_digest}, or ValueError naming
    `where`.factory when the factory cannot be imported or breaks the contract (the loader
    makes it a StudyError; this module sits below grid.py, which defines that)."""
    key = json.dumps(spec, sort_keys=True)
    try:  # one probe per (spec, shape, classes): the loader's and the width search's are the same
        result = _probe(json.dumps({"spec": spec, "input_shape": list(input_shape), "num_classes": num_classes},
                                   sort_keys=True))
    except ValueError as e:
        raise ValueError(f"{where}.factory: {e}") from None
    _IGNORE[key] = tuple(result["ignore"])
    return result


_IGNORE: dict[str, tuple[str, ...]] = {}  # spec -> the layers its model leaves unpruned


@functools.lru_cache(maxsize=None)
def _probe(request: str) -> dict:
    # cwd on the path, as `python -m` has it: a lab's package beside the study imports
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH")) if p)}
    out = subprocess.run([sys.executable, "-m", "prunegen.engine.factories", request],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        reason = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"
        raise ValueError(reason)
    result = json.loads(out.stdout)
    result["counts"] = {int(w): c for w, c in result["counts"].items()}
    return result


def default_ignore(spec: dict) -> tuple[str, ...]:
    """The factory model's own `prunegen_ignore`, as the probe read it when the study loaded."""
    key = json.dumps(spec, sort_keys=True)
    if key not in _IGNORE:
        raise ValueError(f"model {spec['factory']!r}: not probed yet (the study loader probes it)")
    return _IGNORE[key]
