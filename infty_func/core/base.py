"""The contract: a gradient transformation is a pair of pure functions ``(init, update)``.

``init(params) -> state`` builds the state; ``update(updates, state, params=None, **extra)
-> (new_updates, new_state)`` maps incoming updates (usually gradients) to outgoing ones.
States are NamedTuples of tensors, so they can be vmapped, saved and ``tree_map``-ped.
Updates are *added* to the parameters (``apply_updates``), so descent carries its minus sign
in the learning-rate step, as in optax.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from infty_func.core.batched import peel, rewrap
from infty_func.core.tree import (
    PyTree,
    assert_same_structure,
    tree_flatten,
    tree_leaves,
    tree_map,
    tree_unflatten,
    use_foreach,
    writable,
)

Params = PyTree
Updates = PyTree
State = Any

__all__ = [
    "GradientTransformation",
    "EmptyState",
    "Params",
    "Updates",
    "State",
    "chain",
    "named_chain",
    "identity",
    "stateless",
    "apply_updates",
    "update_in_place",
]


class GradientTransformation(NamedTuple):
    """A pure optimizer piece: ``init(params) -> state`` and
    ``update(updates, state, params=None, **extra) -> (updates, state)``.

    ``needs_gradient`` tells :func:`infty_func.step` whether to differentiate the loss
    before calling ``update``; methods that estimate the gradient themselves (zeroth
    order, forward gradient) set it to ``False``, and then no backward graph is built.
    ``needs_value`` tells it, for such methods, whether to evaluate the loss at the
    current parameters first (the ``value`` extra); a two-sided zeroth-order estimate
    does not use it and sets it to ``False``, saving a forward pass.

    ``update_in_place`` (optional) is ``update`` for a caller that owns the state, as
    :class:`~infty_func.optim.TransformOptimizer` does:
    ``update_in_place(updates, state, params=None, owned=False, **extra) -> (updates,
    state, owned)``, with the same results as ``update`` bit for bit (one exception: a
    direction :func:`~infty_func.scale_by_adam` writes into owned gradients may turn a
    zero's sign). It may overwrite the tensors of ``state`` (the caller must not read them
    afterwards) and, when ``owned`` is true, those of ``updates`` (which then share memory
    with nothing the caller keeps, ``params`` and ``state`` included); it never writes
    ``params``. The returned flag says whether the caller owns the returned updates.
    :func:`chain` passes ownership along; see :func:`update_in_place`.
    """

    init: Callable[[Params], State]
    update: Callable[..., tuple[Updates, State]]
    needs_gradient: bool = True
    needs_value: bool = True
    update_in_place: Callable[..., tuple[Updates, State]] | None = None


class EmptyState(NamedTuple):
    """The state of a transform that keeps none."""


def identity() -> GradientTransformation:
    """Pass updates through unchanged."""

    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra):
        del params, extra
        return updates, state

    def update_in_place_fn(updates, state, params=None, owned=False, **extra):
        del params, extra
        return updates, state, owned  # passes the updates, and their ownership, through

    return GradientTransformation(init_fn, update_fn, update_in_place=update_in_place_fn)


def stateless(fn: Callable[[Updates, Params | None], Updates]) -> GradientTransformation:
    """A transform from a function ``fn(updates, params) -> updates`` that keeps no state."""

    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra):
        del extra
        return fn(updates, params), state

    return GradientTransformation(init_fn, update_fn)


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Apply ``transforms`` one after another; the state is the tuple of their states.

    Every keyword extra (``loss_fn``, ``value``, ...) reaches every member. The chain needs
    a gradient (or the value) when its first member does (later members only see what the
    first emits).
    """
    for index, transform in enumerate(transforms):
        if not isinstance(transform, GradientTransformation):
            raise TypeError(
                f"chain member {index} is a {type(transform).__name__}, not a "
                "GradientTransformation; did you forget to call it, e.g. ifn.sgd(0.1)?"
            )

    def init_fn(params):
        return tuple(t.init(params) for t in transforms)

    def check(state):
        if len(state) != len(transforms):
            raise ValueError(
                f"chain of {len(transforms)} transforms got a state of {len(state)} members"
            )

    def update_fn(updates, state, params=None, **extra):
        check(state)
        new_states = []
        for transform, member_state in zip(transforms, state):
            updates, member_state = transform.update(updates, member_state, params, **extra)
            new_states.append(member_state)
        return updates, tuple(new_states)

    def update_in_place_fn(updates, state, params=None, owned=False, **extra):
        check(state)
        new_states = []
        for transform, member_state in zip(transforms, state):
            updates, member_state, owned = update_in_place(
                transform, updates, member_state, params, owned, **extra
            )
            new_states.append(member_state)
        return updates, tuple(new_states), owned

    first = transforms[0] if transforms else identity()
    return GradientTransformation(
        init_fn, update_fn, first.needs_gradient, first.needs_value, update_in_place_fn
    )


def update_in_place(
    transform: GradientTransformation,
    updates: Updates,
    state: State,
    params: Params | None = None,
    owned: bool = False,
    **extra: Any,
) -> tuple[Updates, State, bool]:
    """``transform.update`` for a caller that owns ``state`` (and ``updates`` when
    ``owned``): ``(updates, state, owned)``, through the transform's ``update_in_place``
    when it has one, else through ``update`` (whose output may be its state's own tensors,
    as momentum returns its buffer, so it is not owned).

    The updates and state are those of ``transform.update`` bit for bit (but for the sign
    of a zero, see :class:`GradientTransformation`); only memory is reused.
    """
    if transform.update_in_place is None:
        updates, state = transform.update(updates, state, params, **extra)
        return updates, state, False
    return transform.update_in_place(updates, state, params, owned, **extra)


def named_chain(*named: tuple[str, GradientTransformation]) -> GradientTransformation:
    """Like :func:`chain`, with a dict state keyed by the given names.

    ``named_chain(("clip", clip_by_global_norm(1.0)), ("adam", adam(1e-3)))`` has
    ``state["adam"]`` readable by name.
    """
    names = [name for name, _ in named]
    if len(set(names)) != len(names):
        raise ValueError(f"named_chain names must be unique, got {names}")
    inner = chain(*(transform for _, transform in named))

    def init_fn(params):
        return dict(zip(names, inner.init(params)))

    def update_fn(updates, state, params=None, **extra):
        updates, states = inner.update(
            updates, tuple(state[name] for name in names), params, **extra
        )
        return updates, dict(zip(names, states))

    def update_in_place_fn(updates, state, params=None, owned=False, **extra):
        updates, states, owned = inner.update_in_place(
            updates, tuple(state[name] for name in names), params, owned, **extra
        )
        return updates, dict(zip(names, states)), owned

    return GradientTransformation(
        init_fn, update_fn, inner.needs_gradient, inner.needs_value, update_in_place_fn
    )


def apply_updates(params: Params, updates: Updates, in_place: bool = False) -> Params:
    """``params + updates`` leaf by leaf (a new tree; ``params`` is not modified).

    The sum keeps each parameter's dtype, so low-precision parameters with float32
    updates stay low-precision. With ``in_place`` the sum is written into ``params`` where
    that is safe (plain contiguous tensors not recording autograd history, or contiguous
    stacked tensors under vmap), with the same kernel and so the same bits; the returned
    tree is the result either way.
    """
    assert_same_structure(params, updates, "params", "updates")
    leaves_p, spec = tree_flatten(params)
    leaves_u = tree_leaves(updates)
    same_dtype = all(p.dtype == u.dtype for p, u in zip(leaves_p, leaves_u))
    if same_dtype and use_foreach(leaves_p, leaves_u):
        if in_place and writable(leaves_p):
            torch._foreach_add_(leaves_p, leaves_u)
            return params
        return tree_unflatten(torch._foreach_add(leaves_p, leaves_u), spec)
    if same_dtype:  # under vmap, one foreach kernel on the stacked tensors when possible
        peeled = peel([*leaves_p, *leaves_u])
        if peeled is not None:
            level, stacked = peeled
            n = len(leaves_p)
            if in_place and writable(stacked[:n]):
                torch._foreach_add_(stacked[:n], stacked[n:])
                return tree_unflatten(rewrap(stacked[:n], level), spec)
            return tree_unflatten(rewrap(torch._foreach_add(stacked[:n], stacked[n:]), level), spec)
    return tree_map(lambda p, u: (p + u).to(p.dtype), params, updates)
