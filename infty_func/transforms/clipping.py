"""Clipping updates element-wise or by their global norm."""

from __future__ import annotations

import torch

from infty_func.core.base import EmptyState, GradientTransformation
from infty_func.core.tree import tree_map, tree_norm, tree_scale

__all__ = ["clip", "clip_by_global_norm"]


def clip(max_delta: float) -> GradientTransformation:
    """Clamp every element of the updates to ``[-max_delta, max_delta]``."""
    if max_delta <= 0:
        raise ValueError(f"clip: max_delta must be > 0, got {max_delta}")

    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra):
        del params, extra
        return tree_map(lambda u: u.clamp(-max_delta, max_delta), updates), state

    return GradientTransformation(init_fn, update_fn)


def clip_by_global_norm(max_norm: float) -> GradientTransformation:
    """Rescale the updates to global norm ``max_norm`` when they are longer
    (Pascanu et al., 2013). Shorter updates pass unchanged; no Python branch, so it
    runs under vmap."""
    if max_norm <= 0:
        raise ValueError(f"clip_by_global_norm: max_norm must be > 0, got {max_norm}")

    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra):
        del params, extra
        norm = tree_norm(updates)
        factor = torch.where(norm > max_norm, max_norm / norm, torch.ones_like(norm))
        return tree_scale(updates, factor), state

    return GradientTransformation(init_fn, update_fn)
