import pytest
import torch
from torch import nn

from prunegen.engine.models import build_model
from prunegen.study.shapes import MODEL_NAMES, base_width, default_ignore, width_candidates

CIFAR = (3, 32, 32)
MNIST = (1, 28, 28)
DIGITS = (1, 8, 8)


def weight_counts(model, spec):
    """(prunable, ignored) numbers of Conv2d/Linear weights, by default_ignore(spec)."""
    ignore = set(default_ignore(spec))
    prunable = ignored = 0
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if name in ignore:
                ignored += m.weight.numel()
            else:
                prunable += m.weight.numel()
    return prunable, ignored


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_lenet300_100_counts():
    spec = {"name": "mlp", "hidden": [300, 100]}
    model = build_model(spec, input_shape=MNIST, num_classes=10)
    assert weight_counts(model, spec) == (265_200, 1_000)
    assert [n for n, m in model.named_modules() if isinstance(m, nn.Linear)] == ["fc1", "fc2", "output"]


def test_mlp_default_hidden_is_lenet300_100():
    spec = {"name": "mlp"}
    assert base_width(spec) == 300
    model = build_model(spec, input_shape=MNIST, num_classes=10)
    assert sum(weight_counts(model, spec)) == 266_200


def test_resnet20_counts():
    spec = {"name": "resnet20", "width": 16}
    model = build_model(spec, input_shape=CIFAR, num_classes=10)
    assert weight_counts(model, spec) == (270_896, 0)
    assert n_params(model) == 272_474
    assert not any(isinstance(m, nn.Conv2d) and m.bias is not None for m in model.modules())


def test_resnet32_cifar100_counts():
    spec = {"name": "resnet32"}  # width defaults to 16
    model = build_model(spec, input_shape=CIFAR, num_classes=100)
    assert weight_counts(model, spec) == (470_192, 0)


def test_vgg16_counts():
    spec = {"name": "vgg16", "width": 64}
    model = build_model(spec, input_shape=CIFAR, num_classes=10)
    assert weight_counts(model, spec) == (14_710_464, 5_120)
    assert model.classifier.weight.shape == (10, 512)


def test_default_ignore_and_base_width():
    assert default_ignore({"name": "mlp"}) == ("output",)
    assert default_ignore({"name": "vgg11"}) == ("classifier",)
    assert default_ignore({"name": "resnet56"}) == ()
    assert base_width({"name": "mlp", "hidden": [50, 20]}) == 50
    assert base_width({"name": "resnet20"}) == 16
    assert base_width({"name": "vgg16"}) == 64
    assert base_width({"name": "vgg16", "width": 32}) == 32
    assert width_candidates({"name": "resnet20", "width": 8}) == range(1, 9)
    # every ignored name is a real module of the built model
    for name in MODEL_NAMES:
        spec = {"name": name}
        modules = dict(build_model(spec, input_shape=CIFAR, num_classes=10, width=4).named_modules())
        assert all(isinstance(modules.get(n), nn.Linear) for n in default_ignore(spec))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_shape_cifar(name):
    model = build_model({"name": name}, input_shape=CIFAR, num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.randn(2, *CIFAR)).shape == (2, 10)


@pytest.mark.parametrize("shape", [MNIST, DIGITS])
def test_forward_shape_mlp_small_inputs(shape):
    model = build_model({"name": "mlp", "hidden": [300, 100]}, input_shape=shape, num_classes=10)
    assert model(torch.randn(3, *shape)).shape == (3, 10)
    assert model.fc1.in_features == shape[0] * shape[1] * shape[2]


def test_resnet_on_mnist_shape():
    model = build_model({"name": "resnet20"}, input_shape=MNIST, num_classes=10, width=4)
    assert model(torch.randn(2, *MNIST)).shape == (2, 10)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_narrower_width_has_fewer_params(name):
    spec = {"name": name}
    full = build_model(spec, input_shape=CIFAR, num_classes=10)
    base = base_width(spec)
    half = build_model(spec, input_shape=CIFAR, num_classes=10, width=base // 2)
    one = build_model(spec, input_shape=CIFAR, num_classes=10, width=1)
    assert sum(weight_counts(one, spec)) < sum(weight_counts(half, spec)) < sum(weight_counts(full, spec))
    assert n_params(one) < n_params(half) < n_params(full)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_base_width_is_the_full_model(name):
    spec = {"name": name}
    torch.manual_seed(3)
    a = build_model(spec, input_shape=CIFAR, num_classes=10)
    torch.manual_seed(3)
    b = build_model(spec, input_shape=CIFAR, num_classes=10, width=base_width(spec))
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_width_scaling_rules():
    mlp = build_model({"name": "mlp", "hidden": [300, 100]}, input_shape=MNIST, num_classes=10, width=150)
    assert (mlp.fc1.out_features, mlp.fc2.out_features) == (150, 50)
    tiny = build_model({"name": "mlp", "hidden": [300, 100]}, input_shape=MNIST, num_classes=10, width=1)
    assert tiny.fc2.out_features == 1  # min 1, never 0
    res = build_model({"name": "resnet20"}, input_shape=CIFAR, num_classes=10, width=8)
    assert (res.conv.out_channels, res.fc.in_features) == (8, 32)
    vgg = build_model({"name": "vgg16"}, input_shape=CIFAR, num_classes=10, width=32)
    convs = [m for m in vgg.modules() if isinstance(m, nn.Conv2d)]
    assert (convs[0].out_channels, convs[-1].out_channels, vgg.classifier.in_features) == (32, 256, 256)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_same_seed_same_weights(name):
    spec = {"name": name}
    states = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        states.append(build_model(spec, input_shape=CIFAR, num_classes=10, width=4).state_dict())
    same, other = states[1], states[2]
    assert all(torch.equal(states[0][k], same[k]) for k in same)
    assert not all(torch.equal(states[0][k], other[k]) for k in other)


def test_init_is_kaiming_normal():
    torch.manual_seed(0)
    model = build_model({"name": "resnet20"}, input_shape=CIFAR, num_classes=10)
    w = model.blocks[-1].conv2.weight  # fan_in = 64 * 9
    assert abs(w.std().item() - (2 / (64 * 9)) ** 0.5) < 0.003


def batch_norms(model):
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


@pytest.mark.parametrize("benchmark", ["cifar10-resnet20", "cifar10-vgg16", "cifar100-resnet32"])
def test_paper_cifar_models_init_batchnorm_as_openlth_uniform(benchmark):
    """OpenLTH's CIFAR models default to batchnorm_init='uniform': gamma ~ U[0, 1), beta = 0."""
    from prunegen.study.load import load_study
    from tests.helpers import REPO

    spec = load_study(REPO / "workflow" / "studies" / "paper.yaml").benchmarks[benchmark].model
    assert spec["bn_init"] == "uniform"
    torch.manual_seed(0)
    bns = batch_norms(build_model(spec, input_shape=CIFAR, num_classes=10))
    gamma = torch.cat([m.weight.detach() for m in bns])
    assert len(gamma) > 500 and 0 <= gamma.min() and gamma.max() < 1
    assert abs(gamma.mean().item() - 0.5) < 0.03 and abs(gamma.var().item() - 1 / 12) < 0.01  # U[0, 1)
    assert all(m.weight.unique().numel() > 1 for m in bns)  # drawn per channel, not one value
    assert all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in bns)
    # a study may ask for gamma = 1 (OpenLTH's "fixed")
    ones = build_model({**spec, "bn_init": "ones"}, input_shape=CIFAR, num_classes=10)
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) and torch.equal(m.bias, torch.zeros_like(m.bias))
               for m in batch_norms(ones))
    with pytest.raises(ValueError, match="bn_init"):
        build_model({**spec, "bn_init": "zeros"}, input_shape=CIFAR, num_classes=10)


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("shape, classes", [(CIFAR, 100), (MNIST, 10), (DIGITS, 10)])
def test_torch_free_weight_counts_are_the_built_models(name, shape, classes):
    """config resolves a downscaled cell's width from prunegen.shapes without torch."""
    from prunegen.study import shapes

    spec = {"name": name}
    for width in (1, 3, base_width(spec)):
        with torch.device("meta"):
            model = build_model(spec, input_shape=shape, num_classes=classes, width=width)
        built = {n: m.weight.numel() for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
        assert shapes.weight_counts(spec, shape, classes, width) == built


def test_dataset_shapes_are_the_loaded_datasets():
    from prunegen.engine import data
    from prunegen.study import shapes

    assert set(shapes.DATASET_SHAPES) == set(data.DATASET_NAMES)
    for name, (classes, shape, *_rest) in data.SPECS.items():
        assert shapes.DATASET_SHAPES[name] == (shape, classes)
    digits = data.load_dataset("digits", "unused")
    assert shapes.DATASET_SHAPES["digits"] == (digits.input_shape, digits.num_classes)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_channels_last_matches_contiguous(name):
    torch.manual_seed(0)
    model = build_model({"name": name}, input_shape=CIFAR, num_classes=10, width=4).eval()
    x = torch.randn(2, *CIFAR)
    with torch.no_grad():
        ref = model(x)
        out = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_compiles_as_one_graph(name):
    # fullgraph=True fails on any graph break (data-dependent Python control flow);
    # the eager backend keeps the test fast and compiler-free.
    torch._dynamo.reset()
    model = build_model({"name": name}, input_shape=CIFAR, num_classes=10, width=4).eval()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    x = torch.randn(2, *CIFAR)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))


def test_unknown_name():
    with pytest.raises(ValueError, match="resnet18") as err:
        build_model({"name": "resnet18"}, input_shape=CIFAR, num_classes=10)
    assert all(n in str(err.value) for n in MODEL_NAMES)
    with pytest.raises(ValueError, match="unknown model"):
        base_width({"name": "lenet"})
    with pytest.raises(ValueError, match="width"):
        build_model({"name": "mlp"}, input_shape=MNIST, num_classes=10, width=0)


def test_imagenet_resnet50_at_width_64_is_torchvisions_resnet50():
    """OpenLTH's imagenet_resnet_50: torchvision's ResNet-50 (25,557,032 parameters) at width 64,
    every tensor of the same name and shape; a narrower width scales every stage."""
    import torchvision

    with torch.device("meta"):
        ours = build_model({"name": "imagenet_resnet50"}, input_shape=(3, 224, 224), num_classes=1000)
        ref = torchvision.models.resnet50()
        half = build_model({"name": "imagenet_resnet50"}, input_shape=(3, 224, 224), num_classes=1000, width=32)
    assert base_width({"name": "imagenet_resnet50"}) == 64
    assert n_params(ours) == 25_557_032
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert (half.conv1.out_channels, half.layer4[2].conv3.out_channels, half.fc.in_features) == (32, 1024, 1024)
