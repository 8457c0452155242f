"""SAM and ASAM: the gradient at the worst point of a small neighbourhood."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from infty_func.core.base import GradientTransformation
from infty_func.core.objective import require_loss_fn, require_params
from infty_func.geometry.perturbation import Radius, ascent_point, gradient_at, radius

__all__ = ["sam", "SAMState"]


class SAMState(NamedTuple):
    count: Tensor  # int64, updates so far (the argument of a rho schedule)


def sam(rho: Radius = 0.1, adaptive: bool = False, eps: float = 1e-12) -> GradientTransformation:
    """Sharpness-aware minimisation (Foret et al. 2021, "Sharpness-Aware Minimization for
    Efficiently Improving Generalization"); ASAM with ``adaptive=True`` (Kwon et al. 2021).

    Given the gradient ``g = ∇f(w)`` as the incoming update, outputs

        ``∇f(w + e)``,  ``e = rho · g / (‖g‖ + eps)``                       (SAM, eq. 2)
        ``∇f(w + e)``,  ``e = rho · w² ⊙ g / (‖|w| ⊙ g‖ + eps)``            (ASAM)

    ASAM's operator is ``T = diag|w|`` and its step ``T² g / ‖T g‖``; the reference
    (``infty.optim.SAM(adaptive=True)``) applies that square, and so does this.

    The output is a gradient: chain a base optimizer after it,
    ``ifn.chain(ifn.sam(0.05), ifn.sgd(0.1, momentum=0.9))``.

    Args:
        rho: the neighbourhood radius; a number, a 0-d tensor (vmappable through
            ``ifn.inject_hyperparams(ifn.sam)(rho=...)``) or a schedule ``count -> rho``.
        adaptive: ASAM's scale-invariant neighbourhood.
        eps: added to the norm before dividing (the reference's ``perturb_eps``).

    Cost: one extra gradient evaluation of ``loss_fn`` per step, made inside
    ``ifn.perturbed(loss_fn)`` (batch-norm statistics can be frozen there, see
    :func:`~infty_func.freeze_batch_norm_when_perturbed`). Needs ``loss_fn`` and
    ``params``.
    """

    def init_fn(params):
        del params
        return SAMState(torch.zeros((), dtype=torch.int64))

    def update_fn(updates, state, params=None, *, loss_fn=None, **extra):
        del extra
        loss_fn = require_loss_fn(loss_fn, "sam")
        params = require_params(params, "sam")
        point = ascent_point(updates, params, radius(rho, state.count, "sam"), adaptive, eps)
        return gradient_at(loss_fn, point), SAMState(state.count + 1)

    return GradientTransformation(init_fn, update_fn)
