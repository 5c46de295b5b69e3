import torch
from torch import nn

from prunegen.engine import pruning
from prunegen.engine.models import build_model
from prunegen.engine.start import keep_count


def mlp():
    torch.manual_seed(0)
    return build_model({"name": "mlp", "hidden": [40, 20]}, input_shape=(1, 8, 8), num_classes=10)


def test_prunable_weights_are_conv_and_linear_weights_minus_ignored():
    m = mlp()
    assert pruning.prunable_names(m, ("output",)) == ["fc1.weight", "fc2.weight"]
    assert pruning.count_prunable(m, ("output",)) == 64 * 40 + 40 * 20


def test_magnitude_pruning_is_global_and_keeps_the_largest():
    m = mlp()
    mask = pruning.full_mask(m, ("output",))
    keep = keep_count(pruning.total(mask), 0.2, 1)
    new = pruning.magnitude_prune(m, mask, keep)
    assert pruning.kept(new) == keep
    params = dict(m.named_parameters())
    kept_min = min(params[n].abs()[new[n]].min() for n in new)
    pruned_max = max(params[n].abs()[~new[n]].max() for n in new if (~new[n]).any())
    assert kept_min >= pruned_max
    # global, not per layer: the two layers end up with different densities
    dens = [float(new[n].float().mean()) for n in new]
    assert abs(dens[0] - dens[1]) > 1e-3


def test_pruning_never_revives_a_removed_weight():
    m = mlp()
    mask = pruning.full_mask(m, ("output",))
    n = pruning.total(mask)
    for level in range(1, 6):
        new = pruning.magnitude_prune(m, mask, keep_count(n, 0.2, level))
        assert all(not (new[k] & ~mask[k]).any() for k in mask)
        assert abs(pruning.kept(new) - n * 0.8 ** level) <= 1
        pruning.apply_mask(pruning.bind(m, new))
        mask = new


def test_binding_leaves_out_layers_with_nothing_masked():
    m = mlp()
    mask = pruning.full_mask(m, ())
    assert pruning.bind(m, mask) == []  # a dense model: no per-step masking at all
    mask["fc2.weight"][0, 0] = False
    (p, b), = pruning.bind(m, mask)
    assert p is dict(m.named_parameters())["fc2.weight"] and b.dtype == p.dtype and b.sum() == b.numel() - 1


def test_random_pruning_matches_per_layer_counts_within_the_surviving_weights():
    m = mlp()
    mask = pruning.magnitude_prune(m, pruning.full_mask(m, ("output",)), 1500)
    want = {"fc1.weight": 900, "fc2.weight": 300}
    new = pruning.random_prune(mask, want, torch.Generator().manual_seed(0))
    assert {k: int(v.sum()) for k, v in new.items()} == want
    assert all(not (new[k] & ~mask[k]).any() for k in mask)


def test_masked_weights_stay_exactly_zero_through_sgd_with_momentum_and_decay():
    m = mlp()
    mask = pruning.magnitude_prune(m, pruning.full_mask(m, ("output",)), 1000)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    bound = pruning.bind(m, mask)
    assert all(b.dtype == p.dtype and torch.equal(b.bool(), mask[n]) for (p, b), n in zip(bound, mask))
    pruning.apply_mask(bound)
    for step in range(5):  # as the training loop does: masked gradients, no re-masking after the step
        loss = nn.functional.cross_entropy(m(torch.randn(32, 1, 8, 8)), torch.randint(0, 10, (32,)))
        opt.zero_grad()
        loss.backward()
        pruning.mask_grads(bound)
        opt.step()
    params = dict(m.named_parameters())
    for n, keep in mask.items():
        assert torch.all(params[n][~keep] == 0)
        assert torch.all(params[n].grad[~keep] == 0)
        assert torch.all(opt.state[params[n]]["momentum_buffer"][~keep] == 0)
    report = pruning.sparsity_report(m, mask)
    assert report["prunable_nonzero"] == 1000
    assert report["parameters_kept"] == sum(p.numel() for p in m.parameters()) - (report["prunable_weights"] - 1000)
    assert 0 < report["sparsity_all"] < report["sparsity"]
