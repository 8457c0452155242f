"""Hyperparameters that live in the state: ``inject_hyperparams``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from infty_func.core.base import GradientTransformation
from infty_func.transforms.scale import schedule_value

__all__ = ["inject_hyperparams", "InjectHyperparamsState"]


class InjectHyperparamsState(NamedTuple):
    count: Tensor  # int64
    hyperparams: dict  # name -> float64 (or int64) 0-d tensor
    inner_state: Any


def inject_hyperparams(
    factory: Callable[..., GradientTransformation], static_args: tuple[str, ...] = ()
) -> Callable[..., GradientTransformation]:
    """Make ``factory``'s numeric arguments state: ``inject_hyperparams(sgd)(lr=0.1, momentum=0.9)``.

    Numbers become 0-d tensors in ``state.hyperparams`` (float64 for floats, int64 for
    ints), so they can be changed between steps (``ifn.tree_set(state, lr=0.01)``) and
    vmapped (one value per batch member). A callable argument is a schedule, evaluated at
    the update count on every step (its current value is stored too, to be read).
    Booleans, strings, names in ``static_args`` and anything else stay fixed. At each
    update the transform is rebuilt with the current values as tensors, so the factory
    must not branch in Python on a hyperparameter it receives as a tensor.
    """

    def build(*args: Any, **kwargs: Any) -> GradientTransformation:
        bound = inspect.signature(factory).bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        numeric, schedules, fixed = {}, {}, {}
        for name, value in arguments.items():
            if name in static_args or isinstance(value, (bool, str)) or value is None:
                fixed[name] = value
            elif callable(value) and not isinstance(value, GradientTransformation):
                schedules[name] = value
            elif isinstance(value, (int, float)) or (isinstance(value, Tensor) and value.dim() == 0):
                numeric[name] = value
            else:
                fixed[name] = value

        def as_tensor(value):
            if isinstance(value, Tensor):
                return value.clone()
            dtype = torch.int64 if isinstance(value, int) else torch.float64
            return torch.tensor(value, dtype=dtype)

        def current(count):
            values = {name: as_tensor(value) for name, value in numeric.items()}
            for name, schedule in schedules.items():
                values[name] = schedule_value(schedule, count, f"inject_hyperparams({name})")
            return values

        def init_fn(params):
            count = torch.zeros((), dtype=torch.int64)
            hyperparams = current(count)
            inner = factory(**fixed, **hyperparams)
            return InjectHyperparamsState(count, hyperparams, inner.init(params))

        def update_fn(updates, state, params=None, **extra):
            hyperparams = dict(state.hyperparams)
            for name, schedule in schedules.items():
                hyperparams[name] = schedule_value(
                    schedule, state.count, f"inject_hyperparams({name})"
                ).to(state.hyperparams[name].dtype)
            inner = factory(**fixed, **hyperparams)
            updates, inner_state = inner.update(updates, state.inner_state, params, **extra)
            return updates, InjectHyperparamsState(state.count + 1, hyperparams, inner_state)

        probe = factory(**fixed, **{name: as_tensor(v) for name, v in numeric.items()}, **{
            name: torch.zeros((), dtype=torch.float64) for name in schedules
        })
        return GradientTransformation(init_fn, update_fn, probe.needs_gradient, probe.needs_value)

    return build
