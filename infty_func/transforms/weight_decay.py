"""Weight decay added to the updates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from infty_func.core.base import EmptyState, GradientTransformation
from infty_func.core.tree import PyTree, tree_flatten, tree_leaves, tree_unflatten

__all__ = ["add_decayed_weights"]


def add_decayed_weights(
    weight_decay: float = 0.0, mask: PyTree | Callable[[PyTree], PyTree] | None = None
) -> GradientTransformation:
    """``updates + weight_decay · params``.

    Before the learning rate this is L2 regularisation (``torch.optim.SGD/Adam``'s
    ``weight_decay``); after :func:`scale_by_adam` and before the learning rate it is
    decoupled decay (AdamW, Loshchilov & Hutter, 2019). ``mask`` (a pytree of bools like
    the params, or a function of the params returning one) limits the decay to the leaves
    marked True.
    """
    if isinstance(weight_decay, (int, float)) and weight_decay < 0:
        raise ValueError(f"add_decayed_weights: weight_decay must be >= 0, got {weight_decay}")

    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra):
        del extra
        if params is None:
            raise ValueError(
                "add_decayed_weights needs params; call update(updates, state, params)"
            )
        grads, spec = tree_flatten(updates)
        weights = tree_leaves(params)
        flags = _mask_leaves(mask, params, len(grads))
        out = [g + weight_decay * w if keep else g for g, w, keep in zip(grads, weights, flags)]
        return tree_unflatten(out, spec), state

    return GradientTransformation(init_fn, update_fn)


def _mask_leaves(mask: Any, params: PyTree, count: int) -> list[bool]:
    if mask is None:
        return [True] * count
    tree = mask(params) if callable(mask) else mask
    flags = [bool(flag) for flag in tree_leaves(tree)]
    if len(flags) != count:
        raise ValueError(f"the mask has {len(flags)} leaves but the params have {count}")
    return flags
