"""prunegen.kernels: linear layers whose CPU products run in oneDNN when they are big."""

import pytest
import torch
from torch import nn
import torch.nn.functional as F

from prunegen import kernels

BIG = (128, 784, 300)  # LeNet's first layer at batch 128: 30M multiply-adds
SMALL = (64, 64, 300)  # digits' first layer at batch 64: 1.2M
# fp32 sums of up to 4,000 products of N(0, 1) numbers, in two orders; a wrong product
# (a transposed or stale operand) is off by O(1) or more.
TOL = {"rtol": 1e-4, "atol": 1e-3}


def _layer(rows, fan_in, fan_out, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, fan_in, generator=g, requires_grad=True)
    w = torch.randn(fan_out, fan_in, generator=g, requires_grad=True)
    b = torch.randn(fan_out, generator=g, requires_grad=True)
    return x, w, b


def _grads(fn, x, w, b, grad_out):
    out = fn(x, w, b)
    out.backward(grad_out)
    grads = [t.grad.clone() for t in (x, w, b)]
    for t in (x, w, b):
        t.grad = None
    return out.detach(), grads


def test_big_products_run_in_onednn_and_small_ones_in_torchs_linear():
    x, w, _ = _layer(*BIG)
    assert kernels.uses_onednn(x, w)
    x, w, _ = _layer(*SMALL)
    assert not kernels.uses_onednn(x, w)
    x, w, _ = _layer(*BIG)
    assert not kernels.uses_onednn(x.double(), w.double())  # fp32 only
    assert not kernels.uses_onednn(x.to("meta"), w.to("meta"))  # CPU only
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast decides the precision, not us
        assert not kernels.uses_onednn(x, w)
        assert kernels.linear(x, w).dtype == torch.bfloat16


def test_onednn_forward_and_gradients_match_torchs_linear():
    x, w, b = _layer(*BIG)
    grad_out = torch.randn(BIG[0], BIG[2], generator=torch.Generator().manual_seed(1))
    out, grads = _grads(kernels.linear, x, w, b, grad_out)
    want_out, want_grads = _grads(F.linear, x, w, b, grad_out)
    assert not torch.equal(out, want_out)  # another kernel: another summation order...
    torch.testing.assert_close(out, want_out, **TOL)  # ...of the same product
    for got, want, name in zip(grads, want_grads, ("input", "weight", "bias")):
        torch.testing.assert_close(got, want, **TOL, msg=name)


def test_onednn_products_are_deterministic_and_see_in_place_updates():
    x, w, b = _layer(*BIG)
    grad_out = torch.randn(BIG[0], BIG[2], generator=torch.Generator().manual_seed(1))
    out, grads = _grads(kernels.linear, x, w, b, grad_out)
    again, grads_again = _grads(kernels.linear, x, w, b, grad_out)
    assert torch.equal(out, again) and all(torch.equal(p, q) for p, q in zip(grads, grads_again))
    with torch.no_grad():  # what SGD does between steps: same tensor, new values
        w.mul_(-0.5)
    updated = kernels.linear(x, w, b)
    torch.testing.assert_close(updated, F.linear(x, w, b), **TOL)
    assert torch.equal(updated, kernels.linear(x, w.detach().clone(), b))


def test_small_products_are_torchs_linear_bit_for_bit():
    x, w, b = _layer(*SMALL)
    assert torch.equal(kernels.linear(x, w, b), F.linear(x, w, b))


def test_the_layer_is_an_nn_linear_with_the_same_parameters():
    torch.manual_seed(0)
    ours = kernels.Linear(784, 300)
    torch.manual_seed(0)
    theirs = nn.Linear(784, 300)
    assert isinstance(ours, nn.Linear)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert all(torch.equal(p, q) for p, q in zip(ours.state_dict().values(), theirs.state_dict().values()))
    x = torch.randn(128, 784)
    torch.testing.assert_close(ours(x), theirs(x), **TOL)


@pytest.mark.parametrize("rows, fan_out", [(1, 4000), (127, 300)])
def test_odd_batch_sizes(rows, fan_out):  # a one-example batch, an epoch's last batch
    x, w, b = _layer(rows, 784, fan_out)
    assert kernels.uses_onednn(x, w)
    out, grads = _grads(kernels.linear, x, w, b, torch.ones(rows, fan_out))
    want_out, want_grads = _grads(F.linear, x, w, b, torch.ones(rows, fan_out))
    torch.testing.assert_close(out, want_out, **TOL)
    for got, want in zip(grads, want_grads):
        torch.testing.assert_close(got, want, **TOL)
