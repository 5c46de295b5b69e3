"""Model registry: LeNet-style MLP, CIFAR ResNet-20/32/56, CIFAR VGG-11/16, ImageNet ResNet-50.

Architectures follow OpenLTH (mnist_lenet, cifar_resnet, cifar_vgg, imagenet_resnet), which the paper
used, plus an integer ``width`` so the ``downscaled`` arms can build narrower dense
models. All randomness goes through torch's global RNG, seeded by the caller.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from ..study.shapes import IMAGENET_RESNET_BLOCKS, RESNET_DEPTHS, base_width, mlp_hidden, model_name, vgg_plan
from . import factories, kernels

BN_INITS = ("uniform", "ones")


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


def imagenet_resnet(blocks, width: int, in_channels: int, num_classes: int) -> nn.Module:
    """OpenLTH's imagenet_resnet_D_W: torchvision's bottleneck ResNet (7x7 stem, max-pool, four
    stages of `blocks`, global mean pool, fc) with `width` filters in the first stage where
    torchvision has 64; its own init is replaced by `_init`, as OpenLTH's Model applies its own."""
    import torchvision  # only for this model: its import costs seconds

    class ResNet(torchvision.models.ResNet):
        def __init__(self):
            nn.Module.__init__(self)  # torchvision's constructor fixes the widths: set its fields here
            self._norm_layer, self.inplanes, self.dilation, self.groups, self.base_width = nn.BatchNorm2d, width, 1, 1, 64
            self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            block = torchvision.models.resnet.Bottleneck
            self.layer1 = self._make_layer(block, width, blocks[0])
            self.layer2 = self._make_layer(block, width * 2, blocks[1], stride=2)
            self.layer3 = self._make_layer(block, width * 4, blocks[2], stride=2)
            self.layer4 = self._make_layer(block, width * 8, blocks[3], stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(width * 8 * block.expansion, num_classes)

    return ResNet()


def _init(model: nn.Module, bn_init: str) -> None:
    """OpenLTH's initialisation: "kaiming_normal" for conv and linear weights (biases keep
    torch's default init) and, for BatchNorm, `bn_init`: "uniform" (OpenLTH's default,
    batchnorm_init='uniform': gamma ~ U[0, 1), beta = 0) or "ones" (its "fixed", and torch's
    default: gamma = 1, beta = 0). One pass over the layers in module order, drawing from the
    global RNG, as OpenLTH's model.apply(initializer) does."""
    if bn_init not in BN_INITS:
        raise ValueError(f"unknown bn_init {bn_init!r}; choose one of {', '.join(BN_INITS)}")
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, nn.BatchNorm2d):
            if bn_init == "uniform":
                nn.init.uniform_(m.weight, 0.0, 1.0)
            else:
                nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)




def build_model(
    spec: dict,
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    width: int | None = None,
) -> nn.Module:
    """Build and initialise the model named by `spec["name"]` at integer `width` (a factory's
    model: the researcher's function builds and initialises it, engine/factories.py)."""
    width = base_width(spec) if width is None else int(width)
    if "factory" in spec:
        return factories.build(spec, input_shape, num_classes, width)
    name = model_name(spec)
    if width < 1:
        raise ValueError(f"model width must be >= 1, got {width}")
    c, h, w = input_shape
    if name == "mlp":
        model = MLP(c * h * w, mlp_hidden(spec, width), num_classes)
    elif name in RESNET_DEPTHS:
        model = CifarResNet(RESNET_DEPTHS[name], width, c, num_classes)
    elif name in IMAGENET_RESNET_BLOCKS:
        model = imagenet_resnet(IMAGENET_RESNET_BLOCKS[name], width, c, num_classes)
    else:
        model = CifarVGG(vgg_plan(spec, width), c, num_classes)
    _init(model, spec.get("bn_init", "uniform"))
    return model
