"""The one-line training step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from infty_func.core.base import GradientTransformation, Params, State, apply_updates, update_in_place
from infty_func.core.objective import evaluate, value_and_derivative
from infty_func.core.tree import PyTree, storage_address, tree_leaves

__all__ = ["step"]


def step(
    transform: GradientTransformation,
    state: State,
    params: Params,
    loss_fn: Callable[[PyTree], Any],
    *,
    donate: bool = False,
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

    ``donate=True`` hands ``params`` and ``state`` over to the step, as JAX's
    ``donate_argnums`` does: it may write its results into their memory (through
    :func:`~infty_func.update_in_place` and an in-place ``apply_updates``) instead of
    allocating new tensors, which on CPU spares the page faults of fresh parameter-sized
    buffers. The gradients it computes are its own too, and may hold the update on its
    way (unless ``loss_fn`` brings its own ``value_and_grad``, whose tensors it may keep;
    a custom ``autograd.Function`` whose backward returns a tensor you keep would see that
    tensor overwritten: do not donate then). The results are the pure step's values, bit
    for bit except that a zero may carry the other sign (see
    :func:`~infty_func.scale_by_adam`); read the returned params and state and never the
    donated ones again. Still vmappable (the stacked tensors are written).
    """
    if not isinstance(transform, GradientTransformation):
        raise TypeError(f"step needs a GradientTransformation, got {type(transform).__name__}")
    if not transform.needs_gradient:
        # Gradient-free methods run wholly without autograd: no graph, even for params
        # that require grad.
        with torch.no_grad():
            value = evaluate(loss_fn, params) if transform.needs_value else None
            updates, state = _update(transform, None, state, params, donate, loss_fn=loss_fn, value=value, **extra)
            return _apply(params, updates, (state, value), donate), state, value
    value, grads = value_and_derivative(loss_fn)(params)
    updates, state = _update(transform, grads, state, params, donate, loss_fn=loss_fn, value=value, **extra)
    return _apply(params, updates, (state, value), donate), state, value


def _update(transform, updates, state, params, donate, **extra):
    if not donate:
        return transform.update(updates, state, params, **extra)
    owned = _owned_gradients(updates, (params, state, extra["value"]), extra["loss_fn"])
    updates, state, _ = update_in_place(transform, updates, state, params, owned=owned, **extra)
    return updates, state


def _owned_gradients(grads, others, loss_fn) -> bool:
    """Whether a donated step may overwrite the gradients it computed, as autograd's
    accumulator steals a gradient nobody else holds: autodiff made them (a ``loss_fn``
    with its own ``value_and_grad`` may keep what it returns) and none shares memory with
    the params, the state or the loss. Each transform still checks that what it writes is
    writable (an expanded constant is not)."""
    if grads is None or hasattr(loss_fn, "value_and_grad"):
        return False
    addresses = [storage_address(g) for g in tree_leaves(grads) if isinstance(g, torch.Tensor)]
    kept = {storage_address(x) for x in tree_leaves(others) if isinstance(x, torch.Tensor)}
    return None not in addresses and None not in kept and kept.isdisjoint(addresses)


def _apply(params, updates, returned, donate):
    """``apply_updates``, in place when the params are donated and nothing else the step
    returns shares their memory (a state may keep the params themselves, a loss may be a
    view of one). Tied or overlapping params ``apply_updates`` refuses itself."""
    if donate:
        others = {storage_address(x) for x in (*tree_leaves(updates), *tree_leaves(returned)) if isinstance(x, torch.Tensor)}
        donate = None not in others and others.isdisjoint(storage_address(p) for p in tree_leaves(params))
    return apply_updates(params, updates, in_place=donate)
