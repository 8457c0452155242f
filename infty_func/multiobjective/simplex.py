"""Small quadratic programs over the simplex, solved exactly by enumerating supports.

``min_w wᵀ Q w + cᵀ w`` subject to ``w ≥ 0, Σ w = 1`` (m variables, m small) has its
optimum at the solution of the equality-constrained problem on some support ``S``. Every
support's KKT system is solved at once (a batch of ``2^m − 1`` small linear systems, with
the excluded variables pinned to zero), infeasible ones are discarded, and the best
feasible one is selected: no data-dependent Python branch, so it runs under vmap, and it
is exact up to rounding (no iteration tolerance).
"""

from __future__ import annotations

import functools
import itertools

import torch
from torch import Tensor

__all__ = ["simplex_qp", "bordered", "supports", "MAX_EXACT_OBJECTIVES"]

# 2^m - 1 supports: 4095 systems of size 13 at m = 12 is still small.
MAX_EXACT_OBJECTIVES = 12


def supports(m: int, device=None, include_empty: bool = False) -> Tensor:
    """Every subset of ``m`` variables as a 0/1 float64 mask, one per row (the empty one
    only with ``include_empty``): the candidate supports or active sets of the exact
    small solvers. A fresh tensor each call; the enumeration itself is built once per
    ``(m, include_empty)``."""
    return _enumerated(m, include_empty).to(device=device, copy=True)


@functools.cache
def _enumerated(m: int, include_empty: bool) -> Tensor:
    masks = [bits for bits in itertools.product([0.0, 1.0], repeat=m) if include_empty or any(bits)]
    return torch.tensor(masks, dtype=torch.float64)


def bordered(block: Tensor, masks: Tensor) -> Tensor:
    """``[[block, mask], [maskᵀ, 0]]`` for each support (the KKT matrix with the simplex
    constraint), assembled out of place so that it works under vmap."""
    count = masks.shape[0]
    corner = torch.zeros(count, 1, 1, dtype=block.dtype, device=block.device)
    top = torch.cat([block, masks.unsqueeze(-1).expand(count, -1, 1).to(block.dtype)], -1)
    bottom = torch.cat([masks.unsqueeze(-2).to(block.dtype), corner], -1)
    return torch.cat([top, bottom], -2)


def simplex_qp(quadratic: Tensor, linear: Tensor | None = None) -> Tensor:
    """The minimiser of ``wᵀ Q w + cᵀ w`` over the probability simplex (``Q`` symmetric PSD,
    float64)."""
    m = quadratic.shape[-1]
    if m == 1:
        return torch.ones(1, dtype=torch.float64, device=quadratic.device)
    if m > MAX_EXACT_OBJECTIVES:
        raise ValueError(f"simplex_qp enumerates supports and takes m <= {MAX_EXACT_OBJECTIVES}, got m = {m}")
    q = quadratic.to(torch.float64)
    c = torch.zeros(m, dtype=torch.float64, device=q.device) if linear is None else linear.to(torch.float64)
    masks = supports(m, q.device)  # [S, m]
    count = masks.shape[0]
    # KKT: 2 Q_SS w_S + c_S + λ 1 = 0, Σ w_S = 1; excluded rows pinned: w_j = 0.
    keep = masks.unsqueeze(-1) * masks.unsqueeze(-2)  # [S, m, m]
    scale = torch.diagonal(q).abs().max().clamp_min(1e-300)
    system = bordered(2 * q / scale * keep + torch.diag_embed(1.0 - masks), masks)
    rhs = torch.cat([-c / scale * masks, torch.ones(count, 1, dtype=torch.float64, device=q.device)], -1)
    # lstsq tolerates singular supports (identical gradients): a minimum-norm KKT point.
    solution = torch.linalg.lstsq(system, rhs.unsqueeze(-1)).solution.squeeze(-1)
    weights = solution[:, :m] * masks
    residual = (system @ solution.unsqueeze(-1)).squeeze(-1) - rhs
    objective = ((weights @ q) * weights).sum(-1) + weights @ c
    feasible = (weights >= -1e-12).all(-1) & ((weights.sum(-1) - 1).abs() < 1e-9) & (residual.abs().amax(-1) < 1e-7)
    objective = torch.where(feasible, objective, torch.full_like(objective, float("inf")))
    best = torch.argmin(objective)
    return weights[best].clamp_min(0)
