"""``min_v vᵀ P v`` subject to ``v ≥ u`` (P positive definite, m small), solved exactly by
enumerating active sets: every candidate's linear system is solved in one batch and the
best primal-feasible candidate is selected, with no data-dependent branch (vmappable)."""

from __future__ import annotations

import torch
from torch import Tensor

from infty_func.multiobjective.simplex import supports

__all__ = ["lower_bounded_qp"]


def lower_bounded_qp(quadratic: Tensor, lower: Tensor) -> Tensor:
    """The minimiser of ``vᵀ P v`` over ``v ≥ lower``. ``lower`` may carry leading batch
    dimensions (several problems with the same ``P``)."""
    p = quadratic.to(torch.float64)
    m = p.shape[-1]
    free = supports(m, p.device, include_empty=True)  # [K, m]: 1 where the bound is inactive
    lower = lower.to(torch.float64)
    batch_shape = lower.shape[:-1]
    flat_lower = lower.reshape(-1, m)  # [B, m]
    # Free rows: (P v)_i = 0 (stationarity); active rows: v_j = lower_j. The matrix depends
    # on the active set only, so all problems share one factorisation per set.
    system = free.unsqueeze(-1) * p + torch.diag_embed(1.0 - free)  # [K, m, m]
    rhs = (1.0 - free).unsqueeze(-1) * flat_lower.transpose(0, 1).unsqueeze(0)  # [K, m, B]
    solution = torch.linalg.solve(system, rhs).permute(2, 0, 1).reshape(*batch_shape, -1, m)  # [..., K, m]
    tolerance = 1e-12 * (1.0 + lower.abs().amax(-1, keepdim=True))
    feasible = ((solution - lower.unsqueeze(-2)) >= -tolerance.unsqueeze(-1)).all(-1)
    objective = ((solution @ p) * solution).sum(-1)
    objective = torch.where(feasible, objective, torch.full_like(objective, float("inf")))
    best = torch.argmin(objective, dim=-1)
    return torch.gather(solution, -2, best[..., None, None].expand(*batch_shape, 1, m)).squeeze(-2)
