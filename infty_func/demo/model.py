"""The demo's model: a small MLP as a pure function of a parameter dict."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def init_mlp(sizes: tuple[int, ...], seed: int, dtype=torch.float32) -> dict[str, Tensor]:
    """Parameters ``w{i}``, ``b{i}`` drawn as ``torch.nn.Linear`` does (uniform ±1/√fan_in)."""
    generator = torch.Generator().manual_seed(seed)
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        bound = 1.0 / math.sqrt(fan_in)
        params[f"w{i}"] = (torch.rand(fan_out, fan_in, generator=generator, dtype=dtype) * 2 - 1) * bound
        params[f"b{i}"] = (torch.rand(fan_out, generator=generator, dtype=dtype) * 2 - 1) * bound
    return params


def mlp(params: dict[str, Tensor], x: Tensor) -> Tensor:
    """ReLU MLP logits."""
    layers = len(params) // 2
    for i in range(layers):
        x = x @ params[f"w{i}"].T + params[f"b{i}"]
        if i < layers - 1:
            x = torch.relu(x)
    return x
