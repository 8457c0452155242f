"""Skipping steps whose update is not finite."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from infty_func.core.base import GradientTransformation
from infty_func.core.tree import tree_all_finite, tree_map, tree_where

__all__ = ["apply_if_finite", "ApplyIfFiniteState"]


class ApplyIfFiniteState(NamedTuple):
    notfinite_count: Tensor  # int64: consecutive skipped steps
    total_notfinite: Tensor  # int64: all skipped steps
    last_finite: Tensor  # bool: whether the last step was applied
    inner_state: Any


def apply_if_finite(inner: GradientTransformation) -> GradientTransformation:
    """Run ``inner``; if any element of its update is NaN or infinite, emit a zero update
    and keep ``inner``'s previous state (the step is skipped and counted).

    Branch-free (``torch.where``), so it runs under vmap, where each member skips on its
    own. Skips are counted in ``state.total_notfinite`` and, consecutively, in
    ``state.notfinite_count``.
    """

    def init_fn(params):
        zero = torch.zeros((), dtype=torch.int64)
        return ApplyIfFiniteState(zero, zero.clone(), torch.ones((), dtype=torch.bool), inner.init(params))

    def update_fn(updates, state, params=None, **extra):
        new_updates, new_inner = inner.update(updates, state.inner_state, params, **extra)
        finite = tree_all_finite(new_updates)
        out = tree_map(lambda u: torch.where(finite, u, torch.zeros_like(u)), new_updates)
        kept_inner = tree_where(finite, new_inner, state.inner_state)
        skipped = (~finite).to(torch.int64)
        return out, ApplyIfFiniteState(
            notfinite_count=(state.notfinite_count + 1) * skipped,
            total_notfinite=state.total_notfinite + skipped,
            last_finite=finite,
            inner_state=kept_inner,
        )

    return GradientTransformation(init_fn, update_fn, inner.needs_gradient, inner.needs_value)
