"""SGD with momentum, weight decay and optional Nesterov: torch.optim.SGD's update, written out.

Why not torch.optim.SGD: every torch.optim optimizer imports torch._dynamo on first use
(about 1.5 s here), half the fixed cost of a small cell job, and a study runs thousands
of them. The update is five tensor ops; it is the same as torch's single-tensor SGD
path, bit for bit (tests/test_sgd.py), with dampening 0.
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
        for p in self.params:
            if p.grad is None:
                continue
            d_p = p.grad if decay == 0 else p.grad.add(p, alpha=decay)
            if momentum != 0:
                state = self.state.setdefault(p, {})
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = torch.clone(d_p).detach()
                else:
                    buf.mul_(momentum).add_(d_p)
                d_p = d_p.add(buf, alpha=momentum) if nesterov else buf
            p.add_(d_p, alpha=-lr)

    def state_dict(self) -> dict:
        return {"lr": self.param_groups[0]["lr"],
                "momentum_buffers": [self.state.get(p, {}).get("momentum_buffer") for p in self.params]}

    def load_state_dict(self, state: dict) -> None:
        self.param_groups[0]["lr"] = state["lr"]
        self.state = {p: {"momentum_buffer": buf.to(p.device).clone()}
                      for p, buf in zip(self.params, state["momentum_buffers"]) if buf is not None}
