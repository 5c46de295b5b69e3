"""The registry's model shapes without torch: widths, layer names and weight counts.

prunegen.engine.models builds its models from the plans kept here. A `downscaled` cell's
hash covers the width it trains at, not the prune fraction that width was derived from,
so the study resolves that width while it loads, without importing torch; the counts
below are the built models' (tests/engine/test_models.py checks them layer by layer).
"""

from __future__ import annotations

import functools
import json

from . import factories

RESNET_DEPTHS = {"resnet20": 20, "resnet32": 32, "resnet56": 56}
VGG_PLANS = {  # OpenLTH cifar_vgg plans; 'M' = 2x2 max-pool
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
}
VGG_BASE_WIDTH = 64  # the plans' width: a VGG of width w scales every layer by w / 64
# OpenLTH's imagenet_resnet_D[_W]: torchvision's bottleneck ResNet with `width` filters in its first
# stage (64 in torchvision's), every later stage twice the one before. Blocks per stage:
IMAGENET_RESNET_BLOCKS = {"imagenet_resnet50": (3, 4, 6, 3)}
BOTTLENECK_EXPANSION = 4  # a bottleneck block's output channels over its inner ones
DEFAULT_HIDDEN = [300, 100]
MODEL_NAMES = ("mlp", *RESNET_DEPTHS, *VGG_PLANS, *IMAGENET_RESNET_BLOCKS)

# (C, H, W) and classes of each dataset, as prunegen.engine.data loads it.
DATASET_SHAPES = {
    "digits": ((1, 8, 8), 10), "mnist": ((1, 28, 28), 10), "fashion_mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10), "cifar100": ((3, 32, 32), 100), "svhn": ((3, 32, 32), 10),
}
# (training, test) examples of each dataset, before the validation split is held out of the training set
DATASET_SIZES = {"digits": (1437, 360), "mnist": (60000, 10000), "fashion_mnist": (60000, 10000),
                 "cifar10": (50000, 10000), "cifar100": (50000, 10000), "svhn": (73257, 26032)}


def model_name(spec: dict) -> str:
    if "factory" in spec:  # the researcher's own (study/factories.py)
        return spec["name"]
    name = spec.get("name")
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")
    return name


def input_problem(spec: dict, input_shape) -> str | None:
    """Why a model cannot take inputs of this shape (None when it can): a VGG halves the
    image at every max-pool, and an image that reaches 0 pixels has nothing left to pool."""
    name = model_name(spec)
    if name not in VGG_PLANS or "factory" in spec:
        return None  # the MLP flattens any shape; a ResNet's strided convs and mean pool take any size
    pools = VGG_PLANS[name].count("M")
    _, h, w = input_shape
    if min(h, w) >> pools == 0:
        return (f"{name} halves its input at each of its {pools} max-pools and needs at least {2 ** pools}x"
                f"{2 ** pools} pixels, not {h}x{w}")
    return None


def scale(size: int, width: int, base: int) -> int:
    # Every layer keeps its proportion to the base width; never shrink a layer to zero.
    return max(1, round(size * width / base))


def base_width(spec: dict) -> int:
    """The full model's width (what `width=None` builds)."""
    if "factory" in spec:
        return int(spec["width"])
    name = model_name(spec)
    if name == "mlp":
        return int(spec.get("hidden", DEFAULT_HIDDEN)[0])
    return int(spec.get("width", 16 if name in RESNET_DEPTHS else 64))  # VGG's plans and ImageNet ResNets: 64


def width_candidates(spec: dict) -> range:
    """Every width a downscaled model may take, from 1 to the full width."""
    return range(1, base_width(spec) + 1)


def mlp_hidden(spec: dict, width: int) -> list[int]:
    return [scale(s, width, base_width(spec)) for s in spec.get("hidden", DEFAULT_HIDDEN)]


def vgg_plan(spec: dict, width: int) -> list:
    return [x if x == "M" else scale(x, width, VGG_BASE_WIDTH) for x in VGG_PLANS[model_name(spec)]]


def weight_counts(spec: dict, input_shape, num_classes: int, width: int) -> dict[str, int]:
    """Module name -> number of weights, for every Conv2d and Linear layer of the model."""
    if "factory" in spec:  # counted on the built model, once per process (study/factories.py)
        return factories.probe(spec, input_shape, num_classes)["counts"][width]
    name = model_name(spec)
    c, h, w = input_shape
    out: dict[str, int] = {}
    if name == "mlp":
        sizes = [c * h * w, *mlp_hidden(spec, width)]
        for i in range(len(sizes) - 1):
            out[f"fc{i + 1}"] = sizes[i] * sizes[i + 1]
        out["output"] = sizes[-1] * num_classes
    elif name in RESNET_DEPTHS:
        n = (RESNET_DEPTHS[name] - 2) // 6
        out["conv"] = c * width * 9
        f_in, i = width, 0
        for stage, f_out in enumerate((width, 2 * width, 4 * width)):
            for b in range(n):
                out[f"blocks.{i}.conv1"] = f_in * f_out * 9
                out[f"blocks.{i}.conv2"] = f_out * f_out * 9
                if (stage > 0 and b == 0) or f_in != f_out:  # the 1x1 projection shortcut
                    out[f"blocks.{i}.shortcut.0"] = f_in * f_out
                f_in, i = f_out, i + 1
        out["fc"] = 4 * width * num_classes
    elif name in IMAGENET_RESNET_BLOCKS:  # torchvision's module names (engine/models.imagenet_resnet)
        out["conv1"] = c * width * 49
        f_in = width
        for stage, blocks in enumerate(IMAGENET_RESNET_BLOCKS[name]):
            inner = width * 2 ** stage
            f_out = inner * BOTTLENECK_EXPANSION
            for b in range(blocks):
                prefix = f"layer{stage + 1}.{b}"
                out[f"{prefix}.conv1"] = f_in * inner
                out[f"{prefix}.conv2"] = inner * inner * 9
                out[f"{prefix}.conv3"] = inner * f_out
                if b == 0 and (stage > 0 or f_in != f_out):  # a strided or widening block: 1x1 projection
                    out[f"{prefix}.downsample.0"] = f_in * f_out
                f_in = f_out
        out["fc"] = f_in * num_classes
    else:
        f_in, index = c, 0
        for item in vgg_plan(spec, width):
            if item == "M":
                index += 1  # the max-pool
            else:
                out[f"features.{index}"] = f_in * item * 9
                f_in, index = item, index + 3  # conv, batch norm, ReLU
        out["classifier"] = f_in * num_classes
    return out


def prunable_count(spec: dict, input_shape, num_classes: int, width: int, ignore) -> int:
    return sum(n for name, n in weight_counts(spec, input_shape, num_classes, width).items() if name not in ignore)


def downscaled_width(spec: dict, input_shape, num_classes: int, ignore, fraction: float,
                     level: int) -> tuple[int, float]:
    """The width whose prunable-weight count is closest to d_k = (1 - fraction)^level times
    the full model's (the wider one on a tie), and the ratio of the counts it achieves."""
    return _downscaled_width(json.dumps(spec, sort_keys=True), tuple(input_shape), num_classes,
                             tuple(ignore), float(fraction), int(level))


@functools.lru_cache(maxsize=None)
def _downscaled_width(spec_json: str, input_shape, num_classes, ignore, fraction, level) -> tuple[int, float]:
    # A grid asks for the same width once per noise level and seed: computed once.
    spec = json.loads(spec_json)

    def count(w):
        return prunable_count(spec, input_shape, num_classes, w, ignore)

    full = count(base_width(spec))
    target = full * (1 - fraction) ** level
    best = min(width_candidates(spec), key=lambda w: (abs(count(w) - target), -w))
    return best, count(best) / full


def canonical_fraction(spec: dict, input_shape, num_classes: int, ignore, fraction: float, level: int,
                       default: float) -> float:
    """The fraction that stands for `fraction` at `level` in a downscaled cell's hash: one
    resolving to the same width, so the hash depends on the fraction only through the width.
    It is `default` where the default resolves to that width, else the fraction of fewest
    decimal digits that does, nearest the default: 0.5 stays 0.5 (and keeps its hashes),
    0.49 becomes 0.5 wherever both give one width."""
    def width(f: float) -> int:
        return downscaled_width(spec, input_shape, num_classes, ignore, f, level)[0]

    target = width(fraction)
    if width(default) == target:
        return default
    for digits in range(1, 18):
        scale = 10 ** digits
        # The width never grows with the fraction (the target count shrinks, and a wider
        # model has more weights), so the m of m / scale that give `target` form one range.
        lo = _first(1, scale - 1, lambda m: width(m / scale) <= target)
        hi = _first(1, scale - 1, lambda m: width(m / scale) < target) - 1
        if lo <= hi:
            return min(max(round(default * scale), lo), hi) / scale
    return fraction


def _first(lo: int, hi: int, pred) -> int:
    """The smallest m in lo..hi where the monotone `pred` holds (hi + 1 if none)."""
    hi += 1
    while lo < hi:
        mid = (lo + hi) // 2
        if pred(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def default_ignore(model: dict) -> tuple[str, ...]:
    """The layers a model never prunes by default: LeNet's output layer, VGG's classifier
    (OpenLTH's pruning_layers_to_ignore); a ResNet prunes every conv and linear weight; a
    factory's model, all but its `prunegen_ignore`."""
    if "factory" in model:
        return factories.default_ignore(model)
    name = model_name(model)
    return ("output",) if name == "mlp" else ("classifier",) if name.startswith("vgg") else ()
