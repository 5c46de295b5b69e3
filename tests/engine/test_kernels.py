"""prunegen.kernels: an MLP as one autograd node on CPU, its big products in oneDNN."""

import pytest
import torch
import torch.nn.functional as F

from prunegen.engine import kernels, models

LENET = (128, 784, [300, 100])  # batch 128: the first layer's products are 30M multiply-adds
DIGITS = (64, 64, [300, 100])  # batch 64: 1.2M, every product in torch's own kernels
# fp32 sums of up to 4,000 products of numbers near 1, in two orders; a wrong product
# (a transposed or stale operand, a missing ReLU) is off by far more.
TOL = {"rtol": 1e-4, "atol": 1e-4}


def _mlp(rows, fan_in, hidden, seed=0):
    torch.manual_seed(seed)
    model = models.build_model({"name": "mlp", "hidden": hidden}, input_shape=(1, 1, fan_in), num_classes=10)
    x = torch.randn(rows, fan_in, generator=torch.Generator().manual_seed(seed + 1))
    return model, x


def _modules(model, x):
    """The module path, as autograd runs it: F.linear and F.relu per layer."""
    layers = [getattr(model, f"fc{i + 1}") for i in range(model.num_hidden)]
    for layer in layers:
        x = F.relu(F.linear(x, layer.weight, layer.bias))
    return F.linear(x, model.output.weight, model.output.bias)


def _step(forward, model, x, grad_out):
    """Output and every parameter's gradient (and the input's, when it wants one)."""
    model.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_(x.requires_grad)
    out = forward(model, x)
    out.backward(grad_out)
    grads = [p.grad for p in model.parameters()] + ([x.grad] if x.requires_grad else [])
    return out.detach(), grads


def _fused(model, x):
    assert kernels.fuses(x)
    return model(x)


def test_which_batches_fuse_and_which_products_run_in_onednn():
    model, x = _mlp(*LENET)
    hidden = torch.relu(model.fc1(x))
    assert kernels.fuses(x)
    assert kernels.uses_onednn(x, model.fc1.weight)  # 128 x 784 x 300: 30M multiply-adds
    assert kernels.uses_onednn(hidden, model.fc2.weight)  # 128 x 300 x 100: 3.8M
    assert not kernels.uses_onednn(hidden[:, :100], model.output.weight)  # 128 x 100 x 10
    small, xs = _mlp(*DIGITS)
    assert not kernels.uses_onednn(xs, small.fc1.weight)  # 64 x 64 x 300: 1.2M
    assert not kernels.fuses(x.double()) and not kernels.fuses(x.to("meta"))  # fp32, CPU only
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast decides the precision: the modules run
        assert not kernels.fuses(x)
        assert model(x).dtype == torch.bfloat16


def test_small_products_give_the_module_paths_bits():
    model, x = _mlp(*DIGITS)
    grad_out = torch.randn(DIGITS[0], 10, generator=torch.Generator().manual_seed(2))
    for wants_input_grad in (False, True):
        x.requires_grad_(wants_input_grad)
        out, grads = _step(_fused, model, x, grad_out)
        want_out, want_grads = _step(_modules, model, x, grad_out)
        assert torch.equal(out, want_out)
        assert len(grads) == 6 + wants_input_grad
        for got, want in zip(grads, want_grads):
            assert torch.equal(got, want)


def test_big_products_match_the_module_path_to_rounding():
    model, x = _mlp(*LENET)
    x.requires_grad_()
    grad_out = torch.randn(LENET[0], 10, generator=torch.Generator().manual_seed(2))
    out, grads = _step(_fused, model, x, grad_out)
    want_out, want_grads = _step(_modules, model, x, grad_out)
    assert not torch.equal(out, want_out)  # another kernel: another summation order...
    torch.testing.assert_close(out, want_out, **TOL)  # ...of the same products
    names = [n for n, _ in model.named_parameters()] + ["input"]
    for got, want, name in zip(grads, want_grads, names):
        torch.testing.assert_close(got, want, **TOL, msg=name)


def test_the_fused_step_is_deterministic_and_sees_in_place_updates():
    model, x = _mlp(*LENET)
    grad_out = torch.ones(LENET[0], 10)
    out, grads = _step(_fused, model, x, grad_out)
    again, grads_again = _step(_fused, model, x, grad_out)
    assert torch.equal(out, again) and all(torch.equal(p, q) for p, q in zip(grads, grads_again))
    with torch.no_grad():  # what SGD does between steps: the same tensors, new values
        for p in model.parameters():
            p.mul_(-0.5)
    updated = model(x)
    torch.testing.assert_close(updated, _modules(model, x), **TOL)
    assert not torch.allclose(updated, out)


def test_no_grad_forward_is_the_training_forward():  # evaluation runs the same kernels
    model, x = _mlp(*LENET)
    with torch.no_grad():
        evaluated = model(x)
    assert torch.equal(evaluated, model(x).detach())


@pytest.mark.parametrize("rows, hidden", [(1, [4000]), (127, [300, 100])])
def test_odd_batch_sizes(rows, hidden):  # a one-example batch, an epoch's last batch
    model, x = _mlp(rows, 784, hidden)
    assert kernels.uses_onednn(x, model.fc1.weight)
    grad_out = torch.ones(rows, 10)
    out, grads = _step(_fused, model, x, grad_out)
    want_out, want_grads = _step(_modules, model, x, grad_out)
    torch.testing.assert_close(out, want_out, **TOL)
    for got, want in zip(grads, want_grads):
        torch.testing.assert_close(got, want, **TOL)
