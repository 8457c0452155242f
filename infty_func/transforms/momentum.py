"""Momentum (heavy ball and Nesterov)."""

from __future__ import annotations

from typing import NamedTuple

import torch

from infty_func.core.base import GradientTransformation
from infty_func.core.tree import PyTree, tree_flatten, tree_unflatten, tree_zeros_like, use_foreach

__all__ = ["trace", "TraceState"]


class TraceState(NamedTuple):
    momentum_buffer: PyTree


def trace(decay: float, nesterov: bool = False) -> GradientTransformation:
    """Momentum as in ``torch.optim.SGD`` (with ``dampening=0``).

    ``b ← decay·b + g``; the output is ``b``, or ``g + decay·b`` with ``nesterov``
    (Sutskever et al., 2013). The buffer starts at zero, so the first step's buffer is
    ``g``, exactly as torch initialises it.
    """
    if isinstance(decay, (int, float)) and not 0.0 <= decay < 1.0 + 1e-12:
        raise ValueError(f"trace decay (momentum) must be in [0, 1], got {decay}")

    def init_fn(params):
        return TraceState(tree_zeros_like(params))

    def update_fn(updates, state, params=None, **extra):
        del params, extra
        grads, spec = tree_flatten(updates)
        buffers, _ = tree_flatten(state.momentum_buffer)
        if use_foreach(grads, buffers) and isinstance(decay, (int, float)):
            # one fused pass g + decay·b (torch's mul_ then add_ is two)
            new_buffers = torch._foreach_add(grads, buffers, alpha=decay)
            out = torch._foreach_add(grads, new_buffers, alpha=decay) if nesterov else new_buffers
        elif use_foreach(grads, buffers):
            new_buffers = torch._foreach_mul(buffers, decay)
            torch._foreach_add_(new_buffers, grads)
            if nesterov:
                out = torch._foreach_mul(new_buffers, decay)
                torch._foreach_add_(out, grads)
            else:
                out = new_buffers
        else:
            new_buffers = [decay * b + g for b, g in zip(buffers, grads)]
            out = [g + decay * b for b, g in zip(new_buffers, grads)] if nesterov else new_buffers
        return tree_unflatten(out, spec), TraceState(tree_unflatten(new_buffers, spec))

    return GradientTransformation(init_fn, update_fn)
