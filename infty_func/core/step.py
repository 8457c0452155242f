"""The one-line training step."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
from torch._C import _functorch
from torch.utils._pytree import SUPPORTED_NODES

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
    reuse_gradients: bool = False,
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
    buffers. The results are the pure step's values bit for bit; read the returned params
    and state and never the donated ones again. Still vmappable (the stacked tensors are
    written).

    ``reuse_gradients=True`` (with ``donate=True``) also lets the update run in the memory
    of the gradients the step computes (Adam writes its direction there, the learning
    rate scales it in place), sparing one more buffer. It is a promise, as donation is:
    nothing may keep a gradient, or memory under one, past the step (a tensor hook that
    logs it, a custom ``autograd.Function`` that returns a tensor it keeps, a NumPy or
    DLPack view). The step refuses what it can see: gradients that something else
    references or views (it counts Python and C++ references, as autograd's accumulator
    does before it reuses a gradient), that share memory with the params, the state or
    the loss, whose memory torch did not allocate, or that a ``loss_fn`` supplies through
    its own ``value_and_grad``. The values are the pure step's; only a zero may carry the
    other sign (see :func:`~infty_func.scale_by_adam`).
    """
    if not isinstance(transform, GradientTransformation):
        raise TypeError(f"step needs a GradientTransformation, got {type(transform).__name__}")
    if reuse_gradients and not donate:
        raise ValueError(
            "step(reuse_gradients=True) needs donate=True: the update runs in place, in the "
            "gradients' memory and in the state's"
        )
    if not transform.needs_gradient:
        # Gradient-free methods run wholly without autograd: no graph, even for params
        # that require grad.
        with torch.no_grad():
            value = evaluate(loss_fn, params) if transform.needs_value else None
            updates, state = _update(transform, None, state, params, donate, False, loss_fn=loss_fn, value=value, **extra)
            return _apply(params, updates, (state, value), donate), state, value
    value, grads = value_and_derivative(loss_fn)(params)
    updates, state = _update(transform, grads, state, params, donate, reuse_gradients, loss_fn=loss_fn, value=value, **extra)
    return _apply(params, updates, (state, value), donate), state, value


def _update(transform, updates, state, params, donate, reuse_gradients, **extra):
    if not donate:
        return transform.update(updates, state, params, **extra)
    owned = reuse_gradients and _owned_gradients(updates, (params, state, extra["value"]), extra["loss_fn"])
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
    for counts in _holders(leaves):
        if counts is None or not _alone(counts):
            return False
    return _apart(leaves, _tensors(others))


def _holders(leaves: list) -> list[tuple | None]:
    """For each tensor, as counted from here, the holders of everything an in-place write
    to it would change: Python references and C++ references (``_use_count``) to the tensor
    and to each tensor under its ``torch.func`` wrappers, to the tensor it views, and to
    its storage (Python object and the tensors that use it). ``None`` where memory cannot
    be inspected or is not torch's own (``from_numpy``, DLPack, ``from_blob``)."""
    counts = []
    for leaf in leaves:
        row = [sys.getrefcount(leaf), leaf._use_count()]
        plain = leaf
        while is_functorch_wrapped(plain):
            plain = _functorch.get_unwrapped(plain)
            row += [sys.getrefcount(plain), plain._use_count()]
        if plain.layout != torch.strided or not hasattr(torch._C, "_storage_Use_Count"):
            counts.append(None)
            continue
        storage = plain.untyped_storage()
        if not storage.resizable():  # memory torch did not allocate: someone else may read it
            counts.append(None)
            continue
        base = plain._base
        row += [0, 0] if base is None else [sys.getrefcount(base), base._use_count()]
        row += [sys.getrefcount(storage), torch._C._storage_Use_Count(storage._cdata) - (base is not None)]
        counts.append(tuple(row))
        del plain, base, storage
    return counts


# The counts of a view (autograd returns some gradients as views of an internal tensor)
# that only the list handed to _holders holds; a gradient is held by its tree as well.
_ALONE = _holders([torch.empty(2).view(2)])[0]


def _alone(counts) -> bool:
    """Whether :func:`_holders`' counts for a gradient are those of a gradient only its
    tree holds: one reference more than ``_ALONE`` to the leaf, and for each tensor under
    its wrappers the wrapper's link besides the count's own."""
    refs, uses, *inner = counts
    if refs > _ALONE[0] + 1 or uses > _ALONE[1]:
        return False
    levels, tail = inner[:-4], inner[-4:]
    for i in range(0, len(levels), 2):  # a tensor under a wrapper: the wrapper's link and our local
        if levels[i] > _ALONE[0] or levels[i + 1] > _ALONE[1] + 1:
            return False
    return all(c <= a for c, a in zip(tail, _ALONE[2:]))


def _apply(params, updates, returned, donate):
    """``apply_updates``, in place when the params are donated and nothing else the step
    returns shares their memory (a state may keep the params themselves, a loss may be a
    view of one). Tied or overlapping params ``apply_updates`` refuses itself."""
    if donate:
        donate = _apart(_tensors(params), _tensors((updates, returned)))
    return apply_updates(params, updates, in_place=donate)


def _apart(tensors: list[torch.Tensor], others: list[torch.Tensor]) -> bool:
    """Whether no tensor of ``others`` shares memory with one of ``tensors`` (false when
    the memory of one of ``others`` cannot be seen)."""
    kept = {storage_address(x) for x in others}
    return None not in kept and kept.isdisjoint(storage_address(x) for x in tensors)


def _tensors(tree) -> list[torch.Tensor]:
    """Every tensor leaf of a pytree, in no set order: a walk through plain dicts, lists,
    tuples and namedtuples, quicker than a flatten, with every other node (a registered
    subclass may flatten to more than its items) flattened as the pytree does."""
    found, pending = [], [tree]
    while pending:
        node = pending.pop()
        kind = type(node)
        if isinstance(node, torch.Tensor):
            found.append(node)
        elif kind is dict:
            pending.extend(node.values())
        elif kind is list or kind is tuple or _plain_namedtuple(kind):
            pending.extend(node)
        elif node is not None and not isinstance(node, (bool, int, float, str)):
            found.extend(x for x in tree_leaves(node) if isinstance(x, torch.Tensor))
    return found


def _plain_namedtuple(kind: type) -> bool:
    return issubclass(kind, tuple) and hasattr(kind, "_fields") and kind not in SUPPORTED_NODES
