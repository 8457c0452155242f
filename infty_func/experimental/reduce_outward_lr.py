"""Reduce outward learning rate: shrink the entries of an update that push weights away
from zero."""

from __future__ import annotations

import torch

from infty_func.core.base import EmptyState, GradientTransformation
from infty_func.core.objective import require_loss_fn, require_params, value_and_grad
from infty_func.core.tree import tree_flatten, tree_unflatten, use_foreach

__all__ = ["reduce_outward_lr"]


def reduce_outward_lr(mul: float = 0.5, use_grad: bool = False, invert: bool = False) -> GradientTransformation:
    """Reduce outward learning rate (torchzero's experimental ``ReduceOutwardLR``): the
    entries of a gradient-like update ``u`` (one that is subtracted) that would move their
    weight away from zero are multiplied by ``mul``.

    ``uᵢ ← mul · uᵢ`` where ``wᵢ · dᵢ < 0``, else ``uᵢ``, with ``w`` the parameters and
    ``d = u`` (``use_grad=False``) or ``d = ∇f(w)``, the raw gradient (``use_grad=True``).
    Since the step is ``−lr·u``, ``wᵢ uᵢ < 0`` means the step has the sign of ``wᵢ``: it
    moves outward. ``invert=True`` tests ``wᵢ · dᵢ > 0`` instead (inward steps are scaled).
    Entries with ``wᵢ dᵢ = 0`` are left alone. Place it before the learning rate in a
    chain: ``ifn.chain(..., reduce_outward_lr(), ifn.scale_by_learning_rate(lr))``.

    .. warning:: torchzero's own note on this module is that it sounded good but turned
       out to work badly in its author's tests. It is here for completeness, not as a
       recommendation.

    Args:
        mul: factor for the outward entries (torchzero's default 0.5).
        use_grad: decide the direction from the raw gradient rather than the incoming
            update. This transform only sees the update, so it differentiates ``loss_fn``
            at the parameters itself: one extra gradient evaluation per step (torchzero
            reads the stored ``.grad`` instead). Needs ``loss_fn``; when the transform is
            first in a chain the update is the gradient and ``use_grad`` is unnecessary.
        invert: scale the inward entries instead of the outward ones.

    Needs ``params``. No paper.
    """
    if isinstance(mul, bool) or not isinstance(mul, (int, float)):
        raise ValueError(f"reduce_outward_lr: mul must be a number, got {mul!r}")
    for name, flag in (("use_grad", use_grad), ("invert", invert)):
        if not isinstance(flag, bool):
            raise ValueError(f"reduce_outward_lr: {name} must be a bool, got {flag!r}")

    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, loss_fn=None, **extra):
        del extra
        params = require_params(params, "reduce_outward_lr")
        if use_grad:
            _, direction = value_and_grad(require_loss_fn(loss_fn, "reduce_outward_lr(use_grad=True)"))(params)
        else:
            direction = updates
        leaves, spec = tree_flatten(updates)
        weights, _ = tree_flatten(params)
        signs, _ = tree_flatten(direction)
        if use_foreach(leaves, weights, signs):
            products = torch._foreach_mul(weights, signs)
            scaled = torch._foreach_mul(leaves, mul)
        else:
            products = [torch.mul(w, d) for w, d in zip(weights, signs)]
            scaled = [torch.mul(u, mul) for u in leaves]
        out = [torch.where(product > 0 if invert else product < 0, s, u) for product, s, u in zip(products, scaled, leaves)]
        return tree_unflatten(out, spec), state

    return GradientTransformation(init_fn, update_fn)
