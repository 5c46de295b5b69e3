"""Model registry: LeNet-style MLP, CIFAR ResNet-20/32/56, CIFAR VGG-11/16.

Architectures follow OpenLTH (mnist_lenet, cifar_resnet, cifar_vgg), which the paper
used, plus an integer ``width`` so the ``downscaled`` arms can build narrower dense
models. All randomness goes through torch's global RNG, seeded by the caller.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from prunegen import kernels

MODEL_NAMES = ("mlp", "resnet20", "resnet32", "resnet56", "vgg11", "vgg16")

_RESNET_DEPTHS = {"resnet20": 20, "resnet32": 32, "resnet56": 56}
_VGG_PLANS = {  # OpenLTH cifar_vgg plans; 'M' = 2x2 max-pool
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
}
_DEFAULT_HIDDEN = [300, 100]


def _name(spec: dict) -> str:
    name = spec.get("name")
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")
    return name


def _scale(size: int, width: int, base: int) -> int:
    # Every layer keeps its proportion to the base width; never shrink a layer to zero.
    return max(1, round(size * width / base))


class MLP(nn.Module):
    """Flatten, then Linear+ReLU per hidden layer (fc1, fc2, ...), then Linear `output`."""

    def __init__(self, in_features: int, hidden: list[int], num_classes: int):
        super().__init__()
        sizes = [in_features, *hidden]
        for i in range(len(hidden)):
            self.add_module(f"fc{i + 1}", nn.Linear(sizes[i], sizes[i + 1]))
        self.output = nn.Linear(sizes[-1], num_classes)
        self.num_hidden = len(hidden)

    def forward(self, x):
        x = x.flatten(1)  # reshape, so channels_last inputs work too
        layers = [getattr(self, f"fc{i + 1}") for i in range(self.num_hidden)] + [self.output]
        if kernels.fuses(x):  # fp32 on CPU: one autograd node, big products in oneDNN
            return kernels.mlp(x, [m.weight for m in layers], [m.bias for m in layers])
        for layer in layers[:-1]:
            x = F.relu(layer(x))
        return self.output(x)


class BasicBlock(nn.Module):
    """Two 3x3 conv+BN; a 1x1 conv+BN projection shortcut whenever the shape changes."""

    def __init__(self, f_in: int, f_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(f_in, f_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(f_out)
        self.conv2 = nn.Conv2d(f_out, f_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(f_out)
        if stride != 1 or f_in != f_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(f_in, f_out, 1, stride=stride, bias=False), nn.BatchNorm2d(f_out)
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        # In place where autograd allows it (batch norm keeps its input, not its output):
        # the same values, without a fresh activation-sized tensor per op, 1.1x a step on CPU.
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out, inplace=True)


class CifarResNet(nn.Module):
    """He et al. 2016 CIFAR ResNet: stem, 3 stages of n blocks (W, 2W, 4W), GAP, `fc`."""

    def __init__(self, depth: int, width: int, in_channels: int, num_classes: int):
        super().__init__()
        n = (depth - 2) // 6
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        blocks, f_in = [], width
        for stage, f_out in enumerate((width, 2 * width, 4 * width)):
            for b in range(n):
                stride = 2 if stage > 0 and b == 0 else 1
                blocks.append(BasicBlock(f_in, f_out, stride))
                f_in = f_out
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        out = self.blocks(F.relu(self.bn(self.conv(x)), inplace=True))
        return self.fc(out.mean(dim=(2, 3)))  # global average pool, any spatial size


class CifarVGG(nn.Module):
    """OpenLTH CIFAR VGG: (conv3x3 with bias + BN + ReLU | max-pool)*, GAP, `classifier`."""

    def __init__(self, plan: list, in_channels: int, num_classes: int):
        super().__init__()
        layers, f_in = [], in_channels
        for item in plan:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(f_in, item, 3, padding=1), nn.BatchNorm2d(item), nn.ReLU(inplace=True)]
                f_in = item
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(f_in, num_classes)

    def forward(self, x):
        # OpenLTH avg-pools the final 2x2 map of a 32x32 input: the same as a global mean.
        return self.classifier(self.features(x).mean(dim=(2, 3)))


def _init(model: nn.Module) -> None:
    # OpenLTH "kaiming_normal" init for weights (biases keep torch's default init);
    # BN starts as the identity (OpenLTH's "fixed" BN init).
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def base_width(spec: dict) -> int:
    """The full model's width (what `width=None` builds)."""
    name = _name(spec)
    if name == "mlp":
        return int(spec.get("hidden", _DEFAULT_HIDDEN)[0])
    return int(spec.get("width", 16 if name in _RESNET_DEPTHS else 64))


def width_candidates(spec: dict) -> range:
    """Every width a downscaled model may take, from 1 to the full width."""
    return range(1, base_width(spec) + 1)


def default_ignore(spec: dict) -> list[str]:
    """Modules whose weight is not prunable (OpenLTH: output layers of LeNet and VGG)."""
    name = _name(spec)
    if name == "mlp":
        return ["output"]
    if name in _VGG_PLANS:
        return ["classifier"]
    return []


def build_model(
    spec: dict,
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    width: int | None = None,
    init: bool = True,
) -> nn.Module:
    """Build and initialise the model named by `spec["name"]` at integer `width`
    (`init=False`: torch's default init only, for counting shapes on the meta device)."""
    name = _name(spec)
    base = base_width(spec)
    width = base if width is None else int(width)
    if width < 1:
        raise ValueError(f"model width must be >= 1, got {width}")
    c, h, w = input_shape
    if name == "mlp":
        hidden = [_scale(s, width, base) for s in spec.get("hidden", _DEFAULT_HIDDEN)]
        model = MLP(c * h * w, hidden, num_classes)
    elif name in _RESNET_DEPTHS:
        model = CifarResNet(_RESNET_DEPTHS[name], width, c, num_classes)
    else:
        plan = [x if x == "M" else _scale(x, width, 64) for x in _VGG_PLANS[name]]
        model = CifarVGG(plan, c, num_classes)
    if init:
        _init(model)
    return model
