"""GAM: gradient-norm aware minimisation (first-order flatness)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from infty_func.core.base import GradientTransformation
from infty_func.core.objective import require_loss_fn, require_params
from infty_func.core.tree import tree_add_scaled, tree_scale
from infty_func.geometry.perturbation import Radius, flatness_probes, radius
from infty_func.geometry.projection import subtract_orthogonal_part

__all__ = ["gam", "GAMState"]


class GAMState(NamedTuple):
    count: Tensor  # int64, updates so far (the argument of the radius schedules)


def gam(
    rho: Radius = 0.1,
    norm_rho: Radius = 0.02,
    beta1: float = 1.0,
    beta2: float = -1.0,
    beta3: float = 1.0,
    gamma: float = 0.3,
    adaptive: bool = False,
    eps: float = 1e-12,
) -> GradientTransformation:
    """Gradient norm aware minimisation (Zhang et al. 2023, "Gradient Norm Aware
    Minimization Seeks First-Order Flatness and Improves Generalization", Alg. 1), with
    the reference's first-order approximation of the gradient-norm ascent.

    From ``g = ∇f(w)`` the three probes of :func:`~infty_func.geometry.perturbation.flatness_probes`
    give ``g₁ = ∇f(w + e₀)`` (SAM step of radius ``rho``), ``h = ∇f(w + e₁)`` (ascent of
    the gradient norm by ``norm_rho`` along ``g₁ − g``) and ``g₃ = ∇f(w + e₁ + e₂)`` (a
    further SAM step of radius ``rho``). Then

        ``d = beta1·g₁ + beta3·g₃``,  ``p = g + |beta2|·h``
        output ``d − gamma · p⊥``  with ``p⊥`` the part of ``p`` orthogonal to ``d``.

    Departure from the reference: ``infty.optim.GAM`` stores ``norm_rho`` but its ascent
    reads an attribute that is never set (``grad_norm_rho``) and falls back to a radius of
    1.0; this uses ``norm_rho``, as the paper and the original GAM code do.
    ``gam(norm_rho=1.0)`` reproduces ``infty``'s numbers.

    Args:
        rho: radius of the two SAM steps (number, 0-d tensor or schedule).
        norm_rho: radius of the gradient-norm ascent (number, 0-d tensor or schedule).
        beta1, beta2, beta3: mixing weights of ``g₁``, ``h`` and ``g₃``.
        gamma: weight of the decomposition's orthogonal component.
        adaptive: ASAM-style neighbourhoods for all three steps.
        eps: the reference's ``perturb_eps``.

    Cost: three extra gradient evaluations per step. Needs ``loss_fn`` and ``params``.
    """

    def init_fn(params):
        del params
        return GAMState(torch.zeros((), dtype=torch.int64))

    def update_fn(updates, state, params=None, *, loss_fn=None, **extra):
        del extra
        loss_fn = require_loss_fn(loss_fn, "gam")
        params = require_params(params, "gam")
        probes = flatness_probes(
            loss_fn,
            updates,
            params,
            radius(rho, state.count, "gam(rho)"),
            radius(norm_rho, state.count, "gam(norm_rho)"),
            adaptive,
            eps,
        )
        unit = isinstance(beta1, (int, float)) and beta1 == 1  # a plain number: no tensor branch
        sharpness = probes.sharpness if unit else tree_scale(probes.sharpness, beta1)
        combined = tree_add_scaled(sharpness, beta3, probes.flatness)
        reference = tree_add_scaled(updates, abs(beta2), probes.ascent)
        return subtract_orthogonal_part(combined, reference, gamma, eps), GAMState(state.count + 1)

    return GradientTransformation(init_fn, update_fn)
