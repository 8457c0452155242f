"""Applying transforms to parts of the parameters: ``masked``, ``partition``, ``freeze``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from infty_func.core.base import EmptyState, GradientTransformation
from infty_func.core.tree import PyTree, tree_flatten, tree_leaves, tree_unflatten, tree_zeros_like

__all__ = ["masked", "partition", "freeze", "set_to_zero", "MaskedState", "PartitionState"]


class MaskedState(NamedTuple):
    inner_state: Any


class PartitionState(NamedTuple):
    inner_states: dict


def _resolve(spec_or_fn: Any, params: PyTree) -> list[Any]:
    tree = spec_or_fn(params) if callable(spec_or_fn) else spec_or_fn
    return tree_leaves(tree)


def _select(leaves: list[Any], indices: list[int]) -> list[Any]:
    return [leaves[i] for i in indices]


def masked(inner: GradientTransformation, mask: PyTree | Callable[[PyTree], PyTree]) -> GradientTransformation:
    """Apply ``inner`` to the leaves where ``mask`` is True; pass the others through.

    ``mask`` is a pytree of bools with the structure of the params, or a function of the
    params returning one. ``inner`` sees the selected leaves as a list (its state is built
    for that list).
    """

    def indices_for(params):
        flags = _resolve(mask, params)
        count = len(tree_leaves(params))
        if len(flags) != count:
            raise ValueError(f"masked: the mask has {len(flags)} leaves but the params have {count}")
        return [i for i, flag in enumerate(flags) if bool(flag)]

    def init_fn(params):
        leaves = tree_leaves(params)
        return MaskedState(inner.init(_select(leaves, indices_for(params))))

    def update_fn(updates, state, params=None, **extra):
        leaves, spec = tree_flatten(updates)
        reference = params if params is not None else updates
        chosen = indices_for(reference)
        sub_params = _select(tree_leaves(params), chosen) if params is not None else None
        new_sub, inner_state = inner.update(_select(leaves, chosen), state.inner_state, sub_params, **extra)
        out = list(leaves)
        for i, value in zip(chosen, new_sub):
            out[i] = value
        return tree_unflatten(out, spec), MaskedState(inner_state)

    return GradientTransformation(init_fn, update_fn, inner.needs_gradient, inner.needs_value)


def partition(
    transforms: Mapping[str, GradientTransformation], labels: PyTree | Callable[[PyTree], PyTree]
) -> GradientTransformation:
    """Apply ``transforms[label]`` to the leaves labelled ``label``.

    ``labels`` is a pytree of strings with the structure of the params (or a function of
    the params returning one). Every leaf needs a label that names a transform.
    """

    def groups_for(params):
        names = _resolve(labels, params)
        count = len(tree_leaves(params))
        if len(names) != count:
            raise ValueError(f"partition: the labels have {len(names)} leaves but the params have {count}")
        unknown = sorted(set(names) - set(transforms))
        if unknown:
            raise ValueError(f"partition: labels {unknown} name no transform; known: {sorted(transforms)}")
        return {label: [i for i, name in enumerate(names) if name == label] for label in transforms}

    def init_fn(params):
        leaves = tree_leaves(params)
        groups = groups_for(params)
        return PartitionState(
            {label: transforms[label].init(_select(leaves, idx)) for label, idx in groups.items()}
        )

    def update_fn(updates, state, params=None, **extra):
        if params is None:
            raise ValueError("partition needs params to read the labels; pass params to update")
        leaves, spec = tree_flatten(updates)
        param_leaves = tree_leaves(params)
        out = list(leaves)
        new_states = {}
        for label, idx in groups_for(params).items():
            new_sub, new_states[label] = transforms[label].update(
                _select(leaves, idx), state.inner_states[label], _select(param_leaves, idx), **extra
            )
            for i, value in zip(idx, new_sub):
                out[i] = value
        return tree_unflatten(out, spec), PartitionState(new_states)

    return GradientTransformation(init_fn, update_fn)


def set_to_zero() -> GradientTransformation:
    """Replace every update by zeros."""

    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra):
        del params, extra
        return tree_zeros_like(updates), state

    return GradientTransformation(init_fn, update_fn)


def freeze(mask: PyTree | Callable[[PyTree], PyTree]) -> GradientTransformation:
    """Zero the updates of the leaves where ``mask`` is True (those parameters stay put)."""
    return masked(set_to_zero(), mask)
