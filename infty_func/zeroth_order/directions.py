"""Random probe directions for zeroth-order estimates, regenerated from keys.

A query's direction ``z`` is one standard-normal stream per parameter leaf
(``fold_in(query_key, leaf_index)``), optionally with a random fraction of its entries
zeroed (gradient sparsity). Because ``z`` is a pure function of the key, a memory-efficient
estimator can rebuild it leaf by leaf whenever it needs it instead of storing it (MeZO,
Malladi et al. 2023).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from infty_func.core import random
from infty_func.core.tree import PyTree, is_functorch_wrapped, tree_flatten

__all__ = ["leaf_sparsities", "direction_leaf", "perturbed_leaf", "add_direction_", "query_key"]

# Streams folded into a query key: the direction's normals and its sparsity mask.
_NORMAL_STREAM, _MASK_STREAM = 0, 1


def _leaf_names(params: PyTree) -> list[str]:
    if isinstance(params, Mapping):
        return [str(name) for name in params]
    leaves, _ = tree_flatten(params)
    return [str(index) for index in range(len(leaves))]


def _check_fraction(value, where: str) -> float | Tensor:
    if isinstance(value, Tensor):
        return value
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
        raise ValueError(f"{where}: sparsity must be a fraction in [0, 1), got {value!r}")
    return float(value)


def leaf_sparsities(sparsity, params: PyTree, method: str) -> list[float | Tensor | None]:
    """The fraction of entries to zero in each leaf's direction: ``None`` for all leaves,
    a number for all, or a dict from parameter name to fraction (leaves it does not name
    are not sparsified). A name the params do not have is an error."""
    leaves, _ = tree_flatten(params)
    if sparsity is None:
        return [None] * len(leaves)
    if isinstance(sparsity, Mapping):
        names = _leaf_names(params)
        unknown = sorted(set(sparsity) - set(names))
        if unknown:
            raise ValueError(
                f"{method}: sparsity names parameters {unknown} that the params do not have; "
                f"known: {names[:8]}{' ...' if len(names) > 8 else ''}"
            )
        return [_check_fraction(sparsity[name], f"{method}[{name!r}]") if name in sparsity else None for name in names]
    fraction = _check_fraction(sparsity, method)
    return [fraction] * len(leaves)


def query_key(step_key: Tensor, query: int) -> Tensor:
    """The key of query ``query`` within a step."""
    return random.fold_in(step_key, query)


def direction_leaf(key: Tensor, index: int, like: Tensor, sparsity: float | Tensor | None) -> Tensor:
    """Leaf ``index`` of the direction for ``key``: standard normal, shaped like ``like``,
    with each entry zeroed with probability ``sparsity``."""
    leaf_key = random.fold_in(key, index)
    z = random.normal(random.fold_in(leaf_key, _NORMAL_STREAM), like.shape, like.dtype, like.device)
    if sparsity is not None:
        keep = random.uniform(random.fold_in(leaf_key, _MASK_STREAM), like.shape, torch.float32, device=like.device)
        keep = keep >= sparsity
        z = z * keep if is_functorch_wrapped(z) or is_functorch_wrapped(keep) else z.mul_(keep)
    return z


def perturbed_leaf(w: Tensor, scale: float | Tensor, key: Tensor, index: int, sparsity) -> Tensor:
    """``w + scale · z`` for one leaf, with ``z`` regenerated and discarded (its storage is
    reused for the result outside vmap)."""
    z = direction_leaf(key, index, w, sparsity)
    if is_functorch_wrapped(z) or is_functorch_wrapped(w) or isinstance(scale, Tensor):
        return w + scale * z
    return z.mul_(scale).add_(w)


def add_direction_(w: Tensor, scale: float, key: Tensor, index: int, sparsity) -> Tensor:
    """``w += scale · z`` in place for one leaf. Dense directions are added chunk by chunk
    (no leaf-sized temporary); sparse ones build ``z`` and its mask first."""
    if sparsity is None:
        return random.add_normal_(w, random.fold_in(random.fold_in(key, index), _NORMAL_STREAM), scale)
    return w.add_(direction_leaf(key, index, w, sparsity), alpha=scale)
