"""Linear layers whose fp32 matrix products run on oneDNN on CPU.

PyTorch's CPU linear is MKL's sgemm, which on AMD processors runs its AVX2 code even
where AVX-512 is there: about 105 GFLOP/s a core on this project's machines, against
about 200 for oneDNN's matmul (the library behind PyTorch's CPU convolutions), which
picks its kernels by instruction set. An MLP's training step is almost all matrix
products, so this is most of its time (benchmarks/train.py).

`Linear` is `nn.Linear` (same parameters, same state_dict) whose products (forward, and
the weight and input gradients) go through oneDNN on CPU in fp32 when the layer is big
enough for it to win; everything else, and CUDA and autocast, is plain `F.linear`. The
same products, summed in another order: results differ from MKL's in their low-order
bits, and are as deterministic (same shapes, same threads, same bits). Whether a product
runs in oneDNN depends only on its shapes, never on timing.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

# oneDNN wins from about this many multiply-adds per product (rows x in x out): below
# it, its fixed cost per call (some 7 us) outweighs its faster kernel. Measured on 1 and
# 2 threads (crossovers near 1.5M and 2.5M): at batch 128, LeNet's 784x300 product (30M)
# runs 1.8-2x faster, its 300x100 (3.8M) 1.1-1.4x; at batch 64, digits' 64x300 (1.2M)
# would run 0.9x.
ONEDNN_MIN_MACS = 3_000_000

_matmul = getattr(torch.ops.mkldnn, "_linear_pointwise", None) if torch.backends.mkldnn.is_available() else None


def _mm(a: torch.Tensor, b_t: torch.Tensor) -> torch.Tensor:
    """a @ b_t.T in oneDNN; both may be transposed views (oneDNN reads the strides)."""
    return _matmul(a, b_t, None, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _matmul(x, weight, bias, "none", [], "")

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = _mm(grad, weight.t()) if ctx.needs_input_grad[0] else None
        grad_w = _mm(grad.t(), x.t()) if ctx.needs_input_grad[1] else None
        grad_b = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


def uses_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (_matmul is not None and x.device.type == "cpu" and x.dim() == 2
            and x.dtype == weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
            and x.shape[0] * weight.numel() >= ONEDNN_MIN_MACS)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    if uses_onednn(x, weight):
        return _OneDNNLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
