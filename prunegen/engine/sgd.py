"""SGD with momentum, weight decay and optional Nesterov: torch.optim.SGD's update, written out.

Why not torch.optim.SGD: every torch.optim optimizer imports torch._dynamo on first use
(about 1.5 s here), half the fixed cost of a small cell job, and a study runs thousands
of them. The update is a handful of multi-tensor (`torch._foreach_*`) ops over all
parameters, so that a CUDA step launches a few kernels rather than five per parameter
(65 parameters in a ResNet-20); on CPU those ops loop over the tensors with the
single-tensor ops, and the result is torch's single-tensor SGD, bit for bit
(tests/test_sgd.py), with dampening 0.
"""

from __future__ import annotations

import torch


class SGD:
    def __init__(self, params, *, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False):
        self.params = list(params)
        # The same shape as torch.optim's, so code that sets group["lr"] works on either.
        self.param_groups = [{"params": self.params, "lr": lr, "momentum": momentum,
                              "weight_decay": weight_decay, "nesterov": nesterov}]
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        lr, momentum, decay, nesterov = group["lr"], group["momentum"], group["weight_decay"], group["nesterov"]
        params = [p for p in self.params if p.grad is not None]
        if not params:
            return
        grads = [p.grad for p in params]
        if decay != 0:
            grads = torch._foreach_add(grads, params, alpha=decay)
        if momentum != 0:
            bufs = [self.state.get(p, {}).get("momentum_buffer") for p in params]
            if all(b is not None for b in bufs):
                torch._foreach_mul_(bufs, momentum)
                torch._foreach_add_(bufs, grads)
            else:  # the first step (or a parameter's first gradient): the buffer starts as the gradient
                for i, (p, buf) in enumerate(zip(params, bufs)):
                    if buf is None:
                        bufs[i] = self.state.setdefault(p, {})["momentum_buffer"] = torch.clone(grads[i]).detach()
                    else:
                        buf.mul_(momentum).add_(grads[i])
            grads = torch._foreach_add(grads, bufs, alpha=momentum) if nesterov else bufs
        torch._foreach_add_(params, grads, alpha=-lr)

    def state_dict(self) -> dict:
        return {"lr": self.param_groups[0]["lr"],
                "momentum_buffers": [self.state.get(p, {}).get("momentum_buffer") for p in self.params]}

    def load_state_dict(self, state: dict) -> None:
        self.param_groups[0]["lr"] = state["lr"]
        self.state = {p: {"momentum_buffer": buf.to(p.device).clone()}
                      for p, buf in zip(self.params, state["momentum_buffers"]) if buf is not None}
