"""Models from the researcher's own code: a study's `model: {factory: "mylab.nets:wide_resnet",
width: 64, depth: 16}` names a function by import path. The contract (docs/design.md):

- called as `fn(input_shape=(C, H, W), num_classes=K, width=w, **options)`, the study's other
  model keys being the options; `width` is the full width the study gives, or a smaller
  integer for a `downscaled` cell, and every layer should scale with it;
- returns an initialised `torch.nn.Module` mapping (N, C, H, W) float inputs to (N, K) logits,
  drawing its random init from torch's global generator (the cell seeds it);
- prunable by default: the weight of every `nn.Conv2d` and `nn.Linear`, except the modules
  named in the returned model's `prunegen_ignore` (a list of module names), or the study's
  `prune.ignore`.

`probe` (run by the study loader in a subprocess: the study never imports torch) checks the
contract on the full-width model, and counts the prunable weights at every width for the
`downscaled` width search, and digests the factory module's source (cell.json records it).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
import sys

import torch
from torch import nn


class FactoryError(Exception):
    """A factory that cannot be imported, or that breaks the contract; names the factory."""


def load(path: str):
    module_name, _, attr = path.partition(":")
    if os.getcwd() not in sys.path:  # the working directory is searched, as the study's probe searches it
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise FactoryError(f"cannot import {path!r}: {type(e).__name__}: {e} (is its package installed or on "
                           "PYTHONPATH?)") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise FactoryError(f"{module_name} has no function {attr!r} ({path!r})")
    return fn


def source_digest(path: str) -> str:
    """sha256 (12 hex) of the factory module's source: what cell.json records of its version."""
    module = sys.modules.get(path.partition(":")[0]) or importlib.import_module(path.partition(":")[0])
    try:
        text = inspect.getsource(module)
    except (OSError, TypeError):
        return "unknown"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def build(spec: dict, input_shape, num_classes: int, width: int) -> nn.Module:
    fn = load(spec["factory"])
    try:
        model = fn(input_shape=tuple(input_shape), num_classes=num_classes, width=int(width), **spec.get("options", {}))
    except Exception as e:
        raise FactoryError(f"{spec['factory']!r} failed at width {width}: {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise FactoryError(f"{spec['factory']!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def ignored(model: nn.Module) -> tuple[str, ...]:
    return tuple(getattr(model, "prunegen_ignore", ()))


def counts(model: nn.Module) -> dict[str, int]:
    """Module name -> weights, for every Conv2d and Linear (as study.shapes.weight_counts)."""
    return {name: m.weight.numel() for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def probe(spec: dict, input_shape, num_classes: int) -> dict:
    """What the study needs to know of a factory model, its contract checked."""
    full = int(spec["width"])
    torch.manual_seed(0)
    model = build(spec, input_shape, num_classes, full)
    with torch.no_grad():
        model.eval()
        try:
            out = model(torch.zeros(2, *input_shape))
        except Exception as e:
            raise FactoryError(f"{spec['factory']!r}: its model fails on a (2, {', '.join(map(str, input_shape))}) "
                               f"batch: {type(e).__name__}: {e}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise FactoryError(f"{spec['factory']!r}: its model maps a batch of 2 to {got}, not (2, {num_classes}) logits")
    ignore = ignored(model)
    unknown = set(ignore) - {n for n, _ in model.named_modules()}
    if unknown:
        raise FactoryError(f"{spec['factory']!r}: prunegen_ignore names modules the model does not have: {sorted(unknown)}")
    by_width = {w: counts(build(spec, input_shape, num_classes, w)) for w in range(1, full + 1)}
    prunable = {w: sum(n for k, n in c.items() if k not in ignore) for w, c in by_width.items()}
    if prunable[full] == 0:
        raise FactoryError(f"{spec['factory']!r}: its model has no prunable Conv2d or Linear weight")
    if any(prunable[w] > prunable[w + 1] for w in range(1, full)):
        raise FactoryError(f"{spec['factory']!r}: its prunable weights do not grow with width (the downscaled "
                           "arms search widths by count)")
    return {"counts": {str(w): c for w, c in by_width.items()}, "ignore": list(ignore),
            "source_digest": source_digest(spec["factory"])}


def main(argv: list[str]) -> int:
    """`python -m prunegen.engine.factories '<json>'`: the probe, as JSON on stdout; a broken
    factory exits 2 with one line on stderr."""
    request = json.loads(argv[0])
    try:
        print(json.dumps(probe(request["spec"], tuple(request["input_shape"]), int(request["num_classes"]))))
    except FactoryError as e:
        print(e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
