"""Random Jacobians as pytrees (two leaves) and their flat m × n matrix."""

from __future__ import annotations

import torch


def random_jacobian(m: int, seed: int, kind: str = "random"):
    generator = torch.Generator().manual_seed(seed)
    flat = torch.randn(m, 20, generator=generator, dtype=torch.float64)
    if kind == "conflicting":
        flat[1] = -0.7 * flat[0] + 0.1 * flat[1]
    return {"weight": flat[:, :15].reshape(m, 3, 5), "bias": flat[:, 15:]}, flat


def flat_update(update: dict) -> torch.Tensor:
    return torch.cat([update["weight"].reshape(-1), update["bias"].reshape(-1)])


def aggregate(transform, jac, **extra):
    params = {"weight": torch.zeros(3, 5, dtype=torch.float64), "bias": torch.zeros(5, dtype=torch.float64)}
    out, _ = transform.update(jac, transform.init(params), params, **extra)
    return flat_update(out)
