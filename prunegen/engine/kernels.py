"""An MLP's training step on CPU: its layers as one autograd node, its big products in oneDNN.

Why oneDNN: PyTorch's CPU linear is MKL's sgemm, which on AMD processors runs its AVX2
code even where AVX-512 is there: about 105 GFLOP/s a core on this project's machines,
against about 200 for oneDNN's matmul (the library behind PyTorch's CPU convolutions),
which picks its kernels by instruction set.

Why one node: once the products run near the machine's peak, what is left of an MLP step
is overhead: every Linear and ReLU module is an autograd node, with its own Python,
dispatch and bookkeeping, and every ReLU a pass over its activations. `mlp` runs the
whole stack as one node: ReLUs folded into oneDNN's products (a post-op), the backward
pass a plain loop. Same parameters, same modules, same state_dict.

Bits: products below `ONEDNN_MIN_MACS`, the ReLUs and the bias gradients run the very ops
autograd runs for `nn.Linear` + `F.relu` (addmm forward; g.t() @ a, g @ w and a sum over
rows backward; threshold_backward), so they give the module path's bits
(tests/engine/test_kernels.py). Products in oneDNN are the same sums in another order: they
differ from MKL's in the low-order bits, and are as deterministic (same shapes, same
threads, same bits). Which kernel runs a product depends only on its shapes.

One derivative only: the backward pass is a plain loop, not itself differentiable, so a
second derivative through it (a Hessian-vector product) is refused with an error
(`once_differentiable`), never computed wrong; what needs one runs inside `unfused()`,
where the modules (autograd all the way down) run instead.
"""

from __future__ import annotations

import contextlib
import contextvars

import torch
from torch.autograd.function import once_differentiable

# oneDNN wins from about this many multiply-adds per product (rows x in x out): below
# it, its fixed cost per call (some 7 us) outweighs its faster kernel. Measured on 1 and
# 2 threads (crossovers near 1.5M and 2.5M): at batch 128, LeNet's 784x300 product (30M)
# runs 1.8-2x faster, its 300x100 (3.8M) 1.1-1.4x; at batch 64, digits' 64x300 (1.2M)
# would run 0.9x.
ONEDNN_MIN_MACS = 3_000_000

_matmul = getattr(torch.ops.mkldnn, "_linear_pointwise", None) if torch.backends.mkldnn.is_available() else None
_relu_grad = torch.ops.aten.threshold_backward  # what autograd runs for F.relu's backward
_UNFUSED = contextvars.ContextVar("prunegen_unfused", default=False)


@contextlib.contextmanager
def unfused():
    """Inside the block, MLPs run through their modules, whose every op autograd can
    differentiate again: for what takes a second derivative (GraSP's Hessian-vector
    product), which the fused node refuses."""
    token = _UNFUSED.set(True)
    try:
        yield
    finally:
        _UNFUSED.reset(token)


def fuses(x: torch.Tensor) -> bool:
    """Whether `mlp` runs this batch: fp32 on CPU, autocast off (under autocast, and on
    CUDA, the modules run and autocast picks the precision), outside `unfused()`."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
            and not _UNFUSED.get())


def uses_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the product of a batch `x` (rows, in) and `weight` (out, in) runs in oneDNN."""
    return (_matmul is not None and fuses(x) and x.dim() == 2 and weight.dtype == torch.float32
            and x.shape[0] * weight.numel() >= ONEDNN_MIN_MACS)


def _mm(a: torch.Tensor, b_t: torch.Tensor) -> torch.Tensor:
    """a @ b_t.T in oneDNN (b_t may be a transposed view; a non-contiguous `a` is copied)."""
    return _matmul(a, b_t, None, "none", [], "")


class _MLP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, *params):  # params: weight, bias of each layer, input to output
        layers = len(params) // 2
        acts = [x]  # each layer's input; the hidden ones are ReLU outputs
        ctx.onednn = [uses_onednn(x, params[2 * i]) for i in range(layers)]  # same rows at every layer
        for i in range(layers):
            w, b, relu = params[2 * i], params[2 * i + 1], i < layers - 1
            if ctx.onednn[i]:
                x = _matmul(x, w, b, "relu" if relu else "none", [], "")
            else:
                x = torch.addmm(b, x, w.t())  # F.linear
                if relu:
                    x = x.relu_()
            acts.append(x)
        ctx.save_for_backward(*acts[:-1], *params)
        return x

    @staticmethod
    @once_differentiable  # a plain loop, not differentiable again: a second derivative is refused
    def backward(ctx, grad):
        saved = ctx.saved_tensors
        layers = len(saved) // 3
        acts, params = saved[:layers], saved[layers:]
        grads = [None] * len(params)
        grad_x = None
        for i in reversed(range(layers)):
            a, w = acts[i], params[2 * i]
            if ctx.onednn[i]:
                grads[2 * i] = _mm(grad.t(), a.t())
                if i > 0 or ctx.needs_input_grad[0]:
                    grad_x = _mm(grad, w.t())
            else:
                grads[2 * i] = grad.t().mm(a)
                if i > 0 or ctx.needs_input_grad[0]:
                    grad_x = grad.mm(w)
            grads[2 * i + 1] = grad.sum(0)
            if i > 0:
                grad = _relu_grad(grad_x, a, 0)  # through the ReLU whose output was this layer's input
        return (grad_x if ctx.needs_input_grad[0] else None, *grads)


def mlp(x: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor]) -> torch.Tensor:
    """relu(x @ w1.T + b1) ... @ wn.T + bn: Linear layers with ReLUs between, no ReLU last."""
    return _MLP.apply(x, *(t for wb in zip(weights, biases) for t in wb))
