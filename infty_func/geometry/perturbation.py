"""The pieces every geometry method is made of: the ascent step to a perturbed point, the
gradient there, and the three probes GAM and C-Flat share.

All of them follow the reference's numerics (``infty.optim.InftyBaseOptimizer``): norms
get ``eps`` added before dividing, and the adaptive (ASAM) variant measures the gradient in
the ``|w|``-weighted norm but moves along ``w² ⊙ g``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from torch import Tensor

from infty_func.core.objective import perturbed, value_and_grad
from infty_func.core.tree import PyTree, tree_add_scaled, tree_mul, tree_norm, tree_sub
from infty_func.transforms.scale import schedule_value

__all__ = ["radius", "ascent_point", "gradient_at", "FlatnessProbes", "flatness_probes"]

Radius = float | Tensor | Callable[[Tensor], Tensor]


def radius(rho: Radius, count: Tensor, method: str) -> float | Tensor:
    """The neighbourhood radius at this step: ``rho`` itself, or ``rho(count)`` for a
    schedule (the functional form of the reference's ``rho_scheduler``)."""
    if callable(rho):
        return schedule_value(rho, count, method)
    return rho


def ascent_point(grads: PyTree, params: PyTree, rho: float | Tensor, adaptive: bool, eps: float) -> PyTree:
    """``w + e`` with ``e = rho · T² g / (‖T g‖ + eps)``, the worst point of the ``rho``-ball
    to first order.

    ``T = I`` gives SAM (Foret et al. 2021, eq. 2). ``adaptive=True`` gives ASAM (Kwon et
    al. 2021, eq. 9) with ``T = diag|w|``: the norm is taken of ``|w| ⊙ g`` and the step is
    ``w² ⊙ g`` scaled, the square the reference applies (``torch.pow(p, 2)``). The point is
    formed in one fused pass (two for ASAM); ``e`` itself is never stored.
    """
    if adaptive:
        weighted = tree_mul(grads, params)  # ‖|w| ⊙ g‖ = ‖w ⊙ g‖, and w ⊙ (w ⊙ g) = w² ⊙ g
        scale = rho / (tree_norm(weighted) + eps)
        return tree_add_scaled(params, scale, tree_mul(weighted, params))
    scale = rho / (tree_norm(grads) + eps)
    return tree_add_scaled(params, scale, grads)


def gradient_at(loss_fn: Callable, point: PyTree) -> PyTree:
    """The gradient of ``loss_fn`` at a perturbed ``point`` (one forward and one backward),
    inside ``ifn.perturbed(loss_fn)`` so module state such as batch-norm statistics can be
    kept out of it."""
    with perturbed(loss_fn):
        _, grads = value_and_grad(loss_fn)(point)
    return grads


class FlatnessProbes(NamedTuple):
    """The three gradients of GAM's and C-Flat's first-order flatness step."""

    sharpness: PyTree  # ∇f(w + e₀): the SAM gradient (zeroth-order sharpness)
    ascent: PyTree  # ∇f(w + e₁): at the point reached by gradient-norm ascent
    flatness: PyTree  # ∇f(w + e₁ + e₂): one SAM step further from there


def flatness_probes(
    loss_fn: Callable,
    grads: PyTree,
    params: PyTree,
    rho: float | Tensor,
    norm_rho: float | Tensor,
    adaptive: bool,
    eps: float,
) -> FlatnessProbes:
    """Three gradient evaluations that approximate the gradient of the first-order
    flatness ``ρ·max_{‖e‖≤ρ} ‖∇f(w + e)‖`` (Zhang et al. 2023, GAM, Alg. 1; Bian et al.
    2024, C-Flat, Alg. 1).

    1. ``e₀`` = SAM step from ``g = ∇f(w)``; ``g₁ = ∇f(w + e₀)``.
    2. ``g₁ − g ≈ ρ H g/‖g‖`` is, up to scale, the gradient of ``‖∇f‖``; step along it by
       ``norm_rho``: ``e₁``; ``h = ∇f(w + e₁)``.
    3. a SAM step of radius ``rho`` from ``w + e₁`` along ``h``: ``e₂``;
       ``g₃ = ∇f(w + e₁ + e₂)``.
    """
    sharpness = gradient_at(loss_fn, ascent_point(grads, params, rho, adaptive, eps))
    ascended = ascent_point(tree_sub(sharpness, grads), params, norm_rho, adaptive, eps)
    ascent = gradient_at(loss_fn, ascended)
    further = ascent_point(ascent, ascended, rho, adaptive, eps)
    flatness = gradient_at(loss_fn, further)
    return FlatnessProbes(sharpness, ascent, flatness)
