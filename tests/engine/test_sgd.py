import pytest
import torch

from prunegen.engine.models import build_model
from prunegen.engine.sgd import SGD


def model():
    torch.manual_seed(0)
    return build_model({"name": "mlp", "hidden": [32, 16]}, input_shape=(1, 8, 8), num_classes=10)


@pytest.mark.parametrize("momentum,decay,nesterov", [(0.0, 0.0, False), (0.9, 1e-4, False),
                                                     (0.9, 5e-4, True), (0.0, 1e-3, False)])
def test_matches_torch_optim_sgd_bit_for_bit(momentum, decay, nesterov):
    ours, ref = model(), model()
    opt = SGD(ours.parameters(), lr=0.1, momentum=momentum, weight_decay=decay, nesterov=nesterov)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=momentum, weight_decay=decay,
                              nesterov=nesterov, foreach=False)
    g = torch.Generator().manual_seed(1)
    for step in range(6):
        x, y = torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)
        for m, o in ((ours, opt), (ref, ref_opt)):
            for group in o.param_groups:
                group["lr"] = 0.1 / (step + 1)
            o.zero_grad()
            torch.nn.functional.cross_entropy(m(x), y).backward()
            o.step()
    for a, b in zip(ours.parameters(), ref.parameters()):
        assert torch.equal(a, b)
    if momentum:
        for a, b in zip(ours.parameters(), ref.parameters()):
            assert torch.equal(opt.state[a]["momentum_buffer"], ref_opt.state[b]["momentum_buffer"])


def test_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    m = model()
    opt = SGD(m.parameters(), lr=0.05, momentum=0.9)
    torch.nn.functional.cross_entropy(m(torch.randn(4, 1, 8, 8)), torch.tensor([1, 2, 3, 4])).backward()
    opt.step()
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    fresh = SGD(m.parameters(), lr=0.1, momentum=0.9)
    fresh.load_state_dict(torch.load(tmp_path / "opt.pt", weights_only=True))
    assert fresh.param_groups[0]["lr"] == 0.05
    for p in m.parameters():
        assert torch.equal(fresh.state[p]["momentum_buffer"], opt.state[p]["momentum_buffer"])


def test_a_step_is_a_few_multi_tensor_ops_whatever_the_number_of_parameters():
    # On CUDA every op is a kernel launch: a per-parameter loop would be 5 x 65 launches a
    # step for a ResNet-20. Counted here as the aten ops the step dispatches.
    from torch.utils._python_dispatch import TorchDispatchMode

    from prunegen.engine import pruning

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    net = build_model({"name": "resnet20"}, input_shape=(3, 8, 8), num_classes=10, width=4)
    params = list(net.parameters())
    assert len(params) == 65
    opt = SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True)
    mask = pruning.full_mask(net, [])
    mask = pruning.magnitude_prune(net, mask, pruning.total(mask) // 2)  # half the weights masked, globally
    bound = pruning.bind(net, mask)
    assert len(bound) > 1
    counts = []
    for _ in range(3):  # the first step creates the momentum buffers, one clone per parameter
        torch.nn.functional.cross_entropy(net(torch.randn(4, 3, 8, 8)), torch.tensor([0, 1, 2, 3])).backward()
        with Count() as count:
            pruning.mask_grads(bound)
            opt.step()
        counts.append(count.ops)
        opt.zero_grad()
    assert len(counts[0]) > 65
    assert counts[1] == counts[2] and len(counts[2]) <= 6, counts[2]
    assert all(op.startswith("aten._foreach_") for op in counts[2]), counts[2]
