"""The one-line training step."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
from torch._C import _functorch

from infty_func.core.base import GradientTransformation, Params, State, apply_updates, update_in_place
from infty_func.core.objective import evaluate, value_and_derivative
from infty_func.core.tree import PyTree, is_functorch_wrapped, storage_address, tree_leaves

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
    buffers. The gradients it computes may hold the update on its way when nothing else
    holds them: the step counts the references to each (as autograd's accumulator does
    before it reuses a gradient), so a gradient a tensor hook kept, a view of one, or one
    that shares memory with the params, the state or the loss is left alone, and so are
    the gradients of a ``loss_fn`` with its own ``value_and_grad``. The results are the
    pure step's values, bit for bit except that a zero may carry the other sign (see
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
    """Whether a donated step may overwrite the gradients it computed. As autograd's
    accumulator steals a gradient only when nothing else holds it, they must come from
    autodiff (a ``loss_fn`` with its own ``value_and_grad`` may keep what it returns),
    nothing but the gradient tree may reference them or the tensors they view (a tensor
    hook may have kept one), and no other tensor may share their memory (a view of one,
    the params, the state or the loss). Each transform still checks that what it writes
    is writable (an expanded constant is not)."""
    if grads is None or hasattr(loss_fn, "value_and_grad"):
        return False
    leaves = tree_leaves(grads)
    if not all(isinstance(g, torch.Tensor) for g in leaves):
        return False
    references, base_references, users = _ALONE
    for counts in _holders(leaves):
        if counts is None or counts[0] > references + 1 or counts[1] > base_references or counts[2] > users:
            return False
    kept = {storage_address(x) for x in _tensors(others)}
    return None not in kept and kept.isdisjoint(storage_address(g) for g in leaves)


def _holders(leaves: list) -> list[tuple[int, int, int] | None]:
    """For each tensor, as counted from here: the Python references to it, those to the
    tensor it is a view of (0 when it is none), and the tensors that use its memory
    besides that one (looking under any ``torch.func`` wrappers). ``None`` where memory
    cannot be inspected."""
    counts = []
    for leaf in leaves:
        references = sys.getrefcount(leaf)
        plain = leaf
        while is_functorch_wrapped(plain):
            plain = _functorch.get_unwrapped(plain)
        if plain.layout != torch.strided or not hasattr(torch._C, "_storage_Use_Count"):
            counts.append(None)
            continue
        base = plain._base
        users = torch._C._storage_Use_Count(plain.untyped_storage()._cdata) - (base is not None)
        counts.append((references, 0 if base is None else sys.getrefcount(base), users))
        del plain, base
    return counts


# The counts of a view (autograd returns some gradients as views of an internal tensor)
# that only the list handed to _holders holds; a gradient is held by its tree as well.
_ALONE = _holders([torch.empty(2).view(2)])[0]


def _apply(params, updates, returned, donate):
    """``apply_updates``, in place when the params are donated and nothing else the step
    returns shares their memory (a state may keep the params themselves, a loss may be a
    view of one). Tied or overlapping params ``apply_updates`` refuses itself."""
    if donate:
        others = {storage_address(x) for x in _tensors((updates, returned))}
        donate = None not in others and others.isdisjoint(storage_address(p) for p in _tensors(params))
    return apply_updates(params, updates, in_place=donate)


def _tensors(tree) -> list[torch.Tensor]:
    """Every tensor in a pytree, in no set order: a walk through dicts, lists and tuples,
    quicker than a flatten, with other nodes flattened. It may find more than the pytree's
    leaves (every value of a dict or tuple subclass), never fewer, which only makes the
    memory checks above stricter."""
    found, pending = [], [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, torch.Tensor):
            found.append(node)
        elif isinstance(node, dict):
            pending.extend(node.values())
        elif isinstance(node, (list, tuple)):
            pending.extend(node)
        elif node is not None and not isinstance(node, (bool, int, float, str)):
            found.extend(x for x in tree_leaves(node) if isinstance(x, torch.Tensor))
    return found
