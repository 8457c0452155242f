"""Gradient accumulation: ``multi_steps``."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from infty_func.core.base import GradientTransformation
from infty_func.core.control import cond
from infty_func.core.tree import PyTree, tree_map, tree_zeros_like

__all__ = ["multi_steps", "MultiStepsState"]


class MultiStepsState(NamedTuple):
    mini_step: Tensor  # int64 in [0, every_k)
    accumulated: PyTree  # running mean of the updates since the last inner step
    inner_state: Any


def multi_steps(inner: GradientTransformation, every_k: int) -> GradientTransformation:
    """Average updates over ``every_k`` calls, then run ``inner`` once on the average.

    The calls in between emit zero updates and leave ``inner``'s state alone. The choice
    goes through :func:`infty_func.cond`: ordinary training runs only the needed branch;
    under vmap with different step counters both run and are selected element-wise.
    """
    if not isinstance(every_k, int) or every_k < 1:
        raise ValueError(f"multi_steps: every_k must be an int >= 1, got {every_k!r}")

    def init_fn(params):
        return MultiStepsState(
            torch.zeros((), dtype=torch.int64), tree_zeros_like(params), inner.init(params)
        )

    def update_fn(updates, state, params=None, **extra):
        weight = 1.0 / (state.mini_step + 1).to(torch.float64)
        mean = tree_map(lambda a, u: a + (u - a) * weight.to(a.dtype), state.accumulated, updates)

        def emit(mean, inner_state):
            out, inner_state = inner.update(mean, inner_state, params, **extra)
            return out, tree_zeros_like(mean), inner_state

        def wait(mean, inner_state):
            return tree_zeros_like(mean), mean, inner_state

        out, accumulated, inner_state = cond(
            state.mini_step == every_k - 1, emit, wait, mean, state.inner_state
        )
        mini_step = (state.mini_step + 1) % every_k
        return out, MultiStepsState(mini_step, accumulated, inner_state)

    return GradientTransformation(init_fn, update_fn, inner.needs_gradient, inner.needs_value)
