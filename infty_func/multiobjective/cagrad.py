"""CAGrad (Liu et al. 2021, "Conflict-Averse Gradient Descent for Multi-task Learning")."""

from __future__ import annotations

import torch
from torch import Tensor

from infty_func.core.base import GradientTransformation
from infty_func.multiobjective.aggregator import weighted_aggregator
from infty_func.multiobjective.simplex import bordered, supports

__all__ = ["cagrad", "cagrad_weights", "RESCALES"]

RESCALES = (0, 1, 2)
_DELTA = 1e-8  # the reference's guards: under the square roots and added to c and norms


def _dual_weights(gram: Tensor, c: Tensor) -> Tensor:
    """``argmin_{x ∈ Δ} xᵀ G b + c √(xᵀ G x + δ)`` with ``b = 1/m``, exactly.

    On a support ``S`` stationarity reads ``G b + c G x / r + λ 1 = 0`` with
    ``r = √(xᵀ G x + δ)``. Writing ``y = x / r`` makes it linear,
    ``c G_SS y + λ 1 = −(G b)_S``, with ``Σ y = s = 1/r``: so ``y = u + s v`` for two fixed
    solutions ``u, v``, and ``r² = xᵀ G x + δ`` becomes the scalar quadratic
    ``s² (vᵀ G v + δ) + 2 s uᵀ G v + uᵀ G u − 1 = 0``. Every support is solved at once,
    infeasible ones (``x < 0``, no positive root) are dropped, and the lowest objective
    wins: exact, branch-free, vmappable.
    """
    m = gram.shape[0]
    g = gram.to(torch.float64)
    b = torch.full((m,), 1.0 / m, dtype=torch.float64, device=g.device)
    linear = g @ b
    masks = supports(m, g.device)
    count = masks.shape[0]
    keep = masks.unsqueeze(-1) * masks.unsqueeze(-2)
    # Built out of place (vmap cannot write batched values into a fresh unbatched tensor).
    system = bordered(c * g * keep + torch.diag_embed(1.0 - masks), masks)
    zeros = torch.zeros(count, 1, dtype=torch.float64, device=g.device)
    ones = torch.ones(count, 1, dtype=torch.float64, device=g.device)
    rhs = torch.stack(
        [torch.cat([-linear * masks, zeros], -1), torch.cat([torch.zeros_like(masks), ones], -1)], -1
    )  # column u: Σ y = 0 with the linear term; column v: Σ y = 1 without it
    solution = torch.linalg.lstsq(system, rhs).solution
    u, v = solution[:, :m, 0] * masks, solution[:, :m, 1] * masks
    a = ((v @ g) * v).sum(-1) + _DELTA
    half_b = ((u @ g) * v).sum(-1)
    cc = ((u @ g) * u).sum(-1) - 1.0
    disc = (half_b * half_b - a * cc).clamp_min(0)
    s = (-half_b + disc.sqrt()) / a  # the larger root; a > 0, cc < 0 gives exactly one positive root
    x = (u + s.unsqueeze(-1) * v) / s.clamp_min(1e-300).unsqueeze(-1)
    quad = ((x @ g) * x).sum(-1)
    objective = x @ linear + c * (quad + _DELTA).sqrt()
    feasible = (s > 0) & (x >= -1e-10).all(-1) & ((x.sum(-1) - 1).abs() < 1e-8)
    objective = torch.where(feasible, objective, torch.full_like(objective, float("inf")))
    return x[torch.argmin(objective)].clamp_min(0)


def cagrad_weights(gram: Tensor, c_alpha: float | Tensor, rescale: int = 1) -> Tensor:
    """CAGrad's update as weights on the gradients, with the reference's constants:
    ``g₀ = √(mean G + δ)``, ``c = c_alpha·g₀ + δ``, ``w`` the dual solution
    (:func:`_dual_weights`), ``λ = c / (‖g_w‖ + δ)`` and the update
    ``mean_i g_i + λ g_w``, divided by ``1 + c_alpha²`` (``rescale=1``) or
    ``1 + c_alpha`` (``rescale=2``)."""
    m = gram.shape[0]
    g = gram.to(torch.float64)
    g0 = (g.mean() + _DELTA).sqrt()
    c = c_alpha * g0 + _DELTA
    w = _dual_weights(g, c)
    gw_norm = (w @ g @ w).clamp_min(0).sqrt()
    weights = torch.full((m,), 1.0 / m, dtype=torch.float64, device=g.device) + (c / (gw_norm + _DELTA)) * w
    if rescale == 1:
        return weights / (1 + c_alpha**2)
    if rescale == 2:
        return weights / (1 + c_alpha)
    return weights


def cagrad(c: float = 0.5, rescale: int = 1, m: int | None = None) -> GradientTransformation:
    """CAGrad as an aggregator: the update that maximises the worst objective's decrease
    within a ball around the mean gradient, ``d = g₀ + λ g_w``, from the dual problem
    ``min_{w ∈ Δ} g_wᵀ g₀ + c‖g₀‖ ‖g_w‖`` (Liu et al. 2021, eq. 4), with the reference's
    (``infty.optim.CAGrad``) constants and rescaling.

    The dual is solved exactly on the Gramian (:func:`_dual_weights`): no SciPy, no
    iteration tolerance, branch-free under vmap. ``infty`` uses SciPy's SLSQP at its default
    tolerance, so the two agree to about 1e-5.

    Args:
        c: the ball's radius relative to ``‖g₀‖`` (the reference's ``calpha``).
        rescale: ``0`` none, ``1`` divide by ``1 + c²`` (the paper's default), ``2`` by
            ``1 + c``.
    """
    if rescale not in RESCALES:
        raise ValueError(f"cagrad: rescale must be one of {RESCALES}, got {rescale!r}")

    def weighting(gram, inner, value=None):
        return cagrad_weights(gram, c, rescale), inner

    return weighted_aggregator("cagrad", weighting, m)
