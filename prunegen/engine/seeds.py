"""Every random stream is derived from (seed, stream name), never from global state."""

from __future__ import annotations

import hashlib

import torch


def derive(seed: int, *names: object) -> int:
    """A 63-bit integer seed for the stream `names` of replicate `seed`."""
    text = "/".join([str(int(seed)), *map(str, names)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def generator(seed: int, *names: object, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(derive(seed, *names))
    return g
