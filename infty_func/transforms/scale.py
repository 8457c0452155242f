"""Scaling updates by a constant, a learning rate, or a schedule."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from infty_func.core.base import EmptyState, GradientTransformation
from infty_func.core.tree import tree_scale

__all__ = [
    "scale",
    "scale_by_schedule",
    "scale_by_learning_rate",
    "ScaleByScheduleState",
    "ScaleByLearningRateState",
    "schedule_value",
]


class ScaleByScheduleState(NamedTuple):
    count: Tensor  # int64, the number of updates so far


class ScaleByLearningRateState(NamedTuple):
    lr: Tensor  # float64 0-d; overwrite with ifn.tree_set(state, lr=...) between steps


def scale(factor: float | Tensor) -> GradientTransformation:
    """``updates * factor``."""

    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra):
        del params, extra
        return tree_scale(updates, factor), state

    return GradientTransformation(init_fn, update_fn)


def schedule_value(schedule: Callable[[Tensor], Tensor], count: Tensor, who: str) -> Tensor:
    """Evaluate ``schedule(count)`` and insist on a scalar."""
    value = torch.as_tensor(schedule(count))
    if value.dim() != 0:
        raise ValueError(
            f"{who}: the schedule must return a scalar, got a tensor of shape {tuple(value.shape)}"
        )
    return value


def scale_by_schedule(schedule: Callable[[Tensor], Tensor]) -> GradientTransformation:
    """``updates * schedule(count)``, with ``count`` the number of previous updates."""

    def init_fn(params):
        del params
        return ScaleByScheduleState(torch.zeros((), dtype=torch.int64))

    def update_fn(updates, state, params=None, **extra):
        del params, extra
        factor = schedule_value(schedule, state.count, "scale_by_schedule")
        return tree_scale(updates, factor), ScaleByScheduleState(state.count + 1)

    return GradientTransformation(init_fn, update_fn)


def scale_by_learning_rate(
    lr: float | Tensor | Callable[[Tensor], Tensor], flip_sign: bool = True
) -> GradientTransformation:
    """``-lr * updates`` (descent), or ``+lr * updates`` with ``flip_sign=False``.

    * A number is kept in the state (``ScaleByLearningRateState.lr``, float64), so it can
      be read and changed between steps with ``ifn.tree_get`` / ``ifn.tree_set`` (the
      :class:`~infty_func.optim.TransformOptimizer` does this for ``param_groups``), and
      vmapped: one learning rate per batch member.
    * A schedule ``count -> lr`` is evaluated at the update count and must return a scalar.
    * A tensor is used as given and not stored; it belongs to whoever passed it (this is
      how :func:`inject_hyperparams` drives the learning rate).
    """
    sign = -1.0 if flip_sign else 1.0
    if callable(lr):
        return scale_by_schedule(lambda count: sign * schedule_value(lr, count, "scale_by_learning_rate"))
    if isinstance(lr, Tensor):
        return scale(sign * lr)
    if not isinstance(lr, (int, float)):
        raise TypeError(f"lr must be a number, a tensor or a schedule, got {type(lr).__name__}")
    if lr < 0:
        raise ValueError(f"lr must be >= 0, got {lr}")

    def init_fn(params):
        del params
        return ScaleByLearningRateState(torch.tensor(float(lr), dtype=torch.float64))

    def update_fn(updates, state, params=None, **extra):
        del params, extra
        return tree_scale(updates, -state.lr if flip_sign else state.lr), state

    def update_in_place_fn(updates, state, params=None, owned=False, **extra):
        del params, extra
        # Either the caller's own buffers scaled in place or a new tree: owned both ways.
        return tree_scale(updates, -state.lr if flip_sign else state.lr, in_place=owned), state, True

    return GradientTransformation(init_fn, update_fn, update_in_place=update_in_place_fn)
