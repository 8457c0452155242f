"""GSAM: SAM with the surrogate gap reduced by the orthogonal part of the plain gradient."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from infty_func.core.base import GradientTransformation
from infty_func.core.objective import require_loss_fn, require_params
from infty_func.geometry.perturbation import Radius, ascent_point, gradient_at, radius
from infty_func.geometry.projection import subtract_orthogonal_part

__all__ = ["gsam", "GSAMState"]


class GSAMState(NamedTuple):
    count: Tensor  # int64, updates so far (the argument of a rho schedule)


def gsam(rho: Radius = 0.1, alpha: float | Tensor = 0.2, adaptive: bool = False, eps: float = 1e-12) -> GradientTransformation:
    """Surrogate-gap guided SAM (Zhuang et al. 2022, "Surrogate Gap Minimization Improves
    Sharpness-Aware Training", Alg. 1).

    With ``g = ∇f(w)`` and the SAM gradient ``g_s = ∇f(w + e)`` (see :func:`sam`):

        ``g⊥ = g − cos(g, g_s) ‖g‖ · g_s/‖g_s‖``   (the part of ``g`` orthogonal to ``g_s``)
        output ``g_s − alpha · g⊥``

    A descent step on this output moves the parameters by ``+lr·alpha·g⊥``, which raises
    ``f(w)`` along the part of its gradient orthogonal to ``g_s`` and leaves the perturbed
    loss ``f(w + e)`` unchanged to first order: the surrogate gap ``f(w + e) − f(w)``
    shrinks while the perturbed loss is minimised. Norms get ``eps`` added before dividing, as the
    reference does (``cos = ⟨g, g_s⟩/(‖g‖‖g_s‖ + eps)``).

    Args:
        rho: radius (number, 0-d tensor or schedule ``count -> rho``).
        alpha: weight of the gap-reducing component.
        adaptive: ASAM's neighbourhood for the perturbation.
        eps: the reference's ``perturb_eps``.

    Cost: one extra gradient evaluation per step. Needs ``loss_fn`` and ``params``.
    """

    def init_fn(params):
        del params
        return GSAMState(torch.zeros((), dtype=torch.int64))

    def update_fn(updates, state, params=None, *, loss_fn=None, **extra):
        del extra
        loss_fn = require_loss_fn(loss_fn, "gsam")
        params = require_params(params, "gsam")
        point = ascent_point(updates, params, radius(rho, state.count, "gsam"), adaptive, eps)
        perturbed_grad = gradient_at(loss_fn, point)
        return subtract_orthogonal_part(perturbed_grad, updates, alpha, eps), GSAMState(state.count + 1)

    return GradientTransformation(init_fn, update_fn)
