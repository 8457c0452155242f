"""The one-line training step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from infty_func.core.base import GradientTransformation, Params, State, apply_updates
from infty_func.core.objective import evaluate, value_and_derivative
from infty_func.core.tree import PyTree

__all__ = ["step"]


def step(
    transform: GradientTransformation,
    state: State,
    params: Params,
    loss_fn: Callable[[PyTree], Any],
    **extra: Any,
) -> tuple[Params, State, Any]:
    """One step: differentiate ``loss_fn`` at ``params``, transform, apply.

    Returns ``(new_params, new_state, value)``. A scalar loss gives its gradient; a 1-D
    tensor of ``m`` losses gives the Jacobian pytree (one shared forward pass). When the
    transform says it needs no gradient (zeroth order) only the value is computed, with
    no autograd graph, and not even that when the transform says it needs no value (a
    two-sided zeroth-order estimate): ``value`` is then ``None`` (the transform's state
    usually keeps its own loss estimate). ``loss_fn`` and ``value`` reach the transform as extras, together
    with any other keyword. ``value`` excludes aux outputs. Pure, so it runs under
    ``torch.func.vmap``.
    """
    if not isinstance(transform, GradientTransformation):
        raise TypeError(f"step needs a GradientTransformation, got {type(transform).__name__}")
    if not transform.needs_gradient:
        # Gradient-free methods run wholly without autograd: no graph, even for params
        # that require grad.
        with torch.no_grad():
            value = evaluate(loss_fn, params) if transform.needs_value else None
            updates, state = transform.update(None, state, params, loss_fn=loss_fn, value=value, **extra)
            return apply_updates(params, updates), state, value
    value, grads = value_and_derivative(loss_fn)(params)
    updates, state = transform.update(grads, state, params, loss_fn=loss_fn, value=value, **extra)
    return apply_updates(params, updates), state, value
