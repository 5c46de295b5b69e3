"""The pruning methods of prunegen.pruning.registry, each against an independent
computation on a tiny model, and the keep-count contract every method shares."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunegen.engine import pruning
from prunegen.engine.pruning import magnitude, saliency, synflow
from prunegen.study import arm_specs


def tiny_mlp(seed=0, bias=True):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 5, bias=bias), nn.ReLU(), nn.Linear(5, 4, bias=bias))


def batches(seed=1, n=2, size=7):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 6, generator=g), torch.randint(0, 4, (size,), generator=g)) for _ in range(n)]


def context(seed=0):
    return pruning.Context(input_shape=(6,), generator=torch.Generator().manual_seed(seed),
                           batches=lambda n: batches(n=n))


def default_method(name):
    return {"name": name, **arm_specs.METHOD_OPTIONS[name]}


def test_the_torch_free_method_list_matches_the_registry():
    # arm_specs keeps its own copy so loading a study never imports torch; they must agree
    assert set(arm_specs.METHOD_OPTIONS) == set(pruning.METHODS)
    import inspect
    for name, fn in pruning.METHODS.items():
        params = list(inspect.signature(fn).parameters)[4:]  # after model, mask, keep, ctx
        assert sorted(params) == sorted(arm_specs.METHOD_OPTIONS[name]), name


def test_snip_scores_equal_g_times_w_by_hand():
    # one linear layer with softmax cross-entropy: dL/dW = (softmax(Wx+b) - onehot)ᵀ x / n
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(6, 4))
    mask = pruning.full_mask(model, ())
    bs = batches(n=2)
    W, b = model[0].weight.detach(), model[0].bias.detach()
    grad = torch.zeros_like(W)
    for x, y in bs:
        p = torch.softmax(x @ W.T + b, dim=1)
        grad += (p - F.one_hot(y, 4).float()).T @ x / len(x)
    grad /= len(bs)
    scores = saliency.snip_scores(model, mask, bs)
    torch.testing.assert_close(scores["0.weight"], (grad * W).abs(), rtol=1e-5, atol=1e-7)


def test_grasp_scores_equal_minus_w_hg_with_a_full_hessian():
    model = tiny_mlp(4)
    mask = pruning.full_mask(model, ())
    bs, T = batches(n=2), 3.0
    names = list(mask)
    shapes = [dict(model.named_parameters())[n].shape for n in names]
    flat0 = torch.cat([dict(model.named_parameters())[n].detach().flatten() for n in names])
    b1, b2 = model[0].bias.detach(), model[2].bias.detach()

    def loss(flat):  # the same network written out as a function of the prunable weights
        w1 = flat[:math.prod(shapes[0])].view(shapes[0])
        w2 = flat[math.prod(shapes[0]):].view(shapes[1])
        return sum(F.cross_entropy((torch.relu(x @ w1.T + b1) @ w2.T + b2) / T, y) for x, y in bs) / len(bs)

    g = torch.autograd.functional.jacobian(loss, flat0)
    H = torch.autograd.functional.hessian(loss, flat0)
    expected = -flat0 * (H @ g)
    scores = saliency.grasp_scores(model, mask, bs, T)
    got = torch.cat([scores[n].flatten() for n in names])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-8)
    assert got.abs().max() > 0  # a non-trivial comparison


def test_synflow_scores_equal_the_reference_formulation_on_a_two_layer_net():
    # R = 1ᵀ|W2||W1|1: dR/d|W1|_ij = colsum(|W2|)_i, dR/d|W2|_ki = rowsum(|W1|)_i
    model = tiny_mlp(5, bias=False)
    W1, W2 = model[0].weight.detach().abs(), model[2].weight.detach().abs()
    mask = pruning.full_mask(model, ())
    scores = synflow.synflow_scores(model, mask, (6,))
    torch.testing.assert_close(scores["0.weight"], (W2.sum(0)[:, None] * W1).double())
    torch.testing.assert_close(scores["2.weight"], (W1.sum(1)[None, :] * W2).double())
    # R itself, from the scores: every path's product counted once per weight on it (two per path)
    R = W2.double().sum(0) @ W1.double().sum(1)
    assert math.isclose(sum(float(s.sum()) for s in scores.values()), 2 * float(R), rel_tol=1e-9)


def test_synflow_one_round_keeps_the_top_scores_and_rounds_rescore():
    model = tiny_mlp(6, bias=False)
    mask, ctx = pruning.full_mask(model, ()), context()
    scores = synflow.synflow_scores(model, mask, (6,))
    one = synflow.synflow(model, mask, 20, ctx, rounds=1)
    assert {n: m.tolist() for n, m in one.items()} == \
        {n: m.tolist() for n, m in pruning.keep_top(scores, mask, 20).items()}
    assert synflow.round_keeps(50, 20, 4) == [round(50 * 0.4 ** (r / 4)) for r in (1, 2, 3)] + [20]


def test_magnitude_layerwise_keeps_exactly_the_per_layer_count():
    model = tiny_mlp(7)  # layers of 30 and 20 prunable weights
    mask = pruning.full_mask(model, ())
    out = magnitude.magnitude_layerwise(model, mask, 25, context())
    assert {n: int(m.sum()) for n, m in out.items()} == {"0.weight": 15, "2.weight": 10}
    # and within each layer, its largest magnitudes
    for n, m in out.items():
        w = dict(model.named_parameters())[n].detach().abs()
        assert w[m].min() >= w[~m].max()
    # uneven shares: 30 * 17/50 = 10.2, 20 * 17/50 = 6.8 -> 10 and 7
    assert magnitude.layer_quotas(mask, 17) == {"0.weight": 10, "2.weight": 7}


def test_magnitude_layerwise_shares_are_of_the_surviving_weights():
    model = tiny_mlp(8)
    mask = pruning.full_mask(model, ())
    mask["0.weight"].view(-1)[:10] = False  # 20 and 20 survive
    assert magnitude.layer_quotas(mask, 10) == {"0.weight": 5, "2.weight": 5}


def test_registry_magnitude_is_the_builtin_global_magnitude():
    model = tiny_mlp(9)
    mask = pruning.full_mask(model, ())
    a = pruning.prune({"name": "magnitude"}, model, mask, 23, context())
    b = pruning.magnitude_prune(model, mask, 23)
    assert all(torch.equal(a[n], b[n]) for n in mask)


def test_random_global_is_seeded_and_not_per_layer():
    model = tiny_mlp(10)
    mask = pruning.full_mask(model, ())
    a = pruning.prune({"name": "random_global"}, model, mask, 25, context(1))
    b = pruning.prune({"name": "random_global"}, model, mask, 25, context(1))
    c = pruning.prune({"name": "random_global"}, model, mask, 25, context(2))
    assert all(torch.equal(a[n], b[n]) for n in mask)
    assert not all(torch.equal(a[n], c[n]) for n in mask)


@pytest.mark.parametrize("name", sorted(arm_specs.METHOD_OPTIONS))
@pytest.mark.parametrize("keep", [0, 1, 17, 33])
def test_every_method_keeps_exactly_keep_weights_among_the_survivors(name, keep):
    model = tiny_mlp(11)
    mask = pruning.full_mask(model, ())
    mask["0.weight"].view(-1)[::3] = False  # 10 already removed: 40 survive
    with torch.no_grad():
        model[0].weight.mul_(mask["0.weight"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = pruning.prune(default_method(name), model, mask, keep, context())
    assert pruning.kept(out) == keep
    assert not any(bool((out[n] & ~mask[n]).any()) for n in mask)  # nothing removed comes back
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # model untouched


def test_a_method_that_miscounts_is_refused(monkeypatch):
    model = tiny_mlp(12)
    mask = pruning.full_mask(model, ())
    monkeypatch.setitem(pruning.registry.METHODS, "magnitude", lambda m, mk, keep, ctx: pruning.magnitude_prune(m, mk, keep + 1))
    with pytest.raises(AssertionError, match="kept 11 weights \\(asked 10\\)"):
        pruning.prune({"name": "magnitude"}, model, mask, 10, context())


# ---------------------------------------------------------------- GraSP against the authors' procedure

def _authors_grasp(net: nn.Sequential, masks: dict, halves, T: float) -> dict[int, torch.Tensor]:
    """GraSP as the authors' code computes it (alecwangcq/GraSP, pruner/GraSP.py): plain
    nn.Linear layers in train mode; grad_w, the gradient of each half's mean cross-entropy of
    logits / T, summed over the halves; z = sum over halves of grad_w . grad(loss_half,
    create_graph=True); score = -w * dz/dw, for every Linear weight (the gradient flow runs
    through all of them). `masks` (layer index -> 0/1): weights already pruned enter the
    forward as w * m, so no gradient flows through them (the authors prune from dense)."""
    linears = [i for i, m in enumerate(net) if isinstance(m, nn.Linear)]
    weights = [net[i].weight for i in linears]

    def forward(x):
        for i, m in enumerate(net):
            x = F.linear(x, m.weight * masks[i], m.bias) if i in masks else m(x)
        return x

    grad_w = None
    for x, y in halves:
        g = torch.autograd.grad(F.cross_entropy(forward(x) / T, y), weights)
        grad_w = list(g) if grad_w is None else [a + b for a, b in zip(grad_w, g)]
    z = 0
    for x, y in halves:
        grad_f = torch.autograd.grad(F.cross_entropy(forward(x) / T, y), weights, create_graph=True)
        z = z + sum((a * b).sum() for a, b in zip(grad_w, grad_f))
    hg = torch.autograd.grad(z, weights)
    return {i: -(w * h).detach() for i, w, h in zip(linears, weights, hg)}


def _engine_mlp_and_plain_copy(seed: int = 5):
    from prunegen.engine.models import build_model

    torch.manual_seed(seed)
    model = build_model({"name": "mlp", "hidden": [300, 100]}, input_shape=(1, 28, 28), num_classes=10)
    plain = nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                          nn.Linear(100, 10))
    for i, name in ((1, "fc1"), (3, "fc2"), (5, "output")):
        plain[i].load_state_dict(getattr(model, name).state_dict())
    g = torch.Generator().manual_seed(seed + 1)
    bs = [(torch.randn(128, 1, 28, 28, generator=g), torch.randint(0, 10, (128,), generator=g)) for _ in range(2)]
    return model, plain.train(), bs


def test_grasp_on_the_engines_mlp_equals_the_authors_procedure_through_plain_linear_layers():
    """At MNIST size on CPU, the engine's MLP runs through the fused kernel (no second
    derivative): GraSP must score through a path that has one."""
    from prunegen.engine import kernels

    model, plain, bs = _engine_mlp_and_plain_copy()
    assert kernels.uses_onednn(bs[0][0].flatten(1), model.fc1.weight)  # the fused, oneDNN path is what trains
    mask = pruning.full_mask(model, ("output",))
    ours = saliency.grasp_scores(model, mask, bs, 200.0)
    ref = _authors_grasp(plain, {}, bs, 200.0)
    # ours averages the batches' losses, the authors sum their halves': the same scores x 1/4
    for i, name in ((1, "fc1.weight"), (3, "fc2.weight")):
        torch.testing.assert_close(4 * ours[name], ref[i], rtol=1e-3, atol=1e-9)
    assert all(ours[n].abs().max() > 0 for n in ours)


def test_grasp_from_a_partly_pruned_mask_ignores_the_weights_already_pruned():
    model, plain, bs = _engine_mlp_and_plain_copy(seed=7)
    mask = pruning.full_mask(model, ("output",))
    g = torch.Generator().manual_seed(3)
    for name, idx in (("fc1.weight", 1), ("fc2.weight", 3)):  # half of each layer already pruned
        mask[name] = torch.rand(mask[name].shape, generator=g) < 0.5
    pruning.apply_mask(pruning.bind(model, mask))
    for name, idx in (("fc1.weight", 1), ("fc2.weight", 3)):
        with torch.no_grad():
            plain[idx].weight.mul_(mask[name])
    ours = saliency.grasp_scores(model, mask, bs, 200.0)
    ref = _authors_grasp(plain, {1: mask["fc1.weight"].float(), 3: mask["fc2.weight"].float()}, bs, 200.0)
    for name, idx in (("fc1.weight", 1), ("fc2.weight", 3)):
        torch.testing.assert_close(4 * ours[name], ref[idx], rtol=1e-3, atol=1e-9)
        assert ours[name][mask[name]].abs().max() > 0


def test_the_fused_mlp_refuses_a_second_derivative_instead_of_giving_a_wrong_one():
    from prunegen.engine import kernels

    model, _, bs = _engine_mlp_and_plain_copy()
    x, y = bs[0]
    assert kernels.fuses(x)
    loss = F.cross_entropy(model(x), y)
    (g,) = torch.autograd.grad(loss, [model.fc1.weight], create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        g.pow(2).sum().backward()
    (g,) = torch.autograd.grad(F.cross_entropy(model(x), y), [model.fc1.weight], create_graph=True)
    with pytest.raises(RuntimeError, match="not have been used in the graph"):  # no path: refused, not wrong
        torch.autograd.grad(g.pow(2).sum(), [model.fc1.weight])
