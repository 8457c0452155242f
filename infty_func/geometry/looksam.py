"""LookSAM: SAM's extra gradient only every k-th step, its new direction reused between."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from infty_func.core.base import GradientTransformation
from infty_func.core.control import cond
from infty_func.core.objective import require_loss_fn, require_params
from infty_func.core.tree import PyTree, tree_zeros_like
from infty_func.geometry.perturbation import Radius, ascent_point, gradient_at, radius
from infty_func.geometry.projection import leafwise_add_rescaled, leafwise_orthogonal_part

__all__ = ["looksam", "LookSAMState"]


class LookSAMState(NamedTuple):
    count: Tensor  # int64, updates so far
    orthogonal: PyTree  # g_v: the part of the last SAM gradient orthogonal to g, per leaf


def looksam(
    rho: Radius = 0.1, k: int = 5, alpha: float | Tensor = 0.7, adaptive: bool = False, eps: float = 1e-12
) -> GradientTransformation:
    """LookSAM (Liu et al. 2022, "Towards Efficient and Scalable Sharpness-Aware
    Minimization", Alg. 1).

    On steps ``t = k, 2k, ...`` (counting from 1) it computes the SAM gradient
    ``g_s = ∇f(w + e)`` (see :func:`sam`), outputs it, and stores the part of ``g_s``
    orthogonal to ``g = ∇f(w)`` (eq. 6):

        ``g_v = g_s − ‖g_s‖ cos(g, g_s) · g/‖g‖``

    On the other steps it makes no extra evaluation and outputs (eq. 7)

        ``g + alpha · ‖g‖/‖g_v‖ · g_v``.

    Norms and cosines are taken leaf by leaf (one layer at a time), with 1e-8 added
    before dividing, as the reference does. Before the first SAM step ``g_v = 0`` and the
    output is ``g``. With ``rho`` near 0, ``g_s ≈ g`` and ``g_v`` is round-off, which the
    reuse step still rescales to ``alpha·‖g‖``: use ``looksam`` with a real radius.

    Departure from the reference: ``infty.optim.LookSAM`` stores the gradient under one
    key and looks for it under another, so it never builds ``g_v`` and its non-SAM steps
    are plain gradient steps (``looksam(alpha=0)`` reproduces that). This follows the
    paper.

    The every-``k`` choice goes through :func:`~infty_func.cond`: one branch in ordinary
    training (the extra gradient really is skipped), both branches selected element-wise
    when vmap batches the step counter.

    Cost: one extra gradient evaluation every ``k``-th step, none on the others. Needs
    ``loss_fn`` and ``params``.
    """
    if not isinstance(k, Tensor) and (not isinstance(k, int) or k < 1):
        raise ValueError(f"looksam needs a positive integer k, got {k!r}")

    def init_fn(params):
        return LookSAMState(torch.zeros((), dtype=torch.int64), tree_zeros_like(params))

    def update_fn(updates, state, params=None, *, loss_fn=None, **extra):
        del extra
        loss_fn = require_loss_fn(loss_fn, "looksam")
        params = require_params(params, "looksam")
        is_sam_step = torch.remainder(state.count + 1, k) == 0

        def sam_step():
            point = ascent_point(updates, params, radius(rho, state.count, "looksam"), adaptive, eps)
            sam_grad = gradient_at(loss_fn, point)
            return sam_grad, leafwise_orthogonal_part(sam_grad, updates)

        def reuse_step():
            return leafwise_add_rescaled(updates, state.orthogonal, alpha), state.orthogonal

        new_updates, orthogonal = cond(is_sam_step, sam_step, reuse_step)
        return new_updates, LookSAMState(state.count + 1, orthogonal)

    return GradientTransformation(init_fn, update_fn)
