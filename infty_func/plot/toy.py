"""The two-objective toy problem of ``infty.plot``'s trajectory figure, and its Pareto set.

The problem is the one used to picture conflicting gradients in Liu et al. 2021,
"Conflict-Averse Gradient Descent for Multi-task Learning" (CAGrad, NeurIPS), Fig. 1: two
losses of a point ``x = (x₁, x₂)`` that are log valleys where ``x₂ > 0`` and quadratic bowls
where ``x₂ < 0``, blended by ``tanh`` gates. From the reference's start ``(−8.5, 5)``
plain gradient descent on the sum follows one valley and stalls, which is what the
multi-objective methods are meant to avoid.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.func import grad, hessian, vmap

__all__ = ["two_objective_toy", "pareto_set", "DEFAULT_INIT", "TOY_BOX"]

DEFAULT_INIT = (-8.5, 5.0)  # the reference's start
TOY_BOX = 11.0  # the reference draws [-11, 11]²
_FLOOR = 5e-6  # the reference clamps the logs' arguments here


def two_objective_toy(x: Tensor) -> Tensor:
    """The two losses ``[f₁, f₂]`` at ``x`` (shape ``[..., 2]``; returns ``[..., 2]``).

    With the gates ``u = max(tanh(x₂/2), 0)`` and ``l = max(tanh(−x₂/2), 0)``:

    ``f₁ = u (ln max(|−(x₁+7)/2 − tanh(−x₂)|, 5e−6) + 6) + l (((x₁−7)² + 0.1 (x₂+8)²)/10 − 20)``

    ``f₂ = u (ln max(|(3−x₁)/2 + tanh(−x₂) + 2|, 5e−6) + 6) + l (((x₁+7)² + 0.1 (x₂+8)²)/10 − 20)``

    the reference's ``Toy`` module, batched and differentiable with ``torch.func``.
    """
    x1, x2 = x[..., 0], x[..., 1]
    upper = torch.tanh(0.5 * x2).clamp_min(0)
    lower = torch.tanh(-0.5 * x2).clamp_min(0)
    valley1 = torch.log((0.5 * (-x1 - 7) - torch.tanh(-x2)).abs().clamp_min(_FLOOR)) + 6
    valley2 = torch.log((0.5 * (-x1 + 3) + torch.tanh(-x2) + 2).abs().clamp_min(_FLOOR)) + 6
    bowl1 = ((x1 - 7) ** 2 + 0.1 * (x2 + 8) ** 2) / 10 - 20
    bowl2 = ((x1 + 7) ** 2 + 0.1 * (x2 + 8) ** 2) / 10 - 20
    return torch.stack([upper * valley1 + lower * bowl1, upper * valley2 + lower * bowl2], dim=-1)


def pareto_set(
    problem: Callable[[Tensor], Tensor] = two_objective_toy,
    box: float = TOY_BOX,
    weights: int = 65,
    grid: int = 201,
    steps: int = 10,
) -> Tensor:
    """Points of the Pareto set of a two-objective ``problem`` on ``[−box, box]²``, found
    numerically by scalarisation: for each of ``weights`` weights ``w`` in ``[0, 1]``, the
    minimiser of ``w f₁ + (1 − w) f₂``, first on a ``grid × grid`` lattice (one batched
    evaluation), then refined by ``steps`` Newton steps, all weights at once (a gradient
    step where the Hessian is not positive definite).

    Returns ``[weights, 2]`` points ordered by ``w`` (from ``f₂``'s minimiser to ``f₁``'s).
    Scalarisation finds the whole set when the front is convex, as it is for the toy.
    """
    axis = torch.linspace(-box, box, grid, dtype=torch.float64)
    lattice = torch.cartesian_prod(axis, axis)  # [grid², 2]
    w = torch.linspace(0.0, 1.0, weights, dtype=torch.float64)
    mix = torch.stack([w, 1 - w], dim=-1)  # [weights, 2]
    points = lattice[(problem(lattice) @ mix.T).argmin(dim=0)]  # [weights, 2]

    def scalarised(x, m):
        return (problem(x) * m).sum()

    gradient, curvature = vmap(grad(scalarised)), vmap(hessian(scalarised))
    for _ in range(steps):
        g, h = gradient(points, mix), curvature(points, mix)
        convex = torch.linalg.eigvalsh(h)[:, 0] > 0
        newton = torch.linalg.solve(torch.where(convex[:, None, None], h, torch.eye(2, dtype=h.dtype)), g[:, :, None])[:, :, 0]
        points = (points - torch.where(convex[:, None], newton, g)).clamp(-box, box)
    return points
