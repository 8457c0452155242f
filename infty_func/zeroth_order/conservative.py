"""The conservative accept/reject rule of ZeroFlow's ``*_conserve`` variants."""

from __future__ import annotations

import torch

from infty_func.core.base import GradientTransformation
from infty_func.core.objective import evaluate, perturbed, require_loss_fn, require_params, summed
from infty_func.core.tree import tree_add, tree_scale, tree_sub

__all__ = ["conservative"]


def conservative(inner: GradientTransformation) -> GradientTransformation:
    """Try ``w + Δ`` and ``w − Δ`` for the update ``Δ`` of ``inner``; keep the one that
    lowers the loss on the current batch, or neither.

    With ``f₀ = f(w)``, ``f₊ = f(w + Δ)`` and ``f₋ = f(w − Δ)`` (losses summed), the rule
    of ``infty.optim.ZeroFlow``'s ``zo_*_conserve`` is

        if ``f₊ > f₀``: ``0`` if ``f₀ < f₋`` else ``−Δ``
        else:          ``+Δ`` if ``f₊ < f₋`` else ``−Δ``

    so the chosen loss is never above ``f₀``. The choice is a ``torch.where`` on the
    three losses, so it is vmap-safe. Two forward passes (``f₀`` comes from the ``value``
    extra, which ``ifn.step`` computes; without it, a third).

    Departure from the reference: ``infty`` realises ``w ± Δ`` by stepping its base
    optimizer two or three times (``+g``, ``−2g``, then ``+g`` or ``+2g``), so a stateful
    base (momentum, Adam) absorbs all of those gradients. Here ``inner`` is updated once,
    with the estimate, and only the applied sign changes. For plain SGD the two agree.
    """

    def init_fn(params):
        return inner.init(params)

    def update_fn(updates, state, params=None, *, loss_fn=None, value=None, **extra):
        loss_fn = require_loss_fn(loss_fn, "conservative")
        params = require_params(params, "conservative")
        delta, state = inner.update(updates, state, params, loss_fn=loss_fn, value=value, **extra)
        current = summed(value) if value is not None else summed(evaluate(loss_fn, params))
        with perturbed(loss_fn):  # trial points leave module state alone
            plus = summed(evaluate(loss_fn, tree_add(params, delta)))
            minus = summed(evaluate(loss_fn, tree_sub(params, delta)))
        worse = plus > current
        factor = torch.where(
            worse,
            torch.where(current < minus, 0.0, -1.0),
            torch.where(plus < minus, 1.0, -1.0),
        ).to(torch.float64)
        return tree_scale(delta, factor), state

    return GradientTransformation(init_fn, update_fn, needs_gradient=inner.needs_gradient, needs_value=True)
